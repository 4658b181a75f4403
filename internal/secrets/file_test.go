//go:build unix

package secrets

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFileRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openFile(t, dir, "correct horse")
	ctx := t.Context()

	if got := s.Backend(); got != "encrypted file ("+dir+")" {
		t.Errorf("Backend() = %q", got)
	}
	if _, err := s.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(missing) = %v, want ErrNotFound", err)
	}
	for name, v := range map[string]string{"github-token": "ghp_one", "api:key": "sk-two", "other": "three"} {
		if err := s.Set(ctx, name, NewSecret(v)); err != nil {
			t.Fatalf("Set(%q): %v", name, err)
		}
	}
	if err := s.Set(ctx, "github-token", NewSecret("ghp_replaced")); err != nil {
		t.Fatalf("Set(replace): %v", err)
	}

	// A second Store on the same directory (another moat process) reads them.
	s2 := openFile(t, dir, "correct horse")
	got, err := s2.Get(ctx, "github-token")
	if err != nil || got.Reveal() != "ghp_replaced" {
		t.Errorf("Get(github-token) = %v, %v; want the replaced value", got.Reveal() == "ghp_replaced", err)
	}
	items, err := s2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := s2.Backend()
	want := []Item{{"api:key", b}, {"github-token", b}, {"other", b}}
	if diff := cmp.Diff(want, items); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}

	if err := s2.Delete(ctx, "other"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s2.Delete(ctx, "other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Set(ctx, "empty", NewSecret("")); err == nil {
		t.Error("Set of an empty value succeeded")
	}
	if err := s.Set(ctx, "../escape", NewSecret("x")); err == nil {
		t.Error("Set with name ../escape succeeded")
	}
}

func TestFileModesUnderHostileUmask(t *testing.T) {
	// The temp dir first: made under umask 0 it would be 0777, which the
	// store rightly refuses as a parent.
	dir := filepath.Join(t.TempDir(), "a", "b", "secrets")
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	s := openFile(t, dir, "pw")
	if err := s.Set(t.Context(), "tok", NewSecret("v")); err != nil {
		t.Fatal(err)
	}
	checkMode := func(path string, want fs.FileMode) {
		t.Helper()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %04o under umask 0000, want %04o", path, got, want)
		}
	}
	checkMode(dir, 0o700)
	checkMode(filepath.Join(dir, headerName), 0o600)
	checkMode(filepath.Join(dir, itemFile("tok")), 0o600)
	checkMode(filepath.Dir(dir), 0o700) // parents moat created
}

func TestFileRefusesLoosePermissions(t *testing.T) {
	tests := []struct {
		name     string
		path     func(dir string) string
		mode     fs.FileMode
		wantHint string // %s is the path
	}{
		{"item 0644", func(d string) string { return filepath.Join(d, itemFile("tok")) }, 0o644, "chmod 600 %s"},
		{"item 0604", func(d string) string { return filepath.Join(d, itemFile("tok")) }, 0o604, "chmod 600 %s"},
		{"header 0640", func(d string) string { return filepath.Join(d, headerName) }, 0o640, "chmod 600 %s"},
		{"dir 0755", func(d string) string { return d }, 0o755, "chmod 700 %s"},
		{"dir 0701", func(d string) string { return d }, 0o701, "chmod 700 %s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			s := openFile(t, dir, "pw")
			ctx := t.Context()
			if err := s.Set(ctx, "tok", NewSecret("v")); err != nil {
				t.Fatal(err)
			}
			p := tt.path(dir)
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			hint := strings.ReplaceAll(tt.wantHint, "%s", p)
			check := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s succeeded with %s at %04o", what, p, tt.mode)
				}
				var he *HintError
				if !errors.As(err, &he) || !strings.Contains(strings.Join(he.hints, "\n"), hint) {
					t.Errorf("%s error = %v (hints %v), want hint %q", what, err, he, hint)
				}
			}
			if !strings.Contains(tt.name, "header") {
				_, err := s.Get(ctx, "tok")
				check("Get", err)
				_, err = s.List(ctx)
				check("List", err)
			}
			_, err := Open(ctx, &Options{Backend: BackendFile, Dir: dir, Passphrase: func() ([]byte, error) { return []byte("pw"), nil }})
			if !strings.Contains(tt.name, "item") {
				check("Open", err)
			}
			// Following the hint makes the store usable again.
			if err := os.Chmod(p, map[bool]fs.FileMode{true: 0o700, false: 0o600}[strings.HasPrefix(tt.name, "dir")]); err != nil {
				t.Fatal(err)
			}
			if v, err := s.Get(ctx, "tok"); err != nil || v.Reveal() != "v" {
				t.Errorf("after the chmod, Get = %v", err)
			}
		})
	}
}

