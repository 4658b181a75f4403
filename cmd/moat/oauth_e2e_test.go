package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestOAuthLoginOnceThenRestart is issue 3's "done when", through the real
// moat binary and a real OAuth-protected MCP server (testdata/oauthserver)
// on loopback: a group without a token waits for a login; `moat auth login`
// (dynamic client registration, PKCE, the test playing the browser) stores
// a token; the running moat picks it up on its retry backoff without a
// restart; a new moat connects with no login; `moat auth status` shows the
// token; a token echoed by the server is redacted; and no token value is on
// disk or in any output in plain text.
func TestOAuthLoginOnceThenRestart(t *testing.T) {
	work := t.TempDir()
	record := filepath.Join(work, "oauthserver.jsonl")
	mcpURL := startOAuthServer(t, record)
	cfg := testutil.WriteConfig(t, work, map[string]any{
		"protected": map[string]any{"description": "OAuth-protected test server", "url": mcpURL},
	})
	home := t.TempDir()
	env := append(testutil.MoatEnv(t), "HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	var outputs []string // everything moat printed, for the scan at the end

	// 1. No token yet: the group is unavailable (what it says is
	// TestOAuthWaitingForLoginWithoutClientID's business).
	m := startMoatWithEnv(t, cfg, env)
	if res := m.call(t, "get_dynamic_tools", map[string]any{"group": "protected"}); !res.IsError {
		t.Fatalf("get_dynamic_tools before any login succeeded: %q", resultText(res))
	}

	// 2. `moat auth login`, with the test as the browser.
	outputs = append(outputs, authLoginAsBrowser(t, cfg, env))
	issued := issuedTokens(t, record)
	if len(issued) != 2 {
		t.Fatalf("after one login the server issued %d token values, want one access and one refresh token", len(issued))
	}
	access := issued[0]

	// 3. The running moat recovers on its retry backoff, no restart.
	var res *mcp.CallToolResult
	whoami := func(m *moatProc) *mcp.CallToolResult {
		return m.call(t, "call_dynamic_tool", map[string]any{"group": "protected", "name": "whoami", "args": map[string]any{}})
	}
	deadline := time.Now().Add(60 * time.Second) // backoff 2s, 4s, 8s, then 30s
	for res = whoami(m); res.IsError || resultText(res) != "alice"; res = whoami(m) {
		if time.Now().After(deadline) {
			t.Fatalf("the running moat never used the new token: isError=%v %q", res.IsError, resultText(res))
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got := bearerHeaders(t, record); len(got) == 0 || got[len(got)-1] != "Bearer "+access {
		t.Fatalf("the whoami call did not carry the issued access token (%d bearer headers seen)", len(got))
	}

	// 4. A token the server echoes back reaches the client redacted.
	res = m.call(t, "call_dynamic_tool", map[string]any{"group": "protected", "name": "echo_auth", "args": map[string]any{}})
	if text := resultText(res); !strings.Contains(text, "[REDACTED:oauth-protected-access-token]") || strings.Contains(text, access) {
		t.Errorf("echo_auth: the echoed token is not redacted to its name: isError=%v %q", res.IsError, redactTokens(text, issued))
	}
	outputs = append(outputs, stopMoat(t, m))

	// 5. A new moat connects with the stored token, no login.
	before := len(issuedTokens(t, record))
	m = startMoatWithEnv(t, cfg, env)
	if res = whoami(m); res.IsError || resultText(res) != "alice" {
		t.Fatalf("after a restart: isError=%v %q; want alice without a new login", res.IsError, redactTokens(resultText(res), issued))
	}
	if n := len(issuedTokens(t, record)); n != before {
		t.Errorf("the restarted moat got %d new token values; it should use the stored one", n-before)
	}
	outputs = append(outputs, stopMoat(t, m))

	// 6. `moat auth status` lists the server, its token and expiry.
	status := exec.Command(testutil.BuildMoat(t), "auth", "status", "--config", cfg)
	status.Env = env
	out, err := status.CombinedOutput()
	outputs = append(outputs, string(out))
	if err != nil {
		t.Fatalf("moat auth status: %v\n%s", err, redactTokens(string(out), issued))
	}
	line := regexp.MustCompile(`(?m)^protected\s.*$`).FindString(string(out))
	if !regexp.MustCompile(`\syes\s+(\d+h\d\dm|\d+m) \(refreshable\)\s+(encrypted file|file, protected by permissions only)`).MatchString(line) {
		t.Errorf("moat auth status: line for protected is %q; want a token, its expiry and the back end\n%s", line, out)
	}

	// 7. No token value in plain text anywhere.
	issued = issuedTokens(t, record)
	dataDir := filepath.Dir(testutil.EnvValue(env, "XDG_STATE_HOME"))
	scanned := 0
	for _, root := range []string{home, dataDir, work} {
		filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || path == record {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("scan: %v", err)
				return nil
			}
			scanned++
			for _, tok := range issued {
				if bytes.Contains(b, []byte(tok)) {
					t.Errorf("token %.6s… is in plain text in %s", tok, path)
				}
			}
			return nil
		})
	}
	if scanned < 2 {
		t.Fatalf("scanned only %d files; the secret store and audit log should be there", scanned)
	}
	for i, o := range outputs {
		for _, tok := range issued {
			if strings.Contains(o, tok) {
				t.Errorf("token %.6s… is in plain text in moat's output #%d", tok, i)
			}
		}
	}
}

// TestOAuthWaitingForLoginWithoutClientID: a server without
// oauth_client_id (dynamic client registration) and no stored token
// answers 401; the group must say it waits for `moat auth login NAME`,
// not show a raw 401 (issue 3: "the group shows as waiting for login").
func TestOAuthWaitingForLoginWithoutClientID(t *testing.T) {
	work := t.TempDir()
	cfg := testutil.WriteConfig(t, work, map[string]any{
		"protected": map[string]any{"description": "OAuth-protected test server", "url": startOAuthServer(t, filepath.Join(work, "record.jsonl"))},
	})
	m := startMoatWithEnv(t, cfg, testutil.MoatEnv(t))
	for _, call := range []map[string]any{
		{"group": "protected"},
		{"group": "protected", "name": "whoami", "args": map[string]any{}},
	} {
		tool := "get_dynamic_tools"
		if call["name"] != nil {
			tool = "call_dynamic_tool"
		}
		res := m.call(t, tool, call)
		if text := resultText(res); !res.IsError || !strings.Contains(text, "waiting for login") || !strings.Contains(text, "moat auth login protected") || strings.Contains(text, "Unauthorized") {
			t.Errorf("%s before any login: isError=%v %q\nwant an error saying it waits for `moat auth login protected`", tool, res.IsError, text)
		}
	}
}

// startOAuthServer builds and starts testdata/oauthserver in its own
// process group (killed when the test ends) and returns its MCP url.
func startOAuthServer(t *testing.T, record string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "oauthserver")
	build := exec.Command("go", "build", "-o", bin, "./testdata/oauthserver")
	build.Dir = testutil.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/oauthserver: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-record", record)
	cmd.SysProcAttr = testutil.GroupAttr()
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("oauthserver stderr:\n%s", stderr)
		}
	})
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		l, _ := r.ReadString('\n')
		lines <- l
		io.Copy(io.Discard, r)
	}()
	select {
	case l := <-lines:
		u, ok := strings.CutPrefix(strings.TrimSpace(l), "LISTEN ")
		if !ok {
			t.Fatalf("oauthserver printed %q, not its LISTEN line\n%s", l, stderr)
		}
		return u
	case <-time.After(30 * time.Second):
		t.Fatalf("oauthserver printed no LISTEN line\n%s", stderr)
		return ""
	}
}

