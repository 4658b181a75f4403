package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestGatewayPerUserServersEndToEnd: through the real gateway and `moat
// connect` as two users, a per-user server runs once per identity with
// that identity's own secret (stored with `moat secret set --identity`):
// each user's server holds only that user's canary, a user without one is
// told what to run, every process start is audited with its identity, and
// an identity's server stops when unused and starts again on its next call.
func TestGatewayPerUserServersEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: runs clients as other users, which needs root")
	}
	mine := testServer(t, "mine")
	mine["per_user"] = true
	mine["env"] = map[string]string{"MOAT_TEST_CANARY": "${secret:canary}"}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"shared": testServer(t, "shared"),
		"mine":   mine,
	}, map[string]any{"gateway": map[string]any{
		"socket_mode":   "0660",
		"socket_group":  "4300",
		"per_user_idle": "1s",
		"identities": map[string]any{
			"alice": map[string]any{"uids": []int{uidAlice}},
			"bob":   map[string]any{"uids": []int{uidBob}},
			"carol": map[string]any{"uids": []int{uidStranger}},
		},
	}})
	g := startGateway(t, cfg)
	canaries := map[string]string{"alice": "canary-of-alice-5e1f0a", "bob": "canary-of-bob-c27d94"}
	for who, v := range canaries {
		cmd := exec.Command(testutil.BuildMoat(t), "secret", "set", "--identity", who, "canary")
		cmd.Env, cmd.Stdin = g.env, strings.NewReader(v)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "canary@"+who) {
			t.Fatalf("moat secret set --identity %s canary: %v\n%s", who, err, out)
		}
	}

	call := func(cs *mcp.ClientSession, group, tool string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": group, "name": tool, "args": map[string]any{}}})
		if err != nil {
			return "", err
		}
		return resultText(res), nil
	}
	sessions := map[string]*mcp.ClientSession{}
	for who, uid := range map[string]int{"alice": uidAlice, "bob": uidBob, "carol": uidStranger} {
		cs, err := g.connectAs(t, uid, nil)
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		sessions[who] = cs
	}

	// Each user's copy has that user's secret: the client sees it only as
	// the redaction marker that names it, and never the other user's.
	for who, other := range map[string]string{"alice": "bob", "bob": "alice"} {
		env, err := call(sessions[who], "mine", "env")
		if err != nil {
			t.Fatalf("%s's env: %v", who, err)
		}
		if !strings.Contains(env, "MOAT_TEST_CANARY=[REDACTED:canary_"+who+"]") || strings.Contains(env, other) ||
			strings.Contains(env, canaries[who]) || strings.Contains(env, canaries[other]) {
			t.Errorf("%s's per-user server: MOAT_TEST_CANARY line %q, want only %s's own secret, redacted", who, canaryIn(env), who)
		}
	}
	if env, err := call(sessions["alice"], "shared", "env"); err != nil || strings.Contains(env, "MOAT_TEST_CANARY") {
		t.Errorf("the shared server: %v %q, want no per-user secret", err, canaryIn(env))
	}
	// carol has no secret of her own: she is told what to run, and keeps
	// her shared server.
	if _, err := call(sessions["carol"], "mine", "env"); err == nil || !strings.Contains(err.Error(), "moat secret set --identity carol canary") {
		t.Errorf("carol's call to her per-user server: %v, want the command that stores her secret", err)
	}
	if _, err := call(sessions["carol"], "shared", "echo"); err != nil {
		t.Errorf("carol's shared server: %v", err)
	}

	// Unused for per_user_idle, alice's copy stops; her next call starts it.
	testutil.Eventually(t, "alice's per-user server to stop unused", func() bool {
		return slices.ContainsFunc(strings.Split(g.stderr.String(), "\n"), func(l string) bool {
			return strings.Contains(l, "upstream stopped unused") && strings.Contains(l, "alice")
		})
	})
	if env, err := call(sessions["alice"], "mine", "env"); err != nil || !strings.Contains(env, "[REDACTED:canary_alice]") {
		t.Errorf("alice's call after her server stopped: %v %q", err, canaryIn(env))
	}

	for _, cs := range sessions {
		cs.Close()
	}
	g.stop(t)
	records := testutil.ReadAudit(t, filepath.Join(testutil.EnvValue(g.env, "XDG_STATE_HOME"), "moat", "audit.jsonl"))
	starts := map[string]int{}
	for _, r := range records {
		d, _ := r["detail"].(map[string]any)
		if r["event"] == "child_start" && r["group"] == "mine" {
			who, _ := d["identity"].(string)
			starts[who]++
		}
	}
	if starts["alice"] != 2 || starts["bob"] != 1 || starts[""] != 0 || starts["carol"] != 0 {
		t.Errorf("processes of the per-user server started, by identity: %v; want alice 2 (woken once), bob 1, none shared or for carol", starts)
	}
}

