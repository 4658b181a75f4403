package attacks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// waitTimeout bounds every wait for something moat does on its own
// (connecting, reconnecting, reloading). It is generous for a loaded 2-core
// CI runner; a passing test never waits that long.
const waitTimeout = 30 * time.Second

// hostileBuild builds testdata/hostile once per test binary.
var hostileBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// hostileBin returns the path of the testdata/hostile binary.
func hostileBin(t testing.TB) string {
	t.Helper()
	hostileBuild.once.Do(func() {
		root, err := os.Getwd()
		if err == nil {
			root = filepath.Join(root, "..", "..")
		}
		dir, err := os.MkdirTemp("", "moat-attacks-")
		if err != nil {
			hostileBuild.err = err
			return
		}
		hostileBuild.dir = dir
		hostileBuild.path = filepath.Join(dir, "hostile")
		cmd := exec.Command("go", "build", "-o", hostileBuild.path, "./testdata/hostile")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			hostileBuild.err = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if hostileBuild.err != nil {
		t.Fatalf("build testdata/hostile: %v", hostileBuild.err)
	}
	return hostileBuild.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if hostileBuild.dir != "" {
		os.RemoveAll(hostileBuild.dir)
	}
	os.Exit(code)
}

// server is one mcpServers entry.
type server = map[string]any

// testServer is a stdio entry running testdata/testserver.
func testServer(t *testing.T, name string, args ...string) server {
	return server{
		"description": "Go test server " + name,
		"command":     testutil.BuildTestServer(t),
		"args":        append([]string{"-name", name}, args...),
	}
}

// hostileStdio is a stdio entry running testdata/hostile in mode.
func hostileStdio(t *testing.T, mode string) server {
	return server{"description": "hostile " + mode, "command": hostileBin(t), "args": []string{"-mode", mode}}
}

// startHostileHTTP runs testdata/hostile in an HTTP mode and returns the URL
// it printed; the process is stopped when the test ends.
func startHostileHTTP(t *testing.T, args ...string) string {
	t.Helper()
	return testutil.StartHTTPServer(t, hostileBin(t), append([]string{"-transport", "ignored"}, args...)...)
}

// moatProc is a running moat with a go-sdk client session on its stdio.
type moatProc struct {
	cmd    *exec.Cmd
	env    []string
	cs     *mcp.ClientSession
	stderr *testutil.SyncBuffer
}

// startMoat serves cfgPath with a fresh moatEnv plus extraEnv.
func startMoat(t *testing.T, cfgPath string, extraEnv ...string) *moatProc {
	t.Helper()
	return startMoatWith(t, append(testutil.MoatEnv(t), extraEnv...), nil, cfgPath)
}

// startMoatWith runs wrapper... moat cfgPath (wrapper may be nil) with env
// and connects a client to it. The session is closed when the test ends.
func startMoatWith(t *testing.T, env, wrapper []string, cfgPath string) *moatProc {
	t.Helper()
	argv := append(slices.Clone(wrapper), testutil.BuildMoat(t), cfgPath)
	cmd := exec.Command(argv[0], argv[1:]...)
	m := &moatProc{cmd: cmd, env: env, stderr: &testutil.SyncBuffer{}}
	cmd.Env = env
	cmd.Stderr = m.stderr
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "attacks", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: 15 * time.Second}, nil)
	if err != nil {
		t.Fatalf("connect to moat: %v\nstderr:\n%s", err, m.stderr)
	}
	m.cs = cs
	t.Cleanup(func() {
		cs.Close()
		if t.Failed() {
			t.Logf("moat stderr (last 8 KiB):\n%s", tail(m.stderr.String(), 8<<10))
		}
	})
	return m
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// callRaw calls one of moat's two tools with arguments exactly as given.
func (m *moatProc) callRaw(t *testing.T, tool string, args any) (*mcp.CallToolResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return m.cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
}

// call runs call_dynamic_tool(group, name, args) and fails the test on a
// protocol error.
func (m *moatProc) call(t *testing.T, group, name string, args any) *mcp.CallToolResult {
	t.Helper()
	a := map[string]any{"group": group, "name": name}
	if args != nil {
		a["args"] = args
	}
	res, err := m.callRaw(t, "call_dynamic_tool", a)
	if err != nil {
		t.Fatalf("call_dynamic_tool(%s, %s): %v", group, name, err)
	}
	return res
}

// echoWorks checks that group still serves echo: the attack on another
// group (or an earlier attack on this one) did not take it down.
func (m *moatProc) echoWorks(t *testing.T, group string) {
	t.Helper()
	res := m.call(t, group, "echo", map[string]any{"message": "still here"})
	if res.IsError || resultText(res) != "still here" {
		t.Fatalf("echo on group %s after the attack: isError=%v %q", group, res.IsError, resultText(res))
	}
}

func resultText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// tools returns get_dynamic_tools(group) by tool name.
func (m *moatProc) tools(t *testing.T, group string) map[string]map[string]any {
	t.Helper()
	res, err := m.callRaw(t, "get_dynamic_tools", map[string]any{"group": group})
	if err != nil {
		t.Fatalf("get_dynamic_tools(%s): %v", group, err)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(resultText(res)), &list); err != nil {
		t.Fatalf("get_dynamic_tools(%s) = %q: %v", group, resultText(res), err)
	}
	out := map[string]map[string]any{}
	for _, tool := range list {
		out[fmt.Sprint(tool["name"])] = tool
	}
	return out
}

// groupStatus is what the model reads about group in get_dynamic_tools'
// description: "ready, N tools", "connecting" or "unavailable: reason".
func (m *moatProc) groupStatus(t *testing.T, group string) string {
	t.Helper()
	res, err := m.cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		if tool.Name != "get_dynamic_tools" {
			continue
		}
		for _, line := range strings.Split(tool.Description, "\n") {
			if rest, ok := strings.CutPrefix(line, "- "+group+": "); ok {
				// "description (state)"; the state may itself hold parentheses.
				if loc := stateRE.FindStringIndex(rest); loc != nil {
					return strings.TrimSuffix(rest[loc[0]+2:], ")")
				}
				return rest
			}
		}
	}
	t.Fatalf("group %s is not in get_dynamic_tools' description", group)
	return ""
}

