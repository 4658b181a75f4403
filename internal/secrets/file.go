//go:build unix

package secrets

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/moatmcp/moat/internal/safepath"
)

// On-disk format, version 1. All integers are big-endian.
//
// header file "header", encrypted store (a passphrase):
//
//	"MOATKEYS" | version=1 | argon2 time u32 | memory KiB u32 | threads u8 | salt[16] |
//	nonce[24] | XChaCha20-Poly1305(key, 32 zero bytes, AD = all preceding bytes)
//
// The sealed zeros let Open tell a wrong passphrase from a tampered item,
// and authenticate the KDF parameters and salt.
//
// header file "header", permissions-only store (no key source when it was
// created): the same prefix with time, memory and threads all zero (no
// KDF), then the 32-byte key in clear:
//
//	"MOATKEYS" | version=1 | 0 u32 | 0 u32 | 0 u8 | salt[16] (zeros) | key[32]
//
// The one header, linked into place atomically, decides the mode: two
// processes creating the store at once cannot leave two modes. Items have
// the same format in both modes.
//
// item file hex(sha256(name)):
//
//	"MOATITEM" | version=1 | nonce[24] | len u16 | seal(name, AD = "name\0" + file name) |
//	nonce[24] | seal(value, AD = "value\0" + name)
//
// The name is sealed so that List can show names without knowing them in
// advance; binding it to the file name stops files being swapped or renamed.
const (
	headerMagic   = "MOATKEYS"
	itemMagic     = "MOATITEM"
	formatVersion = 1
	headerName    = "header"
	tmpPrefix     = ".tmp-"
	saltLen       = 16
	maxFileLen    = maxValueLen + 4096
	// staleTemp is how old a temp file must be before Open removes it: a
	// younger one may belong to another moat process that is mid-write.
	staleTemp = 10 * time.Minute
)

// kdfParams are the Argon2id costs. They are stored in the header, so they
// can grow later without breaking existing stores.
type kdfParams struct {
	time    uint32
	memory  uint32 // KiB
	threads uint8
}

// defaultKDF follows RFC 9106's second recommended option (64 MiB, 3 passes).
// Tests lower it to keep the suite fast.
// defaultKDF: one thread, so that deriving the key (which moat serve does
// in the background while it already answers the client) leaves the other
// cores to serving; the cost is spent in time and memory instead.
var defaultKDF = kdfParams{time: 3, memory: 64 << 10, threads: 1}

// Limits on the costs read from a header, so a tampered header cannot make
// Open spend minutes or gigabytes before the verifier fails.
const (
	maxKDFTime   = 16
	maxKDFMemory = 1 << 20 // 1 GiB in KiB
)

// oNoFollow makes open fail on a symbolic link instead of following it.
const oNoFollow = syscall.O_NOFOLLOW | syscall.O_CLOEXEC

func isLoop(err error) bool { return errors.Is(err, syscall.ELOOP) }

type fileStore struct {
	dir  string
	lock string // the cross-process lock file; see lockStore
	key  [chacha20poly1305.KeySize]byte
	hdr  []byte     // the header this store was opened with: a re-key changes it
	prot Protection // Encrypted or PermissionsOnly, as the header says
	// unused names a key source (MOAT_PASSPHRASE, the systemd credential)
	// present when the store was opened permissions-only: it is not used
	// until `moat secret encrypt`.
	unused string
	// source names where an encrypted store's key came from: a key source
	// of passphraseFrom, or SourceKernelKeyring.
	source string
}

// SourceKernelKeyring is the key source of a store unlocked by `moat unlock`.
const SourceKernelKeyring = "the kernel keyring (moat unlock)"

func (f *fileStore) protection() Protection { return f.prot }

func (f *fileStore) describe() string {
	if f.prot == Encrypted {
		return "encrypted file (" + f.dir + ")"
	}
	d := "file, protected by permissions only (" + f.dir + ")"
	if f.unused != "" {
		d += "; " + f.unused + " is set but not used: encrypt the store with `moat secret encrypt`"
	}
	return d
}

