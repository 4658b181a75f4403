package testutil

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a real server may take to start listening.
// Node servers need about a second on this 2-core machine; the margin is for
// a loaded CI runner.
const startTimeout = 20 * time.Second

// StartHTTPServer runs the test server bin with args over HTTP and returns the
// URL it printed on its "LISTEN <url>" line. Without a -transport argument it
// uses streamable HTTP ("-transport sse" serves legacy SSE at /sse). The
// process runs in its own process group, which is killed when the test ends;
// its stderr goes to the test log.
func StartHTTPServer(t testing.TB, bin string, args ...string) string {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(strings.TrimLeft(a, "-"), "transport") }) {
		args = append([]string{"-transport", "http"}, args...)
	}
	return StartListening(t, exec.Command(bin, args...))
}

// StartListening starts cmd, a server that prints "LISTEN <url>" as its
// first stdout line, and returns that url. It runs in its own process
// group, which is killed when the test ends; its stderr goes to the test
// log.
func StartListening(t testing.TB, cmd *exec.Cmd) string {
	t.Helper()
	stdout := startGroup(t, cmd)
	type line struct {
		s   string
		err error
	}
	lc := make(chan line, 1)
	go func() {
		r := bufio.NewReader(stdout)
		s, err := r.ReadString('\n')
		lc <- line{s, err}
		// Keep draining so that the server never blocks on a full pipe.
		io.Copy(io.Discard, r)
	}()
	select {
	case l := <-lc:
		url, ok := strings.CutPrefix(strings.TrimSpace(l.s), "LISTEN ")
		if l.err != nil || !ok {
			t.Fatalf("%s %v did not print its LISTEN line: got %q (%v); see its stderr in the log", cmd.Path, cmd.Args[1:], l.s, l.err)
		}
		return url
	case <-time.After(startTimeout):
		t.Fatalf("%s %v printed no LISTEN line within %v", cmd.Path, cmd.Args[1:], startTimeout)
		return ""
	}
}

// startGroup starts cmd in a new process group with stderr copied to the test
// log, and registers a cleanup that stops the whole group (SIGTERM, then
// SIGKILL after 3s) and reaps cmd. It returns cmd's stdout.
func startGroup(t testing.TB, cmd *exec.Cmd) io.Reader {
	t.Helper()
	cmd.SysProcAttr = GroupAttr()
	logw := &testLogWriter{t: t, prefix: filepath.Base(cmd.Path) + ": "}
	cmd.Stderr = logw
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("stdout pipe for %s: %v", cmd.Path, err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(-pgid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		// Children that ignored SIGTERM must not outlive the test either.
		syscall.Kill(-pgid, syscall.SIGKILL)
		logw.stop()
	})
	return stdout
}

// testLogWriter copies a child's output to t.Log line by line until the test
// ends (t.Log after the test has finished panics).
type testLogWriter struct {
	t      testing.TB
	prefix string

	mu      sync.Mutex
	buf     []byte
	stopped bool
}

// maxLogLine keeps a runaway child from flooding the test log.
const maxLogLine = 4096

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > maxLogLine {
				w.t.Log(w.prefix + string(w.buf[:maxLogLine]) + "…")
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		line := w.buf[:i]
		if len(line) > maxLogLine {
			line = append(line[:maxLogLine:maxLogLine], "…"...)
		}
		w.t.Log(w.prefix + string(line))
		w.buf = w.buf[i+1:]
	}
}

func (w *testLogWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.t.Log(w.prefix + string(w.buf))
	}
	w.stopped = true
}

// ProcState is a process's one-letter state from /proc/<pid>/stat: R, S, D,
// T, Z (zombie: exited but not reaped), X, and so on.
type ProcState byte

// ProcessState returns the state of pid, and false when no such process exists.
func ProcessState(pid int) (ProcState, bool) {
	st, err := readStat(pid)
	if err != nil {
		return 0, false
	}
	return st.state, true
}

// ProcessAlive reports whether pid is a running process. A zombie is not
// alive (it has exited); use ProcessState to tell a zombie from a reaped
// process, since a zombie means someone forgot to wait for its child.
func ProcessAlive(pid int) bool {
	s, ok := ProcessState(pid)
	return ok && s != 'Z' && s != 'X'
}

// Descendants returns the pids of all processes below pid (children,
// grandchildren, ...), read from /proc, zombies included.
func Descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(p); err == nil {
			children[st.ppid] = append(children[st.ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	slices.Sort(out)
	return out
}

// NoProcessesLeft fails the test unless every pid has disappeared (exited and
// been reaped) within 5 seconds. A zombie counts as left behind.
func NoProcessesLeft(t testing.TB, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, p := range pids {
			if st, err := readStat(p); err == nil {
				left = append(left, fmt.Sprintf("pid %d (%s, state %c, ppid %d)", p, st.comm, st.state, st.ppid))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left behind (Z = zombie, never reaped): %s", strings.Join(left, "; "))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type procStat struct {
	comm  string
	state ProcState
	ppid  int
}

// readStat parses /proc/<pid>/stat. The command name may hold spaces and
// parentheses, so the fields after it are found from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procStat{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return procStat{}, errors.New("malformed /proc stat")
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat ppid: %w", err)
	}
	return procStat{comm: s[open+1 : closing], state: ProcState(f[0][0]), ppid: ppid}, nil
}
