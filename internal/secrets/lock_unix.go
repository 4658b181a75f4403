//go:build unix

package secrets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockStore takes the exclusive cross-process lock on path (created 0600,
// its directory 0700) and returns the function that releases it. The lock
// is a flock, so the kernel releases it when a process dies holding it.
func lockStore(path string) (unlock func(), err error) {
	return lockStoreHow(path, unix.LOCK_EX)
}

// tryLockStore is lockStore without waiting: ok is false when another
// process holds the lock.
func tryLockStore(path string) (unlock func(), ok bool, err error) {
	unlock, err = lockStoreHow(path, unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, false, nil
	}
	return unlock, err == nil, err
}

func lockStoreHow(path string, how int) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("secrets: creating %s for the store's lock: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if isLoop(err) {
		return nil, fmt.Errorf("secrets: refusing the lock file %s: it is a symbolic link", path)
	}
	if err != nil {
		return nil, fmt.Errorf("secrets: opening the store's lock file: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("secrets: refusing the lock file %s: it is not a regular file", path)
	}
	if err == nil {
		err = checkOwnerMode(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, err
		}
		return nil, fmt.Errorf("secrets: locking %s: %w", path, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