func TestFileRefusesSymlinks(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "store")
	s := openFile(t, dir, "pw")
	ctx := t.Context()
	if err := s.Set(ctx, "real", NewSecret("v")); err != nil {
		t.Fatal(err)
	}
	// An item file that is a symlink to a valid item file is still refused.
	if err := os.Symlink(filepath.Join(dir, itemFile("real")), filepath.Join(dir, itemFile("link"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "link"); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Get through a symlinked item = %v, want a symlink refusal", err)
	}
	// A store directory that is a symlink is refused.
	alias := filepath.Join(root, "alias")
	if err := os.Symlink(dir, alias); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, &Options{Backend: BackendFile, Dir: alias, Passphrase: func() ([]byte, error) { return []byte("pw"), nil }})
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Open on a symlinked dir = %v, want a symlink refusal", err)
	}
}

func TestFileHoldsNoPlaintext(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openFile(t, dir, "pw-canary-passphrase")
	name := "name-canary-42"
	if err := s.Set(t.Context(), name, NewSecret(canary)); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Errorf("store holds %d files, want header + 1 item", len(ents))
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), "canary") {
			t.Errorf("file name %q reveals the item name", e.Name())
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, needle := range []string{canary, name, "pw-canary-passphrase", "canary"} {
			if bytes.Contains(b, []byte(needle)) {
				t.Errorf("%s contains %q in plain text", e.Name(), needle)
			}
		}
	}
}

func TestFileDetectsTampering(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openFile(t, dir, "pw")
	ctx := t.Context()
	if err := s.Set(ctx, "tok", NewSecret(canary)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, itemFile("tok"))
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one bit at every position: each must fail, none may return a value.
	for i := range orig {
		b := bytes.Clone(orig)
		b[i] ^= 0x01
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		v, err := s.Get(ctx, "tok")
		if err == nil {
			t.Fatalf("flipped byte %d: Get returned a value (equal=%v)", i, v.Reveal() == canary)
		}
		if !strings.Contains(err.Error(), "tampered") && !strings.Contains(err.Error(), "format version") {
			t.Errorf("flipped byte %d: error %q does not say tampered", i, err)
		}
		if strings.Contains(err.Error(), canary) {
			t.Errorf("error leaks the value: %v", err)
		}
	}
	// Truncation and swapping another item's file in are tampering too.
	for _, b := range [][]byte{orig[:len(orig)-1], orig[:10], {}} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "tok"); err == nil || !strings.Contains(err.Error(), "tampered") {
			t.Errorf("truncated to %d bytes: Get = %v, want tampered", len(b), err)
		}
	}
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "other", NewSecret("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, filepath.Join(dir, itemFile("other"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "other"); err == nil || !strings.Contains(err.Error(), "tampered") {
		t.Errorf("item file moved to another name: Get = %v, want tampered", err)
	}
}

func TestFileWrongPassphrase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openFile(t, dir, "right")
	if err := s.Set(t.Context(), "tok", NewSecret("v")); err != nil {
		t.Fatal(err)
	}
	_, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: dir, Passphrase: func() ([]byte, error) { return []byte("wrong"), nil }})
	if err == nil || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("Open with the wrong passphrase = %v, want a wrong passphrase error", err)
	}
	// A tampered header (here: the salt) reads as a wrong passphrase too,
	// and never as an empty store.
	hp := filepath.Join(dir, headerName)
	h, err := os.ReadFile(hp)
	if err != nil {
		t.Fatal(err)
	}
	h[len(headerMagic)+1+9] ^= 0xff
	if err := os.WriteFile(hp, h, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), &Options{Backend: BackendFile, Dir: dir, Passphrase: func() ([]byte, error) { return []byte("right"), nil }})
	if err == nil || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("Open with a tampered salt = %v, want a wrong passphrase error", err)
	}
}

