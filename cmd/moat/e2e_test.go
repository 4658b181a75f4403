package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// These tests run the real moat binary, as an MCP client would: a go-sdk
// client on its stdin/stdout, real upstream servers as its children.

func testServer(t *testing.T, name string, args ...string) map[string]any {
	return map[string]any{
		"description": "Go test server " + name,
		"command":     testutil.BuildTestServer(t),
		"args":        append([]string{"-name", name}, args...),
	}
}

// moatProc is a running moat with a go-sdk client session on its stdio.
type moatProc struct {
	cmd         *exec.Cmd
	cs          *mcp.ClientSession
	stderr      *testutil.SyncBuffer
	toolChanges atomic.Int32
}

func startMoat(t *testing.T, cfgPath string) *moatProc {
	t.Helper()
	return startMoatEnv(t, cfgPath, testutil.MoatEnv(t))
}

// startMoatEnv is startMoat in the environment env (see testutil.MoatEnv),
// for a test that runs other moat commands on the same stores.
func startMoatEnv(t *testing.T, cfgPath string, env []string) *moatProc {
	t.Helper()
	cmd := exec.Command(testutil.BuildMoat(t), cfgPath)
	m := &moatProc{cmd: cmd, stderr: &testutil.SyncBuffer{}}
	cmd.Stderr = m.stderr
	cmd.Env = env
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { m.toolChanges.Add(1) },
	})
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: 10 * time.Second}, nil)
	if err != nil {
		t.Fatalf("connect to moat: %v\nstderr:\n%s", err, m.stderr)
	}
	m.cs = cs
	t.Cleanup(func() {
		cs.Close()
		if t.Failed() {
			t.Logf("moat stderr:\n%s", m.stderr)
		}
	})
	return m
}

func (m *moatProc) call(t *testing.T, tool string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := m.cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s(%v): %v", tool, args, err)
	}
	return res
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

func groupEnum(t *testing.T, cs *mcp.ClientSession) []any {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		if tool.Name == "get_dynamic_tools" {
			e, _ := tool.InputSchema.(map[string]any)["properties"].(map[string]any)["group"].(map[string]any)["enum"].([]any)
			return e
		}
	}
	t.Fatal("no get_dynamic_tools")
	return nil
}

func TestServerEverythingOverStdio(t *testing.T) {
	bin := testutil.NodeBin(t, testutil.EverythingBin)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"everything": map[string]any{"description": "MCP reference server", "command": bin, "args": []string{"stdio"}},
	})
	m := startMoat(t, cfg)
	ctx := context.Background()

	if got := groupEnum(t, m.cs); !slices.Equal(got, []any{"everything"}) {
		t.Fatalf("group enum = %v, want [everything]", got)
	}
	tools := resultText(m.call(t, "get_dynamic_tools", map[string]any{"group": "everything"}))
	if !strings.Contains(tools, `"name":"echo"`) {
		t.Fatalf("get_dynamic_tools(everything) lacks echo: %.300s", tools)
	}
	res := m.call(t, "call_dynamic_tool", map[string]any{"group": "everything", "name": "echo", "args": map[string]any{"message": "through moat"}})
	if res.IsError || resultText(res) != "Echo: through moat" {
		t.Fatalf("echo: isError=%v %q", res.IsError, resultText(res))
	}

	var uri string
	for r, err := range m.cs.Resources(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if r.Meta["group"] != "everything" {
			t.Fatalf("resource %s has _meta %v, want group everything", r.URI, r.Meta)
		}
		if uri == "" && strings.HasPrefix(r.URI, "demo://") {
			uri = r.URI
		}
	}
	if uri == "" {
		t.Fatal("no demo:// resource listed")
	}
	rr, err := m.cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
	if err != nil || len(rr.Contents) == 0 {
		t.Fatalf("read %s: %v", uri, err)
	}
	pr, err := m.cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "simple-prompt"})
	if err != nil || len(pr.Messages) == 0 {
		t.Fatalf("get simple-prompt: %v", err)
	}
}

func TestServerEverythingOverStreamableHTTP(t *testing.T) {
	url := testutil.StartEverythingHTTP(t)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"everything": map[string]any{"description": "MCP reference server over HTTP", "url": url},
	})
	m := startMoat(t, cfg)
	res := m.call(t, "call_dynamic_tool", map[string]any{"group": "everything", "name": "echo", "args": map[string]any{"message": "over http"}})
	if res.IsError || resultText(res) != "Echo: over http" {
		t.Fatalf("echo over streamable HTTP: isError=%v %q", res.IsError, resultText(res))
	}
}

func TestReloadFromTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := testutil.WriteConfig(t, dir, map[string]any{"a": testServer(t, "a"), "b": testServer(t, "b")})
	m := startMoat(t, cfg)
	m.call(t, "get_dynamic_tools", map[string]any{"group": "b"})
	bPids := testutil.Descendants(m.cmd.Process.Pid)

	// A broken file is refused; Moat keeps serving the old config.
	testutil.ReplaceFile(t, cfg, []byte(`{"mcpServers": {"a": {"command": "x"}}}`))
	testutil.Eventually(t, "the rejected reload in the log", func() bool { return strings.Contains(m.stderr.String(), "config reload rejected") })
	if res := m.call(t, "call_dynamic_tool", map[string]any{"group": "b", "name": "echo", "args": map[string]any{"message": "still"}}); resultText(res) != "still" {
		t.Fatalf("after a rejected reload: %q", resultText(res))
	}

	// Remove b, add c: the client is told, b's processes go away.
	before := m.toolChanges.Load()
	testutil.WriteConfig(t, dir, map[string]any{"a": testServer(t, "a"), "c": testServer(t, "c")})
	testutil.Eventually(t, "the new group list", func() bool { return slices.Equal(groupEnum(t, m.cs), []any{"a", "c"}) })
	testutil.Eventually(t, "tools/list_changed", func() bool { return m.toolChanges.Load() > before })
	if res := m.call(t, "call_dynamic_tool", map[string]any{"group": "c", "name": "echo", "args": map[string]any{"message": "new"}}); resultText(res) != "new" {
		t.Fatalf("added group c: %q", resultText(res))
	}
	var bOnly []int
	now := testutil.Descendants(m.cmd.Process.Pid)
	for _, pid := range bPids {
		if !slices.Contains(now, pid) {
			bOnly = append(bOnly, pid)
		}
	}
	if len(bOnly) == 0 {
		t.Fatal("no process went away when group b was removed")
	}
	testutil.NoProcessesLeft(t, bOnly)
}

// TestShutdownLeavesNoProcess stops moat three ways and checks /proc: every
// child, grandchild included, must be gone and reaped.
func TestShutdownLeavesNoProcess(t *testing.T) {
	// A server whose child ignores SIGTERM and outlives it, unless killed.
	stubborn := filepath.Join(t.TempDir(), "stubborn.sh")
	script := "#!/bin/sh\ntrap '' TERM\nsh -c \"trap '' TERM; sleep 300\" &\nexec " + testutil.BuildTestServer(t) + " -name stubborn\n"
	if err := os.WriteFile(stubborn, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"SIGTERM", "SIGINT", "stdin EOF", "SIGKILL"} {
		t.Run(how, func(t *testing.T) {
			cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
				"plain":    testServer(t, "plain"),
				"stubborn": map[string]any{"description": "ignores SIGTERM", "command": stubborn},
			})
			m := startMoat(t, cfg)
			m.call(t, "get_dynamic_tools", map[string]any{"group": "plain"})
			m.call(t, "get_dynamic_tools", map[string]any{"group": "stubborn"})
			pid := m.cmd.Process.Pid
			tree := testutil.Descendants(pid)
			if len(tree) < 4 {
				t.Fatalf("expected launchers, servers and a grandchild under moat, got %v", tree)
			}
			switch how {
			case "SIGTERM":
				syscall.Kill(pid, syscall.SIGTERM)
			case "SIGINT":
				syscall.Kill(pid, syscall.SIGINT)
			case "stdin EOF":
				m.cs.Close() // closes moat's stdin
			case "SIGKILL":
				syscall.Kill(pid, syscall.SIGKILL)
			}
			testutil.Eventually(t, "moat to exit", func() bool { return !testutil.ProcessAlive(pid) })
			testutil.NoProcessesLeft(t, tree)
		})
	}
}