func (f *fileStore) lockPath() string { return f.lock }

// resolveDir returns the absolute directory of the store o names.
func resolveDir(o Options) (string, error) {
	dir := o.Dir
	if dir == "" {
		d, err := DefaultDir()
		if err != nil {
			return "", err
		}
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	return filepath.Clean(dir), nil
}

// LockPath returns the cross-process lock file of the store in dir: a file
// beside it, dir + ".lock".
func LockPath(dir string) string { return filepath.Clean(dir) + ".lock" }

// openFileStore opens the file store o names, creating it if needed. Its
// header decides the mode for good: encrypted (a passphrase header) or
// permissions-only (a header holding the key). A new store is encrypted
// when a key source answers, else permissions-only unless
// o.RequireEncryption.
func openFileStore(o Options) (*fileStore, error) {
	dir, err := resolveDir(o)
	if err != nil {
		return nil, err
	}
	st := &fileStore{dir: dir, lock: LockPath(dir)}
	hdr, err := st.readFile(headerName)
	if err == nil {
		// The common case: an existing store. Clean up after a re-key that
		// crashed, if no other process is busy with the store.
		if unlock, ok, _ := tryLockStore(st.lock); ok {
			st.recoverRekey()
			unlock()
		}
		if err := st.load(hdr, o); err != nil {
			return nil, err
		}
		st.removeStaleTemps()
		return st, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	// No store yet (or one being swapped by a re-key without
	// RENAME_EXCHANGE). Ask for a passphrase before taking the lock, so a
	// person at a prompt never holds up other processes.
	creating := o
	if o.NewPassphrase != nil {
		creating.Passphrase = o.NewPassphrase
	}
	pass, source, err := passphraseFrom(creating, dir, true)
	if err != nil {
		return nil, err
	}
	defer clear(pass)
	if pass == nil && o.RequireEncryption {
		return nil, requireEncryptionError(dir, "create a secret store protected by permissions only")
	}
	unlock, err := lockStore(st.lock)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st.recoverRekey()
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	hdr, err = st.readFile(headerName)
	if errors.Is(err, fs.ErrNotExist) {
		var key []byte
		hdr, key, err = newHeader(pass)
		if err != nil {
			return nil, err
		}
		defer clear(key)
		err = st.linkHeader(hdr)
		if errors.Is(err, fs.ErrExist) {
			// A moat without the lock created it first: use its header.
			hdr, err = st.readFile(headerName)
		}
	}
	if err != nil {
		return nil, err
	}
	o.Passphrase = nil // the passphrase is already read: never prompt twice
	if err := st.loadWith(hdr, o, pass, source); err != nil {
		return nil, err
	}
	st.removeStaleTemps()
	return st, nil
}

// requireEncryptionError refuses a permissions-only store under
// secrets.require_encryption, with the fix.
func requireEncryptionError(dir, what string) error {
	return &HintError{
		Err: fmt.Errorf("secrets: secrets.require_encryption is set, so moat will not %s in %s, "+
			"and no key source answers", what, dir),
		hints: []string{
			"export " + PassphraseEnv + ", or give moat the systemd credential " + CredentialName +
				" (LoadCredential=" + CredentialName + ":/etc/moat/passphrase), then",
			"run `moat secret encrypt` to encrypt an existing store (a new one is created encrypted)",
		},
	}
}

// newHeader returns a new header and its key: sealed under pass with
// Argon2id, or, when pass is nil, a permissions-only header holding a
// random key.
func newHeader(pass []byte) (hdr, key []byte, err error) {
	salt := make([]byte, saltLen)
	key = make([]byte, chacha20poly1305.KeySize)
	if pass == nil {
		if _, err := rand.Read(key); err != nil {
			return nil, nil, err
		}
		return append(encodeHeaderPrefix(kdfParams{}, salt), key...), key, nil
	}
	if _, err := rand.Read(salt); err != nil {
		return nil, nil, err
	}
	prefix := encodeHeaderPrefix(defaultKDF, salt)
	deriveKey(key, defaultKDF, salt, pass)
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	return append(append(prefix, nonce...), aead.Seal(nil, nonce, verifierPlain, prefix)...), key, nil
}

// linkHeader puts a new header in place with link(2), which fails with
// fs.ErrExist when another process created one first: the one header
// decides the store's mode, whoever wins.
func (f *fileStore) linkHeader(hdr []byte) error {
	tmp, err := f.writeTemp(hdr)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, filepath.Join(f.dir, headerName)); errors.Is(err, fs.ErrExist) {
		return fs.ErrExist
	} else if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return syncDir(f.dir)
}

// load sets the key from an existing header, reading a passphrase only if
// the header is a passphrase header.
func (f *fileStore) load(hdr []byte, o Options) error {
	return f.loadWith(hdr, o, nil, "")
}

// loadWith is load with a passphrase already read (pass may be nil).
func (f *fileStore) loadWith(hdr []byte, o Options, pass []byte, source string) error {
	p, salt, rest, err := f.parseHeader(hdr)
	if err != nil {
		return err
	}
	if p == (kdfParams{}) {
		if len(rest) != chacha20poly1305.KeySize {
			return f.badHeader("truncated or corrupt header")
		}
		if o.RequireEncryption {
			return requireEncryptionError(f.dir, "use the secret store protected by permissions only")
		}
		copy(f.key[:], rest)
		f.hdr, f.prot = hdr, PermissionsOnly
		if src := source; src != "" && src != SourcePrompt {
			f.unused = src
		} else if _, src, _ := PassphraseFromEnvironment(); src != "" {
			f.unused = src
		}
		return nil
	}
	if err := f.checkKDF(p); err != nil {
		return err
	}
	if pass == nil {
		// `moat unlock` left the derived key in the kernel keyring: no
		// passphrase, no derivation. A key that does not verify is ignored.
		if key := keyringGet(keyringDesc(hdr)); key != nil {
			err := f.useKey(hdr, rest, key)
			clear(key)
			if err == nil {
				f.hdr, f.prot, f.source = hdr, Encrypted, SourceKernelKeyring
				return nil
			}
		}
		pass, source, err = passphraseFrom(o, f.dir, true)
		if err != nil {
			return err
		}
		defer clear(pass)
	}
	if pass == nil {
		return &HintError{
			Err:   fmt.Errorf("secrets: the secret store in %s is encrypted with a passphrase, and no key source gives it", f.dir),
			hints: keySourceHints(f.dir),
		}
	}
	var key [chacha20poly1305.KeySize]byte
	deriveKey(key[:], p, salt, pass)
	err = f.useKey(hdr, rest, key[:])
	clear(key[:])
	if err != nil {
		return err
	}
	f.hdr, f.prot, f.source = hdr, Encrypted, source
	return nil
}

func (f *fileStore) badHeader(why string) error {
	path := filepath.Join(f.dir, headerName)
	return &HintError{
		Err:   fmt.Errorf("secrets: %s: %s", path, why),
		hints: []string{"if the store is beyond repair, move " + f.dir + " away and set the secrets again"},
	}
}

// parseHeader splits a header into its KDF parameters (all zero for a
// permissions-only store), its salt and what follows.
func (f *fileStore) parseHeader(hdr []byte) (kdfParams, []byte, []byte, error) {
	if len(hdr) < headerPrefixLen || string(hdr[:len(headerMagic)]) != headerMagic {
		return kdfParams{}, nil, nil, f.badHeader("not a moat secret store header")
	}
	if v := hdr[len(headerMagic)]; v != formatVersion {
		return kdfParams{}, nil, nil, f.badHeader(fmt.Sprintf("format version %d; this moat reads version %d (upgrade moat)", v, formatVersion))
	}
	b := hdr[len(headerMagic)+1:]
	p := kdfParams{
		time:    binary.BigEndian.Uint32(b[0:4]),
		memory:  binary.BigEndian.Uint32(b[4:8]),
		threads: b[8],
	}
	return p, b[9 : 9+saltLen], hdr[headerPrefixLen:], nil
}

// checkKDF refuses a header's Argon2id costs out of range, before any
// derivation: a tampered header must not make Open spend minutes or
// gigabytes.
func (f *fileStore) checkKDF(p kdfParams) error {
	if p.time < 1 || p.time > maxKDFTime || p.threads < 1 || p.memory < 8*uint32(p.threads) || p.memory > maxKDFMemory {
		return f.badHeader("key derivation parameters out of range (tampered?)")
	}
	return nil
}

// useKey checks key against the header's verifier and, when it opens it,
// makes it the store's key.
func (f *fileStore) useKey(hdr, rest, key []byte) error {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return err
	}
	if len(rest) != aead.NonceSize()+len(verifierPlain)+aead.Overhead() {
		return f.badHeader("truncated or corrupt header")
	}
	if _, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], hdr[:headerPrefixLen]); err != nil {
		return &HintError{
			Err: fmt.Errorf("secrets: wrong passphrase for the encrypted secret store in %s (or its header was tampered with)", f.dir),
			hints: []string{"check " + PassphraseEnv + ", the systemd credential " + CredentialName +
				" or the passphrase you typed: it must be the one the store was encrypted with"},
		}
	}
	copy(f.key[:], key)
	return nil
}

