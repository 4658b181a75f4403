// Package secrets stores credentials (API keys, OAuth tokens) and Moat's own
// keys (audit, pins).
//
// A [Store] keeps named [Secret] values in one of two back ends:
//
//   - the OS keychain, through github.com/zalando/go-keyring (Secret Service
//     on Linux, Keychain on macOS, Credential Manager on Windows);
//   - a file store, used when no keychain answers (or when asked for): one
//     XChaCha20-Poly1305 file per item in a 0700 directory, files 0600.
//
// # Protection at rest
//
// [Store.Protection] says which of three protections is in force. The file
// store's header decides its mode for good, so the mode never changes
// silently:
//
//   - [Encrypted]: the key is derived with Argon2id from a passphrase. A new
//     store is encrypted when a key source answers, in this order:
//     [Options.Passphrase] (a prompt), MOAT_PASSPHRASE, the systemd
//     credential $CREDENTIALS_DIRECTORY/moat-passphrase. Opening it with no
//     key source fails with a [HintError] naming every key source.
//   - [PermissionsOnly]: with no key source at creation, the random key is
//     kept in the header itself, so the 0600/0700 modes and the owner check
//     are the protection. Such a store stays permissions-only when a key
//     source appears later, until [Store.Encrypt]. [Options.RequireEncryption]
//     refuses to create or open one.
//   - [Keychain].
//
// [Store.Encrypt] and [Store.Decrypt] move between the file store's modes:
// the store is rebuilt in a sibling directory and swapped in atomically
// (renameat2 RENAME_EXCHANGE on Linux); the next Open cleans up after a
// re-key that crashed.
//
// # Guarantees
//
// Every write (Set, Delete, GetOrCreate, Encrypt, Decrypt) holds an
// exclusive flock on [LockPath] of the store's directory, for the keychain
// back end too (its index item is read, modified and written), so writers
// in several processes lose nothing, and [Store.GetOrCreate] gives
// processes that race to create one key the same value. A writer whose
// store was re-keyed by another process since it opened refuses to write
// with its old key.
//
// Every keychain call runs under a deadline ([Options.Timeout]), because
// go-keyring can block forever on a session bus that accepts but never
// answers. A call that times out is abandoned: its goroutine stays blocked
// inside go-keyring until the bus answers or the process exits. At most one
// such goroutine exists per process, because keychain calls are serialized
// through a process-wide slot that a stuck call keeps, and later calls fail
// at once while it is held (see keychain.go).
//
// Files and the directory are created with their final modes whatever the
// umask, replaced atomically, and checked on every read: a file or
// directory that the group or others can access, or that another user
// owns, is refused with the exact chmod to run. An item's file name is the
// SHA-256 of its name, and the name is the associated data of its
// ciphertext, so files cannot be swapped between items. Names and values
// are never in plain text on disk, in either mode.
//
// Secret values never appear in errors, logs or listings: [Store.List]
// returns names only, and [Secret] prints as "REDACTED".
package secrets

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrNotFound is returned (wrapped; test with errors.Is) when an item does not exist.
var ErrNotFound = errors.New("secrets: no such secret")

// Back-end names accepted by [Options.Backend].
const (
	BackendAuto     = "auto"
	BackendKeychain = "keychain"
	BackendFile     = "file"
)

// DefaultTimeout bounds each keychain call when [Options.Timeout] is zero.
const DefaultTimeout = 3 * time.Second

// DefaultService is the keychain service name used when [Options.Service] is empty.
const DefaultService = "moat"

// maxValueLen bounds one secret value; OAuth tokens and API keys are far smaller.
const maxValueLen = 64 << 10