func TestUsageAndConfigErrors(t *testing.T) {
	bin := testutil.BuildMoat(t)
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"mcpServers": {"x": {"description": "d", "command": "c", "timeout": {"tools": 0}}}}`), 0o600)
	for _, tt := range []struct {
		name   string
		args   []string
		env    []string
		code   int
		stderr string
	}{
		{"no config", nil, []string{"MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG="}, 2, "no config file given"},
		{"bad timeout", []string{bad}, nil, 2, "/mcpServers/x/timeout/tools"},
		{"typo command", []string{"secrte"}, nil, 2, `did you mean "secret"?`},
		{"unknown flag", []string{"--nope"}, nil, 2, `unknown flag "--nope"`},
		{"dynamic-mcp env", nil, []string{"MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG=" + bad}, 2, "/mcpServers/x/timeout/tools"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = append(testutil.MoatEnv(t), tt.env...)
			var stderr, stdout bytes.Buffer
			cmd.Stderr, cmd.Stdout = &stderr, &stdout
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("moat %v: exit %d, stderr %q; want exit %d and %q", tt.args, code, stderr.String(), tt.code, tt.stderr)
			}
			if stdout.Len() > 0 {
				t.Errorf("moat wrote to stdout on a usage error: %q", stdout.String())
			}
		})
	}
}

// TestRawProtocol speaks JSON-RPC lines to moat directly: dynamic-mcp's
// params.group extension, and stdout carrying nothing but JSON-RPC even
// with debug logging on.
func TestRawProtocol(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"one": testServer(t, "one", "-same-uris"),
		"two": testServer(t, "two", "-same-uris"),
	})
	cmd := exec.Command(testutil.BuildMoat(t), cfg)
	cmd.Env = testutil.MoatEnv(t)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	send := func(s string) { fmt.Fprintln(stdin, s) }
	await := func(id int) map[string]any {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("moat closed stdout while waiting for id %d", id)
				}
				var msg map[string]any
				if err := json.Unmarshal([]byte(l), &msg); err != nil || msg["jsonrpc"] != "2.0" {
					t.Fatalf("stdout carried a line that is not JSON-RPC: %q", l)
				}
				if msg["id"] == float64(id) {
					return msg
				}
			case <-timeout:
				t.Fatalf("no answer to id %d", id)
			}
		}
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if v := await(1)["result"].(map[string]any)["protocolVersion"]; v != "2024-11-05" {
		t.Fatalf("protocol version %v, want the client's 2024-11-05", v)
	}
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	send(`{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	await(2)
	send(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_dynamic_tools","arguments":{"group":"two"}}}`)
	await(3)
	send(`{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"test://static/hello","group":"two"}}`)
	res := await(4)
	got, _ := json.Marshal(res["result"])
	if !strings.Contains(string(got), "hello from two") {
		t.Fatalf("resources/read with params.group two: %s", got)
	}
}

// TestSecretReferenceReachesTheChildOnly stores a secret with `moat secret
// set` (value on stdin), references it as ${secret:NAME} in a server's env,
// and checks that the child gets it while moat's argv, the child's argv and
// moat's log never hold it.
func TestSecretReferenceReachesTheChildOnly(t *testing.T) {
	home := t.TempDir()
	env := append(os.Environ(),
		"HOME="+home, "XDG_DATA_HOME="+filepath.Join(home, "data"), "XDG_STATE_HOME="+filepath.Join(home, "state"),
		"DBUS_SESSION_BUS_ADDRESS=disabled:", "MOAT_PASSPHRASE=correct horse battery staple")
	const canary = "moat-canary-7f3a9c2e51"
	set := exec.Command(testutil.BuildMoat(t), "secret", "set", "api-token")
	set.Env = env
	set.Stdin = strings.NewReader(canary + "\n")
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("moat secret set: %v\n%s", err, out)
	}
	srv := testServer(t, "test")
	srv["env"] = map[string]string{"API_TOKEN": "${secret:api-token}"}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": srv})

	cmd := exec.Command(testutil.BuildMoat(t), cfg)
	cmd.Env = append(env, "MOAT_LOG=debug")
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(context.Background(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, stderr)
	}
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "env"}})
	if err != nil {
		t.Fatal(err)
	}
	// The child has the value; what it sends back is redacted.
	if !strings.Contains(resultText(res), "API_TOKEN=[REDACTED:api-token]") || strings.Contains(resultText(res), canary) {
		t.Fatalf("the child's echo of its environment was not redacted to the secret's name: %q", resultText(res))
	}
	for _, pid := range append([]int{cmd.Process.Pid}, testutil.Descendants(cmd.Process.Pid)...) {
		if argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(argv, []byte(canary)) {
			t.Errorf("the secret is in the argv of pid %d", pid)
		}
	}
	if strings.Contains(stderr.String(), canary) {
		t.Errorf("the secret is in moat's log")
	}
	var files []string
	filepath.WalkDir(home, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(canary)) {
				files = append(files, path)
			}
		}
		return nil
	})
	if len(files) > 0 {
		t.Errorf("the secret is in plain text on disk: %v", files)
	}
}

