package secrets

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Argon2id at 64 MiB per Open would make the suite slow on a shared
	// machine; the format stores the costs, so small ones exercise the same code.
	UseCheapKDFInTests()
	os.Exit(m.Run())
}

// openFile opens a file-backed store in dir with passphrase pass.
func openFile(t *testing.T, dir, pass string) *Store {
	t.Helper()
	s, err := Open(t.Context(), &Options{
		Backend:    BackendFile,
		Dir:        dir,
		Passphrase: func() ([]byte, error) { return []byte(pass), nil },
	})
	if err != nil {
		t.Fatalf("Open(file, %s): %v", dir, err)
	}
	return s
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

var loudOnce sync.Once

// requireKeyring runs the test only against a real Secret Service: when
// MOAT_TEST_KEYRING=1 (scripts/with-keyring.sh sets it) or when the session
// bus has a keyring that answers. Otherwise it skips loudly, or fails under
// CI=true, where a skipped keyring suite would hide a broken store.
func requireKeyring(t *testing.T) {
	t.Helper()
	if os.Getenv("MOAT_TEST_KEYRING") == "1" {
		return
	}
	why := fmt.Sprintf("DBUS_SESSION_BUS_ADDRESS is %q", os.Getenv("DBUS_SESSION_BUS_ADDRESS"))
	// Probe only an explicit bus: without one, godbus would autolaunch
	// dbus-launch (if installed) and leave daemons behind.
	if addr := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); addr != "" && addr != "disabled:" {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := Open(ctx, &Options{Backend: BackendKeychain, Timeout: 2 * time.Second, Service: "moat-test-probe"})
		if err == nil {
			return
		}
		why = err.Error()
	}
	msg := "NO SECRET SERVICE: the keychain tests did not run (" + why + "). " +
		"Run them with scripts/with-keyring.sh go test ./internal/secrets/ (needs gnome-keyring and dbus-run-session)."
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " CI=true: refusing to skip.")
	}
	loudOnce.Do(func() {
		bar := strings.Repeat("!", 78)
		fmt.Fprintf(os.Stderr, "\n%s\n!! %s\n%s\n\n", bar, msg, bar)
	})
	t.Skip(msg)
}
