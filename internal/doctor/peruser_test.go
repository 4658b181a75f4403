package doctor

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/secrets"
)

// TestPerUserChecks: doctor neither demands a shared secret a gateway's
// per-user server never uses nor starts it with a placeholder, and says
// which identity lacks its own secret and which identity is shared by a
// group (seen failing with per-user servers loaded like shared ones).
func TestPerUserChecks(t *testing.T) {
	const server = `"kb": {"description": "d", "url": "https://kb.example.com/mcp", "per_user": true,
		"headers": {"Authorization": "Bearer ${secret:kb-token}"}}`
	withStored := func(f *fixture, names ...string) {
		open := f.opts.OpenStore
		f.opts.OpenStore = func(ctx context.Context, backend string) (*secrets.Store, error) {
			s, err := open(ctx, backend)
			for _, n := range names {
				if err == nil {
					err = s.Set(ctx, n, secrets.NewSecret("v-"+n))
				}
			}
			return s, err
		}
	}
	byName := func(r *Report) map[string]Check {
		m := map[string]Check{}
		for _, c := range r.Checks {
			m[c.Name] = c
		}
		return m
	}

	t.Run("gateway", func(t *testing.T) {
		f := newFixture(t, `{"mcpServers": {`+server+`}, "gateway": {"identities": {
			"alice": {"uids": [1000]}, "devs": {"unix_groups": ["devs"]}, "ci": {"tokens": ["ci"], "servers": []}}}}`)
		withStored(f, secrets.ForIdentity("kb-token", "alice"))
		got := byName(Run(context.Background(), f.opts))
		if c := got["config.valid"]; c.Status != OK {
			t.Fatalf("config.valid without a shared kb-token: %+v", c)
		}
		if c := got["server.per_user"]; c.Status != OK || !strings.Contains(c.Message, "each identity's own kb-token") {
			t.Errorf("server.per_user: %+v", c)
		}
		if _, ok := got["server.reachable"]; ok {
			t.Errorf("doctor connected to a per-user server with a placeholder secret: %+v", got["server.reachable"])
		}
		c := got["gateway.per_user"]
		details := strings.Join(c.Details, "\n")
		if c.Status != Warn || !strings.Contains(c.Message, "kb (alice, devs)") ||
			!strings.Contains(details, "identity devs has no secret \"kb-token\" of its own: moat secret set --identity devs kb-token") ||
			!strings.Contains(details, "identity devs is matched by unix_groups") ||
			strings.Contains(details, "identity alice") || strings.Contains(details, "ci") {
			t.Errorf("gateway.per_user: %+v", c)
		}
	})

	t.Run("stdio", func(t *testing.T) {
		f := newFixture(t, `{"mcpServers": {`+server+`}}`)
		got := byName(Run(context.Background(), f.opts))
		if c := got["server.per_user"]; c.Status != Fail || !strings.Contains(c.Fix, "moat secret set kb-token") {
			t.Errorf("server.per_user on stdio without the shared secret: %+v", c)
		}
		if _, ok := got["gateway.per_user"]; ok {
			t.Errorf("gateway.per_user without identities: %+v", got["gateway.per_user"])
		}
	})
}

// TestTokenExchangeCheck: doctor finds where a token_exchange server's
// tokens are exchanged (its issuer's metadata), says so without
// connecting, fails naming the
// fix when that server offers no token exchange, and does not warn that
// the people of an OIDC-groups identity share credentials (each exchanges
// their own).
func TestTokenExchangeCheck(t *testing.T) {
	var grants []string
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "authorization_endpoint": srv.URL + "/authorize", "token_endpoint": srv.URL + "/token",
			"grant_types_supported": grants, "code_challenge_methods_supported": []string{"S256"}})
	})
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, _ *http.Request) {
		t.Error("doctor connected to a token_exchange server")
	})
	cfg := `{"mcpServers": {"gh": {"description": "d", "url": "` + srv.URL + `/mcp", "per_user": true, "oauth_client_id": "moat-gw", "token_exchange": {"issuer": "` + srv.URL + `"}}},
		"gateway": {"oidc": {"issuer": "https://idp.example.com", "audience": "https://moat.example.com/mcp"}, "identities": {"devs": {"oidc": {"groups": ["devs"]}}}}}`
	run := func() map[string]Check {
		f := newFixture(t, cfg)
		f.opts.OAuthClient = func(*config.Server) (*http.Client, error) { return netguard.NewOAuthClient(nil) }
		m := map[string]Check{}
		for _, c := range Run(context.Background(), f.opts).Checks {
			m[c.Name] = c
		}
		return m
	}

	grants = []string{"authorization_code", "urn:ietf:params:oauth:grant-type:token-exchange"}
	got := run()
	if c := got["server.token_exchange"]; c.Status != OK || !strings.Contains(c.Message, "at "+srv.URL+"/token (authorization server "+srv.URL+")") {
		t.Errorf("server.token_exchange: %+v", c)
	}
	if c := got["gateway.per_user"]; c.Status != OK {
		t.Errorf("gateway.per_user warns for an OIDC-groups identity of a token_exchange server: %+v", c)
	}

	grants = []string{"authorization_code"}
	if c := run()["server.token_exchange"]; c.Status != Fail || !strings.Contains(c.Message, "does not offer token exchange (RFC 8693)") {
		t.Errorf("server.token_exchange without the grant: %+v", c)
	}
}
