package clients

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatmcp/moat/internal/testutil"
)

// httpGateway is a running `moat serve --listen HOST:PORT`.
type httpGateway struct {
	cmd    *exec.Cmd
	env    []string
	url    string
	stderr *testutil.SyncBuffer
}

var listeningURL = regexp.MustCompile(`http=(https?://\S+/mcp)`)

// startHTTPGateway runs moat as a gateway for cfg on a free port of
// 127.0.0.1, with env (whose secret store holds the tokens).
func startHTTPGateway(t *testing.T, cfg string, env []string) *httpGateway {
	t.Helper()
	g := &httpGateway{env: env, stderr: &testutil.SyncBuffer{}}
	g.cmd = exec.Command(testutil.BuildMoat(t), "serve", "--listen", "127.0.0.1:0", cfg)
	g.cmd.Env, g.cmd.Stderr = env, g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() {
			t.Logf("gateway stderr (tail):\n%s", tail(g.stderr.String()))
		}
	})
	testutil.Eventually(t, "the gateway's HTTP address", func() bool {
		m := listeningURL.FindStringSubmatch(g.stderr.String())
		if m != nil {
			g.url = m[1]
		}
		return m != nil
	})
	return g
}

func (g *httpGateway) stop(t *testing.T) {
	if g.cmd.ProcessState != nil {
		return
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	if err := g.cmd.Wait(); err != nil {
		t.Errorf("the gateway exited with %v after SIGTERM", err)
	}
}

// moatCmd runs a moat command with env and the config in MOAT_CONFIG, and
// returns its stdout.
func moatCmd(t *testing.T, env []string, cfg string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testutil.BuildMoat(t), args...)
	cmd.Env = append(slices.Clone(env), "MOAT_CONFIG="+cfg)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("moat %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String()))
	}
	return strings.TrimSpace(string(out))
}

// httpSeen is what the TypeScript client saw (tshttp.mjs).
type httpSeen struct {
	Groups  []string `json:"groups"`
	Session string   `json:"session"`
	Result  struct {
		Content []struct{ Text string } `json:"content"`
		IsError bool                    `json:"isError"`
	} `json:"result"`
	Error string `json:"error"`
}

func tsHTTP(t *testing.T, env []string, url, token, group, tool, args string) httpSeen {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), driverTimeout)
	defer cancel()
	script := filepath.Join(testutil.RepoRoot(t), "testdata", "clients", "tshttp.mjs")
	cmd := exec.CommandContext(ctx, "node", script, url, token, group, tool, args)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var s httpSeen
	if jerr := json.Unmarshal(out, &s); jerr != nil {
		t.Fatalf("driver: %v: %s\n%s", err, tail(string(out)), tail(stderr.String()))
	}
	return s
}

func (s httpSeen) text() string {
	var b strings.Builder
	for _, c := range s.Result.Content {
		b.WriteString(c.Text)
	}
	return b.String()
}

// post sends one JSON-RPC message as an HTTP client would, with the
// headers given (name, value pairs), and returns the response's status,
// headers and (bounded) body.
func post(t *testing.T, url, body string, headers ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxShown))
	return resp.StatusCode, resp.Header, string(b)
}

const initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

