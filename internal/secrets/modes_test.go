//go:build unix

package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// noKeySource removes every key source from the test's environment:
// MOAT_PASSPHRASE is empty and CREDENTIALS_DIRECTORY names an empty
// directory.
func noKeySource(t *testing.T) {
	t.Helper()
	t.Setenv("MOAT_PASSPHRASE", "")
	t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir())
}

// assertNoPlaintext fails if any file under dir holds one of needles.
func assertNoPlaintext(t *testing.T, dir string, needles ...string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s holds %q in plain text", p, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// assertPrivate fails unless dir is 0700 and every file in it 0600.
func assertPrivate(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %04o, want 0700", dir, fi.Mode().Perm())
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", filepath.Join(dir, e.Name()), fi.Mode().Perm())
		}
	}
}

func openNoKey(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: dir})
	if err != nil {
		t.Fatalf("Open(file, %s) without a key source: %v", dir, err)
	}
	return s
}

// TestPermissionsOnlyWithoutKeySource: with no keychain and no key source,
// the file store works, protected by its 0600/0700 modes, and says so; it
// stays permissions-only when MOAT_PASSPHRASE appears later.
func TestPermissionsOnlyWithoutKeySource(t *testing.T) {
	noKeySource(t)
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	s := openNoKey(t, dir)
	if s.Protection() != PermissionsOnly {
		t.Fatalf("Protection() = %v, want permissions only", s.Protection())
	}
	if want := "file, protected by permissions only (" + dir + ")"; s.Backend() != want {
		t.Errorf("Backend() = %q, want %q", s.Backend(), want)
	}
	vals := map[string]string{"github-token": "ghp_canary_one", "api-key": "sk_canary_two"}
	for n, v := range vals {
		if err := s.Set(ctx, n, NewSecret(v)); err != nil {
			t.Fatalf("Set(%q): %v", n, err)
		}
	}
	assertPrivate(t, dir)
	assertNoPlaintext(t, dir, "ghp_canary_one", "sk_canary_two", "github-token", "api-key")

	hdr, err := os.ReadFile(filepath.Join(dir, headerName))
	if err != nil {
		t.Fatal(err)
	}
	if len(hdr) != headerPrefixLen+32 || !bytes.Equal(hdr[len(headerMagic)+1:len(headerMagic)+10], make([]byte, 9)) {
		t.Errorf("permissions-only header is %d bytes with KDF fields %x; want %d bytes and zero KDF fields",
			len(hdr), hdr[len(headerMagic)+1:len(headerMagic)+10], headerPrefixLen+32)
	}

	// Reopened (another process), still without a key source.
	s2 := openNoKey(t, dir)
	for n, v := range vals {
		if got, err := s2.Get(ctx, n); err != nil || got.Reveal() != v {
			t.Errorf("reopened Get(%q): %v", n, err)
		}
	}

	// MOAT_PASSPHRASE set later never changes the mode silently.
	t.Setenv("MOAT_PASSPHRASE", "late")
	s3 := openNoKey(t, dir)
	if s3.Protection() != PermissionsOnly {
		t.Errorf("with MOAT_PASSPHRASE set, an existing permissions-only store has protection %v", s3.Protection())
	}
	if b := s3.Backend(); !strings.Contains(b, "MOAT_PASSPHRASE is set but not used") || !strings.Contains(b, "moat secret encrypt") {
		t.Errorf("Backend() = %q; want it to say MOAT_PASSPHRASE is not used and how to encrypt", b)
	}
	if got, err := s3.Get(ctx, "api-key"); err != nil || got.Reveal() != vals["api-key"] {
		t.Errorf("Get with MOAT_PASSPHRASE set: %v", err)
	}

	// Every read checks the header's mode like any other file.
	if err := os.Chmod(filepath.Join(dir, headerName), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, &Options{Backend: BackendFile, Dir: dir}); err == nil || !strings.Contains(err.Error(), "0644") {
		t.Errorf("Open with a 0644 header = %v, want a refusal naming the mode", err)
	}
}

// TestEncryptedItemsAreNotPlaintext: in an encrypted store neither names
// nor values appear in any file.
func TestEncryptedItemsAreNotPlaintext(t *testing.T) {
	noKeySource(t)
	dir := filepath.Join(t.TempDir(), "store")
	s := openFile(t, dir, "pw")
	if s.Protection() != Encrypted {
		t.Fatalf("Protection() = %v, want encrypted", s.Protection())
	}
	if err := s.Set(t.Context(), "name-canary", NewSecret("value-canary-77")); err != nil {
		t.Fatal(err)
	}
	assertPrivate(t, dir)
	assertNoPlaintext(t, dir, "name-canary", "value-canary-77")
}

