package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/testutil"
)

// loopbackPreload makes Node listeners that name no host bind 127.0.0.1, so
// that neither the bridge nor the suite's client-scenario servers are
// reachable from another machine. Node resolves a listen host
// asynchronously, and the suite reads server.address().port right after
// listen(0), so while our listen runs, dns.lookup answers 127.0.0.1 at once
// (only for that literal, only inside that call).
const loopbackPreload = `'use strict';
const net = require('net');
const dns = require('dns');
let inListen = false;
const lookup = dns.lookup;
dns.lookup = function (hostname, ...rest) {
  if (inListen && hostname === '127.0.0.1') {
    rest[rest.length - 1](null, '127.0.0.1', 4);
    return {};
  }
  return lookup.call(this, hostname, ...rest);
};
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const p = args[0];
  if (typeof p === 'number' || (typeof p === 'string' && /^[0-9]+$/.test(p))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
    args[0] = Number(p);
  }
  inListen = true;
  try { return listen.apply(this, args); } finally { inListen = false; }
};
`

// nodeEnv is the environment of every Node process of the test: Moat's test
// environment (private HOME and XDG directories, no HTTP proxy) plus the
// loopback preload.
func nodeEnv(t *testing.T, dir string) []string {
	t.Helper()
	p := filepath.Join(dir, "loopback.cjs")
	if err := os.WriteFile(p, []byte(loopbackPreload), 0o600); err != nil {
		t.Fatal(err)
	}
	return append(testutil.MoatEnv(t), "NODE_OPTIONS=--require "+p)
}

// check is one entry of a scenario's checks.json.
type check struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	Description  string `json:"description"`
	ErrorMessage string `json:"errorMessage"`
}

// result is what the suite reported for one scenario.
type result struct {
	checks []check
	// problem is set when the scenario failed outside its checks: no
	// checks.json, or (client scenarios) the suite's own verdict.
	problem string
	// dir is the directory the suite wrote the results into, and started
	// the time in its name (when the suite began the scenario).
	dir     string
	started time.Time
}

// passed applies the rule of the suite's --expected-failures: a scenario
// fails when any check is FAILURE or WARNING.
func (r result) passed() bool {
	if r.problem != "" || len(r.checks) == 0 {
		return false
	}
	return !slices.ContainsFunc(r.checks, func(c check) bool { return c.Status == "FAILURE" || c.Status == "WARNING" })
}

// why says, within max bytes, why a scenario failed.
func (r result) why(max int) string {
	var parts []string
	if r.problem != "" {
		parts = append(parts, r.problem)
	}
	if len(r.checks) == 0 && r.problem == "" {
		parts = append(parts, "no checks reported")
	}
	for _, c := range r.checks {
		if c.Status == "FAILURE" || c.Status == "WARNING" {
			msg := c.ErrorMessage
			if msg == "" {
				msg = c.Description
			}
			parts = append(parts, fmt.Sprintf("%s %s: %s", c.ID, c.Status, msg))
		}
	}
	return clip(strings.Join(parts, "; "), max)
}

// messages is every failure text of r, for matching a baseline's expect.
func (r result) messages() string {
	return r.why(1 << 20)
}

func clip(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// suiteScenarios runs `conformance list` and returns the server and client
// scenario names, in the suite's order.
func suiteScenarios(t *testing.T, bin string, env []string) (server, client []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "list")
	cmd.Env = env
	cmd.SysProcAttr = testutil.GroupAttr()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("conformance list: %v\n%s", err, clip(string(out), 2000))
	}
	var cur *[]string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Server scenarios"):
			cur = &server
		case strings.HasPrefix(line, "Client scenarios"):
			cur = &client
		case strings.HasPrefix(line, "  - ") && cur != nil:
			*cur = append(*cur, strings.TrimPrefix(line, "  - "))
		}
	}
	if len(server) == 0 || len(client) == 0 {
		t.Fatalf("conformance list printed no server or no client scenarios:\n%s", clip(string(out), 2000))
	}
	return server, client
}

// resultDir matches the directories the suite writes under -o:
// [server-]<scenario>-<timestamp>.
// The suite names them with the ISO time, ':' and '.' replaced by '-'.
var resultDir = regexp.MustCompile(`^(.+)-(\d{4}-\d\d-\d\d)T(\d\d)-(\d\d)-(\d\d)-(\d{3})Z$`)

