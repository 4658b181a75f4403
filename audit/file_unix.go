//go:build unix

package audit

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// secureDir creates dir 0700 if needed and refuses one that another user
// owns or can write: whoever can write the directory can replace the log.
func secureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("audit: creating log directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("audit: %s: %w", dir, err)
	}
	if err := checkOwner(dir, &st); err != nil {
		return err
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("audit: log directory %s is writable by other users (mode %#o); run: chmod 700 %s", dir, st.Mode&0o777, dir)
	}
	return nil
}

func checkOwner(path string, st *unix.Stat_t) error {
	if uid := uint32(os.Geteuid()); st.Uid != uid && st.Uid != 0 {
		return fmt.Errorf("audit: %s is owned by uid %d, not by you (uid %d); run: chown %d %s", path, st.Uid, uid, uid, path)
	}
	return nil
}

// openLog opens path for appending (creating it 0600), checks its owner and
// mode, and takes an exclusive lock so that two processes never fork the chain.
func openLog(path string) (f *os.File, created bool, err error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_APPEND|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ENOENT) {
		fd, err = unix.Open(path, unix.O_RDWR|unix.O_APPEND|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_CREAT|unix.O_EXCL, 0o600)
		created = err == nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("audit: opening log %s: %w", path, err)
	}
	f = os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("audit: %s: %w", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("audit: %s is not a regular file", path)
	case st.Mode&0o077 != 0:
		err = fmt.Errorf("audit: log %s can be read or written by other users (mode %#o); run: chmod 600 %s", path, st.Mode&0o777, path)
	default:
		err = checkOwner(path, &st)
	}
	if err == nil {
		if lerr := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); lerr != nil {
			err = fmt.Errorf("audit: %s is in use by another process (is another moat running with the same audit.path?): %w", path, lerr)
		}
	}
	if err != nil {
		f.Close()
		return nil, false, err
	}
	return f, created, nil
}

func readAll(f *os.File) ([]byte, error) {
	return io.ReadAll(io.NewSectionReader(f, 0, 1<<62))
}

// writeFileSync creates name 0600 with data, durably.
func writeFileSync(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a created or renamed entry durable. A failure only weakens
// durability of the name, never the chain, so it is not reported.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
