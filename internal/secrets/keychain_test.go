//go:build unix

package secrets

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/zalando/go-keyring"
)

// TestKeychainRoundTrip runs against a real Secret Service (gnome-keyring
// under dbus-run-session; see requireKeyring).
func TestKeychainRoundTrip(t *testing.T) {
	requireKeyring(t)
	ctx := t.Context()
	service := "moat-test-" + randomSuffix(t)
	t.Cleanup(func() { _ = keyring.DeleteAll(service) })

	s, err := Open(ctx, &Options{Backend: BackendAuto, Service: service})
	if err != nil {
		t.Fatalf("Open(auto): %v", err)
	}
	if got := s.Backend(); got != "keychain (Secret Service)" {
		t.Fatalf("auto chose %q with a working keyring (fallback: %v)", got, s.Fallback())
	}
	if _, err := s.Get(ctx, "github-token"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get before Set = %v, want ErrNotFound", err)
	}
	items, err := s.List(ctx)
	if err != nil || len(items) != 0 {
		t.Errorf("List of an empty service = %v, %v", items, err)
	}
	for _, n := range []string{"github-token", TokenKey("srv", "https://x.example", "c"), "dynamic-mcp-oauth:srv"} {
		if err := s.Set(ctx, n, NewSecret(canary+n)); err != nil {
			t.Fatalf("Set(%q): %v", n, err)
		}
	}
	if err := s.Set(ctx, "github-token", NewSecret("replaced")); err != nil {
		t.Fatal(err)
	}

	// A second Store (another moat process) sees the same items.
	s2, err := Open(ctx, &Options{Backend: BackendKeychain, Service: service})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s2.Get(ctx, "github-token"); err != nil || v.Reveal() != "replaced" {
		t.Errorf("Get(github-token) = %v; want the replaced value", err)
	}
	items, err = s2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := s2.Backend()
	want := []Item{{"dynamic-mcp-oauth:srv", b}, {"github-token", b}, {TokenKey("srv", "https://x.example", "c"), b}}
	if diff := cmp.Diff(want, items); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	// The index holds names only.
	if raw, err := keyring.Get(service, indexUser); err != nil || strings.Contains(raw, canary) || strings.Contains(raw, "replaced") {
		t.Errorf("index item = %v; it must hold names only", err)
	}

	if err := s2.Delete(ctx, "github-token"); err != nil {
		t.Fatal(err)
	}
	if err := s2.Delete(ctx, "github-token"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "github-token"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	items, _ = s.List(ctx)
	if len(items) != 2 {
		t.Errorf("List after Delete = %v, want 2 items", items)
	}
}

func TestKeychainConcurrentSets(t *testing.T) {
	requireKeyring(t)
	ctx := t.Context()
	service := "moat-test-" + randomSuffix(t)
	t.Cleanup(func() { _ = keyring.DeleteAll(service) })
	s, err := Open(ctx, &Options{Backend: BackendKeychain, Service: service})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "c", "d", "e", "f"}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Go(func() { errs[i] = s.Set(ctx, n, NewSecret("v-"+n)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	items, err := s.List(ctx)
	if err != nil || len(items) != len(names) {
		t.Errorf("List after concurrent Sets = %v, %v; want %d items (no lost index update)", items, err, len(names))
	}
}

// silentBus listens on a unix socket that accepts D-Bus clients and never
// says a word: the case where go-keyring blocks forever.
func silentBus(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "bus")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "unix:path=" + sock
}

// The session bus connection is cached process-wide by godbus, so each case
// runs in a fresh child process (this test binary) with its own bus address.
func TestKeychainNeverHangs(t *testing.T) {
	if os.Getenv("MOAT_SECRETS_CHILD") != "" {
		t.Skip("parent-only test")
	}
	silent := silentBus(t)
	tests := []struct {
		scenario string
		bus      string
	}{
		{"keychain-errors", silent},
		{"auto-falls-back", silent},
		{"auto-falls-back", "disabled:"},
		{"auto-no-passphrase", "disabled:"},
		{"auto-no-passphrase", silent},
		{"auto-require-encryption", "disabled:"},
	}
	for _, tt := range tests {
		t.Run(tt.scenario+"/"+tt.bus[:strings.Index(tt.bus, ":")], func(t *testing.T) {
			// The deadline only guards the suite against the hang under test.
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKeychainChild$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(),
				"MOAT_SECRETS_CHILD="+tt.scenario,
				"DBUS_SESSION_BUS_ADDRESS="+tt.bus,
				"MOAT_CHILD_DIR="+filepath.Join(t.TempDir(), "store"),
				"MOAT_PASSPHRASE=",
				"CREDENTIALS_DIRECTORY=",
			)
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("the child hung on a silent bus:\n%s", out)
			}
			if err != nil || !strings.Contains(string(out), "--- PASS: TestKeychainChild") {
				t.Fatalf("child %s failed: %v\n%s", tt.scenario, err, out)
			}
		})
	}
}