// TestAuditLogOfASession runs a session, stops moat and checks the audit
// log: every lifecycle event and call is there, argument values are not,
// and `moat audit verify` accepts it with the keys and with only the
// public key.
func TestAuditLogOfASession(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
	m := startMoat(t, cfg)
	m.call(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "value-4d2c9e"}})
	m.cs.Close()
	testutil.Eventually(t, "moat to exit", func() bool { return m.cmd.ProcessState != nil || !testutil.ProcessAlive(m.cmd.Process.Pid) })

	env := m.cmd.Env
	logPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("no audit log: %v", err)
	}
	if bytes.Contains(data, []byte("value-4d2c9e")) {
		t.Error("an argument value is in the audit log")
	}
	var events []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r struct{ Event, Group, Tool string }
		json.Unmarshal([]byte(line), &r)
		events = append(events, r.Event+":"+r.Group+":"+r.Tool)
	}
	for _, want := range []string{"server_start::", "secret_store::", "child_start:test:", "upstream_ready:test:", "call_intent:test:echo", "tool_call:test:echo", "child_exit:test:", "server_stop::", "checkpoint::"} {
		if !slices.Contains(events, want) {
			t.Errorf("audit log lacks %q; has %v", want, events)
		}
	}
	verify := exec.Command(testutil.BuildMoat(t), "audit", "verify", logPath)
	verify.Env = env
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("moat audit verify: %v\n%s", err, out)
	}
	pub := exec.Command(testutil.BuildMoat(t), "audit", "pubkey")
	pub.Env = env
	key, err := pub.Output()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "audit.pub")
	os.WriteFile(keyFile, key, 0o600)
	auditor := exec.Command(testutil.BuildMoat(t), "audit", "verify", "--pubkey", keyFile, logPath)
	auditor.Env = append(os.Environ(), "DBUS_SESSION_BUS_ADDRESS=disabled:", "MOAT_PASSPHRASE=")
	if out, err := auditor.CombinedOutput(); err != nil {
		t.Fatalf("verify with only the public key: %v\n%s", err, out)
	}
}

// TestNoAuditLogNoCalls: when the audit log cannot be opened (here its
// directory is writable by others), calls are refused before they reach the
// server, and the reason names the cause and its fix.
func TestNoAuditLogNoCalls(t *testing.T) {
	calls := filepath.Join(t.TempDir(), "calls")
	logDir := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(logDir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(logDir, 0o777) // another user could replace the log: Moat refuses it
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test", "-record", calls)},
		map[string]any{"audit": map[string]any{"path": filepath.Join(logDir, "audit.jsonl")}})
	m := startMoat(t, cfg)
	res := m.call(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "x"}})
	text := resultText(res)
	// What the model reads, and passes on: the real cause and its fix, never
	// "switch the audit log off".
	if !res.IsError || !strings.Contains(text, "audit log cannot be written") || !strings.Contains(text, "chmod go-w "+logDir) || strings.Contains(text, "on_failure") {
		t.Fatalf("call without an audit log: isError=%v %q; want the cause and its chmod, and no on_failure", res.IsError, text)
	}
	if data, _ := os.ReadFile(calls); len(data) > 0 {
		t.Fatalf("the call reached the server although it could not be recorded: %s", data)
	}
}

// TestChildrenGetACleanSandboxedEnvironment: nothing from moat's own
// environment reaches a server unless its inherit_env lists it, and every
// child runs with no_new_privs and RLIMIT_CORE=0.
func TestChildrenGetACleanSandboxedEnvironment(t *testing.T) {
	srv := testServer(t, "test")
	srv["inherit_env"] = []string{"ALLOWED_*"}
	srv["env"] = map[string]string{"CONFIGURED": "yes"}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": srv})
	cmd := exec.Command(testutil.BuildMoat(t), cfg)
	cmd.Env = append(testutil.MoatEnv(t), "AWS_SECRET_ACCESS_KEY=canary-aws-5e1f", "ALLOWED_REGION=eu-north",
		"MOAT_PASSPHRASE="+testutil.MoatPassphrase)
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(context.Background(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "env"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(resultText(res), "\n") {
		if name, _, ok := strings.Cut(line, "="); ok {
			names = append(names, name)
		}
	}
	for _, n := range names {
		if !slices.Contains([]string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "ALLOWED_REGION", "CONFIGURED"}, n) && !strings.HasPrefix(n, "LC_") {
			t.Errorf("the child's environment has %s, which nothing allowed", n)
		}
	}
	for _, want := range []string{"ALLOWED_REGION", "CONFIGURED", "PATH"} {
		if !slices.Contains(names, want) {
			t.Errorf("the child's environment lacks %s: %v", want, names)
		}
	}
	if strings.Contains(resultText(res), "canary-aws") || strings.Contains(resultText(res), testutil.MoatPassphrase) {
		t.Error("a secret from moat's environment reached the child")
	}
	var checked int
	for _, pid := range testutil.Descendants(cmd.Process.Pid) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil || !bytes.Contains(status, []byte("testserver")) {
			continue
		}
		checked++
		if !bytes.Contains(status, []byte("NoNewPrivs:\t1")) {
			t.Errorf("server pid %d runs without no_new_privs", pid)
		}
		limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
		if !regexpMatch(`Max core file size\s+0\s+0`, string(limits)) {
			t.Errorf("server pid %d may dump core:\n%s", pid, limits)
		}
	}
	if checked == 0 {
		t.Fatal("found no server process under moat to check")
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// TestAuditSurvivesSIGKILL kills a moat under load 50 times at random
// moments, all writing one audit log: every call whose result the client
// received has its record, and the log verifies.
func TestAuditSurvivesSIGKILL(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
	env := testutil.MoatEnv(t)
	env = append(env, "MOAT_LOG=warn")
	logPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	var acked []string // sha256 of the args of every answered call
	rounds := 50
	if testing.Short() {
		rounds = 5
	}
	for round := range rounds {
		cmd := exec.Command(testutil.BuildMoat(t), cfg)
		cmd.Env = env
		ctx, cancel := context.WithCancel(context.Background())
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// Each kill lands after a random number of answered calls, counted
		// rather than timed, so a slow machine moves the moment but never
		// kills a moat that has not yet written.
		target, answered := 1+rand.IntN(40), 0
		reached := make(chan struct{})
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for n := 0; ; n++ {
					args := fmt.Sprintf(`{"message":"r%d-w%d-n%d"}`, round, w, n)
					res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "echo", "args": json.RawMessage(args)}})
					if err != nil {
						return
					}
					if !res.IsError {
						sum := sha256.Sum256([]byte(args))
						mu.Lock()
						acked = append(acked, hex.EncodeToString(sum[:]))
						if answered++; answered == target {
							close(reached)
						}
						mu.Unlock()
					}
				}
			})
		}
		workers := make(chan struct{})
		go func() { wg.Wait(); close(workers) }()
		select {
		case <-reached:
		case <-workers:
			t.Fatalf("round %d: every caller stopped after %d answers, before the kill", round, answered)
		}
		cmd.Process.Kill()
		<-workers
		cancel()
		cs.Close()
	}
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		var r struct {
			Event, Args string `json:"-"`
			ArgsSHA256  string `json:"args_sha256"`
		}
		if json.Unmarshal([]byte(line), &r) == nil && r.ArgsSHA256 != "" {
			recorded[r.ArgsSHA256] = true
		}
	}
	if len(acked) < rounds {
		t.Fatalf("only %d calls answered in %d rounds: the load is too light to mean anything", len(acked), rounds)
	}
	missing := 0
	for _, sum := range acked {
		if !recorded[sum] {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d answered calls have no audit record", missing, len(acked))
	}
	verify := exec.Command(testutil.BuildMoat(t), "audit", "verify", "--allow-unsealed", logPath)
	verify.Env = env
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("moat audit verify after %d kills: %v\n%s", rounds, err, out)
	}
	t.Logf("%d calls answered over %d SIGKILLed runs, all recorded; the log verifies", len(acked), rounds)
}