// checkCurrent fails when the store's header is no longer the one this
// store was opened with: another process re-keyed it (`moat secret
// encrypt` or `decrypt`), and this key would write items nobody can read.
// Writers call it under the lock.
func (f *fileStore) checkCurrent() error {
	hdr, err := f.readFile(headerName)
	if err != nil {
		return err
	}
	if !bytes.Equal(hdr, f.hdr) {
		return errRekeyed(f.dir)
	}
	return nil
}

func errRekeyed(dir string) error {
	return &HintError{
		Err: fmt.Errorf("secrets: the secret store in %s was re-keyed (by `moat secret encrypt` or `decrypt`) "+
			"after this moat opened it", dir),
		hints: []string{"restart this moat, or run the command again, so that it opens the store with its new key"},
	}
}

// ensureDir creates dir with mode 0700 whatever the umask, or checks the
// existing one.
func ensureDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("secrets: creating %s: %w", filepath.Dir(dir), err)
	}
	err := os.Mkdir(dir, 0o700)
	if err == nil {
		// The umask may have removed bits: set the mode we mean.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("secrets: creating %s: %w", dir, err)
	}
	return checkDir(dir)
}

// checkDir refuses a store directory that is a symlink, not a directory,
// owned by someone else, or accessible to group or others.
func checkDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return &HintError{
			Err:   fmt.Errorf("secrets: %s is a symbolic link; the secret store must be a real directory", dir),
			hints: []string{"replace it with a directory: rm " + dir + " && mkdir -m 700 " + dir},
		}
	}
	if !fi.IsDir() {
		return fmt.Errorf("secrets: %s is not a directory", dir)
	}
	if err := checkOwnerMode(dir, fi); err != nil {
		return err
	}
	// No other user may swap the store by changing a directory above it.
	if err := hinted(safepath.Check(dir, safepath.Private)); err != nil {
		return err
	}
	return nil
}