// TestFileNeedsAKeySourceOnceEncrypted: a store created with
// MOAT_PASSPHRASE is encrypted for good; opening it without any key source
// fails and names every key source.
func TestFileNeedsAKeySourceOnceEncrypted(t *testing.T) {
	noKeySource(t)
	dir := filepath.Join(t.TempDir(), "store")
	t.Setenv("MOAT_PASSPHRASE", "from-env")
	s, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: dir})
	if err != nil {
		t.Fatalf("Open with MOAT_PASSPHRASE: %v", err)
	}
	if s.Protection() != Encrypted {
		t.Errorf("a store created with MOAT_PASSPHRASE has protection %v, want encrypted", s.Protection())
	}
	if err := s.Set(t.Context(), "tok", NewSecret("v")); err != nil {
		t.Fatal(err)
	}
	openFile(t, dir, "from-env") // the same passphrase given by function

	t.Setenv("MOAT_PASSPHRASE", "")
	_, err = Open(t.Context(), &Options{Backend: BackendFile, Dir: dir})
	var he *HintError
	if !errors.As(err, &he) {
		t.Fatalf("Open of an encrypted store without a key source = %v, want a HintError", err)
	}
	hints := strings.Join(he.Hints(), "\n")
	for _, want := range []string{"MOAT_PASSPHRASE", "systemd credential moat-passphrase", "LoadCredential=moat-passphrase:"} {
		if !strings.Contains(hints, want) {
			t.Errorf("hints %q do not name the key source %q", hints, want)
		}
	}
	for _, never := range []string{"decrypt", "permissions only", "require_encryption"} {
		if strings.Contains(err.Error()+hints, never) {
			t.Errorf("error %v (hints %q) suggests switching the protection off (%q)", err, hints, never)
		}
	}
}

// A crash between writing the temp file and renaming it must leave the old
// value readable, and the temp file must be ignored, then cleaned up.
func TestFileCrashBetweenWriteAndRename(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openFile(t, dir, "pw")
	ctx := t.Context()
	if err := s.Set(ctx, "tok", NewSecret("old")); err != nil {
		t.Fatal(err)
	}
	fst := s.b.(*fileStore)
	data, err := fst.seal("tok", NewSecret("new"))
	if err != nil {
		t.Fatal(err)
	}
	// The first half of replace: the process "dies" before the rename.
	tmp, err := fst.writeTemp(data)
	if err != nil {
		t.Fatal(err)
	}
	// And a torn temp write (half the bytes) from another crash.
	torn, err := fst.writeTemp(data[:len(data)/2])
	if err != nil {
		t.Fatal(err)
	}

	s2 := openFile(t, dir, "pw") // restart
	if v, err := s2.Get(ctx, "tok"); err != nil || v.Reveal() != "old" {
		t.Errorf("after the crash Get = %v, equal old: %v; want the old value", err, v.Reveal() == "old")
	}
	items, err := s2.List(ctx)
	if err != nil || len(items) != 1 || items[0].Name != "tok" {
		t.Errorf("after the crash List = %v, %v; want just tok", items, err)
	}
	// Young temp files may belong to a live writer and stay; old ones go.
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("a fresh temp file was removed: %v", err)
	}
	old := time.Now().Add(-2 * staleTemp)
	for _, p := range []string{tmp, torn} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	openFile(t, dir, "pw")
	for _, p := range []string{tmp, torn} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temp file %s survived Open (%v)", p, err)
		}
	}
	// A completed write still works after all this.
	if err := s2.Set(ctx, "tok", NewSecret("new")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get(ctx, "tok"); err != nil || v.Reveal() != "new" {
		t.Errorf("Get after a full replace = %v, want the new value", err)
	}
}

func TestFileRefusesOtherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	dir := filepath.Join(t.TempDir(), "store")
	s := openFile(t, dir, "pw")
	if err := s.Set(t.Context(), "tok", NewSecret("v")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, itemFile("tok"))
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(t.Context(), "tok")
	var he *HintError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "uid 65534") ||
		!strings.Contains(strings.Join(he.hints, " "), "chown root "+p) {
		t.Errorf("Get of a file owned by another user = %v, want a refusal with a chown hint", err)
	}
}

// BenchmarkOpenDefaultKDF measures what each moat start pays to unlock the
// file store with the real Argon2id costs.
func BenchmarkOpenDefaultKDF(b *testing.B) {
	saved := defaultKDF
	defaultKDF = kdfParams{time: 3, memory: 64 << 10, threads: 4}
	defer func() { defaultKDF = saved }()
	dir := filepath.Join(b.TempDir(), "store")
	opts := &Options{Backend: BackendFile, Dir: dir, Passphrase: func() ([]byte, error) { return []byte("pw"), nil }}
	for b.Loop() {
		if _, err := Open(b.Context(), opts); err != nil {
			b.Fatal(err)
		}
	}
}

// A store under a directory another user can write is that user's to swap,
// whatever the store's own modes (issue 20, item 5): refused on open and
// on every read, with the chmod that fixes the directory.
func TestFileRefusesUnsafeParentDirectory(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "secrets")
	s := openFile(t, dir, "pw")
	if err := s.Set(t.Context(), "tok", NewSecret("v")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"Get": func() error { _, err := s.Get(t.Context(), "tok"); return err }(),
		"Open": func() error {
			_, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: dir, Passphrase: func() ([]byte, error) { return []byte("pw"), nil }})
			return err
		}(),
	} {
		var he *HintError
		if !errors.As(err, &he) || !strings.Contains(err.Error(), "directory "+parent) ||
			!strings.Contains(strings.Join(he.hints, " "), "chmod go-w "+parent) {
			t.Errorf("%s with the store's parent at 0777 = %v, want a refusal naming %s with the chmod fix", what, err, parent)
		}
	}
}

// TestNewPassphraseOnlyCreates: a new store takes its passphrase from
// Options.NewPassphrase (the prompt that asks twice); an existing one is
// opened with Options.Passphrase, never asking for a new one.
func TestNewPassphraseOnlyCreates(t *testing.T) {
	t.Setenv(PassphraseEnv, "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	dir := filepath.Join(t.TempDir(), "store")
	fail := func() ([]byte, error) { t.Error("the wrong prompt was asked"); return nil, errors.New("no") }
	s, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: dir, Passphrase: fail,
		NewPassphrase: func() ([]byte, error) { return []byte("typed twice"), nil }})
	if err != nil || s.Protection() != Encrypted {
		t.Fatalf("creating with NewPassphrase: %v (protection %v)", err, s.Protection())
	}
	if _, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: dir, NewPassphrase: fail,
		Passphrase: func() ([]byte, error) { return []byte("typed twice"), nil }}); err != nil {
		t.Errorf("opening with Passphrase: %v", err)
	}
}

// TestKey: a key is created once and read back the same; without create a
// missing one is ErrNotFound; a stored value that is not a key of the size
// is ErrDamagedKey, never replaced by a new key (which could not read what
// the old one protected).
func TestKey(t *testing.T) {
	s, err := Open(t.Context(), &Options{Backend: BackendFile, Dir: filepath.Join(t.TempDir(), "secrets")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Key(t.Context(), "k", 32, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Key without create on a missing key = %v, want ErrNotFound", err)
	}
	a, err := s.Key(t.Context(), "k", 32, true)
	if err != nil || len(a) != 32 {
		t.Fatalf("Key = %x, %v", a, err)
	}
	b, err := s.Key(t.Context(), "k", 32, false)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("Key again = %x, %v; want the first key", b, err)
	}
	if err := s.Set(t.Context(), "bad", NewSecret("not base64!")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Key(t.Context(), "bad", 32, true); !errors.Is(err, ErrDamagedKey) {
		t.Fatalf("Key of a damaged value = %v, want ErrDamagedKey", err)
	}
}