func readAuditLog(t *testing.T, env []string) []map[string]any {
	t.Helper()
	return testutil.ReadAudit(t, filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl"))
}

func tokenGatewayConfig(t *testing.T, dir string, top map[string]any) string {
	gw := map[string]any{"identities": map[string]any{
		"alice": map[string]any{"tokens": []string{"laptop"}, "policy": map[string]any{"deny": []string{"fail"}}},
		"bob":   map[string]any{"tokens": []string{"phone"}, "servers": []string{"beta"}},
	}}
	for k, v := range top {
		gw[k] = v
	}
	return testutil.WriteConfig(t, dir, map[string]server{
		"alpha": entry("Go test server alpha", command{Command: testutil.BuildTestServer(t), Args: []string{"-name", "alpha"}}),
		"beta":  entry("Go test server beta", command{Command: testutil.BuildTestServer(t), Args: []string{"-name", "beta"}}),
	}, map[string]any{"gateway": gw})
}

// TestTypeScriptClientOverHTTPWithTokens: the official TypeScript SDK
// client reaches a gateway over Streamable HTTP with a bearer token, and
// each token is its identity: two tokens of two identities see different
// groups and get different refusals, and the audit log names each. No
// token, a wrong token, a revoked token, another identity's token on a
// session, and a browser's Origin are refused, and each refusal is
// recorded without the token.
func TestTypeScriptClientOverHTTPWithTokens(t *testing.T) {
	requireSDK(t)
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, t.TempDir(), nil)
	laptop := moatCmd(t, env, cfg, "token", "create", "laptop")
	phone := moatCmd(t, env, cfg, "token", "create", "phone")
	if !strings.HasPrefix(laptop, "moat_") || laptop == phone {
		t.Fatalf("tokens %q and %q", laptop, phone)
	}
	g := startHTTPGateway(t, cfg, env)

	alice := tsHTTP(t, env, g.url, laptop, "alpha", "echo", `{"message":"from alice"}`)
	if alice.Error != "" || !strings.Contains(alice.text(), "from alice") {
		t.Fatalf("alice's call: %+v", alice)
	}
	if diff := cmp.Diff([]string{"alpha", "beta"}, alice.Groups); diff != "" {
		t.Errorf("alice's groups (-want +got):\n%s", diff)
	}
	bob := tsHTTP(t, env, g.url, phone, "beta", "echo", `{"message":"from bob"}`)
	if bob.Error != "" || !strings.Contains(bob.text(), "from bob") {
		t.Fatalf("bob's call: %+v", bob)
	}
	if diff := cmp.Diff([]string{"beta"}, bob.Groups); diff != "" {
		t.Errorf("bob's groups (-want +got):\n%s", diff)
	}
	if s := tsHTTP(t, env, g.url, laptop, "alpha", "fail", `{}`); !s.Result.IsError || !strings.Contains(s.text(), "alice") {
		t.Errorf("alice's call of fail: %+v; want a refusal naming her identity", s)
	}
	if s := tsHTTP(t, env, g.url, phone, "alpha", "echo", `{"message":"x"}`); !strings.Contains(s.Error, `unknown group "alpha"`) {
		t.Errorf("bob's call to alpha: %+v; want unknown group", s)
	}
	if s := tsHTTP(t, env, g.url, "-", "alpha", "echo", `{}`); s.Error == "" {
		t.Errorf("a client without a token: %+v; want a refusal", s)
	}

	// What a client without a token, or with a wrong one, is told.
	code, h, _ := post(t, g.url, initialize)
	if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") != `Bearer realm="moat"` {
		t.Errorf("no token: %d, WWW-Authenticate %q", code, h.Get("WWW-Authenticate"))
	}
	const wrong = "moat_not-a-token-of-this-gateway"
	code, h, _ = post(t, g.url, initialize, "Authorization", "Bearer "+wrong)
	if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") != `Bearer realm="moat", error="invalid_token"` {
		t.Errorf("a wrong token: %d, WWW-Authenticate %q", code, h.Get("WWW-Authenticate"))
	}
	// A browser's request, token or not.
	if code, _, _ := post(t, g.url, initialize, "Authorization", "Bearer "+laptop, "Origin", "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("a request with an Origin: %d, want 403", code)
	}
	// Bob's token on alice's session.
	code, h, _ = post(t, g.url, initialize, "Authorization", "Bearer "+laptop)
	sid := h.Get("Mcp-Session-Id")
	if code != http.StatusOK || sid == "" {
		t.Fatalf("alice's initialize: %d, session %q", code, sid)
	}
	code, _, body := post(t, g.url, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		"Authorization", "Bearer "+phone, "Mcp-Session-Id", sid, "Mcp-Protocol-Version", "2025-06-18")
	if code != http.StatusForbidden || strings.Contains(body, "call_dynamic_tool") {
		t.Errorf("bob's token on alice's session: %d %q; want 403", code, body)
	}

	// A revoked token stops working within two seconds or so.
	moatCmd(t, env, cfg, "token", "revoke", "phone")
	revoked := time.Now()
	testutil.Eventually(t, "the revoked token to be refused", func() bool {
		code, _, _ := post(t, g.url, initialize, "Authorization", "Bearer "+phone)
		return code == http.StatusUnauthorized
	})
	if d := time.Since(revoked); d > 5*time.Second {
		t.Errorf("a revoked token worked for %v", d)
	}
	if code, _, _ := post(t, g.url, initialize, "Authorization", "Bearer "+laptop); code != http.StatusOK {
		t.Errorf("alice's token after bob's was revoked: %d", code)
	}

	g.stop(t)
	records := readAuditLog(t, env)
	has := func(event, tool, name string) bool {
		return slices.ContainsFunc(records, func(r map[string]any) bool {
			id, _ := r["identity"].(map[string]any)
			return r["event"] == event && (tool == "" || r["tool"] == tool) && id != nil && id["name"] == name
		})
	}
	for _, c := range []struct{ event, tool, name string }{
		{"session_start", "", "alice"}, {"session_start", "", "bob"},
		{"tool_call", "echo", "alice"}, {"tool_call", "echo", "bob"}, {"tool_call", "fail", "alice"},
		{"session_end", "", "alice"}, {"session_end", "", "bob"},
	} {
		if !has(c.event, c.tool, c.name) {
			t.Errorf("no %s record of %s by %s in the audit log", c.event, c.tool, c.name)
		}
	}
	reasons := map[string]bool{}
	for _, r := range records {
		if r["event"] == "auth_refused" {
			d, _ := r["detail"].(map[string]any)
			reason, _ := d["reason"].(string)
			reasons[reason] = d["remote"] != nil
		}
	}
	for _, want := range []string{"no bearer token", "the token is not one of the gateway's (unknown or revoked)",
		`origin "https://evil.example" is not in gateway.allowed_origins`, "the session belongs to another identity or subject"} {
		if hasRemote, ok := reasons[want]; !ok || !hasRemote {
			t.Errorf("no auth_refused record (with the remote address) saying %q; got %v", want, reasons)
		}
	}
	raw, err := os.ReadFile(filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{laptop, phone, wrong} {
		if strings.Contains(string(raw), tok) || strings.Contains(string(raw), tok[5:]) {
			t.Errorf("the audit log holds a token")
		}
	}
}