// Options configure [Open]. The zero value (or nil) means: keychain if it
// answers, else the file store, encrypted when a key source answers.
type Options struct {
	// Backend is "auto" (the default: keychain if it answers within Timeout,
	// else the encrypted file store), "keychain" or "file".
	Backend string
	// Dir is the file store's directory; "" means $XDG_DATA_HOME/moat/secrets,
	// or ~/.local/share/moat/secrets.
	Dir string
	// Passphrase returns the file store's passphrase (a prompt). It is
	// asked first, and only when a passphrase is needed: to open an
	// encrypted store, or to create one. nil means MOAT_PASSPHRASE, then
	// the systemd credential moat-passphrase.
	Passphrase func() ([]byte, error)
	// NewPassphrase, if set, is asked instead of Passphrase when a new
	// encrypted store is created: a prompt that has the passphrase typed
	// twice, since a typo there locks the store for good.
	NewPassphrase func() ([]byte, error)
	// Timeout bounds each keychain call; 0 means DefaultTimeout.
	Timeout time.Duration
	// Service is the keychain service name; "" means DefaultService.
	Service string
	// RequireEncryption refuses to create or open a file store protected
	// by permissions only (config secrets.require_encryption).
	RequireEncryption bool
}

// Protection says what protects a Store's secrets at rest.
type Protection int

const (
	// Keychain: the OS keychain holds them.
	Keychain Protection = iota + 1
	// Encrypted: the file store, encrypted with a key derived from a
	// passphrase (MOAT_PASSPHRASE, the systemd credential moat-passphrase
	// or a prompt).
	Encrypted
	// PermissionsOnly: the file store with its key in its own header, so
	// only the 0600/0700 modes (checked on every read) and the owner keep
	// other users out; anyone who can read the user's files can read them.
	PermissionsOnly
)

func (p Protection) String() string {
	switch p {
	case Keychain:
		return "keychain"
	case Encrypted:
		return "encrypted"
	case PermissionsOnly:
		return "permissions only"
	}
	return fmt.Sprintf("Protection(%d)", int(p))
}

// An Item names a stored secret and where it is kept. It never holds the value.
type Item struct {
	Name    string
	Backend string
}

// A HintError is an error a person can fix; Hints says how, one line each.
type HintError struct {
	Err   error
	hints []string
}

func (e *HintError) Error() string   { return e.Err.Error() }
func (e *HintError) Unwrap() error   { return e.Err }
func (e *HintError) Hints() []string { return e.hints }

// backend is what a Store needs from the keychain or the file store. Names
// are validated before they reach it.
type backend interface {
	get(ctx context.Context, name string) (Secret, error)
	set(ctx context.Context, name string, v Secret) error
	delete(ctx context.Context, name string) error
	list(ctx context.Context) ([]string, error)
	describe() string
	protection() Protection
	// lockPath is the file whose flock serializes writers across
	// processes ("" for none).
	lockPath() string
}

// A Store holds named secrets in one back end. It is safe for concurrent
// use, within a process and across processes: every write (Set, Delete,
// GetOrCreate, Encrypt, Decrypt) holds an exclusive flock on a lock file
// beside the file store (LockPath), for the keychain back end too, whose
// index item is read, modified and written.
type Store struct {
	mu       sync.Mutex // serializes operations within the process
	b        backend
	fallback error // why the keychain was not used in auto mode; nil otherwise
	require  bool  // Options.RequireEncryption
}

