package secrets

import (
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openNoPassphrase opens the file store in dir with no key source at all:
// no MOAT_PASSPHRASE, no credential, and a prompt that fails the test.
func openNoPassphrase(t *testing.T, dir string) (*Store, error) {
	t.Helper()
	t.Setenv(PassphraseEnv, "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	return Open(t.Context(), &Options{
		Backend: BackendFile,
		Dir:     dir,
		Passphrase: func() ([]byte, error) {
			t.Error("asked for the passphrase although the store is unlocked")
			return nil, errors.New("no prompt in this test")
		},
	})
}

// needKernelKeyring skips the test where the kernel keyring is blocked (a
// container's seccomp profile often blocks keyctl), after checking that
// moat says so and names the other key sources.
func needKernelKeyring(t *testing.T) {
	t.Helper()
	desc := "moat:test-probe:" + randomSuffix(t)
	err := keyringPut(desc, make([]byte, 32), 0)
	if err == nil {
		_, _ = keyringDrop(desc)
		return
	}
	var he *HintError
	if !errors.As(err, &he) || !strings.Contains(strings.Join(he.Hints(), " "), PassphraseEnv) {
		t.Fatalf("the kernel keyring refused a key, and the error does not name the other key sources: %v", err)
	}
	t.Skipf("the kernel keyring is not usable here (%v); moat says so and names the other key sources", err)
}

// lockAtEnd drops whatever key a test left in the user keyring.
func lockAtEnd(t *testing.T, dir string) {
	t.Cleanup(func() { _, _ = Lock(&Options{Dir: dir}) })
}

func TestUnlockOpensWithoutPassphrase(t *testing.T) {
	needKernelKeyring(t)
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	lockAtEnd(t, dir)
	s := openFile(t, dir, "correct horse")
	if err := s.Set(ctx, "tok", NewSecret("v1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(0); err != nil {
		t.Fatalf("Unlock: %v", err)
	}

	u, err := openNoPassphrase(t, dir)
	if err != nil {
		t.Fatalf("Open after Unlock: %v", err)
	}
	if got, err := u.Get(ctx, "tok"); err != nil || got.Reveal() != "v1" {
		t.Fatalf("Get after Unlock = %v, %v", got.Reveal() == "v1", err)
	}
	if u.Protection() != Encrypted || u.KeySource() != SourceKernelKeyring {
		t.Errorf("unlocked store: protection %v, key from %q; want encrypted, from %q", u.Protection(), u.KeySource(), SourceKernelKeyring)
	}

	dropped, err := Lock(&Options{Dir: dir})
	if err != nil || !dropped {
		t.Fatalf("Lock = %v, %v; want true, nil", dropped, err)
	}
	if dropped, err := Lock(&Options{Dir: dir}); err != nil || dropped {
		t.Errorf("second Lock = %v, %v; want false, nil", dropped, err)
	}
	_, err = Open(t.Context(), &Options{Backend: BackendFile, Dir: dir})
	var he *HintError
	if !errors.As(err, &he) || !strings.Contains(strings.Join(he.Hints(), "\n"), "moat unlock") {
		t.Errorf("Open after Lock = %v; want a HintError naming `moat unlock`", err)
	}
}

func TestUnlockKeyOpensOnlyItsStore(t *testing.T) {
	needKernelKeyring(t)
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	lockAtEnd(t, dir)
	s := openFile(t, dir, "first")
	if err := s.Set(ctx, "tok", NewSecret("v1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(0); err != nil {
		t.Fatal(err)
	}
	old := keyringDesc(s.b.(*fileStore).hdr)

	// A new passphrase writes a new header: the old key is dropped, and
	// the store is locked again.
	if err := s.Encrypt(ctx, []byte("second")); err != nil {
		t.Fatal(err)
	}
	if key := keyringGet(old); key != nil {
		t.Error("the old header's key stayed in the kernel keyring after a re-key")
	}
	if _, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: dir}); err == nil {
		t.Error("the re-keyed store opened without a passphrase")
	}

	// A key that does not verify (planted under the store's description)
	// is ignored: the passphrase is asked for, and the store opens with it.
	junk := make([]byte, 32)
	rand.Read(junk)
	if err := keyringPut(keyringDesc(s.b.(*fileStore).hdr), junk, 0); err != nil {
		t.Fatal(err)
	}
	asked := false
	u, err := Open(ctx, &Options{Backend: BackendFile, Dir: dir, Passphrase: func() ([]byte, error) {
		asked = true
		return []byte("second"), nil
	}})
	if err != nil || !asked {
		t.Fatalf("Open with a wrong key in the keyring = %v, asked %v; want the passphrase asked and used", err, asked)
	}
	if got, err := u.Get(ctx, "tok"); err != nil || got.Reveal() != "v1" {
		t.Errorf("Get = %v, %v", got.Reveal() == "v1", err)
	}
}

func TestUnlockExpires(t *testing.T) {
	needKernelKeyring(t)
	dir := filepath.Join(t.TempDir(), "store")
	lockAtEnd(t, dir)
	s := openFile(t, dir, "pw")
	if err := s.Unlock(time.Second); err != nil {
		t.Fatal(err)
	}
	desc := keyringDesc(s.b.(*fileStore).hdr)
	if keyringGet(desc) == nil {
		t.Fatal("no key in the keyring right after Unlock")
	}
	// The kernel's timer drops it; wait for that, not for a fixed time.
	deadline := time.Now().Add(time.Minute)
	for keyringGet(desc) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the key with a 1s expiry was still in the keyring a minute later")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUnlockNeedsAnEncryptedStore(t *testing.T) {
	t.Setenv(PassphraseEnv, "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s.Protection() != PermissionsOnly {
		t.Fatalf("protection %v, want permissions only", s.Protection())
	}
	err = s.Unlock(0)
	var he *HintError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "nothing to unlock") {
		t.Errorf("Unlock of a permissions-only store = %v; want \"nothing to unlock\"", err)
	}
}
