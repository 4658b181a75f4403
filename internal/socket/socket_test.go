package socket_test

import (
	"bufio"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/moatmcp/moat/internal/socket"
)

// TestMain doubles as a listener run as another user (see
// TestDialRefusesAnotherUsersListener), as a peer that connects and exits
// (see TestDescends), and as a gateway of another user that tells whether
// its one peer descends from it (see TestDescendsAsAnotherUser).
func TestMain(m *testing.M) {
	if path := os.Getenv("MOAT_SOCKET_TEST_CHECK"); path != "" {
		os.Exit(checkOnePeer(path))
	}
	if path := os.Getenv("MOAT_SOCKET_TEST_DIAL"); path != "" {
		if _, err := net.Dial("unix", path); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	if path := os.Getenv("MOAT_SOCKET_TEST_LISTEN"); path != "" {
		l, err := net.Listen("unix", path)
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("ready\n")
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(0)
			}
			go io.Copy(io.Discard, c) // open until the peer or the test ends it
		}
	}
	os.Exit(m.Run())
}

func TestListenGivesTheSocketItsModeAndGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "gateway.sock")
	gid := os.Getgid()
	l, err := socket.Listen(path, 0o660, "")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", fi.Mode())
	}
	if got := int(fi.Sys().(*syscall.Stat_t).Gid); got != gid {
		t.Errorf("socket group %d, want %d", got, gid)
	}
	di, _ := os.Stat(filepath.Dir(path))
	if di.Mode().Perm() != 0o750 {
		t.Errorf("socket directory mode %v, want 0750 (its group may connect)", di.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want the socket alone (no temporary name left)", len(entries))
	}

	// A second gateway on the same path is refused while the first listens.
	if _, err := socket.Listen(path, 0o600, ""); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("a second Listen on a live socket: %v, want already listening", err)
	}
	c, err := socket.Dial(path)
	if err != nil {
		t.Fatalf("dialing our own listener: %v", err)
	}
	c.Close()

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after Close: %v", err)
	}
}

func TestListenReplacesAStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.sock")
	// A gateway that died leaves its socket behind.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	l, err := socket.Listen(path, 0o600, "")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l.Close()
	c, err := socket.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-socket")
	os.WriteFile(file, nil, 0o600)
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777) // writable by every user, not sticky
	for _, c := range []struct {
		name, path string
		mode       fs.FileMode
		group      string
		want       string
	}{
		{"world-writable mode", filepath.Join(dir, "a.sock"), 0o666, "", "every user of the host"},
		{"relative path", "gateway.sock", 0o600, "", "not absolute"},
		{"a file in the way", file, 0o600, "", "not a socket"},
		{"a directory others can change", filepath.Join(open, "gateway.sock"), 0o600, "", "cannot be trusted"},
		{"an unknown group", filepath.Join(dir, "b.sock"), 0o660, "no-such-group-moat", "no-such-group-moat"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := socket.Listen(c.path, c.mode, c.group)
			if err == nil {
				l.Close()
				t.Fatalf("Listen succeeded, want an error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Listen: %v, want %q", err, c.want)
			}
		})
	}
}

// TestDialRefusesAnotherUsersListener: a socket where the gateway should
// be, listened on by another user, is not talked to.
func TestDialRefusesAnotherUsersListener(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: needs root to run a listener as another user")
	}
	dir, bin := testBinaryForAll(t)
	path := filepath.Join(dir, "gateway.sock")
	startAs(t, 4204, bin, "MOAT_SOCKET_TEST_LISTEN="+path)
	c, err := socket.Dial(path)
	if err == nil {
		c.Close()
		t.Fatal("Dial talked to a listener of uid 4204")
	}
	if !strings.Contains(err.Error(), "runs as uid 4204") {
		t.Fatalf("Dial: %v, want it to name uid 4204", err)
	}
}

// testBinaryForAll copies this test binary into a directory every user
// may enter and write, for running it as another user.
func testBinaryForAll(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "moat-socket-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o1777)
	bin = filepath.Join(dir, "socket.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// startAs runs bin (testBinaryForAll) as uid, group uid, with env, until
// the test ends, and returns its output once it has said "ready".
func startAs(t *testing.T, uid uint32, bin string, env ...string) *bufio.Reader {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := bufio.NewReader(out)
	if line, _ := r.ReadString('\n'); line != "ready\n" {
		t.Fatalf("the test binary as uid %d said %q", uid, line)
	}
	return r
}

func TestPeerOfNamesTheOtherEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.sock")
	l, err := socket.Listen(path, 0o600, "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := socket.Dial(path)
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := l.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := socket.PeerOf(c)
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != os.Getuid() || p.GID != os.Getgid() || p.PID != os.Getpid() {
		t.Fatalf("PeerOf = %+v, want uid %d gid %d pid %d", p, os.Getuid(), os.Getgid(), os.Getpid())
	}
}

// TestDefaultPath: where `moat connect` looks and `moat serve --listen
// unix:` listens. Without XDG_RUNTIME_DIR (su, cron, a bare SSH session),
// the user's runtime directory, where systemd's user manager put the
// socket of a socket-activated gateway, is still found, but only when it
// is the user's own and private.
func TestDefaultPath(t *testing.T) {
	runtimeDirs := t.TempDir()
	defer socket.SetUserRuntimeDirs(runtimeDirs)()
	mine := filepath.Join(runtimeDirs, strconv.Itoa(os.Getuid()))
	tmp := filepath.Join(os.TempDir(), "moat-"+strconv.Itoa(os.Getuid()), "gateway.sock")
	for _, c := range []struct {
		name, socketEnv, xdg string
		runtimeMode          os.FileMode // 0: no runtime directory
		want                 string
	}{
		{name: "MOAT_GATEWAY_SOCKET first", socketEnv: "/srv/moat.sock", xdg: "/run/user/77", runtimeMode: 0o700, want: "/srv/moat.sock"},
		{name: "XDG_RUNTIME_DIR", xdg: "/run/user/77", runtimeMode: 0o700, want: "/run/user/77/moat/gateway.sock"},
		{name: "the runtime directory without XDG_RUNTIME_DIR", runtimeMode: 0o700, want: filepath.Join(mine, "moat", "gateway.sock")},
		{name: "a runtime directory others may enter", runtimeMode: 0o755, want: tmp},
		{name: "no runtime directory", want: tmp},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("MOAT_GATEWAY_SOCKET", c.socketEnv)
			t.Setenv("XDG_RUNTIME_DIR", c.xdg)
			os.RemoveAll(mine)
			if c.runtimeMode != 0 {
				if err := os.Mkdir(mine, c.runtimeMode); err != nil {
					t.Fatal(err)
				}
				os.Chmod(mine, c.runtimeMode) // past the umask
			}
			if got := socket.DefaultPath(); got != c.want {
				t.Errorf("DefaultPath() = %q, want %q", got, c.want)
			}
		})
	}
}