// TestAuditRecordsReachSyslog: with audit.syslog set, every record is also
// sent as an RFC 5424 message (here to a unix datagram socket the test
// listens on), as the audit line itself or, with audit.syslog_format, as
// its OCSF or CEF export; the file stays complete.
func TestAuditRecordsReachSyslog(t *testing.T) {
	for _, tt := range []struct{ format, want string }{
		{"", `"event":"tool_call"`},
		{"ocsf", `"class_uid":6003`},
		{"cef", "CEF:0|Moat|Moat|"},
	} {
		t.Run("format="+tt.format, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "log.sock")
			l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			got := make(chan string, 1000)
			go func() {
				buf := make([]byte, 1<<16)
				for {
					n, _, err := l.ReadFromUnix(buf)
					if err != nil {
						return
					}
					got <- string(buf[:n])
				}
			}()
			dir := t.TempDir()
			a := map[string]any{"syslog": "unix://" + sock}
			if tt.format != "" {
				a["syslog_format"] = tt.format
			}
			b, _ := json.Marshal(map[string]any{"mcpServers": map[string]any{"test": testServer(t, "test")}, "audit": a})
			cfg := filepath.Join(dir, "moat.json")
			os.WriteFile(cfg, b, 0o600)
			m := startMoat(t, cfg)
			m.call(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "hi"}})
			deadline := time.After(20 * time.Second)
			for {
				select {
				case msg := <-got:
					if strings.HasPrefix(msg, "<110>1 ") && strings.Contains(msg, " moat ") && strings.Contains(msg, tt.want) && strings.Contains(msg, "echo") {
						return
					}
				case <-deadline:
					t.Fatalf("no tool call record containing %s reached syslog", tt.want)
				}
			}
		})
	}
}

