//go:build unix

package secrets

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Re-keying (`moat secret encrypt` and `decrypt`) builds the whole store
// anew in a sibling directory, then swaps the two directories in one step:
// renameat2(RENAME_EXCHANGE) on Linux, so the store's path names a complete
// store at every instant. Elsewhere the old directory is renamed aside and
// the new one into place; a crash between the two leaves no store at the
// path, and the next Open renames the old one back. Leftovers are removed
// by the next Open that gets the store's lock.
const (
	rekeyInfix = ".rekey-" // .secrets.rekey-RANDOM: a store being built, or the old one after the swap
	prevInfix  = ".prev-"  // .secrets.prev-RANDOM: the old store, renamed aside (non-Linux)
)

func (f *fileStore) sibling(infix string) (string, error) {
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(f.dir), "."+filepath.Base(f.dir)+infix+hex.EncodeToString(r[:])), nil
}

// rekey rewrites every item under a new key: sealed with pass, or
// permissions-only when pass is nil. The caller holds the store's lock.
func (f *fileStore) rekey(ctx context.Context, pass []byte) error {
	if err := f.checkCurrent(); err != nil {
		return err
	}
	names, err := f.list(ctx)
	if err != nil {
		return err
	}
	values := make(map[string]Secret, len(names))
	for _, n := range names {
		v, err := f.get(ctx, n)
		if err != nil {
			return fmt.Errorf("secrets: re-key: reading %q: %w", n, err)
		}
		values[n] = v
	}
	hdr, key, err := newHeader(pass)
	if err != nil {
		return err
	}
	defer clear(key)
	tmp, err := f.sibling(rekeyInfix)
	if err != nil {
		return err
	}
	nf := &fileStore{dir: tmp, lock: f.lock, hdr: hdr}
	copy(nf.key[:], key)
	defer clear(nf.key[:])
	if err := nf.build(ctx, values); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := ctx.Err(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("secrets: re-key: %w", err)
	}
	if err := swapDirs(tmp, f.dir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("secrets: re-key: swapping %s into place: %w", tmp, err)
	}
	// tmp now holds the old store (its old key too, for a permissions-only
	// store): remove it. A failure leaves it for the next Open to remove.
	_ = os.RemoveAll(tmp)
	_ = syncDir(filepath.Dir(f.dir))
	// The old header's key in the kernel keyring opens nothing now.
	_, _ = keyringDrop(keyringDesc(f.hdr))
	f.key, f.hdr = nf.key, hdr
	f.prot, f.unused, f.source = Encrypted, "", ""
	if pass == nil {
		f.prot = PermissionsOnly
	}
	return nil
}

// build writes a complete store into f.dir, which must not exist yet.
func (f *fileStore) build(ctx context.Context, values map[string]Secret) error {
	if err := os.Mkdir(f.dir, 0o700); err != nil {
		return fmt.Errorf("secrets: re-key: %w", err)
	}
	if err := os.Chmod(f.dir, 0o700); err != nil {
		return fmt.Errorf("secrets: re-key: %w", err)
	}
	if err := f.replace(headerName, f.hdr); err != nil {
		return err
	}
	for n, v := range values {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("secrets: re-key: %w", err)
		}
		data, err := f.seal(n, v)
		if err != nil {
			return err
		}
		if err := f.replace(itemFile(n), data); err != nil {
			return err
		}
	}
	// Read every item back before the swap: the new store must be whole.
	for n, v := range values {
		got, err := f.get(ctx, n)
		if err != nil || !got.Equal(v) {
			return fmt.Errorf("secrets: re-key: %q did not read back from the new store", n)
		}
	}
	return syncDir(f.dir)
}

// recoverRekey cleans up after a re-key that did not finish. The caller
// holds the store's lock, so no re-key is running.
func (f *fileStore) recoverRekey() {
	parent, base := filepath.Dir(f.dir), filepath.Base(f.dir)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	_, statErr := os.Lstat(f.dir)
	missing := errors.Is(statErr, fs.ErrNotExist)
	for _, e := range ents {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, "."+base+prevInfix) && missing:
			// Crashed between the two renames: the old store is whole.
			if os.Rename(filepath.Join(parent, n), f.dir) == nil {
				missing = false
			}
		case strings.HasPrefix(n, "."+base+prevInfix), strings.HasPrefix(n, "."+base+rekeyInfix):
			_ = os.RemoveAll(filepath.Join(parent, n))
		}
	}
}

// swapDirsFallback swaps with two renames: dir aside to a prev sibling,
// newDir into place, then the old store to newDir's name (which the caller
// removes). A crash between the first two renames leaves no store at dir;
// recoverRekey then renames the prev sibling back.
func swapDirsFallback(newDir, dir string) error {
	f := &fileStore{dir: dir}
	prev, err := f.sibling(prevInfix)
	if err != nil {
		return err
	}
	if err := os.Rename(dir, prev); err != nil {
		return err
	}
	if err := os.Rename(newDir, dir); err != nil {
		if rerr := os.Rename(prev, dir); rerr != nil {
			return fmt.Errorf("%w (and putting the old store back failed: %v; it is in %s)", err, rerr, prev)
		}
		return err
	}
	return os.Rename(prev, newDir)
}