var stateRE = regexp.MustCompile(` \((ready|connecting|unavailable|waiting)`)

// waitStatus waits until group's status starts with prefix and returns it.
func (m *moatProc) waitStatus(t *testing.T, group, prefix string) string {
	t.Helper()
	var st string
	waitFor(t, fmt.Sprintf("group %s to be %q", group, prefix), func() bool {
		st = m.groupStatus(t, group)
		return strings.HasPrefix(st, prefix)
	}, func() string { return "last status: " + st })
	return st
}

// stop closes the client session (moat's stdin) and waits for moat to exit,
// so its audit log is complete and sealed.
func (m *moatProc) stop(t *testing.T) {
	t.Helper()
	m.cs.Close()
	waitFor(t, "moat to exit", func() bool {
		return m.cmd.ProcessState != nil || !testutil.ProcessAlive(m.cmd.Process.Pid)
	}, nil)
}

// auditPath is moat's default audit log in its XDG_STATE_HOME.
func auditPath(env []string) string {
	return filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
}

// auditLog stops moat, checks that `moat audit verify --allow-unsealed`
// accepts its log, and returns the records.
func (m *moatProc) auditLog(t *testing.T) []audit.Record {
	t.Helper()
	m.stop(t)
	return verifiedAudit(t, m.env)
}

// verifiedAudit reads the audit log (rotated files first) of a moat that ran with env, after
// `moat audit verify --allow-unsealed` accepted it.
func verifiedAudit(t *testing.T, env []string) []audit.Record {
	t.Helper()
	path := auditPath(env)
	verify := exec.Command(testutil.BuildMoat(t), "audit", "verify", "--allow-unsealed", path)
	verify.Env = env
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("moat audit verify --allow-unsealed %s: %v\n%s", path, err, out)
	}
	files, err := audit.LogFiles(path)
	if err != nil {
		t.Fatalf("list the audit log's files: %v", err)
	}
	var recs []audit.Record
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read the audit log: %v", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			var r audit.Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("audit line %q: %v", sc.Text(), err)
			}
			recs = append(recs, r)
		}
	}
	return recs
}

// findRecord returns the first record for which match is true, or fails
// the test listing what the log holds.
func findRecord(t *testing.T, recs []audit.Record, what string, match func(r audit.Record) bool) audit.Record {
	t.Helper()
	for _, r := range recs {
		if match(r) {
			return r
		}
	}
	var have []string
	for _, r := range recs {
		b, _ := json.Marshal(struct {
			Event, Group, Tool, Decision, Rule, Outcome, Reason string
			Detail                                              map[string]string
		}{r.Event, r.Group, r.Tool, r.Decision, r.Rule, string(r.Outcome), r.Reason, r.Detail})
		have = append(have, string(b))
	}
	t.Fatalf("the audit log has no record of %s; it has:\n%s", what, strings.Join(have, "\n"))
	return audit.Record{}
}

// recordedCalls reads a -record file of testdata/testserver: the name of
// every tools/call that reached the upstream, with its raw arguments.
func recordedCalls(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var calls []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line != "" {
			calls = append(calls, line)
		}
	}
	return calls
}

// waitFor polls cond until it holds or waitTimeout passes; explain, if not
// nil, adds to the failure message.
func waitFor(t *testing.T, what string, cond func() bool, explain func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if explain != nil {
				msg = ": " + explain()
			}
			t.Fatalf("timed out after %v waiting for %s%s", waitTimeout, what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runMoat runs a moat command to completion and returns its exit code and
// combined output.
func runMoat(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	return runMoatWith(t, env, nil, args...)
}

// runMoatWith is runMoat under a command prefix such as netnsWrapper's.
func runMoatWith(t *testing.T, env, wrapper []string, args ...string) (int, string) {
	t.Helper()
	argv := append(append(slices.Clone(wrapper), testutil.BuildMoat(t)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String()
		} else if err != nil {
			t.Fatalf("moat %v: %v", args, err)
		}
		return 0, out.String()
	case <-time.After(waitTimeout):
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("moat %v did not finish within %v:\n%s", args, waitTimeout, out.String())
		return 0, ""
	}
}

// errorsAs is errors.As for a *jsonrpc.Error.
func errorsAs(err error, target **jsonrpc.Error) bool { return errors.As(err, target) }

// netnsWrapper returns the command prefix that runs a program in a new,
// empty network namespace (only a down loopback), so that nothing it does
// can send a packet anywhere: `unshare -n` as root, `unshare -rn` (a user
// namespace too) otherwise. It skips the test when neither works: a test
// that might reach a real network must not run.
func netnsWrapper(t *testing.T) []string {
	t.Helper()
	for _, w := range [][]string{{"unshare", "-n", "--"}, {"unshare", "-rn", "--"}} {
		if err := exec.Command(w[0], append(w[1:], "true")...).Run(); err == nil {
			return w
		}
	}
	t.Skip("SKIP: cannot create a network namespace (unshare -n / -rn), and this attack must never reach a real network")
	return nil
}