// TestGatewayRefusesPlainHTTPOffLoopback: plain HTTP on an address other
// machines can reach is refused at start, naming the fix.
func TestGatewayRefusesPlainHTTPOffLoopback(t *testing.T) {
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, t.TempDir(), nil)
	cmd := exec.Command(testutil.BuildMoat(t), "serve", "--listen", "0.0.0.0:0", cfg)
	cmd.Env = env
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `"tls": {"cert_file"`) || !strings.Contains(string(out), "127.0.0.1") {
		t.Errorf("serve --listen 0.0.0.0:0 without gateway.tls: %v\n%s", err, tail(string(out)))
	}
}

// TestTypeScriptClientOverHTTPS: with gateway.tls, the gateway serves
// HTTPS, and the TypeScript client that trusts its certificate connects.
func TestTypeScriptClientOverHTTPS(t *testing.T) {
	requireSDK(t)
	dir := t.TempDir()
	certFile, keyFile := testutil.WriteSelfSignedCert(t, dir, time.Now().Add(24*time.Hour), "127.0.0.1")
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, dir, map[string]any{"tls": map[string]any{"cert_file": certFile, "key_file": keyFile, "min_version": "1.3"}})
	laptop := moatCmd(t, env, cfg, "token", "create", "laptop")
	g := startHTTPGateway(t, cfg, env)
	if !strings.HasPrefix(g.url, "https://") {
		t.Fatalf("the gateway listens on %s, want https", g.url)
	}
	s := tsHTTP(t, append(slices.Clone(env), "NODE_EXTRA_CA_CERTS="+certFile), g.url, laptop, "alpha", "echo", `{"message":"over tls"}`)
	if s.Error != "" || !strings.Contains(s.text(), "over tls") {
		t.Errorf("the call over HTTPS: %+v", s)
	}
	// TLS 1.2 is refused under min_version 1.3.
	conn, err := tls.Dial("tcp", strings.TrimSuffix(strings.TrimPrefix(g.url, "https://"), "/mcp"), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err == nil {
		conn.Close()
		t.Error("a TLS 1.2 handshake succeeded under min_version 1.3")
	}
}