// TestCommandsAreAudited: `moat secret set` and `rm` are recorded in the
// audit log, names only, at once, whether or not a moat is serving on the
// same log; the serving moat goes on writing after the command, and the log
// is one chain that verifies.
func TestCommandsAreAudited(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
	m := startMoat(t, cfg)
	m.call(t, "get_dynamic_tools", map[string]any{"group": "test"})
	env := append(m.cmd.Env, "MOAT_CONFIG="+cfg)
	run := func(stdin string, args ...string) {
		t.Helper()
		cmd := exec.Command(testutil.BuildMoat(t), args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "warning") {
			t.Fatalf("moat %v: %v\n%s", args, err, out)
		}
	}
	const value = "value-9b1d2e7f"
	run(value+"\n", "secret", "set", "while-serving")
	logPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	if data, _ := os.ReadFile(logPath); !strings.Contains(string(data), `"event":"secret_set"`) {
		t.Fatalf("secret set returned before its event was in the log:\n%.3000s", data)
	}
	m.call(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "after the command"}})
	m.cs.Close()
	testutil.Eventually(t, "moat to exit", func() bool { return !testutil.ProcessAlive(m.cmd.Process.Pid) })
	run("", "secret", "rm", "while-serving")

	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), value) {
		t.Fatal("a secret's value is in the audit log")
	}
	var set, call, rm bool
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r struct {
			Event  string
			PID    int
			Detail map[string]string
		}
		json.Unmarshal([]byte(line), &r)
		set = set || r.Event == "secret_set" && r.Detail["name"] == "while-serving" && r.PID != m.cmd.Process.Pid
		call = call || set && r.Event == "tool_call" && r.PID == m.cmd.Process.Pid
		rm = rm || r.Event == "secret_rm" && r.Detail["name"] == "while-serving"
	}
	if !set || !call || !rm {
		t.Fatalf("secret_set by the command while serving: %v; then a call by the serving moat: %v; secret_rm after it stopped: %v\n%.3000s", set, call, rm, data)
	}
	verify := exec.Command(testutil.BuildMoat(t), "audit", "verify", "--allow-unsealed", logPath)
	verify.Env = env
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("moat audit verify: %v\n%s", err, out)
	}
}

// TestTwoMoatsShareTheAuditLog: two clients start their moats at once on a
// fresh home with the default audit log (as Claude Desktop and Cursor do),
// and `moat call` runs while both serve. All three serve every call, and
// the log is one chain that `moat audit verify` accepts.
func TestTwoMoatsShareTheAuditLog(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
	env := testutil.MoatEnv(t)
	moats := make([]*moatProc, 2)
	var wg sync.WaitGroup
	for i := range moats {
		wg.Go(func() { moats[i] = startMoatEnv(t, cfg, env) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	const calls = 20
	for _, m := range moats {
		wg.Go(func() {
			for i := range calls {
				res, err := m.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool",
					Arguments: map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": fmt.Sprint("call ", i)}}})
				if err != nil || res.IsError {
					t.Errorf("moat %d, call %d: %v %.300s", m.cmd.Process.Pid, i, err, resultText(res))
					return
				}
			}
		})
	}
	cli := exec.Command(testutil.BuildMoat(t), "call", "--config", cfg, "test", "echo", `{"message":"from the cli"}`)
	cli.Env = env
	out, err := cli.CombinedOutput()
	wg.Wait()
	if err != nil || !strings.Contains(string(out), "from the cli") {
		t.Fatalf("moat call while two moats serve: %v\n%.2000s", err, out)
	}
	for _, m := range moats {
		m.cs.Close()
		testutil.Eventually(t, "moat to exit", func() bool { return !testutil.ProcessAlive(m.cmd.Process.Pid) })
	}

	logPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	perPID := map[int]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r struct {
			Event, Outcome string
			PID            int
		}
		json.Unmarshal([]byte(line), &r)
		if r.Event == "tool_call" && r.Outcome == "ok" {
			perPID[r.PID]++
		}
	}
	for _, m := range moats {
		if n := perPID[m.cmd.Process.Pid]; n != calls {
			t.Errorf("moat %d has %d ok tool_call records, want %d", m.cmd.Process.Pid, n, calls)
		}
	}
	if len(perPID) != 3 {
		t.Errorf("ok tool_call records by pid: %v; want the two moats and moat call", perPID)
	}
	verify := exec.Command(testutil.BuildMoat(t), "audit", "verify", logPath)
	verify.Env = env
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("moat audit verify: %v\n%s", err, out)
	}
}

// TestCallWaitsForAFirstStart: `moat call` on a server whose first start is
// slow (a package manager installing it) says what it is waiting for, with
// the server's own stderr, and then makes the call instead of giving up.
func TestCallWaitsForAFirstStart(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "installed")
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"slow": testServer(t, "slow", "-start-gate", gate)})
	cmd := exec.Command(testutil.BuildMoat(t), "call", "--config", cfg, "slow", "echo", `{"message":"after the install"}`)
	cmd.Env = testutil.MoatEnv(t)
	var stdout bytes.Buffer
	stderr := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "moat call to say what it waits for", func() bool {
		return strings.Contains(stderr.String(), "moat: waiting for slow: starting for")
	})
	line := stderr.String()[strings.Index(stderr.String(), "moat: waiting for slow:"):]
	line, _, _ = strings.Cut(line, "\n")
	if !strings.Contains(line, "first start") || !strings.Contains(line, "testserver slow: installing") {
		t.Errorf("the progress line lacks the first start or the server's stderr: %q", line)
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(stdout.String(), "after the install") {
		t.Fatalf("moat call: %v\nstdout: %.2000s\nstderr: %.2000s", err, stdout.String(), stderr.String())
	}
}