// checkOwnerMode refuses a store file or directory that is not the user's
// alone (see package safepath, Private).
func checkOwnerMode(path string, fi fs.FileInfo) error {
	return hinted(safepath.CheckInfo(path, fi, safepath.Private))
}

// hinted turns a safepath refusal into a HintError whose hint is the fix.
func hinted(err error) error {
	var se *safepath.Error
	if !errors.As(err, &se) {
		return err
	}
	hint := "run: " + se.Fix
	if se.Path == se.Target {
		hint += " (and consider rotating the secrets it held)"
	}
	return &HintError{Err: fmt.Errorf("secrets: refusing %s", se.Msg()), hints: []string{hint}}
}

// readFile reads a file of the store after checking the directory, that the
// file is a regular file (never following a symlink), ours, and 0600.
func (f *fileStore) readFile(name string) ([]byte, error) {
	if err := checkDir(f.dir); err != nil {
		return nil, err
	}
	path := filepath.Join(f.dir, name)
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("secrets: refusing %s: it is a symbolic link", path)
	}
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("secrets: refusing %s: it is not a regular file", path)
	}
	if err := checkOwnerMode(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(fd, maxFileLen+1))
	if err != nil {
		return nil, fmt.Errorf("secrets: reading %s: %w", path, err)
	}
	if len(b) > maxFileLen {
		return nil, fmt.Errorf("secrets: refusing %s: larger than %d bytes, so not a moat secret file", path, maxFileLen)
	}
	return b, nil
}