// TestGatewayBoundsHTTPSessionsPerIdentity: one identity's token cannot
// open sessions without end and take every other identity's room; a
// session it closes makes room again.
func TestGatewayBoundsHTTPSessionsPerIdentity(t *testing.T) {
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, t.TempDir(), nil)
	laptop := moatCmd(t, env, cfg, "token", "create", "laptop")
	phone := moatCmd(t, env, cfg, "token", "create", "phone")
	g := startHTTPGateway(t, cfg, env)

	// Sessions opened at once, 16 at a time, as many clients would: the
	// limit holds for requests that pass it together.
	const most, extra = 256, 24 // cmd/moat's maxSessionsPerUser
	var mu sync.Mutex
	codes := map[int]int{}
	var first, refusal string
	var wg sync.WaitGroup
	queue := make(chan struct{}, 16)
	for range most + extra {
		queue <- struct{}{}
		wg.Go(func() {
			defer func() { <-queue }()
			code, h, body := post(t, g.url, initialize, "Authorization", "Bearer "+laptop)
			mu.Lock()
			defer mu.Unlock()
			codes[code]++
			switch {
			case code == http.StatusOK && first == "":
				first = h.Get("Mcp-Session-Id")
			case code == http.StatusTooManyRequests:
				refusal = body
			}
		})
	}
	wg.Wait()
	if codes[http.StatusOK] != most || codes[http.StatusTooManyRequests] != extra {
		t.Fatalf("%d sessions of one identity asked for at once: answers %v; want %d opened and %d refused (429)", most+extra, codes, most, extra)
	}
	if !strings.Contains(refusal, "identity alice already has 256 sessions") {
		t.Errorf("the refusal says %q; want it to name the limit", refusal)
	}
	if code, _, body := post(t, g.url, initialize, "Authorization", "Bearer "+phone); code != http.StatusOK {
		t.Fatalf("another identity's session: %d %s", code, body)
	}

	req, err := http.NewRequest(http.MethodDelete, g.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+laptop)
	req.Header.Set("Mcp-Session-Id", first)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testutil.Eventually(t, "room for a new session after one closed", func() bool {
		code, _, _ := post(t, g.url, initialize, "Authorization", "Bearer "+laptop)
		return code == http.StatusOK
	})
	g.stop(t)
	if !slices.ContainsFunc(readAuditLog(t, env), func(r map[string]any) bool {
		d, _ := r["detail"].(map[string]any)
		return r["event"] == "auth_refused" && d != nil && strings.Contains(fmt.Sprint(d["reason"]), "already has 256 sessions")
	}) {
		t.Error("no auth_refused record of the session over the limit")
	}
}

// TestGatewayRefusesARebindingHost: a page that rebinds its own name to
// 127.0.0.1 reaches a loopback gateway with that name as Host; go-sdk's
// check refuses it, even with a valid token (which such a page would not
// have, but a leaked one must not be enough).
func TestGatewayRefusesARebindingHost(t *testing.T) {
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, t.TempDir(), nil)
	laptop := moatCmd(t, env, cfg, "token", "create", "laptop")
	g := startHTTPGateway(t, cfg, env)
	try := func(host string) int {
		req, err := http.NewRequest(http.MethodPost, g.url, strings.NewReader(initialize))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+laptop)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := try("attacker.example:80"); code != http.StatusForbidden {
		t.Errorf("a request whose Host is attacker.example: %d, want 403", code)
	}
	if code := try(strings.TrimSuffix(strings.TrimPrefix(g.url, "http://"), "/mcp")); code != http.StatusOK {
		t.Errorf("the same request with the listener's own Host: %d, want 200", code)
	}
}