// canaryIn is the MOAT_TEST_CANARY line of an env listing, for messages.
func canaryIn(env string) string {
	for line := range strings.Lines(env) {
		if strings.HasPrefix(line, "MOAT_TEST_CANARY=") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// TestGatewayPerUserOAuth: a per-user OAuth server (testdata/oauthserver)
// on a gateway uses each identity's own token, from `moat auth login
// --identity`: alice's calls carry the token of her login, bob is told the
// command that logs him in, and after it his calls carry his own token
// while alice's still carry hers.
func TestGatewayPerUserOAuth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: runs clients as other users, which needs root")
	}
	cfg, record := perUserOAuthConfig(t)
	g := startGateway(t, cfg)
	authLoginAsBrowser(t, cfg, g.env, "--identity", "alice")
	aliceToken := issuedTokens(t, record)[0]

	alice, err := g.connectAs(t, uidAlice, nil)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := g.connectAs(t, uidBob, nil)
	if err != nil {
		t.Fatal(err)
	}
	lastBearer := func() string {
		b := bearerHeaders(t, record)
		if len(b) == 0 {
			return ""
		}
		return b[len(b)-1]
	}

	if res, err := whoami(alice); err != nil || res.IsError {
		t.Fatalf("alice's whoami: %v %.500q", err, resultText(res))
	}
	if lastBearer() != "Bearer "+aliceToken {
		t.Error("alice's call did not carry the token of her own login")
	}
	res, err := whoami(bob)
	if err != nil || !res.IsError || !strings.Contains(resultText(res), "moat auth login --identity bob protected") {
		t.Fatalf("bob's whoami before his login: %v %.500q, want the command that logs him in", err, resultText(res))
	}

	authLoginAsBrowser(t, cfg, g.env, "--identity", "bob")
	bobToken := issuedTokens(t, record)[2]
	testutil.Eventually(t, "bob's calls to use his own token", func() bool {
		res, err := whoami(bob)
		return err == nil && !res.IsError && lastBearer() == "Bearer "+bobToken
	})
	if res, err := whoami(alice); err != nil || res.IsError || lastBearer() != "Bearer "+aliceToken {
		t.Errorf("alice's call after bob's login: %v, carried her token: %v", err, lastBearer() == "Bearer "+aliceToken)
	}
}