// Open returns a Store using the back end that o selects. In auto mode it
// asks the keychain once, within o.Timeout, and falls back to the file store
// if the keychain fails or does not answer; [Store.Fallback] says why.
func Open(ctx context.Context, o *Options) (*Store, error) {
	var opt Options
	if o != nil {
		opt = *o
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Service == "" {
		opt.Service = DefaultService
	}
	switch opt.Backend {
	case "", BackendAuto:
		kc := newKeychain(opt.Service, opt.Timeout, keychainLock(opt))
		err := kc.probe(ctx)
		if err == nil {
			return &Store{b: kc, require: opt.RequireEncryption}, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		fs, ferr := openFileStore(opt)
		if ferr != nil {
			return nil, withKeychainReason(ferr, err)
		}
		return &Store{b: fs, fallback: err, require: opt.RequireEncryption}, nil
	case BackendKeychain:
		kc := newKeychain(opt.Service, opt.Timeout, keychainLock(opt))
		if err := kc.probe(ctx); err != nil {
			return nil, err
		}
		return &Store{b: kc, require: opt.RequireEncryption}, nil
	case BackendFile:
		fs, err := openFileStore(opt)
		if err != nil {
			return nil, err
		}
		return &Store{b: fs, require: opt.RequireEncryption}, nil
	default:
		return nil, &HintError{
			Err:   fmt.Errorf("secrets: unknown back end %q", opt.Backend),
			hints: []string{`use "auto", "keychain" or "file"`},
		}
	}
}

// keychainLock is the keychain back end's cross-process lock: the one of
// the file store o names, so both back ends of one user share it. "" (no
// lock) when no directory can be found.
func keychainLock(o Options) string {
	if o.Dir != "" {
		if d, err := filepath.Abs(o.Dir); err == nil {
			return LockPath(d)
		}
	}
	d, err := DefaultDir()
	if err != nil {
		return ""
	}
	return LockPath(d)
}

// withKeychainReason adds, to a file-store error in auto mode, why the
// keychain was not used: the user may rather fix the keychain.
func withKeychainReason(ferr, kerr error) error {
	var he *HintError
	if errors.As(ferr, &he) {
		return &HintError{
			Err:   fmt.Errorf("%w (the keychain was not usable: %v)", he.Err, kerr),
			hints: he.hints,
		}
	}
	return fmt.Errorf("%w (the keychain was not usable: %v)", ferr, kerr)
}

// Backend describes where this Store keeps secrets, for people:
// "keychain (Secret Service)" or "encrypted file (DIR)".
func (s *Store) Backend() string { return s.b.describe() }

// Protection says what protects this Store's secrets at rest.
func (s *Store) Protection() Protection { return s.b.protection() }

// Fallback returns why the keychain was not used when Open chose the file
// store in auto mode, and nil otherwise.
func (s *Store) Fallback() error { return s.fallback }

// Get returns the secret called name, or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, name string) (Secret, error) {
	if err := ValidateName(name); err != nil {
		return Secret{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.b.get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		hints := []string{"store it with `moat secret set " + name + "`"}
		if s.fallback != nil {
			hints = append(hints, "the keychain was not usable ("+s.fallback.Error()+"), so "+
				s.b.describe()+" was searched; a secret kept in the keychain is there once it answers again")
		}
		return Secret{}, &HintError{
			Err:   fmt.Errorf("%w: %q in %s", ErrNotFound, name, s.b.describe()),
			hints: hints,
		}
	}
	return v, err
}

// Set stores value under name, replacing any earlier value.
func (s *Store) Set(ctx context.Context, name string, value Secret) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := checkValue(name, value); err != nil {
		return err
	}
	return s.locked(func() error { return s.b.set(ctx, name, value) })
}

// locked runs f holding the Store's mutex and the cross-process lock.
func (s *Store) locked(f func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := lockStore(s.b.lockPath())
	if err != nil {
		return err
	}
	defer unlock()
	return f()
}

// checkValue refuses values the store does not keep.
func checkValue(name string, value Secret) error {
	if value.IsZero() {
		return fmt.Errorf("secrets: refusing to store an empty value for %q", name)
	}
	if len(value.Reveal()) > maxValueLen {
		return fmt.Errorf("secrets: the value for %q is %d bytes; the limit is %d", name, len(value.Reveal()), maxValueLen)
	}
	return nil
}

// GetOrCreate returns the secret called name; if there is none, it stores
// the value gen returns and returns that. Reading, generating and storing
// happen under the cross-process lock, so processes that call GetOrCreate
// for one name at once all get the same value: the first one's.
func (s *Store) GetOrCreate(ctx context.Context, name string, gen func() (Secret, error)) (Secret, error) {
	if err := ValidateName(name); err != nil {
		return Secret{}, err
	}
	var v Secret
	err := s.locked(func() error {
		var err error
		v, err = s.b.get(ctx, name)
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		if v, err = gen(); err != nil {
			return err
		}
		if err := checkValue(name, v); err != nil {
			return err
		}
		return s.b.set(ctx, name, v)
	})
	if err != nil {
		return Secret{}, err
	}
	return v, nil
}

// Update replaces the secret called name with what f makes of its current
// value (found is false when there is none), reading and writing under the
// cross-process lock, so that processes updating one item at once (two
// `moat token create`) each see the other's change. An error from f
// changes nothing.
func (s *Store) Update(ctx context.Context, name string, f func(cur Secret, found bool) (Secret, error)) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	return s.locked(func() error {
		cur, err := s.b.get(ctx, name)
		found := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		next, err := f(cur, found)
		if err != nil {
			return err
		}
		if err := checkValue(name, next); err != nil {
			return err
		}
		return s.b.set(ctx, name, next)
	})
}