// TestTokensCreatedAtOnceAreAllKept: `moat token create` in several
// processes at once (a provisioning script) keeps every token.
func TestTokensCreatedAtOnceAreAllKept(t *testing.T) {
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, t.TempDir(), nil)
	moatCmd(t, env, cfg, "token", "create", "first") // the store exists before the race
	const n = 6
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := exec.Command(testutil.BuildMoat(t), "token", "create", fmt.Sprintf("t%d", i))
			cmd.Env = append(slices.Clone(env), "MOAT_CONFIG="+cfg)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("token create t%d: %v\n%s", i, err, tail(string(out)))
			}
		})
	}
	wg.Wait()
	list := moatCmd(t, env, cfg, "token", "list")
	for i := range n {
		if !strings.Contains(list, fmt.Sprintf("t%d ", i)) {
			t.Errorf("token t%d is not in the list:\n%s", i, list)
		}
	}
}

// TestAFloodOfRefusalsStaysSmall: a peer without a token that sends
// requests with a 60 KB Origin as fast as it can gets each refused, but
// the audit log and the gateway's log take at most 20 refusals a second
// (the rest are counted), each with a reason of at most 300 characters:
// a flood of headers is not a flood of disk.
func TestAFloodOfRefusalsStaysSmall(t *testing.T) {
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, t.TempDir(), nil)
	g := startHTTPGateway(t, cfg, env)
	origin := "https://" + strings.Repeat("\xff", 60<<10)
	const sent = 100
	start := time.Now()
	for range sent {
		if code, _, _ := post(t, g.url, initialize, "Origin", origin); code != http.StatusForbidden {
			t.Fatalf("a request with a foreign Origin: %d, want 403", code)
		}
	}
	// A burst of 20, then 20 a second.
	allowed := 20 + int(20*time.Since(start).Seconds()) + 1
	// The refusals over the limit are counted in the next record written:
	// one more refused request once the limit lets one through.
	counted := func(r map[string]any) bool {
		d, _ := r["detail"].(map[string]any)
		return r["event"] == "auth_refused" && d["suppressed"] != nil
	}
	late := 0
	testutil.Eventually(t, "a record counting the refusals over the limit", func() bool {
		post(t, g.url, initialize, "Origin", "https://late.example")
		late++
		return slices.ContainsFunc(readAuditLog(t, env), counted)
	})
	g.stop(t)

	flood, recorded, suppressed, long := 0, 0, 0, 0
	for _, r := range readAuditLog(t, env) {
		if r["event"] != "auth_refused" {
			continue
		}
		recorded++
		d, _ := r["detail"].(map[string]any)
		reason, _ := d["reason"].(string)
		if n := len([]rune(reason)); (n > 300 || !strings.HasPrefix(reason, "origin ")) && long == 0 {
			t.Errorf("a refusal's reason has %d characters, want at most 300: %.80q…", n, reason)
			long++
		}
		if !strings.Contains(reason, "late.example") {
			flood++
		}
		if s, ok := d["suppressed"].(string); ok {
			n, _ := strconv.Atoi(s)
			suppressed += n
		}
	}
	if flood == 0 || flood > allowed || suppressed == 0 || recorded+suppressed > sent+late {
		t.Errorf("%d of %d refusals recorded (and %d counted as suppressed) for a flood of %d and %d later: want at most %d of the flood recorded and the others counted",
			flood, recorded, suppressed, sent, late, allowed)
	}
	if lines := strings.Count(g.stderr.String(), "refused an HTTP request"); lines != recorded {
		t.Errorf("the gateway logged %d refusals and recorded %d: want the log as bounded as the records", lines, recorded)
	}
	if n := len(g.stderr.String()); n > 256<<10 {
		t.Errorf("the gateway's log grew by %d bytes for %d refused requests", n, sent)
	}
}