// writeTemp writes data to a new 0600 temp file in the store directory and
// syncs it. It is the first half of an atomic replace.
func (f *fileStore) writeTemp(data []byte) (string, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	tmp := filepath.Join(f.dir, tmpPrefix+hex.EncodeToString(r[:]))
	fd, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	err = fd.Chmod(0o600) // the umask may have removed bits; set the mode we mean
	if err == nil {
		_, err = fd.Write(data)
	}
	if err == nil {
		err = fd.Sync()
	}
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("secrets: writing %s: %w", tmp, err)
	}
	return tmp, nil
}

// replace atomically sets the file called name to data: temp file, fsync,
// rename, fsync of the directory. A crash leaves the old or the new file,
// never a mix; a leftover temp file is ignored by readers.
func (f *fileStore) replace(name string, data []byte) error {
	if err := checkDir(f.dir); err != nil {
		return err
	}
	tmp, err := f.writeTemp(data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(f.dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("secrets: %w", err)
	}
	return syncDir(f.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("secrets: syncing %s: %w", dir, err)
	}
	return nil
}

func deriveKey(dst []byte, p kdfParams, salt, pass []byte) {
	k := argon2.IDKey(pass, salt, p.time, p.memory, p.threads, chacha20poly1305.KeySize)
	copy(dst, k)
	clear(k)
	// Argon2id just used p.memory (64 MiB) once; give it back to the OS now
	// rather than keep a long-running moat's resident set that large.
	debug.FreeOSMemory()
}

func encodeHeaderPrefix(p kdfParams, salt []byte) []byte {
	b := []byte(headerMagic)
	b = append(b, formatVersion)
	b = binary.BigEndian.AppendUint32(b, p.time)
	b = binary.BigEndian.AppendUint32(b, p.memory)
	b = append(b, p.threads)
	return append(b, salt...)
}

const headerPrefixLen = len(headerMagic) + 1 + 4 + 4 + 1 + saltLen

// verifierPlain is what the header seals to check the passphrase.
var verifierPlain = make([]byte, 32)

// itemFile returns the file name for an item: never the name itself.
func itemFile(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:])
}

func isItemFile(n string) bool {
	if len(n) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if !(n[i] >= '0' && n[i] <= '9' || n[i] >= 'a' && n[i] <= 'f') {
			return false
		}
	}
	return true
}

func (f *fileStore) seal(name string, v Secret) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(f.key[:])
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	b := append([]byte(itemMagic), formatVersion)
	n1 := make([]byte, ns)
	n2 := make([]byte, ns)
	if _, err := rand.Read(n1); err != nil {
		return nil, err
	}
	if _, err := rand.Read(n2); err != nil {
		return nil, err
	}
	nameCT := aead.Seal(nil, n1, []byte(name), []byte("name\x00"+itemFile(name)))
	b = append(b, n1...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(nameCT)))
	b = append(b, nameCT...)
	b = append(b, n2...)
	return aead.Seal(b, n2, []byte(v.Reveal()), []byte("value\x00"+name)), nil
}

