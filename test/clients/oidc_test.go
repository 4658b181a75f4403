package clients

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/testutil/oidcprovider"
)

const oidcAudience = "https://moat.test/mcp"

// TestTypeScriptClientOverHTTPWithOIDC: the gateway as an OAuth 2.1
// resource server of a real OIDC issuer (TLS on loopback, trusted by
// SSL_CERT_FILE). While the issuer is down at start, moat tokens work and
// JWTs are refused saying why; once it is up, the official TypeScript SDK
// client with a JWT sees its identity's groups and calls tools, two
// subjects of two identities see different groups, and the audit log
// names the identity and the subject. Expired, not-yet-valid, wrong
// audience, wrong issuer, alg none, badly signed and rotated-out tokens
// are refused with 401 and a challenge naming the metadata; a token of a
// newly rotated-in key is accepted without a restart; a missing scope is
// 403; the metadata document is served; another subject of the same
// identity cannot use a session.
func TestTypeScriptClientOverHTTPWithOIDC(t *testing.T) {
	requireSDK(t)
	p := oidcprovider.Start(t)
	p.SetDown(true)
	env := append(testutil.MoatEnv(t), "SSL_CERT_FILE="+p.CAFile)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"alpha": entry("Go test server alpha", command{Command: testutil.BuildTestServer(t), Args: []string{"-name", "alpha"}}),
		"beta":  entry("Go test server beta", command{Command: testutil.BuildTestServer(t), Args: []string{"-name", "beta"}}),
	}, map[string]any{"gateway": map[string]any{
		"oidc": map[string]any{"issuer": p.URL, "audience": oidcAudience, "required_scopes": []string{"mcp"}},
		"identities": map[string]any{
			"alice": map[string]any{"oidc": map[string]any{"subjects": []string{"u-alice"}}},
			"bob":   map[string]any{"oidc": map[string]any{"subjects": []string{"u-bob"}}, "servers": []string{"beta"}},
			"devs":  map[string]any{"oidc": map[string]any{"groups": []string{"devs"}}, "servers": []string{"alpha"}},
			"ci":    map[string]any{"tokens": []string{"runner"}, "servers": []string{"beta"}},
		},
	}})
	runner := moatCmd(t, env, cfg, "token", "create", "runner")
	g := startHTTPGateway(t, cfg, env)
	base := strings.TrimSuffix(g.url, "/mcp")
	metadata := "https://moat.test/.well-known/oauth-protected-resource/mcp"
	challenge := `Bearer realm="moat", resource_metadata="` + metadata + `", scope="mcp"`

	now := time.Now()
	claims := func(sub string, edit func(map[string]any)) map[string]any {
		c := map[string]any{"iss": p.URL, "aud": oidcAudience, "sub": sub, "exp": now.Add(time.Hour).Unix(),
			"iat": now.Unix(), "scope": "mcp"}
		if edit != nil {
			edit(c)
		}
		return c
	}
	aliceTok := p.Mint(t, claims("u-alice", nil))

	// The issuer is down: a JWT is refused saying so; a moat token works.
	code, h, _ := post(t, g.url, initialize, "Authorization", "Bearer "+aliceTok)
	if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") != challenge+`, error="invalid_token"` {
		t.Errorf("a JWT while the issuer is down: %d, WWW-Authenticate %q", code, h.Get("WWW-Authenticate"))
	}
	if s := tsHTTP(t, env, g.url, runner, "beta", "echo", `{"message":"from ci"}`); s.Error != "" || !strings.Contains(s.text(), "from ci") {
		t.Fatalf("a moat token with gateway.oidc set: %+v", s)
	}
	p.SetDown(false)
	testutil.Eventually(t, "a JWT accepted once the issuer is up", func() bool {
		code, _, _ := post(t, g.url, initialize, "Authorization", "Bearer "+aliceTok)
		return code == http.StatusOK
	})

	// The Protected Resource Metadata (RFC 9728), at both paths.
	for _, path := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxShown))
		resp.Body.Close()
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		want := map[string]any{"resource": oidcAudience, "authorization_servers": []any{p.URL}, "scopes_supported": []any{"mcp"}, "bearer_methods_supported": []any{"header"}}
		if diff := cmp.Diff(want, doc); diff != "" {
			t.Errorf("GET %s (-want +got):\n%s", path, diff)
		}
	}

	// Two subjects, two identities, two views.
	alice := tsHTTP(t, env, g.url, aliceTok, "alpha", "echo", `{"message":"from alice"}`)
	if alice.Error != "" || !strings.Contains(alice.text(), "from alice") {
		t.Fatalf("alice's call: %+v", alice)
	}
	if diff := cmp.Diff([]string{"alpha", "beta"}, alice.Groups); diff != "" {
		t.Errorf("alice's groups (-want +got):\n%s", diff)
	}
	bob := tsHTTP(t, env, g.url, p.Mint(t, claims("u-bob", nil)), "beta", "echo", `{"message":"from bob"}`)
	if bob.Error != "" || !strings.Contains(bob.text(), "from bob") {
		t.Fatalf("bob's call: %+v", bob)
	}
	if diff := cmp.Diff([]string{"beta"}, bob.Groups); diff != "" {
		t.Errorf("bob's groups (-want +got):\n%s", diff)
	}

	// Refused tokens: 401, the challenge, and an auth_refused record.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	oldKeyTok := p.Mint(t, claims("u-alice", nil))
	p.AddKey(t, jose.ES256) // rotation: a new key, then the old one dropped
	p.DropKey("key-1")
	if code, _, _ := post(t, g.url, initialize, "Authorization", "Bearer "+p.Mint(t, claims("u-alice", nil))); code != http.StatusOK {
		t.Errorf("a token of the rotated-in key: %d, want 200 without a restart", code)
	}
	for _, tt := range []struct{ name, tok, reason string }{
		{"expired", p.Mint(t, claims("u-alice", func(c map[string]any) { c["exp"] = now.Add(-5 * time.Minute).Unix() })), "OIDC token refused: expired at"},
		{"not yet valid", p.Mint(t, claims("u-alice", func(c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() })), "OIDC token refused: not valid yet"},
		{"wrong audience", p.Mint(t, claims("u-alice", func(c map[string]any) { c["aud"] = "https://else.test/mcp" })), "OIDC token refused: wrong audience"},
		{"wrong issuer", p.Mint(t, claims("u-alice", func(c map[string]any) { c["iss"] = "https://evil.test" })), "OIDC token refused: wrong issuer"},
		{"alg none", oidcprovider.MintNone(t, claims("u-alice", nil)), `OIDC token refused: signature algorithm not allowed`},
		{"bad signature", oidcprovider.Sign(t, otherKey, jose.ES256, "key-2", claims("u-alice", nil)), "OIDC token refused: bad signature"},
		{"rotated out", oldKeyTok, "OIDC token refused: bad signature"},
		{"unknown identity", p.Mint(t, claims("u-mallory", nil)), `OIDC token refused: the token of subject "u-mallory" is no identity's`},
	} {
		code, h, _ := post(t, g.url, initialize, "Authorization", "Bearer "+tt.tok)
		if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") != challenge+`, error="invalid_token"` {
			t.Errorf("%s: %d, WWW-Authenticate %q; want 401 with %s", tt.name, code, h.Get("WWW-Authenticate"), challenge)
		}
	}
	// A valid token without the required scope: 403.
	code, h, _ = post(t, g.url, initialize, "Authorization", "Bearer "+p.Mint(t, claims("u-alice", func(c map[string]any) { c["scope"] = "read" })))
	if code != http.StatusForbidden || !strings.HasPrefix(h.Get("WWW-Authenticate"), challenge+`, error="insufficient_scope"`) {
		t.Errorf("no mcp scope: %d, WWW-Authenticate %q; want 403 insufficient_scope", code, h.Get("WWW-Authenticate"))
	}
	// Two subjects of one identity (by group): one's session is not the other's.
	x := p.Mint(t, claims("u-x", func(c map[string]any) { c["groups"] = []string{"devs"} }))
	y := p.Mint(t, claims("u-y", func(c map[string]any) { c["groups"] = []string{"devs"} }))
	code, h, _ = post(t, g.url, initialize, "Authorization", "Bearer "+x)
	sid := h.Get("Mcp-Session-Id")
	if code != http.StatusOK || sid == "" {
		t.Fatalf("u-x's initialize: %d, session %q", code, sid)
	}
	code, _, body := post(t, g.url, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		"Authorization", "Bearer "+y, "Mcp-Session-Id", sid, "Mcp-Protocol-Version", "2025-06-18")
	if code != http.StatusForbidden || strings.Contains(body, "call_dynamic_tool") {
		t.Errorf("u-y's token on u-x's session: %d %q; want 403", code, body)
	}

	g.stop(t)
	records := readAuditLog(t, env)
	if !slices.ContainsFunc(records, func(r map[string]any) bool {
		id, _ := r["identity"].(map[string]any)
		d, _ := r["detail"].(map[string]any)
		return r["event"] == "session_start" && id != nil && id["name"] == "alice" && d["sub"] == "u-alice" && d["issuer"] == p.URL
	}) {
		t.Error("no session_start record of alice with her subject and issuer")
	}
	for _, c := range []struct{ tool, name string }{{"echo", "alice"}, {"echo", "bob"}} {
		if !slices.ContainsFunc(records, func(r map[string]any) bool {
			id, _ := r["identity"].(map[string]any)
			return r["event"] == "tool_call" && r["tool"] == c.tool && id != nil && id["name"] == c.name
		}) {
			t.Errorf("no tool_call record of %s by %s", c.tool, c.name)
		}
	}
	var reasons []string
	for _, r := range records {
		if r["event"] == "auth_refused" {
			d, _ := r["detail"].(map[string]any)
			s, _ := d["reason"].(string)
			reasons = append(reasons, s)
		}
	}
	for _, want := range []string{"OIDC token refused: the OIDC issuer " + p.URL + " could not be reached",
		"OIDC token refused: expired at", "OIDC token refused: not valid yet", "OIDC token refused: wrong audience",
		"OIDC token refused: wrong issuer", "OIDC token refused: signature algorithm not allowed", "OIDC token refused: bad signature",
		`OIDC token refused: the token of subject "u-mallory" is no identity's`,
		`OIDC token of subject "u-alice": the token lacks the required scope "mcp"`,
		"the session belongs to another identity or subject"} {
		if !slices.ContainsFunc(reasons, func(r string) bool { return strings.HasPrefix(r, want) }) {
			t.Errorf("no auth_refused record saying %q; got %q", want, reasons)
		}
	}
	b, err := os.ReadFile(filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	raw := string(b)
	for _, tok := range []string{aliceTok, oldKeyTok, x, y} {
		if strings.Contains(raw, tok) || strings.Contains(raw, strings.Split(tok, ".")[2]) {
			t.Error("the audit log holds a token")
		}
	}
}