// headlessEnv is a fresh user on a headless host: its own HOME and XDG
// directories, no session bus, no MOAT_PASSPHRASE, no systemd credential.
func headlessEnv(t *testing.T) []string {
	env := slices.DeleteFunc(testutil.MoatEnv(t), func(e string) bool {
		return strings.HasPrefix(e, "DBUS_SESSION_BUS_ADDRESS=") || strings.HasPrefix(e, "CREDENTIALS_DIRECTORY=")
	})
	return append(env, "MOAT_PASSPHRASE=")
}

// TestHeadlessServesWithoutKeySource: with no keychain and no key source,
// a fresh moat serves a call, its keys go to the file store protected by
// permissions only, and `moat audit verify` verifies its log.
func TestHeadlessServesWithoutKeySource(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
	cmd := exec.Command(testutil.BuildMoat(t), cfg)
	cmd.Env = headlessEnv(t)
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(context.Background(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "headless-ok"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || !strings.Contains(resultText(res), "headless-ok") {
		t.Fatalf("call on a headless host: isError=%v %q\nstderr:\n%s", res.IsError, resultText(res), stderr)
	}
	cs.Close()
	testutil.Eventually(t, "moat to exit", func() bool { return cmd.ProcessState != nil || !testutil.ProcessAlive(cmd.Process.Pid) })
	if !strings.Contains(stderr.String(), "protection=\"permissions only\"") {
		t.Errorf("moat's log does not say which protection is in force:\n%s", stderr)
	}
	logPath := filepath.Join(testutil.EnvValue(cmd.Env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	verify := exec.Command(testutil.BuildMoat(t), "audit", "verify", logPath)
	verify.Env = cmd.Env
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("moat audit verify: %v\n%s", err, out)
	}
	hdr, err := os.ReadFile(filepath.Join(testutil.EnvValue(cmd.Env, "XDG_DATA_HOME"), "moat", "secrets", "header"))
	if err != nil || len(hdr) != 66 {
		t.Errorf("the secret store's header: %d bytes (%v), want the 66-byte permissions-only header", len(hdr), err)
	}
}

// TestRequireEncryptionWithoutKeySourceNoCalls: under
// secrets.require_encryption, with no key source, the audit log cannot be
// opened, so calls are refused, and the reason names the key sources.
func TestRequireEncryptionWithoutKeySourceNoCalls(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test", "-record", filepath.Join(t.TempDir(), "calls"))},
		map[string]any{"secrets": map[string]any{"require_encryption": true}})
	cmd := exec.Command(testutil.BuildMoat(t), cfg)
	cmd.Env = headlessEnv(t)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(context.Background(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError || !strings.Contains(resultText(res), "audit log cannot be written") {
		t.Fatalf("call under require_encryption without a key source: isError=%v %q", res.IsError, resultText(res))
	}
}

// TestOptOutsAreAudited: every protection a config turns off is an opt_out
// record, at start and at every reload that turns it off, so an auditor
// sees when a group stopped being pinned, redacted or validated.
func TestOptOutsAreAudited(t *testing.T) {
	dir := t.TempDir()
	pinOff := testServer(t, "a")
	pinOff["policy"] = map[string]any{"pin": "off"}
	cfg := testutil.WriteConfig(t, dir, map[string]any{"a": pinOff}, map[string]any{"audit": map[string]any{"fsync": "off"}})
	env := testutil.MoatEnv(t)
	m := startMoatEnv(t, cfg, env)
	logPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	optOuts := func() []string {
		data, _ := os.ReadFile(logPath)
		var got []string
		for line := range strings.SplitSeq(string(data), "\n") {
			var r struct {
				Event, Group string
				Detail       map[string]string
			}
			if json.Unmarshal([]byte(line), &r) == nil && r.Event == "opt_out" {
				got = append(got, r.Group+":"+r.Detail["setting"])
			}
		}
		return got
	}
	m.call(t, "get_dynamic_tools", map[string]any{"group": "a"})
	testutil.Eventually(t, "opt_out records a:pin=off and audit.fsync=off at start", func() bool {
		got := optOuts()
		return slices.Contains(got, "a:pin=off") && slices.Contains(got, ":audit.fsync=off")
	})

	lax := testServer(t, "a")
	lax["policy"] = map[string]any{"redact": "off", "on_invalid_schema": "passthrough"}
	lax["sandbox"] = map[string]any{"namespaces": false}
	testutil.WriteConfig(t, dir, map[string]any{"a": lax})
	testutil.Eventually(t, "the reload's opt_out records", func() bool {
		got := optOuts()
		return slices.Contains(got, "a:redact=off") && slices.Contains(got, "a:on_invalid_schema=passthrough") &&
			slices.Contains(got, "a:sandbox.namespaces=false")
	})
}

// TestReloadChangesOnlyTheDescription: a reload that changes only a
// server's description keeps the server running (same process) and tells
// the client the new description.
func TestReloadChangesOnlyTheDescription(t *testing.T) {
	dir := t.TempDir()
	srv := testServer(t, "a")
	srv["description"] = "first words"
	cfg := testutil.WriteConfig(t, dir, map[string]any{"a": srv})
	m := startMoat(t, cfg)
	m.call(t, "get_dynamic_tools", map[string]any{"group": "a"})
	pids := testutil.Descendants(m.cmd.Process.Pid)
	describe := func() string {
		res, err := m.cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tool := range res.Tools {
			if tool.Name == "get_dynamic_tools" {
				return tool.Description
			}
		}
		return ""
	}
	if !strings.Contains(describe(), "first words") {
		t.Fatalf("get_dynamic_tools does not describe group a: %q", describe())
	}
	srv["description"] = "second words"
	testutil.WriteConfig(t, dir, map[string]any{"a": srv})
	testutil.Eventually(t, "the new description", func() bool { return strings.Contains(describe(), "second words") })
	if now := testutil.Descendants(m.cmd.Process.Pid); !slices.Equal(now, pids) {
		t.Errorf("a description change restarted the server: processes %v, then %v", pids, now)
	}
}

// TestManagedPolicyHashIsAudited: every policy_load names the managed
// TestManagedPolicyChangeReachesARunningMoat: the administrator tightens
// the managed policy while moat runs; without any edit of the user's
// config, the next call is refused by the new rule, and the reload is
// audited with its trigger and the policy's new hash.
func TestManagedPolicyChangeReachesARunningMoat(t *testing.T) {
	managed := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(managed, []byte(`{"defaults": {"deny": ["rm"]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"a": testServer(t, "a")})
	env := append(testutil.MoatEnv(t), "MOAT_MANAGED_POLICY="+managed)
	m := startMoatEnv(t, cfg, env)
	echo := func() *mcp.CallToolResult {
		return m.call(t, "call_dynamic_tool", map[string]any{"group": "a", "name": "echo", "args": map[string]any{"message": "hi"}})
	}
	if res := echo(); res.IsError {
		t.Fatalf("echo before the change: %q", resultText(res))
	}
	testutil.ReplaceFile(t, managed, []byte(`{"defaults": {"deny": ["rm", "echo"]}}`))
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("the last echo answered %q", last)
		}
	}()
	testutil.Eventually(t, "the managed policy's deny to reach the running moat", func() bool {
		res := echo()
		last = resultText(res)
		return res.IsError && strings.Contains(last, `deny rule "echo"`)
	})
	// The reload is recorded before its policy judges a call: an auditor
	// reads the new rule before the first refusal that cites it.
	records := testutil.ReadAudit(t, filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl"))
	reloaded := slices.IndexFunc(records, func(r map[string]any) bool {
		d, _ := r["detail"].(map[string]any)
		return r["event"] == "config_reload" && d["trigger"] == "managed_policy"
	})
	refused := slices.IndexFunc(records, func(r map[string]any) bool {
		return r["event"] == "tool_call" && r["tool"] == "echo" && r["decision"] == "deny"
	})
	if reloaded < 0 || refused < 0 || reloaded > refused {
		t.Errorf("the reload the managed policy caused is record %d of the audit log and the first refusal of echo record %d: want the reload, with its trigger, first", reloaded, refused)
	}
}

// policy and the SHA-256 of its contents, so a change of the
// administrator's policy between two loads shows in the audit log.
func TestManagedPolicyHashIsAudited(t *testing.T) {
	dir := t.TempDir()
	managed := filepath.Join(t.TempDir(), "policy.json")
	write := func(body string) string {
		if err := os.WriteFile(managed, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(body))
		return hex.EncodeToString(sum[:])
	}
	first := write(`{"defaults": {"deny": ["rm"]}}`)
	cfg := testutil.WriteConfig(t, dir, map[string]any{"a": testServer(t, "a")})
	env := append(testutil.MoatEnv(t), "MOAT_MANAGED_POLICY="+managed)
	m := startMoatEnv(t, cfg, env)
	m.call(t, "get_dynamic_tools", map[string]any{"group": "a"})
	logPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	loaded := func(sum string) func() bool {
		return func() bool {
			data, _ := os.ReadFile(logPath)
			return strings.Contains(string(data), `"managed_policy_sha256":"`+sum+`"`)
		}
	}
	testutil.Eventually(t, "a policy_load with the managed policy's hash", loaded(first))
	second := write(`{"defaults": {"deny": ["rm", "mv"]}}`)
	srv := testServer(t, "a")
	srv["description"] = "reloaded"
	testutil.WriteConfig(t, dir, map[string]any{"a": srv}) // a reload reads the managed policy again
	testutil.Eventually(t, "a policy_load with the changed managed policy's hash", loaded(second))
}
