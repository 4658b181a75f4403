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
// header file "header":
//
//	"MOATKEYS" | version=1 | argon2 time u32 | memory KiB u32 | threads u8 | salt[16] |
//	nonce[24] | XChaCha20-Poly1305(key, 32 zero bytes, AD = all preceding bytes)
//
// The sealed zeros let Open tell a wrong passphrase from a tampered item,
// and authenticate the KDF parameters and salt.
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
	dir string
	key [chacha20poly1305.KeySize]byte
}

func (f *fileStore) describe() string { return "encrypted file (" + f.dir + ")" }

func passphraseFrom(opt Options, dir string) ([]byte, error) {
	if opt.Passphrase != nil {
		p, err := opt.Passphrase()
		if err != nil {
			return nil, fmt.Errorf("secrets: reading the passphrase for %s: %w", dir, err)
		}
		if len(p) == 0 {
			return nil, &HintError{
				Err:   fmt.Errorf("secrets: the passphrase for the encrypted secret store in %s is empty", dir),
				hints: []string{"enter a non-empty passphrase"},
			}
		}
		return p, nil
	}
	if p := os.Getenv("MOAT_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	return nil, &HintError{
		Err: fmt.Errorf("secrets: no keychain is usable and MOAT_PASSPHRASE is not set, so secrets cannot be stored " +
			"safely (moat never stores them in plain text)"),
		hints: []string{
			"start and unlock your keyring (gnome-keyring or KeePassXC with Secret Service on Linux), or",
			"export MOAT_PASSPHRASE to encrypt the file store in " + dir,
		},
	}
}

func openFileStore(opt Options) (*fileStore, error) {
	dir := opt.Dir
	if dir == "" {
		d, err := DefaultDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	pass, err := passphraseFrom(opt, dir)
	if err != nil {
		return nil, err
	}
	defer clear(pass)
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	st := &fileStore{dir: dir}
	hdr, err := st.readFile(headerName)
	if errors.Is(err, fs.ErrNotExist) {
		var created bool
		created, err = st.createHeader(pass)
		if err != nil {
			return nil, err
		}
		if created {
			return st, nil
		}
		// Another process created the store first: use its header.
		hdr, err = st.readFile(headerName)
	}
	if err != nil {
		return nil, err
	}
	if err := st.unlock(hdr, pass); err != nil {
		return nil, err
	}
	st.removeStaleTemps()
	return st, nil
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

// createHeader writes a new header with a random salt and derives the key.
// It links the temp file into place, which fails if another process created
// a header first; then it reports false and the caller reads that header.
func (f *fileStore) createHeader(pass []byte) (bool, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return false, err
	}
	prefix := encodeHeaderPrefix(defaultKDF, salt)
	f.deriveKey(defaultKDF, salt, pass)
	aead, err := chacha20poly1305.NewX(f.key[:])
	if err != nil {
		return false, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return false, err
	}
	hdr := append(append(prefix, nonce...), aead.Seal(nil, nonce, verifierPlain, prefix)...)
	tmp, err := f.writeTemp(hdr)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, filepath.Join(f.dir, headerName)); errors.Is(err, fs.ErrExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("secrets: %w", err)
	}
	return true, syncDir(f.dir)
}

func (f *fileStore) deriveKey(p kdfParams, salt, pass []byte) {
	k := argon2.IDKey(pass, salt, p.time, p.memory, p.threads, chacha20poly1305.KeySize)
	copy(f.key[:], k)
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

// unlock derives the key from the passphrase and the header, and checks it
// against the header's verifier.
func (f *fileStore) unlock(hdr, pass []byte) error {
	path := filepath.Join(f.dir, headerName)
	bad := func(why string) error {
		return &HintError{
			Err:   fmt.Errorf("secrets: %s: %s", path, why),
			hints: []string{"if the store is beyond repair, move " + f.dir + " away and set the secrets again"},
		}
	}
	if len(hdr) < headerPrefixLen || string(hdr[:len(headerMagic)]) != headerMagic {
		return bad("not a moat secret store header")
	}
	if v := hdr[len(headerMagic)]; v != formatVersion {
		return bad(fmt.Sprintf("format version %d; this moat reads version %d (upgrade moat)", v, formatVersion))
	}
	b := hdr[len(headerMagic)+1:]
	p := kdfParams{
		time:    binary.BigEndian.Uint32(b[0:4]),
		memory:  binary.BigEndian.Uint32(b[4:8]),
		threads: b[8],
	}
	salt := b[9 : 9+saltLen]
	if p.time < 1 || p.time > maxKDFTime || p.threads < 1 || p.memory < 8*uint32(p.threads) || p.memory > maxKDFMemory {
		return bad("key derivation parameters out of range (tampered?)")
	}
	f.deriveKey(p, salt, pass)
	aead, err := chacha20poly1305.NewX(f.key[:])
	if err != nil {
		return err
	}
	prefix := hdr[:headerPrefixLen]
	rest := hdr[headerPrefixLen:]
	if len(rest) != aead.NonceSize()+len(verifierPlain)+aead.Overhead() {
		return bad("truncated or corrupt header")
	}
	if _, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], prefix); err != nil {
		clear(f.key[:])
		return &HintError{
			Err:   fmt.Errorf("secrets: wrong passphrase for the encrypted secret store in %s (or its header was tampered with)", f.dir),
			hints: []string{"check MOAT_PASSPHRASE (or the passphrase you typed); it must be the one used when the store was created"},
		}
	}
	return nil
}

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
		return Secret{}, err
	}
	if got != name {
		// Unreachable unless SHA-256 collides: the file name is bound to the name.
		return Secret{}, fmt.Errorf("secrets: %s holds another item", filepath.Join(f.dir, file))
	}
	return v, nil
}

func (f *fileStore) set(_ context.Context, name string, v Secret) error {
	data, err := f.seal(name, v)
	if err != nil {
		return err
	}
	return f.replace(itemFile(name), data)
}

func (f *fileStore) delete(_ context.Context, name string) error {
	if err := checkDir(f.dir); err != nil {
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