// ErrDamagedKey is wrapped by Key's error when the stored key is not size
// bytes of base64: restore it from a backup, since a new key cannot read
// what the old one protected.
var ErrDamagedKey = errors.New("is damaged; restore it from a backup (a new key cannot read what the old one protected)")

// Key returns the random key of size bytes stored base64-encoded under
// name. With create, a missing key is generated and stored (under the
// store's lock, so processes starting at once keep one key); without, its
// absence is an error wrapping ErrNotFound.
func (s *Store) Key(ctx context.Context, name string, size int, create bool) ([]byte, error) {
	v, err := s.Get(ctx, name)
	if errors.Is(err, ErrNotFound) && create {
		v, err = s.GetOrCreate(ctx, name, func() (Secret, error) {
			b := make([]byte, size)
			rand.Read(b)
			return NewSecret(base64.StdEncoding.EncodeToString(b)), nil
		})
	}
	if err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(v.Reveal())
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("key %q in the %s %w", name, s.Backend(), ErrDamagedKey)
	}
	return b, nil
}

// Delete removes the secret called name; it returns an error wrapping
// ErrNotFound if there was none.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	err := s.locked(func() error { return s.b.delete(ctx, name) })
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %q in %s", ErrNotFound, name, s.b.describe())
	}
	return err
}

// List returns the stored items sorted by name. It never reads values into
// the result.
func (s *Store) List(ctx context.Context) ([]Item, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.b.list(ctx)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	items := make([]Item, 0, len(names))
	for _, n := range names {
		items = append(items, Item{Name: n, Backend: s.b.describe()})
	}
	return items, nil
}

// maxNameLen bounds item names; keychains show them, and they travel in config.
const maxNameLen = 200