// readResults reads every <prefix><scenario>-<timestamp>/checks.json under dir.
func readResults(dir, prefix string) (map[string]result, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	out := map[string]result{}
	for _, e := range entries {
		m := resultDir.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil || !strings.HasPrefix(m[1], prefix) {
			continue
		}
		name := strings.TrimPrefix(m[1], prefix)
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "checks.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var checks []check
		if err := json.Unmarshal(b, &checks); err != nil {
			return nil, fmt.Errorf("%s/checks.json: %w", e.Name(), err)
		}
		r := out[name]
		r.checks = append(r.checks, checks...)
		r.dir = filepath.Join(dir, e.Name())
		r.started, _ = time.Parse(time.RFC3339Nano, fmt.Sprintf("%sT%s:%s:%s.%sZ", m[2], m[3], m[4], m[5], m[6]))
		out[name] = r
	}
	return out, nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// bridge is a supergateway process serving one stdio command over stateful
// streamable HTTP on 127.0.0.1. It starts one child per HTTP session, each
// in its own process group, and stops them when it gets SIGTERM.
type bridge struct {
	t      *testing.T
	label  string
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
	log    string
	logf   *os.File
}

// startBridge starts supergateway around stdioCmd (a shell command line:
// supergateway runs it with sh -c) and waits until it accepts connections.
// Its output goes to dir/<label>-bridge.log.
func startBridge(t *testing.T, bin, label, stdioCmd, dir string, env []string) *bridge {
	t.Helper()
	logPath := filepath.Join(dir, label+"-bridge.log")
	// Another process may take the free port before Node binds it; then the
	// bridge exits and we try another port.
	for range 3 {
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		port := freePort(t)
		b := &bridge{t: t, label: label, log: logPath, logf: logf, exited: make(chan struct{})}
		b.cmd = exec.Command(bin, "--stdio", stdioCmd, "--outputTransport", "streamableHttp", "--stateful",
			// A session whose client has gone is reaped after 10s idle, so
			// that a run does not keep one moat per finished scenario.
			"--sessionTimeout", "10000", "--port", strconv.Itoa(port))
		b.cmd.Env = env
		b.cmd.Stdout, b.cmd.Stderr = logf, logf
		b.cmd.SysProcAttr = testutil.GroupAttr()
		if err := b.cmd.Start(); err != nil {
			t.Fatalf("start supergateway: %v", err)
		}
		go func() { b.cmd.Wait(); close(b.exited) }()
		t.Cleanup(b.stop)
		b.url = fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
		if err := waitListening(port, b.exited); err == nil {
			return b
		} else {
			b.stop()
			t.Logf("%s bridge did not start on port %d (%v); trying another port", label, port, err)
		}
	}
	t.Fatalf("%s: supergateway did not start; its output:\n%s", label, tail(logPath, 20))
	return nil
}

// waitListening polls until 127.0.0.1:port accepts a TCP connection, the
// process exits, or startTimeout passes.
func waitListening(port int, exited <-chan struct{}) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("it exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listened on %s within %v", addr, startTimeout)
}

// stop ends the bridge and every process it started: SIGTERM to its group
// (supergateway then stops each session's process group, SIGKILL after 5s),
// then SIGKILL to whatever is left of the processes that were below it.
// Safe to call more than once.
func (b *bridge) stop() {
	select {
	case <-b.exited:
	default:
		below := testutil.Descendants(b.cmd.Process.Pid)
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(stopTimeout):
			b.t.Logf("%s: supergateway did not exit within %v of SIGTERM; killing it", b.label, stopTimeout)
		}
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
		b.reap(below)
	}
	b.logf.Close()
}

// reap kills (by process group, then by pid) the processes in pids that
// outlived the bridge, and waits for them to go.
func (b *bridge) reap(pids []int) {
	deadline := time.Now().Add(stopTimeout)
	var left []int
	for {
		left = slices.DeleteFunc(slices.Clone(pids), func(p int) bool { return !testutil.ProcessAlive(p) })
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) == 0 {
		return
	}
	b.t.Logf("%s: %d processes of the bridge's sessions outlived it by %v; killing them: %v", b.label, len(left), stopTimeout, left)
	for _, p := range left {
		syscall.Kill(-p, syscall.SIGKILL) // a session's group leader
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// runSuite runs the conformance CLI with args (results under outDir, its
// output in logName beside outDir), bounded by timeout, and returns its exit
// status (-1 when it was stopped) and the path of its output log.
func runSuite(t *testing.T, bin string, env []string, outDir, logName string, timeout time.Duration, args ...string) (int, string) {
	t.Helper()
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(filepath.Dir(outDir), logName)
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "-o", outDir)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = testutil.GroupAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err = cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // its scenario servers, if any outlived it
	}
	if ctx.Err() != nil {
		t.Logf("conformance %s: stopped after %v", strings.Join(args[:1], " "), timeout)
		return -1, logPath
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), logPath
	}
	if err != nil {
		t.Fatalf("run conformance: %v", err)
	}
	return 0, logPath
}

// tail returns the last n lines of the file at path, each clipped, for
// failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = "    " + clip(l, 300)
	}
	return strings.Join(lines, "\n")
}

// firstPanic returns the first Go panic in the file at path (its message and
// the few frames after it), or "".
func firstPanic(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.Index(s, "panic: ")
	if i < 0 {
		return ""
	}
	lines := strings.Split(s[i:], "\n")
	if len(lines) > 10 {
		lines = lines[:10]
	}
	for j, l := range lines {
		lines[j] = "    " + clip(strings.TrimPrefix(l, "[supergateway] Child stderr: "), 200)
	}
	return strings.Join(lines, "\n")
}

// safeWord reports whether s can stand in a command line that the suite
// splits on spaces and runs with sh -c.
var safeWord = regexp.MustCompile(`^[A-Za-z0-9_./+=:-]+$`).MatchString

// slowest names the n scenarios of res that took longest, each measured up
// to the start of the next one (the suite runs them one after another).
func slowest(res map[string]result, n int) string {
	type span struct {
		name  string
		start time.Time
		took  time.Duration
	}
	var spans []span
	for name, r := range res {
		if !r.started.IsZero() {
			spans = append(spans, span{name: name, start: r.started})
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start.Compare(b.start) })
	for i := range spans[:max(len(spans)-1, 0)] {
		spans[i].took = spans[i+1].start.Sub(spans[i].start)
	}
	slices.SortFunc(spans, func(a, b span) int { return int(b.took - a.took) })
	var parts []string
	for _, s := range spans[:min(n, len(spans))] {
		parts = append(parts, fmt.Sprintf("%s %v", s.name, s.took.Round(10*time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}
