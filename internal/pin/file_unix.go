//go:build unix

package pin

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

func checkPrivate(path string, forbidden fs.FileMode, want string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	return checkPrivateInfo(path, fi, forbidden, want)
}

// checkPrivateInfo refuses a pin store file or directory that another user
// could read or change.
func checkPrivateInfo(path string, fi fs.FileInfo, forbidden fs.FileMode, want string) error {
	if fi.Mode().Perm()&forbidden != 0 {
		return fmt.Errorf("pin: %s has mode %v, so other users could read or change tool approvals; Moat refuses it. Fix: chmod %s %s", path, fi.Mode().Perm(), want, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("pin: %s is owned by uid %d, not you (uid %d); Moat refuses it. Fix: chown %d %s", path, st.Uid, os.Getuid(), os.Getuid(), path)
	}
	return nil
}

// lockFile takes an exclusive advisory lock shared with other Moat
// processes; the returned function releases it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