// TestKeychainChild is the child half of TestKeychainNeverHangs.
func TestKeychainChild(t *testing.T) {
	scenario := os.Getenv("MOAT_SECRETS_CHILD")
	if scenario == "" {
		t.Skip("run by TestKeychainNeverHangs in a child process")
	}
	ctx := t.Context()
	dir := os.Getenv("MOAT_CHILD_DIR")
	pass := func() ([]byte, error) { return []byte("pw"), nil }
	const timeout = 300 * time.Millisecond
	switch scenario {
	case "keychain-errors":
		_, err := Open(ctx, &Options{Backend: BackendKeychain, Timeout: timeout})
		if !errors.Is(err, errKeychainTimeout) {
			t.Fatalf("Open(keychain) on a silent bus = %v, want a timeout error", err)
		}
		var he *HintError
		if !errors.As(err, &he) || len(he.hints) == 0 {
			t.Errorf("timeout error %v has no hint", err)
		}
		// The stuck call holds the slot: later calls fail at once, and no
		// second goroutine joins it.
		_, err = Open(ctx, &Options{Backend: BackendKeychain, Timeout: timeout})
		if !errors.Is(err, errKeychainTimeout) {
			t.Errorf("second Open(keychain) = %v, want a timeout error", err)
		}
	case "auto-falls-back":
		s, err := Open(ctx, &Options{Timeout: timeout, Dir: dir, Passphrase: pass})
		if err != nil {
			t.Fatalf("Open(auto) = %v, want a fallback to the file store", err)
		}
		if got := s.Backend(); got != "encrypted file ("+dir+")" {
			t.Errorf("Backend() = %q, want the file store", got)
		}
		if s.Fallback() == nil {
			t.Error("Fallback() = nil, want the keychain's failure")
		}
		if err := s.Set(ctx, "tok", NewSecret("v")); err != nil {
			t.Fatal(err)
		}
		if v, err := s.Get(ctx, "tok"); err != nil || v.Reveal() != "v" {
			t.Errorf("Get = %v", err)
		}
	case "auto-no-passphrase":
		// No keychain, no key source: the file store protected by
		// permissions only, and Fallback says why.
		s, err := Open(ctx, &Options{Timeout: timeout, Dir: dir})
		if err != nil {
			t.Fatalf("Open(auto) without keychain or passphrase = %v, want the permissions-only file store", err)
		}
		if s.Protection() != PermissionsOnly || s.Fallback() == nil {
			t.Errorf("Open(auto) without keychain or passphrase: protection %v, fallback %v; want permissions only and the keychain's failure", s.Protection(), s.Fallback())
		}
		if err := s.Set(ctx, "tok", NewSecret("v")); err != nil {
			t.Fatal(err)
		}
	case "auto-require-encryption":
		_, err := Open(ctx, &Options{Timeout: timeout, Dir: dir, RequireEncryption: true})
		var he *HintError
		if !errors.As(err, &he) {
			t.Fatalf("Open(auto) without keychain or passphrase = %v, want a HintError", err)
		}
		hints := strings.Join(he.hints, "\n")
		for _, want := range []string{"MOAT_PASSPHRASE", "moat-passphrase", "moat secret encrypt"} {
			if !strings.Contains(hints, want) {
				t.Errorf("hints %q do not mention %q", hints, want)
			}
		}
		if !strings.Contains(err.Error(), "keychain was not usable") {
			t.Errorf("error %q does not say why the keychain was not used", err)
		}
	default:
		t.Fatalf("unknown scenario %q", scenario)
	}
}