// TestGatewaySelfServiceLogin: a person whose own copy of a per-user OAuth
// server waits for a login gets, in a client that shows login links (MCP
// URL-mode elicitation), a URLElicitationRequired error with the authorize
// URL instead of the admin's command; opening it logs their identity in,
// the client is told the login completed, and the next call carries their
// own token. A client that shows no links is told why none is offered, and
// the login is audited (seen failing without Options.Login: the command
// only).
func TestGatewaySelfServiceLogin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: runs clients as other users, which needs root")
	}
	cfg, record := perUserOAuthConfig(t)
	g := startGateway(t, cfg)
	completed := make(chan string, 1)
	bob, err := g.connectAs(t, uidBob, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}},
		ElicitationCompleteHandler: func(_ context.Context, r *mcp.ElicitationCompleteNotificationRequest) {
			completed <- r.Params.ElicitationID
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	alice, err := g.connectAs(t, uidAlice, nil)
	if err != nil {
		t.Fatal(err)
	}

	// The copy is waiting for a login once it has tried to connect.
	var rpcErr *jsonrpc.Error
	testutil.Eventually(t, "bob to be offered a login link", func() bool {
		_, err := whoami(bob)
		return errors.As(err, &rpcErr) && rpcErr.Code == mcp.CodeURLElicitationRequired
	})
	var data struct {
		Elicitations []mcp.ElicitParams `json:"elicitations"`
	}
	if err := json.Unmarshal(rpcErr.Data, &data); err != nil || len(data.Elicitations) != 1 {
		t.Fatalf("the error's data: %s (%v)", rpcErr.Data, err)
	}
	e := data.Elicitations[0]
	if e.Mode != "url" || !strings.Contains(e.URL, "/authorize?") || e.ElicitationID == "" || !strings.Contains(e.Message, `as identity "bob"`) {
		t.Fatalf("the elicitation: %+v", e)
	}
	// Alice's client shows no links: she is told why, and the command.
	if res, err := whoami(alice); err != nil || !res.IsError || !strings.Contains(resultText(res), "moat auth login --identity alice protected") ||
		!strings.Contains(resultText(res), "a login link cannot be offered: your client does not show login links") {
		t.Errorf("alice's whoami: %v %.500q", err, resultText(res))
	}

	if status, page := testutil.Browse(t, e.URL); status != http.StatusOK || !strings.Contains(page, "Logged in") {
		t.Fatalf("browser: the callback page is %d %q", status, page)
	}
	select {
	case id := <-completed:
		if id != e.ElicitationID {
			t.Errorf("elicitation complete for %q, want %q", id, e.ElicitationID)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("bob's client was not told that the login completed")
	}
	bobToken := issuedTokens(t, record)[0]
	if res, err := whoami(bob); err != nil || res.IsError {
		t.Fatalf("bob's whoami after his login: %v %.500q", err, resultText(res))
	}
	if b := bearerHeaders(t, record); len(b) == 0 || b[len(b)-1] != "Bearer "+bobToken {
		t.Error("bob's call did not carry the token of his own login")
	}
	if res, err := whoami(alice); err != nil || !res.IsError {
		t.Errorf("alice's whoami after bob's login: %v %.200q; want her still waiting for her own", err, resultText(res))
	}

	g.stop(t)
	if !slices.ContainsFunc(testutil.ReadAudit(t, filepath.Join(testutil.EnvValue(g.env, "XDG_STATE_HOME"), "moat", "audit.jsonl")), func(r map[string]any) bool {
		id, _ := r["identity"].(map[string]any)
		d, _ := r["detail"].(map[string]any)
		return r["event"] == "oauth_login" && r["group"] == "protected" && id != nil && id["name"] == "bob" && d["via"] == "client" && d["outcome"] == "ok"
	}) {
		t.Error("no oauth_login record of bob's login through his client")
	}
}

// perUserOAuthConfig writes a gateway config of identities alice and bob
// (uids uidAlice, uidBob) with one per-user server, "protected", a running
// testdata/oauthserver whose record file it returns too.
func perUserOAuthConfig(t *testing.T) (cfg, record string) {
	t.Helper()
	work := t.TempDir()
	record = filepath.Join(work, "oauthserver.jsonl")
	cfg = testutil.WriteConfig(t, work, map[string]any{
		"protected": map[string]any{"description": "OAuth-protected test server", "url": startOAuthServer(t, record), "per_user": true},
	}, map[string]any{"gateway": map[string]any{
		"socket_mode":  "0660",
		"socket_group": "4300",
		"identities": map[string]any{
			"alice": map[string]any{"uids": []int{uidAlice}},
			"bob":   map[string]any{"uids": []int{uidBob}},
		},
	}})
	return cfg, record
}

// whoami calls the oauthserver's whoami through group "protected".
func whoami(cs *mcp.ClientSession) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "protected", "name": "whoami", "args": map[string]any{}}})
}