// ValidateName reports whether name can name a secret: 1 to 200 characters
// from A-Z a-z 0-9 and _.:@+=- , starting with a letter, digit or _. The
// rule keeps names printable, free of path separators and usable in
// ${secret:NAME}; names are never file names either way. A leading "." is
// reserved for moat's own items.
func ValidateName(name string) error {
	bad := func(why string) error {
		return &HintError{
			Err: fmt.Errorf("secrets: invalid secret name %q: %s", name, why),
			hints: []string{"use 1 to 200 characters from A-Z a-z 0-9 _ . : @ + = -, starting with a letter, digit or _, " +
				"for example github-token"},
		}
	}
	if name == "" {
		return bad("it is empty")
	}
	if len(name) > maxNameLen {
		return bad("it is longer than 200 characters")
	}
	if !isAlnum(name[0]) && name[0] != '_' {
		return bad("it must start with a letter, digit or _")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && !strings.ContainsRune("_.:@+=-", rune(c)) {
			return bad(fmt.Sprintf("character %q is not allowed", c))
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// TokenKey returns the item name under which an OAuth token for (server
// name, url, client id) is stored: "oauth:" and 32 hex digits of a SHA-256
// over the three length-prefixed fields. A token is thus found only for the
// exact server, url and client it was issued for: renaming a server or
// changing its url looks up a different item. Server names never become
// file or item names verbatim.
func TokenKey(server, url, clientID string) string {
	h := sha256.New()
	h.Write([]byte("moat-oauth-token-v1\x00"))
	for _, f := range []string{server, url, clientID} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return "oauth:" + hex.EncodeToString(h.Sum(nil))[:32]
}

// DefaultDir returns the file store's default directory:
// $XDG_DATA_HOME/moat/secrets, or ~/.local/share/moat/secrets.
func DefaultDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "moat", "secrets"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("secrets: cannot find the secret store directory: %w", err)
	}
	return filepath.Join(home, ".local", "share", "moat", "secrets"), nil
}

// Encrypt re-keys the file store under a key derived from pass (Argon2id):
// a store protected by permissions only becomes encrypted, and an
// encrypted one gets the new passphrase. Every item is kept. The new store
// is built beside the old one and swapped in atomically, under the
// cross-process lock; other moat processes that opened the store before
// refuse to write with the old key and say to restart.
func (s *Store) Encrypt(ctx context.Context, pass []byte) error {
	if len(pass) == 0 {
		return &HintError{
			Err:   errors.New("secrets: the new passphrase is empty"),
			hints: []string{"choose a non-empty passphrase"},
		}
	}
	return s.rekey(ctx, pass)
}

// Decrypt re-keys the file store to be protected by permissions only: its
// key then lives in the store's header, and the 0600/0700 modes are the
// protection. It is refused under Options.RequireEncryption.
func (s *Store) Decrypt(ctx context.Context) error {
	if s.require {
		return &HintError{
			Err: fmt.Errorf("secrets: secrets.require_encryption is set in the config, so the store in %s stays encrypted",
				s.b.describe()),
			hints: []string{"to change the passphrase instead, run `moat secret encrypt`"},
		}
	}
	return s.rekey(ctx, nil)
}

func (s *Store) rekey(ctx context.Context, pass []byte) error {
	fs, ok := s.b.(*fileStore)
	if !ok {
		return &HintError{
			Err:   fmt.Errorf("secrets: the secrets are in the %s, which protects them itself; encrypt and decrypt act on the file store", s.b.describe()),
			hints: []string{"add --backend file to act on the file store"},
		}
	}
	return s.locked(func() error { return fs.rekey(ctx, pass) })
}

// KeySource names where an encrypted file store's key came from
// (MOAT_PASSPHRASE, the systemd credential, the passphrase prompt or
// [SourceKernelKeyring]); "" for other stores.
func (s *Store) KeySource() string {
	if fs, ok := s.b.(*fileStore); ok {
		return fs.keySource()
	}
	return ""
}

// Unlock puts the encrypted file store's key in the kernel's user keyring,
// so that every later Open by this user finds it there without a
// passphrase, until ttl passes (0: until reboot) or [Lock]. Only the
// derived key is kept, never the passphrase. Linux only.
func (s *Store) Unlock(ttl time.Duration) error {
	fs, ok := s.b.(*fileStore)
	if !ok || fs.protection() != Encrypted {
		return &HintError{
			Err: fmt.Errorf("secrets: nothing to unlock: the secrets are in the %s, which needs no passphrase", s.b.describe()),
			hints: []string{"moat unlock is for a file store encrypted with a passphrase " +
				"(`moat secret encrypt` makes one)"},
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fs.unlockKeyring(ttl)
}

// Lock removes from the kernel keyring the key that `moat unlock` left for
// the file store o names; false when there was none. It needs no
// passphrase.
func Lock(o *Options) (bool, error) {
	var opt Options
	if o != nil {
		opt = *o
	}
	return lockFileStore(opt)
}

// ForIdentity names identity's own value of the secret name: what a
// gateway's per-user server of that identity reads for ${secret:NAME}
// (`moat secret set --identity IDENTITY NAME`). A config cannot refer to
// it directly ('@' is not allowed in its secret names), so no shared
// server reads a user's secret.
func ForIdentity(name, identity string) string { return name + "@" + identity }
