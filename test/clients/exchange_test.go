package clients

import (
	"bufio"
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/testutil/oidcprovider"
)

// TestTokenExchangePerPerson: a per-user server with token_exchange, behind
// an HTTP gateway whose users sign in with a real OIDC issuer. Two people
// of one identity (matched by an OIDC group) call it through the official
// TypeScript SDK client, and the server sees each as themselves: the
// gateway exchanged each one's own sign-in token at the configured
// authorization server (RFC 8693, its token endpoint found from its
// metadata) and each person's
// copy sent only its own exchanged token; the sign-in tokens never reached
// the MCP server. A server echoing its token back has it redacted. A
// person the authorization server refuses is told why, and no one else's
// token is used instead. The audit log records each exchange with the
// identity and the person, and neither the client secret nor any token.
func TestTokenExchangePerPerson(t *testing.T) {
	requireSDK(t)
	p := oidcprovider.Start(t)
	env := append(testutil.MoatEnv(t), "SSL_CERT_FILE="+p.CAFile)
	const clientSecret = "gw-secret-canary-5c1e"
	record := filepath.Join(t.TempDir(), "oauthserver.jsonl")
	as := exec.Command(testutil.BuildTestdataCommand(t, "oauthserver"), "-record", record,
		"-trust-issuer", p.URL, "-subject-audience", oidcAudience,
		"-exchange-client", "moat-gw:"+clientSecret, "-refuse-subject", "u-mallory")
	as.Env = append(os.Environ(), "SSL_CERT_FILE="+p.CAFile)
	mcpURL := testutil.StartListening(t, as)
	testutil.SetSecret(t, env, "gw-secret", clientSecret)
	// The authorization server the admin registered the gateway with.
	resp, err := http.Get(strings.Replace(mcpURL, "/mcp", "/.well-known/oauth-protected-resource/mcp", 1))
	if err != nil {
		t.Fatal(err)
	}
	var prm struct {
		AuthorizationServers []string `json:"authorization_servers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&prm)
	resp.Body.Close()
	if err != nil || len(prm.AuthorizationServers) != 1 {
		t.Fatalf("the test server's metadata: %v %v", prm, err)
	}
	issuer := prm.AuthorizationServers[0]

	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"gh": {"description": "an OAuth-protected server", "url": mcpURL, "per_user": true,
			"oauth_client_id": "moat-gw", "token_exchange": map[string]any{"issuer": issuer, "client_secret": "${secret:gw-secret}"}},
	}, map[string]any{"gateway": map[string]any{
		"oidc": map[string]any{"issuer": p.URL, "audience": oidcAudience},
		"identities": map[string]any{
			"devs":    map[string]any{"oidc": map[string]any{"groups": []string{"devs"}}},
			"mallory": map[string]any{"oidc": map[string]any{"subjects": []string{"u-mallory"}}},
		},
	}})
	g := startHTTPGateway(t, cfg, env)

	now := time.Now()
	mint := func(sub string, groups ...string) string {
		c := map[string]any{"iss": p.URL, "aud": oidcAudience, "sub": sub, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
		if len(groups) > 0 {
			c["groups"] = groups
		}
		return p.Mint(t, c)
	}
	x, y := mint("u-x", "devs"), mint("u-y", "devs")

	// Each person of devs is themselves to the server.
	for _, tt := range []struct{ who, tok string }{{"u-x", x}, {"u-y", y}, {"u-x", x}} {
		s := tsHTTP(t, env, g.url, tt.tok, "gh", "whoami", `{}`)
		if s.Error != "" || s.Result.IsError || s.text() != tt.who {
			t.Fatalf("%s's whoami: %+v", tt.who, s)
		}
	}
	// A server echoing its Authorization header: the token is redacted.
	echo := tsHTTP(t, env, g.url, x, "gh", "echo_auth", `{}`)
	if echo.Error != "" || !strings.Contains(echo.text(), "you sent: Bearer [REDACTED:") {
		t.Errorf("echo_auth: %+v; want the exchanged token redacted", echo)
	}
	// The authorization server refuses mallory: she is told why.
	m := tsHTTP(t, env, g.url, mint("u-mallory"), "gh", "whoami", `{}`)
	if got := m.Error + m.text(); !m.Result.IsError && m.Error == "" || !strings.Contains(got, `group "gh" is unavailable: token exchange: its authorization server refused to exchange this user's sign-in token (invalid_grant: subject u-mallory may not use this resource)`) {
		t.Errorf("mallory's call: %+v", m)
	}

	// What the authorization server and the MCP server saw.
	exchanged := map[string]string{} // exchanged token -> person
	var seen []string                // Authorization headers at the MCP endpoint
	f, err := os.Open(record)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r map[string]string
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		switch {
		case r["event"] == "issued" && r["grant_type"] == "token-exchange":
			exchanged[r["access_token"]] = r["subject"]
			if want := map[string]string{"u-x": x, "u-y": y}[r["subject"]]; r["subject_token"] != want {
				t.Errorf("the exchange for %s sent another sign-in token", r["subject"])
			}
		case r["event"] == "issued":
			t.Errorf("the authorization server issued a token by %s; only token exchange was expected", r["grant_type"])
		case r["event"] == "mcp_request" && r["authorization"] != "":
			seen = append(seen, strings.TrimPrefix(r["authorization"], "Bearer "))
		}
	}
	people := map[string]bool{}
	for _, tok := range seen {
		who, ok := exchanged[tok]
		if !ok {
			t.Fatalf("the MCP server received a token that is no exchanged one (a sign-in token, or another's): %.12s…", tok)
		}
		people[who] = true
	}
	if !people["u-x"] || !people["u-y"] || len(people) != 2 {
		t.Errorf("the MCP server saw the tokens of %v; want u-x's and u-y's", people)
	}

	g.stop(t)
	records := readAuditLog(t, env)
	for _, want := range []struct{ event, identity, sub string }{
		{"oauth_exchanged", "devs", "u-x"}, {"oauth_exchanged", "devs", "u-y"}, {"oauth_exchange_refused", "mallory", "u-mallory"},
	} {
		if !slices.ContainsFunc(records, func(r map[string]any) bool {
			id, _ := r["identity"].(map[string]any)
			d, _ := r["detail"].(map[string]any)
			principal, _ := d["principal"].(string)
			return r["event"] == want.event && r["group"] == "gh" && id != nil && id["name"] == want.identity && strings.HasSuffix(principal, " "+want.sub)
		}) {
			t.Errorf("no %s record of gh for %s (%s)", want.event, want.identity, want.sub)
		}
	}
	auditFile, err := os.ReadFile(filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range append([]string{clientSecret, x, y}, slices.Collect(maps.Keys(exchanged))...) {
		if bytes.Contains(auditFile, []byte(leak)) || strings.Contains(g.stderr.String(), leak) {
			t.Errorf("the audit log or the gateway's log holds a secret or token (%.12s…)", leak)
		}
	}
}
