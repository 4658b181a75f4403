//go:build unix

package secrets

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/zalando/go-keyring"
)

// These tests run several real processes (this test binary re-executed in
// a helper mode) against one store. The children start together: each
// blocks reading its stdin until the parent closes all the pipes at once.

const helperEnv = "MOAT_SECRETS_HELPER"

// runHelpers starts n children in mode, with env added, releases them
// together and returns each one's stdout lines that start with "OUT ".
func runHelpers(t *testing.T, n int, mode string, env func(i int) []string) [][]string {
	t.Helper()
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   strings.Builder
	}
	children := make([]*child, n)
	for i := range children {
		c := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestStoreHelperProcess$", "-test.count=1", "-test.v")}
		c.cmd.Env = append(os.Environ(), helperEnv+"="+mode, fmt.Sprintf("MOAT_HELPER_INDEX=%d", i))
		c.cmd.Env = append(c.cmd.Env, env(i)...)
		c.cmd.Stdout = &c.out
		c.cmd.Stderr = &c.out
		var err error
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		children[i] = c
	}
	for _, c := range children {
		c.stdin.Close() // the start signal
	}
	outs := make([][]string, n)
	var wg sync.WaitGroup
	for i, c := range children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.cmd.Wait()
			if err != nil || !strings.Contains(c.out.String(), "--- PASS: TestStoreHelperProcess") {
				t.Errorf("helper %d (%s) failed: %v\n%s", i, mode, err, c.out.String())
			}
		}()
	}
	wg.Wait()
	for i, c := range children {
		for _, l := range strings.Split(c.out.String(), "\n") {
			if v, ok := strings.CutPrefix(l, "OUT "); ok {
				outs[i] = append(outs[i], v)
			}
		}
	}
	return outs
}

// TestStoreHelperProcess is the child half of the tests below.
func TestStoreHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("run by the multi-process tests in a child process")
	}
	if _, err := io.Copy(io.Discard, os.Stdin); err != nil { // wait for the start signal
		t.Fatal(err)
	}
	ctx := t.Context()
	opts := &Options{
		Backend: os.Getenv("MOAT_HELPER_BACKEND"),
		Dir:     os.Getenv("MOAT_HELPER_DIR"),
		Service: os.Getenv("MOAT_HELPER_SERVICE"),
	}
	idx := os.Getenv("MOAT_HELPER_INDEX")
	switch mode {
	case "set-many":
		s, err := Open(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for j := range 20 {
			if err := s.Set(ctx, fmt.Sprintf("p%s-item-%02d", idx, j), NewSecret("v"+idx)); err != nil {
				t.Fatal(err)
			}
		}
	case "get-or-create":
		s, err := Open(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.GetOrCreate(ctx, "shared-key", func() (Secret, error) {
			var b [16]byte
			rand.Read(b[:])
			return NewSecret(hex.EncodeToString(b[:])), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("OUT %s\n", v.Reveal()) // a throwaway test key
	case "create-mixed":
		s, err := Open(ctx, opts)
		if err != nil {
			fmt.Printf("OUT error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			return
		}
		if err := s.Set(ctx, "from-"+idx, NewSecret("v")); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("OUT %s\n", s.Protection())
	default:
		t.Fatalf("unknown helper mode %q", mode)
	}
}

// TestConcurrentWritersAcrossProcesses: 4 processes, each setting 20
// distinct names in one fresh file store at once, lose none of the 80.
func TestConcurrentWritersAcrossProcesses(t *testing.T) {
	noKeySource(t)
	dir := filepath.Join(t.TempDir(), "store")
	runHelpers(t, 4, "set-many", func(int) []string {
		return []string{"MOAT_HELPER_BACKEND=file", "MOAT_HELPER_DIR=" + dir}
	})
	items, err := openNoKey(t, dir).List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 80 {
		t.Errorf("after 4 processes set 20 names each, the store lists %d names, want 80", len(items))
	}
}

// TestConcurrentKeychainIndexAcrossProcesses: the keychain's index item is
// read-modify-written; under the store's lock, 4 processes setting 20
// names each at once leave all 80 in it.
func TestConcurrentKeychainIndexAcrossProcesses(t *testing.T) {
	requireKeyring(t)
	service := "moat-test-" + randomSuffix(t)
	t.Cleanup(func() { _ = keyring.DeleteAll(service) })
	dir := filepath.Join(t.TempDir(), "store")
	runHelpers(t, 4, "set-many", func(int) []string {
		return []string{"MOAT_HELPER_BACKEND=keychain", "MOAT_HELPER_DIR=" + dir, "MOAT_HELPER_SERVICE=" + service}
	})
	s, err := Open(t.Context(), &Options{Backend: BackendKeychain, Service: service, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	items, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 80 {
		t.Errorf("after 4 processes set 20 names each, the keychain index lists %d names, want 80", len(items))
	}
}

// TestGetOrCreateAcrossProcesses: 4 processes asking for one new key at
// once all get the same value, and it is the stored one.
func TestGetOrCreateAcrossProcesses(t *testing.T) {
	noKeySource(t)
	dir := filepath.Join(t.TempDir(), "store")
	outs := runHelpers(t, 4, "get-or-create", func(int) []string {
		return []string{"MOAT_HELPER_BACKEND=file", "MOAT_HELPER_DIR=" + dir}
	})
	stored, err := openNoKey(t, dir).Get(t.Context(), "shared-key")
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range outs {
		if len(o) != 1 || o[0] != stored.Reveal() {
			t.Errorf("process %d got %q; the stored key differs (or it printed nothing): two processes created the key", i, o)
		}
	}
}

// TestCreateRaceHasOneMode: processes creating one store at once, half
// with MOAT_PASSPHRASE and half without, leave one mode. If the encrypted
// header won, those without a key source fail and say why; no process
// ever writes in a second mode.
func TestCreateRaceHasOneMode(t *testing.T) {
	noKeySource(t)
	for round := range 3 {
		dir := filepath.Join(t.TempDir(), "store")
		outs := runHelpers(t, 6, "create-mixed", func(i int) []string {
			env := []string{"MOAT_HELPER_BACKEND=file", "MOAT_HELPER_DIR=" + dir}
			if i%2 == 0 {
				env = append(env, "MOAT_PASSPHRASE=race")
			}
			return env
		})
		t.Setenv("MOAT_PASSPHRASE", "race")
		s := openNoKey(t, dir)
		t.Setenv("MOAT_PASSPHRASE", "")
		want := s.Protection().String()
		items, err := s.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ok := 0
		for i, o := range outs {
			switch {
			case len(o) != 1:
				t.Errorf("round %d: process %d printed %q", round, i, o)
			case o[0] == want:
				ok++
			case strings.HasPrefix(o[0], "error ") && i%2 == 1 && want == Encrypted.String():
				if !strings.Contains(o[0], "MOAT_PASSPHRASE") && !strings.Contains(o[0], "no key source") {
					t.Errorf("round %d: process %d failed without naming the key sources: %s", round, i, o[0])
				}
			default:
				t.Errorf("round %d: process %d reported %q; the store is %q", round, i, o[0], want)
			}
		}
		if len(items) != ok {
			t.Errorf("round %d: %d processes wrote, the store lists %d items", round, ok, len(items))
		}
	}
}