// open decrypts an item file. With wantValue false it returns only the name.
func (f *fileStore) open(file string, data []byte, wantValue bool) (string, Secret, error) {
	path := filepath.Join(f.dir, file)
	tampered := func() error {
		return &HintError{
			Err:   fmt.Errorf("secrets: cannot decrypt %s: it was tampered with or the passphrase is wrong", path),
			hints: []string{"remove it (rm " + path + ") and set that secret again with `moat secret set`"},
		}
	}
	aead, err := chacha20poly1305.NewX(f.key[:])
	if err != nil {
		return "", Secret{}, err
	}
	ns := aead.NonceSize()
	if len(data) < len(itemMagic)+1 || !bytes.Equal(data[:len(itemMagic)], []byte(itemMagic)) {
		return "", Secret{}, tampered()
	}
	if v := data[len(itemMagic)]; v != formatVersion {
		return "", Secret{}, fmt.Errorf("secrets: %s has format version %d; this moat reads version %d (upgrade moat)", path, v, formatVersion)
	}
	b := data[len(itemMagic)+1:]
	if len(b) < ns+2 {
		return "", Secret{}, tampered()
	}
	n1, l := b[:ns], int(binary.BigEndian.Uint16(b[ns:ns+2]))
	b = b[ns+2:]
	if len(b) < l+ns {
		return "", Secret{}, tampered()
	}
	nameB, err := aead.Open(nil, n1, b[:l], []byte("name\x00"+file))
	if err != nil {
		return "", Secret{}, tampered()
	}
	name := string(nameB)
	if !wantValue {
		return name, Secret{}, nil
	}
	b = b[l:]
	val, err := aead.Open(nil, b[:ns], b[ns:], []byte("value\x00"+name))
	if err != nil {
		return "", Secret{}, tampered()
	}
	return name, NewSecret(string(val)), nil
}

func (f *fileStore) get(_ context.Context, name string) (Secret, error) {
	file := itemFile(name)
	data, err := f.readFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return Secret{}, ErrNotFound
	}
	if err != nil {
		return Secret{}, err
	}
	got, v, err := f.open(file, data, true)
	if err != nil {
		if cerr := f.checkCurrent(); cerr != nil {
			return Secret{}, cerr
		}
		return Secret{}, err
	}
	if got != name {
		// Unreachable unless SHA-256 collides: the file name is bound to the name.
		return Secret{}, fmt.Errorf("secrets: %s holds another item", filepath.Join(f.dir, file))
	}
	return v, nil
}

// set stores an item; the caller holds the store's lock.
func (f *fileStore) set(_ context.Context, name string, v Secret) error {
	if err := f.checkCurrent(); err != nil {
		return err
	}
	data, err := f.seal(name, v)
	if err != nil {
		return err
	}
	return f.replace(itemFile(name), data)
}

// delete removes an item; the caller holds the store's lock.
func (f *fileStore) delete(_ context.Context, name string) error {
	if err := f.checkCurrent(); err != nil {
		return err
	}
	path := filepath.Join(f.dir, itemFile(name))
	if err := os.Remove(path); errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	} else if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	return syncDir(f.dir)
}

func (f *fileStore) list(_ context.Context) ([]string, error) {
	if err := checkDir(f.dir); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !isItemFile(e.Name()) {
			continue // the header, temp files of interrupted writes
		}
		data, err := f.readFile(e.Name())
		if err != nil {
			return nil, err
		}
		name, _, err := f.open(e.Name(), data, false)
		if err != nil {
			if cerr := f.checkCurrent(); cerr != nil {
				return nil, cerr
			}
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

// removeStaleTemps deletes temp files left by writes that crashed between
// write and rename. Failures are harmless (readers ignore temp files).
func (f *fileStore) removeStaleTemps() {
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTemp {
			os.Remove(filepath.Join(f.dir, e.Name()))
		}
	}
}

func (f *fileStore) keySource() string {
	if f.prot != Encrypted {
		return ""
	}
	return f.source
}

// unlockKeyring stores the store's key in the kernel keyring under its
// header's description.
func (f *fileStore) unlockKeyring(ttl time.Duration) error {
	return keyringPut(keyringDesc(f.hdr), f.key[:], ttl)
}

// lockFileStore drops the kernel keyring's key of the store o names.
func lockFileStore(o Options) (bool, error) {
	dir, err := resolveDir(o)
	if err != nil {
		return false, err
	}
	st := &fileStore{dir: dir}
	hdr, err := st.readFile(headerName)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return keyringDrop(keyringDesc(hdr))
}
