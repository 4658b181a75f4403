package socket

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// PeerOf asks the kernel who is on the other end of c (SO_PEERCRED): the
// credentials the peer had when it connected, or called listen.
func PeerOf(c *net.UnixConn) (Peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, fmt.Errorf("reading the peer's credentials: %w", serr)
	}
	return Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}, nil
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// Descends reports whether the peer of c, process pid (PeerOf), descends
// from ancestor, by the parent links in /proc. When it cannot tell (the
// peer, or a process between it and ancestor, exited while it looked) it
// says so with an error rather than no: a server that connects, hands the
// connection to a child and exits must not pass for a stranger. Where the
// kernel gives the peer's pidfd (SO_PEERPIDFD, Linux 6.5), the peer is
// checked to be alive once the walk is done, so the pid walked was not
// another process's by then. A pid of 0 is a peer in a pid namespace the
// gateway cannot see, which holds none of its descendants.
func Descends(c *net.UnixConn, pid, ancestor int) (bool, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, err
	}
	pidfd, perr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		pidfd, perr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		return false, err
	}
	switch {
	case perr == nil:
		defer unix.Close(pidfd)
	case errors.Is(perr, unix.ENOPROTOOPT):
		pidfd = -1 // a kernel before 6.5: the walk alone
	default:
		// The peer is gone (ESRCH on some kernels): its pid may be
		// another process's by now.
		return false, fmt.Errorf("the process that connected (pid %d) is gone: %w", pid, perr)
	}
	yes, err := descends(pid, ancestor)
	if err != nil || yes || pidfd < 0 {
		return yes, err
	}
	// Signal 0 only asks whether the process exists; EPERM (another
	// user's process) says it does, and EINVAL that it is in a pid
	// namespace the gateway cannot see, where none of its descendants is.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); errors.Is(err, unix.ESRCH) {
		return false, fmt.Errorf("the process that connected (pid %d) exited before its parents could be read", pid)
	}
	return false, nil
}

// descends is Descends by pids alone.
func descends(pid, ancestor int) (bool, error) {
	for range 4096 { // bounds a walk through a /proc that changes under it
		if pid == ancestor {
			return true, nil
		}
		if pid <= 1 {
			return false, nil
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false, fmt.Errorf("the parent of process %d cannot be read (it exited?): %w", pid, err)
		}
		// The command name, in parentheses, may hold anything; the fields
		// after its last ')' are state, then the parent's pid.
		i := bytes.LastIndexByte(b, ')')
		var f []string
		if i >= 0 {
			f = strings.Fields(string(b[i+1:]))
		}
		if len(f) < 2 {
			return false, fmt.Errorf("/proc/%d/stat has no parent pid", pid)
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return false, fmt.Errorf("/proc/%d/stat: parent pid: %w", pid, err)
		}
	}
	return false, errors.New("the chain of parent processes does not end")
}
