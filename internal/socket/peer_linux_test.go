package socket_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/socket"
)

// TestDescends: a process is told apart from the gateway's descendants by
// the parent links in /proc, and one whose parents cannot be read (it
// exited) is not taken for a stranger: a server that connects, hands its
// connection on and exits would pass for one.
func TestDescends(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var grandchild int
	for deadline := time.Now().Add(30 * time.Second); grandchild == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shell started no child")
		}
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task/" + strconv.Itoa(cmd.Process.Pid) + "/children")
		grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	defer syscall.Kill(grandchild, syscall.SIGKILL)
	me := os.Getpid()
	for _, c := range []struct {
		pid, ancestor int
		want          bool
		cannotTell    bool
	}{
		{pid: me, ancestor: me, want: true},
		{pid: cmd.Process.Pid, ancestor: me, want: true},
		{pid: grandchild, ancestor: me, want: true},
		{pid: grandchild, ancestor: cmd.Process.Pid, want: true},
		{pid: me, ancestor: cmd.Process.Pid},
		{pid: me, ancestor: grandchild},
		{pid: 1, ancestor: me},
		{pid: 0, ancestor: me},                         // a peer in a pid namespace the gateway cannot see
		{pid: 1 << 30, ancestor: me, cannotTell: true}, // no such process
	} {
		got, err := socket.DescendsByPID(c.pid, c.ancestor)
		if got != c.want || (err != nil) != c.cannotTell {
			t.Errorf("Descends(%d, %d) = %v, %v; want %v (cannot tell: %v)", c.pid, c.ancestor, got, err, c.want, c.cannotTell)
		}
	}

	// Over a connection: this process, and a child that connected and
	// exited (reaped) before the gateway looked.
	path := filepath.Join(t.TempDir(), "gateway.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accept := func() (*net.UnixConn, socket.Peer) {
		t.Helper()
		c, err := l.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		p, err := socket.PeerOf(c)
		if err != nil {
			t.Fatal(err)
		}
		return c, p
	}
	mine, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	c, p := accept()
	if own, err := socket.Descends(c, p.PID, me); !own || err != nil {
		t.Errorf("Descends(this process's connection) = %v, %v; want true", own, err)
	}
	gone := exec.Command(os.Args[0], "-test.run=^$")
	gone.Env = append(os.Environ(), "MOAT_SOCKET_TEST_DIAL="+path)
	if out, err := gone.CombinedOutput(); err != nil { // run and reaped
		t.Fatalf("the child that connects: %v\n%s", err, out)
	}
	c, p = accept()
	if own, err := socket.Descends(c, p.PID, me); err == nil {
		t.Errorf("Descends(the connection of a child that exited) = %v, nil; want an error (cannot tell)", own)
	}
}

// checkOnePeer listens on path (open to every user), says "ready", and
// writes whether its first peer descends from it: "OWN ERR".
func checkOnePeer(path string) int {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	os.Chmod(path, 0o777)
	fmt.Println("ready")
	c, err := l.AcceptUnix()
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	p, err := socket.PeerOf(c)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	own, err := socket.Descends(c, p.PID, os.Getpid())
	fmt.Println(own, err)
	return 0
}

// TestDescendsAsAnotherUser: a gateway that runs as a user of its own (a
// host-wide one) tells another user's process apart from its servers,
// though it may not signal that process (pidfd_send_signal: EPERM): the
// process is alive, not gone (seen failing when any error was taken for
// gone: every other user was refused).
func TestDescendsAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: needs root to run a gateway as another user")
	}
	dir, bin := testBinaryForAll(t)
	path := filepath.Join(dir, "gateway.sock")
	r := startAs(t, 4205, bin, "MOAT_SOCKET_TEST_CHECK="+path)
	c, err := net.Dial("unix", path) // this process: root's, alive
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if line, _ := r.ReadString('\n'); line != "false <nil>\n" {
		t.Errorf("Descends(root's live process) as uid 4205 = %q, want %q", strings.TrimSpace(line), "false <nil>")
	}
}
