package secrets

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// swapDirs exchanges newDir and dir atomically (renameat2 RENAME_EXCHANGE):
// dir names the old or the new store at every instant, and afterwards
// newDir holds the old one. File systems without RENAME_EXCHANGE get
// swapDirsFallback.
func swapDirs(newDir, dir string) error {
	err := unix.Renameat2(unix.AT_FDCWD, newDir, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return swapDirsFallback(newDir, dir)
	}
	if err != nil {
		return &os.LinkError{Op: "renameat2", Old: newDir, New: dir, Err: err}
	}
	return nil
}