// TestCredentialKeySource: the systemd credential moat-passphrase
// ($CREDENTIALS_DIRECTORY) encrypts the store, its trailing newline
// trimmed; a credential that is not a regular non-empty file is refused.
func TestCredentialKeySource(t *testing.T) {
	noKeySource(t)
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	if err := os.WriteFile(filepath.Join(creds, CredentialName), []byte("cred pass\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "store")
	s := openNoKey(t, dir)
	if s.Protection() != Encrypted {
		t.Fatalf("with the credential, Protection() = %v, want encrypted", s.Protection())
	}
	if err := s.Set(t.Context(), "tok", NewSecret("v")); err != nil {
		t.Fatal(err)
	}
	// The passphrase is the file's contents without the newline.
	if v, err := openFile(t, dir, "cred pass").Get(t.Context(), "tok"); err != nil || v.Reveal() != "v" {
		t.Errorf("Get with the credential's passphrase typed in: %v", err)
	}

	for _, tt := range []struct {
		name string
		make func(p string) error
		want string
	}{
		{"empty", func(p string) error { return os.WriteFile(p, []byte("\n"), 0o400) }, "is empty"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }, "not a regular file"},
		{"symlink", func(p string) error { return os.Symlink("/etc/hostname", p) }, "symbolic link"},
	} {
		c := t.TempDir()
		if err := tt.make(filepath.Join(c, CredentialName)); err != nil {
			t.Fatal(err)
		}
		t.Setenv("CREDENTIALS_DIRECTORY", c)
		_, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: filepath.Join(t.TempDir(), "store")})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("credential that is %s: Open = %v, want an error saying it %s", tt.name, err, tt.want)
		}
	}
}

