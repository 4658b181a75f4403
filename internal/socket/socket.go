// Package socket is the Unix socket a Moat gateway serves on: it creates
// the socket with its mode and group before anyone can reach it under its
// name, tells the gateway who is on the other end of each connection (the
// kernel's SO_PEERCRED, which a peer cannot forge), and dials it for
// `moat connect`, checking that the process listening is the user's own
// or root's. A socket is named by a path, so the gateway's place is as
// trustworthy as the directories above it: both ends check them.
package socket

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/moatmcp/moat/internal/safepath"
)

// DefaultPath is where a user's gateway listens and `moat connect` dials
// when no path is given: $MOAT_GATEWAY_SOCKET, else
// $XDG_RUNTIME_DIR/moat/gateway.sock, else the same in the user's runtime
// directory when there is one, else moat-UID/gateway.sock in the temporary
// directory (0700, the user's own).
func DefaultPath() string {
	if p := os.Getenv("MOAT_GATEWAY_SOCKET"); p != "" {
		return p
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "moat", "gateway.sock")
	}
	// A shell without XDG_RUNTIME_DIR (su, cron, some SSH and container
	// sessions) still finds the gateway systemd's user manager started on
	// the socket of its unit (%t/moat/gateway.sock).
	if d := filepath.Join(userRuntimeDirs, strconv.Itoa(os.Getuid())); isPrivateDir(d) {
		return filepath.Join(d, "moat", "gateway.sock")
	}
	return filepath.Join(os.TempDir(), "moat-"+strconv.Itoa(os.Getuid()), "gateway.sock")
}

// userRuntimeDirs holds each user's runtime directory, named by uid, as
// systemd-logind makes them.
var userRuntimeDirs = "/run/user"

// isPrivateDir reports whether dir is a directory (not a link to one) of
// this user's that no one else may enter.
func isPrivateDir(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}

// A Listener accepts a gateway's connections. Close removes the socket
// file, if it is still the one this listener made.
type Listener struct {
	*net.UnixListener
	path string
	ino  uint64
}

// Listen creates the socket at path with mode and, when group is not
// empty, that group (a name or a numeric gid), and listens on it. The
// socket is made under a temporary name, given its mode and group, then
// renamed into place, so that under its name it never has other
// permissions. Its directory is created (0700, or 0750 when mode lets its
// group in) when missing, and must otherwise be one no other user can
// change. A gateway already listening on path is an error; a stale socket
// left by one that died is replaced.
func Listen(path string, mode fs.FileMode, group string) (*Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("socket path %q is not absolute; give a full path, as in unix:/run/user/1000/moat/gateway.sock", path)
	}
	if mode&0o007 != 0 {
		return nil, fmt.Errorf("socket mode %#o lets every user of the host connect; use 0600 (you only) or 0660 with socket_group", mode)
	}
	gid := -1
	if group != "" {
		var err error
		if gid, err = LookupGroup(group); err != nil {
			return nil, err
		}
	}
	dir := filepath.Dir(path)
	if err := makeDir(dir, mode, gid); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("a gateway is already listening on %s; stop it, or give this one another path with --listen unix:PATH", path)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path)
	}
	tmp := filepath.Join(dir, ".gateway-"+rand.Text()[:12]+".sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (*Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("setting the socket's mode: %w", err))
	}
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("giving the socket to group %s: %w (the gateway's user must be in that group, or root)", group, err))
		}
	}
	fi, err := os.Lstat(tmp)
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("putting the socket in place at %s: %w", path, err))
	}
	return &Listener{UnixListener: l, path: path, ino: inode(fi)}, nil
}

// Path is where the listener's socket is.
func (l *Listener) Path() string { return l.path }

// Close stops listening and removes the socket, unless another gateway has
// put its own in its place since (or systemd made it).
func (l *Listener) Close() error {
	err := l.UnixListener.Close()
	if fi, serr := os.Lstat(l.path); serr == nil && l.ino != 0 && inode(fi) == l.ino {
		os.Remove(l.path)
	}
	return err
}

// makeDir makes sure dir exists and that no other user can change it
// (safepath.Trusted): whoever can rename entries in it can put a socket of
// their own where clients look for the gateway.
func makeDir(dir string, mode fs.FileMode, gid int) error {
	perm := fs.FileMode(0o700)
	if mode&0o070 != 0 {
		perm = 0o750
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, perm); err != nil {
			return fmt.Errorf("creating the socket's directory: %w", err)
		}
		if err := os.Chmod(dir, perm); err != nil { // MkdirAll's mode passes the umask
			return err
		}
		if gid >= 0 {
			if err := os.Chown(dir, -1, gid); err != nil {
				return fmt.Errorf("giving the socket's directory to its group: %w", err)
			}
		}
	}
	if err := safepath.Check(dir, safepath.Trusted); err != nil {
		return fmt.Errorf("the socket's directory cannot be trusted: %w", err)
	}
	return nil
}

// LookupGroup is the gid of group, a name or a numeric id, as
// gateway.socket_group gives it.
func LookupGroup(group string) (int, error) {
	if n, err := strconv.Atoi(group); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return -1, fmt.Errorf("socket group %q: %w; name a group of this host (getent group) or its numeric id", group, err)
	}
	return strconv.Atoi(g.Gid)
}

// Peer is who is on the other end of a Unix connection, as the kernel
// recorded it when the connection was made.
type Peer struct{ UID, GID, PID int }

// Dial connects to the gateway at path, and refuses one whose process is
// neither the user's own nor root's: a socket where the user expects the
// gateway, put there by another user, would see every request and answer
// with whatever it likes.
func Dial(path string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	p, err := PeerOf(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if p.UID != os.Getuid() && p.UID != 0 {
		c.Close()
		return nil, fmt.Errorf("the process listening on %s runs as uid %d, neither you nor root; it may be impersonating the gateway, so moat does not talk to it", path, p.UID)
	}
	return c, nil
}

// Activated returns the Unix sockets systemd passed this process (socket
// activation: LISTEN_PID and LISTEN_FDS, from fd 3 on), or an error when
// there are none. systemd made them, with the unit's SocketMode and
// SocketGroup, and removes them: Close leaves the file alone. The
// variables are cleared, so no child takes the sockets for its own.
func Activated() ([]*Listener, error) {
	pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID"))
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if pid != os.Getpid() || n < 1 {
		return nil, errors.New("--listen systemd: systemd passed no socket to this process (LISTEN_PID and LISTEN_FDS); start it from a .socket unit, or give --listen unix:PATH")
	}
	var out []*Listener
	for fd := 3; fd < 3+n; fd++ {
		f := os.NewFile(uintptr(fd), "systemd socket "+strconv.Itoa(fd))
		l, err := net.FileListener(f)
		f.Close() // FileListener made its own copy
		if err != nil {
			return nil, fmt.Errorf("socket %d from systemd: %w", fd, err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return nil, fmt.Errorf("socket %d from systemd is %s, not a Unix socket; use ListenStream=/path in the .socket unit", fd, l.Addr().Network())
		}
		ul.SetUnlinkOnClose(false)
		out = append(out, &Listener{UnixListener: ul, path: ul.Addr().String()})
	}
	return out, nil
}
