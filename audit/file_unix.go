//go:build unix

package audit

import (
	"errors"
	"fmt"
	"os"
	"time"

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

// openLog opens path for appending (creating it 0600) and checks its owner
// and mode. Writers take turns through the lock file (see openLock), not a
// lock on the log itself, which rotation replaces.
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
	if err != nil {
		f.Close()
		return nil, false, err
	}
	return f, created, nil
}

// openLock opens (creating it 0600) the lock file through which the writers
// of one log, in this process or others, take turns: each holds it while it
// reads what the others appended and appends its own records, so the chain
// never forks. The lock file never moves, unlike the log, which rotates.
func openLock(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: opening lock file %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		err = fmt.Errorf("audit: lock file %s is not a regular file; remove it", path)
	} else {
		err = checkOwner(path, &st)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// lockWait bounds how long a writer waits for its turn. A turn lasts one
// write and one sync, so only a writer stopped in the middle of one (or a
// disk that no longer answers) holds it this long.
const lockWait = 10 * time.Second

// lock takes f's exclusive lock, waiting at most lockWait. It polls rather
// than blocks so that a stopped holder cannot hang this writer, and its
// pauses stay short (up to 1 ms) because a turn is usually shorter than that.
func lock(f *os.File) error {
	deadline := time.Now().Add(lockWait)
	pause := 20 * time.Microsecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case err != unix.EWOULDBLOCK:
			return fmt.Errorf("locking %s: %w", f.Name(), err)
		case time.Now().After(deadline):
			return fmt.Errorf("another process has held %s for over %v (a moat stopped with Ctrl-Z, or a disk that does not answer?)", f.Name(), lockWait)
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Millisecond)
	}
}

func unlock(f *os.File) { unix.Flock(int(f.Fd()), unix.LOCK_UN) }

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