// TestRequireEncryptionRefusesPermissionsOnly: require_encryption refuses
// to create or open a permissions-only store, and to decrypt, with the fix.
func TestRequireEncryptionRefusesPermissionsOnly(t *testing.T) {
	noKeySource(t)
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	checkHint := func(what string, err error) {
		t.Helper()
		var he *HintError
		if !errors.As(err, &he) {
			t.Fatalf("%s = %v, want a HintError", what, err)
		}
		hints := strings.Join(he.Hints(), "\n")
		for _, want := range []string{"MOAT_PASSPHRASE", "moat-passphrase", "moat secret encrypt"} {
			if !strings.Contains(hints, want) {
				t.Errorf("%s: hints %q lack %q", what, hints, want)
			}
		}
	}
	_, err := Open(ctx, &Options{Backend: BackendFile, Dir: dir, RequireEncryption: true})
	checkHint("creating a store under require_encryption without a key source", err)
	if _, err := os.Stat(filepath.Join(dir, headerName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused create left a header (%v)", err)
	}

	openNoKey(t, dir) // permissions-only, made without require_encryption
	_, err = Open(ctx, &Options{Backend: BackendFile, Dir: dir, RequireEncryption: true})
	checkHint("opening a permissions-only store under require_encryption", err)
	// Even with a key source: the store is not encrypted until `moat secret encrypt`.
	t.Setenv("MOAT_PASSPHRASE", "pw")
	_, err = Open(ctx, &Options{Backend: BackendFile, Dir: dir, RequireEncryption: true})
	checkHint("opening a permissions-only store under require_encryption with MOAT_PASSPHRASE", err)

	// A new store with a key source is created encrypted and opens.
	dir2 := filepath.Join(t.TempDir(), "store")
	s, err := Open(ctx, &Options{Backend: BackendFile, Dir: dir2, RequireEncryption: true})
	if err != nil || s.Protection() != Encrypted {
		t.Fatalf("require_encryption with MOAT_PASSPHRASE: %v", err)
	}
	if err := s.Decrypt(ctx); err == nil || !strings.Contains(err.Error(), "require_encryption") {
		t.Errorf("Decrypt under require_encryption = %v, want a refusal", err)
	}
	if s.Protection() != Encrypted {
		t.Errorf("after a refused Decrypt, protection is %v", s.Protection())
	}
}

// siblings lists the parent directory of dir, for leftovers of a re-key.
func siblings(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func readAll(t *testing.T, s *Store) map[string]string {
	t.Helper()
	items, err := s.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, it := range items {
		v, err := s.Get(t.Context(), it.Name)
		if err != nil {
			t.Fatalf("Get(%q): %v", it.Name, err)
		}
		got[it.Name] = v.Reveal()
	}
	return got
}

// TestEncryptDecryptRoundTrip: permissions-only → encrypted → new
// passphrase → permissions-only keeps every item and leaves no temp
// directory; a Store opened before a re-key refuses to write with its old key.
func TestEncryptDecryptRoundTrip(t *testing.T) {
	noKeySource(t)
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	s := openNoKey(t, dir)
	want := map[string]string{}
	for i := range 12 {
		n, v := fmt.Sprintf("item-%02d", i), fmt.Sprintf("value-canary-%02d", i)
		want[n] = v
		if err := s.Set(ctx, n, NewSecret(v)); err != nil {
			t.Fatal(err)
		}
	}
	before := openNoKey(t, dir) // another moat that opened the store earlier

	if err := s.Encrypt(ctx, []byte("first")); err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if s.Protection() != Encrypted || !strings.HasPrefix(s.Backend(), "encrypted file") {
		t.Errorf("after Encrypt: protection %v, backend %q", s.Protection(), s.Backend())
	}
	if diff := cmp.Diff(want, readAll(t, s)); diff != "" {
		t.Errorf("items after Encrypt (-want +got):\n%s", diff)
	}
	if _, err := Open(ctx, &Options{Backend: BackendFile, Dir: dir}); err == nil {
		t.Error("an encrypted store opened without a key source")
	}
	if diff := cmp.Diff(want, readAll(t, openFile(t, dir, "first"))); diff != "" {
		t.Errorf("items reopened with the passphrase (-want +got):\n%s", diff)
	}
	assertPrivate(t, dir)
	assertNoPlaintext(t, dir, "value-canary-01", "item-01")
	if err := before.Set(ctx, "stale", NewSecret("x")); err == nil || !strings.Contains(err.Error(), "re-keyed") {
		t.Errorf("Set through a Store opened before the re-key = %v, want a re-keyed error", err)
	}
	if _, err := before.Get(ctx, "item-00"); err == nil || !strings.Contains(err.Error(), "re-keyed") {
		t.Errorf("Get through a Store opened before the re-key = %v, want a re-keyed error", err)
	}

	// On an encrypted store, Encrypt changes the passphrase.
	if err := s.Encrypt(ctx, []byte("second")); err != nil {
		t.Fatalf("Encrypt (change passphrase): %v", err)
	}
	if _, err := Open(ctx, &Options{Backend: BackendFile, Dir: dir, Passphrase: func() ([]byte, error) { return []byte("first"), nil }}); err == nil {
		t.Error("the old passphrase still opens the store")
	}
	if diff := cmp.Diff(want, readAll(t, openFile(t, dir, "second"))); diff != "" {
		t.Errorf("items after the passphrase change (-want +got):\n%s", diff)
	}

	if err := s.Decrypt(ctx); err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	s2 := openNoKey(t, dir)
	if s.Protection() != PermissionsOnly || s2.Protection() != PermissionsOnly {
		t.Errorf("after Decrypt: protection %v, reopened %v", s.Protection(), s2.Protection())
	}
	if diff := cmp.Diff(want, readAll(t, s2)); diff != "" {
		t.Errorf("items after Decrypt (-want +got):\n%s", diff)
	}
	assertPrivate(t, dir)
	assertNoPlaintext(t, dir, "value-canary-01", "item-01")
	if got, want := siblings(t, dir), []string{"store", "store.lock"}; !slices.Equal(got, want) {
		t.Errorf("beside the store after three re-keys: %q, want only %q", got, want)
	}
}

// TestRekeyCrashIsRecovered: what a re-key that died leaves behind (the
// half-built new store; or, without RENAME_EXCHANGE, the old store renamed
// aside) is cleaned up or put back by the next Open, items intact.
func TestRekeyCrashIsRecovered(t *testing.T) {
	noKeySource(t)
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	s := openNoKey(t, dir)
	if err := s.Set(ctx, "tok", NewSecret("v1")); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Dir(dir)

	// Died while building: a half-written sibling.
	half := filepath.Join(parent, ".store"+rekeyInfix+"0011223344556677")
	if err := os.Mkdir(half, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, headerName), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := openNoKey(t, dir).Get(ctx, "tok"); err != nil || v.Reveal() != "v1" {
		t.Errorf("Get after a crashed re-key: %v", err)
	}
	if got := siblings(t, dir); !slices.Equal(got, []string{"store", "store.lock"}) {
		t.Errorf("after Open, beside the store: %q; want the leftover removed", got)
	}

	// Died between the fallback's two renames: no store at the path, the
	// old one aside and the new one built.
	if err := copyStore(dir, filepath.Join(parent, ".store"+rekeyInfix+"8899aabbccddeeff")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, filepath.Join(parent, ".store"+prevInfix+"0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	s2 := openNoKey(t, dir)
	if v, err := s2.Get(ctx, "tok"); err != nil || v.Reveal() != "v1" {
		t.Errorf("Get after a crash between the renames: %v (want the old store back)", err)
	}
	if got := siblings(t, dir); !slices.Equal(got, []string{"store", "store.lock"}) {
		t.Errorf("after recovery, beside the store: %q", got)
	}

	// The fallback swap itself works where RENAME_EXCHANGE does not.
	nf := filepath.Join(parent, ".store"+rekeyInfix+"ffeeddccbbaa9988")
	if err := copyStore(dir, nf); err != nil {
		t.Fatal(err)
	}
	if err := swapDirsFallback(nf, dir); err != nil {
		t.Fatalf("swapDirsFallback: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, headerName)); err != nil {
		t.Errorf("after the fallback swap: %v", err)
	}
	if _, err := os.Stat(filepath.Join(nf, headerName)); err != nil {
		t.Errorf("after the fallback swap, the old store is not at the temp name: %v", err)
	}
}

func copyStore(from, to string) error {
	if err := os.Mkdir(to, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