// TestHTTPSessionsEndInTheAuditLogWhenTheGatewayStops: sessions still
// open when the gateway is stopped, each subscribed to a resource, each
// get their session_end record: the gateway closes its audit log only
// after the last one is written.
func TestHTTPSessionsEndInTheAuditLogWhenTheGatewayStops(t *testing.T) {
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, t.TempDir(), nil)
	laptop := moatCmd(t, env, cfg, "token", "create", "laptop")
	g := startHTTPGateway(t, cfg, env)
	const n = 20
	open := map[string]bool{}
	for range n {
		code, h, _ := post(t, g.url, initialize, "Authorization", "Bearer "+laptop)
		sid := h.Get("Mcp-Session-Id")
		if code != http.StatusOK || sid == "" {
			t.Fatalf("initialize: %d, session %q", code, sid)
		}
		open[sid] = true
		// A subscription makes its end take a call to the server.
		for _, m := range []string{`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			`{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"alpha://static/hello"}}`} {
			if code, _, body := post(t, g.url, m, "Authorization", "Bearer "+laptop, "Mcp-Session-Id", sid, "Mcp-Protocol-Version", "2025-06-18"); code >= 300 || strings.Contains(body, `"error"`) {
				t.Fatalf("%s: %d %s", m, code, body)
			}
		}
	}
	g.stop(t)
	for _, r := range readAuditLog(t, env) {
		if r["event"] == "session_end" {
			delete(open, r["session"].(string))
		}
	}
	if len(open) > 0 {
		t.Errorf("%d of %d sessions open at the gateway's stop have no session_end record", len(open), n)
	}
}

// TestRevokingATokenEndsItsSessions: a session's event stream, opened with
// a token since revoked (and a new one made under its name), does not go
// on receiving: the gateway ends the sessions of a revoked token within
// seconds (and records why), and leaves other tokens' sessions alone.
func TestRevokingATokenEndsItsSessions(t *testing.T) {
	env := testutil.MoatEnv(t)
	cfg := tokenGatewayConfig(t, t.TempDir(), nil)
	laptop := moatCmd(t, env, cfg, "token", "create", "laptop")
	phone := moatCmd(t, env, cfg, "token", "create", "phone")
	g := startHTTPGateway(t, cfg, env)

	open := func(token string) string {
		t.Helper()
		code, h, body := post(t, g.url, initialize, "Authorization", "Bearer "+token)
		sid := h.Get("Mcp-Session-Id")
		if code != http.StatusOK || sid == "" {
			t.Fatalf("initialize: %d %s", code, body)
		}
		post(t, g.url, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, "Authorization", "Bearer "+token, "Mcp-Session-Id", sid, "Mcp-Protocol-Version", "2025-06-18")
		return sid
	}
	laptopSession, phoneSession := open(laptop), open(phone)

	// The laptop's event stream, read until the gateway ends it.
	req, err := http.NewRequest(http.MethodGet, g.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"Accept": "text/event-stream", "Authorization": "Bearer " + laptop,
		"Mcp-Session-Id": laptopSession, "Mcp-Protocol-Version": "2025-06-18"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the laptop's event stream: %d", resp.StatusCode)
	}
	streamEnded := make(chan struct{})
	go func() {
		io.Copy(io.Discard, resp.Body)
		close(streamEnded)
	}()

	// Revoked, and a new token made under its name at once, as after a
	// leak: the old token's session still ends.
	moatCmd(t, env, cfg, "token", "revoke", "laptop")
	moatCmd(t, env, cfg, "token", "create", "laptop")
	select {
	case <-streamEnded:
	case <-time.After(time.Minute):
		t.Fatal("the event stream of a revoked token's session is still open a minute later")
	}
	code, _, body := post(t, g.url, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		"Authorization", "Bearer "+phone, "Mcp-Session-Id", phoneSession, "Mcp-Protocol-Version", "2025-06-18")
	if code != http.StatusOK || !strings.Contains(body, "call_dynamic_tool") {
		t.Errorf("another token's session after the revocation: %d %.200s", code, body)
	}

	g.stop(t)
	ended := map[string]string{}
	for _, r := range readAuditLog(t, env) {
		if r["event"] == "session_end" {
			d, _ := r["detail"].(map[string]any)
			reason, _ := d["reason"].(string)
			ended[r["session"].(string)] = reason
		}
	}
	if ended[laptopSession] != "its token was revoked" {
		t.Errorf("the revoked token's session_end says %q, want it to say the token was revoked", ended[laptopSession])
	}
	if reason, ok := ended[phoneSession]; !ok || reason != "" {
		t.Errorf("the other session's session_end: %q (recorded: %v), want one with no reason (it ended with the gateway)", reason, ok)
	}
}