// startMoatWithEnv is startMoat with a given environment, so that a second
// moat shares the first one's secret store.
func startMoatWithEnv(t *testing.T, cfgPath string, env []string) *moatProc {
	t.Helper()
	cmd := exec.Command(testutil.BuildMoat(t), cfgPath)
	cmd.Env = env
	m := &moatProc{cmd: cmd, stderr: &testutil.SyncBuffer{}}
	cmd.Stderr = m.stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).
		Connect(ctx, &mcp.CommandTransport{Command: cmd, TerminateDuration: 10 * time.Second}, nil)
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

// stopMoat closes moat's stdin, waits for it to exit and returns its stderr.
func stopMoat(t *testing.T, m *moatProc) string {
	t.Helper()
	m.cs.Close()
	testutil.Eventually(t, "moat to exit", func() bool { return m.cmd.ProcessState != nil || !testutil.ProcessAlive(m.cmd.Process.Pid) })
	return m.stderr.String()
}

// authLoginAsBrowser runs `moat auth login [flags] protected` and plays the
// browser: it reads the authorize URL from stderr (no browser opens here),
// asks the authorization server, which approves at once, and takes its
// redirect to moat's loopback callback. It returns the login's stderr.
func authLoginAsBrowser(t *testing.T, cfg string, env []string, flags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	// No xdg-open in PATH: the URL on stderr is the only way to the login.
	cmd := exec.CommandContext(ctx, testutil.BuildMoat(t), append(append([]string{"auth", "login"}, flags...), "protected", "--config", cfg)...)
	cmd.Env = append(env, "PATH="+t.TempDir())
	stderr := &testutil.SyncBuffer{}
	pr, pw := io.Pipe()
	defer pw.Close()
	cmd.Stderr = io.MultiWriter(stderr, pw)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// On a failure below, the login must not outlive the test.
	t.Cleanup(func() { cancel(); cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "  "); ok && strings.Contains(u, "/authorize?") {
				found <- u
				break
			}
		}
		io.Copy(io.Discard, pr)
	}()
	var authURL string
	select {
	case authURL = <-found:
	case <-ctx.Done():
		t.Fatalf("moat auth login printed no authorize URL:\n%s", stderr)
	}

	status, page := testutil.Browse(t, authURL)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("moat auth login: %v\nstderr:\n%s", err, stderr)
	}
	if status != http.StatusOK || !strings.Contains(page, "Logged in") {
		t.Errorf("browser: the callback page is %d %q; want the success page", status, page)
	}
	if !strings.Contains(stderr.String(), "No browser opened") {
		t.Errorf("moat auth login did not say that no browser opened:\n%s", stderr)
	}
	if !strings.Contains(stderr.String(), `Logged in to "protected"`) || stdout.Len() > 0 {
		t.Errorf("moat auth login: stdout %q, stderr:\n%s", stdout.String(), stderr)
	}
	return stderr.String() + stdout.String()
}

// issuedTokens returns every token value the oauthserver issued, in order
// (access, refresh, access, refresh, ...).
func issuedTokens(t *testing.T, record string) []string {
	t.Helper()
	var out []string
	for _, r := range readRecord(t, record) {
		if r["event"] == "issued" {
			out = append(out, r["access_token"], r["refresh_token"])
		}
	}
	return out
}

// bearerHeaders returns the non-empty Authorization headers the MCP
// endpoint received, in order.
func bearerHeaders(t *testing.T, record string) []string {
	t.Helper()
	var out []string
	for _, r := range readRecord(t, record) {
		if r["event"] == "mcp_request" && r["authorization"] != "" {
			out = append(out, r["authorization"])
		}
	}
	return out
}

func readRecord(t *testing.T, path string) []map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l == "" {
			continue
		}
		var r map[string]string
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("oauthserver record line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// redactTokens keeps token values out of the test's own failure messages.
func redactTokens(s string, toks []string) string {
	for i, tok := range toks {
		s = strings.ReplaceAll(s, tok, fmt.Sprintf("<token %d>", i))
	}
	return s
}
