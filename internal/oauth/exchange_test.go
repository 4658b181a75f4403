package oauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/moatmcp/moat/internal/netguard"
)

// exchangeAS is an authorization server that exchanges sign-in tokens
// (RFC 8693) for access tokens to its MCP server, which answers whoami
// with the person the token was exchanged for.
type exchangeAS struct {
	srv    *httptest.Server
	mcpURL string
	prmAS  string   // the authorization server its MCP server names
	grants []string // grant types in its metadata

	mu        sync.Mutex
	people    map[string]string // subject token -> person
	access    map[string]string // access token -> person
	forms     []url.Values      // each token request
	refuseAll bool              // the MCP server takes no token
}

func newExchangeAS(t *testing.T) *exchangeAS { return newExchangeASNaming(t, "") }

// newExchangeASNaming is newExchangeAS whose MCP server names prmAS as its
// authorization server ("": its own).
func newExchangeASNaming(t *testing.T, prmAS string) *exchangeAS {
	as := &exchangeAS{people: map[string]string{}, access: map[string]string{},
		grants: []string{"authorization_code", grantTokenExchange}}
	mux := http.NewServeMux()
	as.srv = httptest.NewServer(mux)
	t.Cleanup(as.srv.Close)
	base := as.srv.URL
	as.mcpURL = base + "/mcp"
	if prmAS == "" {
		prmAS = base
	}
	as.prmAS = prmAS
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"issuer": base, "authorization_endpoint": base + "/authorize",
			"token_endpoint": base + "/token", "grant_types_supported": as.grants,
			"response_types_supported": []string{"code"}, "code_challenge_methods_supported": []string{"S256"}})
	})
	mux.Handle("/.well-known/oauth-protected-resource/mcp", auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource: as.mcpURL, AuthorizationServers: []string{as.prmAS}}))
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		f := r.PostForm
		id, secret, _ := r.BasicAuth()
		as.mu.Lock()
		defer as.mu.Unlock()
		as.forms = append(as.forms, f)
		person, ok := as.people[f.Get("subject_token")]
		switch {
		case id != "moat-gw" || secret != "gw-secret":
			writeJSON(w, 401, map[string]string{"error": "invalid_client"})
		case f.Get("grant_type") != grantTokenExchange || f.Get("resource") != as.mcpURL:
			writeJSON(w, 400, map[string]string{"error": "invalid_request"})
		case !ok:
			writeJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "the subject token is not valid"})
		default:
			at := "xt-" + randText()
			as.access[at] = person
			writeJSON(w, 200, map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": 3600,
				"issued_token_type": tokenTypeAccessToken})
		}
	})
	server := mcp.NewServer(&mcp.Implementation{Name: "protected", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "who is calling"},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: req.Extra.TokenInfo.UserID}}}, nil, nil
		})
	verify := func(_ context.Context, tok string, _ *http.Request) (*auth.TokenInfo, error) {
		as.mu.Lock()
		defer as.mu.Unlock()
		person, ok := as.access[tok]
		if !ok || as.refuseAll {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: person, Expiration: time.Now().Add(time.Hour)}, nil
	}
	mux.Handle("/mcp", auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{ResourceMetadataURL: base + "/.well-known/oauth-protected-resource/mcp"})(
		mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)))
	return as
}

func (as *exchangeAS) requests() []url.Values {
	as.mu.Lock()
	defer as.mu.Unlock()
	return append([]url.Values(nil), as.forms...)
}

// person is one signed-in user: the sign-in token the gateway holds, and
// the events and tokens their Exchanger reported.
type person struct {
	mu      sync.Mutex
	subject string
	events  []string
	tokens  []string
	names   []string // the names the tokens were reported under
}

func (p *person) options(t *testing.T, as *exchangeAS) ExchangeOptions {
	c, err := netguard.NewOAuthClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	return ExchangeOptions{Server: "gh", URL: as.mcpURL, ClientID: "moat-gw", ClientSecret: "gw-secret", Scopes: []string{"repo"}, HTTP: c, Issuer: as.srv.URL,
		Principal:    p.subject + "-principal",
		SubjectToken: func() string { p.mu.Lock(); defer p.mu.Unlock(); return p.subject },
		OnToken: func(n, v string) {
			p.mu.Lock()
			p.tokens, p.names = append(p.tokens, v), append(p.names, n)
			p.mu.Unlock()
		},
		OnEvent: func(e string) { p.mu.Lock(); p.events = append(p.events, e); p.mu.Unlock() }}
}

// whoamiExchanged connects to as's MCP server with x and calls whoami.
func whoamiExchanged(t *testing.T, as *exchangeAS, x *Exchanger) (string, error) {
	t.Helper()
	c, err := netguard.NewOAuthClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "moat", Version: "test"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: as.mcpURL, HTTPClient: c, OAuthHandler: x}, nil)
	if err != nil {
		return "", err
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
	if err != nil {
		return "", err
	}
	return res.Content[0].(*mcp.TextContent).Text, nil
}

// TestExchangeGivesEachPersonTheirOwnToken: two people's Exchangers, each
// with its own sign-in token, reach the server as themselves; the token
// request carries RFC 8693's parameters, the server's url as resource,
// the issuer as audience and Moat's client in HTTP Basic; the exchanged
// token is reported for redaction; a 401 makes one new exchange.
func TestExchangeGivesEachPersonTheirOwnToken(t *testing.T) {
	as := newExchangeAS(t)
	as.people["st-alice"], as.people["st-bob"] = "alice", "bob"
	alice, bob := &person{subject: "st-alice"}, &person{subject: "st-bob"}
	xa, err := NewExchanger(alice.options(t, as))
	if err != nil {
		t.Fatal(err)
	}
	xb, _ := NewExchanger(bob.options(t, as))
	for _, tt := range []struct {
		x    *Exchanger
		want string
	}{{xa, "alice"}, {xb, "bob"}} {
		if got, err := whoamiExchanged(t, as, tt.x); err != nil || got != tt.want {
			t.Fatalf("whoami = %q, %v; want %q", got, err, tt.want)
		}
	}
	f := as.requests()[0]
	for k, want := range map[string]string{"grant_type": grantTokenExchange, "subject_token": "st-alice", "subject_token_type": tokenTypeAccessToken,
		"requested_token_type": tokenTypeAccessToken, "resource": as.mcpURL, "audience": as.srv.URL, "scope": "repo"} {
		if got := f.Get(k); got != want {
			t.Errorf("token request %s = %q, want %q", k, got, want)
		}
	}
	if f.Has("client_secret") {
		t.Error("the client secret went in the form; a confidential client authenticates with HTTP Basic")
	}
	if len(alice.tokens) != 1 || !strings.HasPrefix(alice.tokens[0], "xt-") || len(alice.events) != 1 || alice.events[0] != "exchanged" {
		t.Errorf("alice's exchanger reported tokens %d and events %v; want the exchanged token once and [exchanged]", len(alice.tokens), alice.events)
	}
	// Each person's tokens are redacted under a name of their own (a
	// redactor keeps a few values per name: with one name for everyone,
	// others' exchanges would push alice's still-valid token out).
	if alice.names[0] == bob.names[0] || alice.names[0] != ExchangedTokenName("gh", "st-alice-principal") || strings.Contains(alice.names[0], "alice") {
		t.Errorf("token names: alice %q, bob %q; want one per person, not naming them", alice.names[0], bob.names[0])
	}

	// The server stops taking alice's token: one new exchange, and the
	// call goes through (seen failing without Authorize's exchange).
	as.mu.Lock()
	clear(as.access)
	as.mu.Unlock()
	before := len(as.requests())
	if got, err := whoamiExchanged(t, as, xa); err != nil || got != "alice" {
		t.Fatalf("whoami after the server dropped the token = %q, %v", got, err)
	}
	if n := len(as.requests()) - before; n != 1 {
		t.Errorf("%d token requests after a 401, want 1", n)
	}
}

// TestExchangeFailures: each way an exchange cannot happen ends the
// connect with an error that says why and what to do, never quotes the
// sign-in token, and never loops.
func TestExchangeFailures(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		as := newExchangeAS(t)
		p := &person{subject: "st-stranger-canary"}
		x, _ := NewExchanger(p.options(t, as))
		_, err := whoamiExchanged(t, as, x)
		if err == nil || !strings.Contains(err.Error(), `its authorization server refused to exchange this user's sign-in token (invalid_grant: the subject token is not valid)`) ||
			strings.Contains(err.Error(), "canary") {
			t.Errorf("err = %v", err)
		}
		if len(p.events) != 1 || p.events[0] != "exchange_refused" {
			t.Errorf("events = %v, want [exchange_refused] (a refused sign-in token is not sent again)", p.events)
		}
		// The person signs in again: the new token is exchanged.
		as.mu.Lock()
		as.people["st-alice"] = "alice"
		as.mu.Unlock()
		p.mu.Lock()
		p.subject = "st-alice"
		p.mu.Unlock()
		if got, err := whoamiExchanged(t, as, x); err != nil || got != "alice" {
			t.Errorf("after a new sign-in: whoami = %q, %v", got, err)
		}
	})
	t.Run("no sign-in token", func(t *testing.T) {
		as := newExchangeAS(t)
		x, _ := NewExchanger((&person{}).options(t, as))
		if _, err := whoamiExchanged(t, as, x); err == nil || !strings.Contains(err.Error(), "no unexpired sign-in token of this user is held") {
			t.Errorf("err = %v", err)
		}
		if n := len(as.requests()); n != 0 {
			t.Errorf("%d token requests without a sign-in token", n)
		}
	})
	t.Run("no token exchange at the authorization server", func(t *testing.T) {
		as := newExchangeAS(t)
		as.grants = []string{"authorization_code"}
		as.people["st-alice"] = "alice"
		x, _ := NewExchanger((&person{subject: "st-alice"}).options(t, as))
		if _, err := whoamiExchanged(t, as, x); err == nil || !strings.Contains(err.Error(), "does not offer token exchange (RFC 8693); log each identity in with `moat auth login --identity ID gh` instead") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("server refuses every exchanged token", func(t *testing.T) {
		as := newExchangeAS(t)
		as.people["st-alice"] = "alice"
		as.refuseAll = true
		x, _ := NewExchanger((&person{subject: "st-alice"}).options(t, as))
		if _, err := whoamiExchanged(t, as, x); err == nil || !strings.Contains(err.Error(), "refused a token freshly exchanged") {
			t.Errorf("err = %v", err)
		}
		if n := len(as.requests()); n != 2 {
			t.Errorf("%d token requests, want 2 (the first, and one after the 401)", n)
		}
	})
	t.Run("not on a gateway", func(t *testing.T) {
		c, _ := netguard.NewOAuthClient(nil)
		_, err := NewExchanger(ExchangeOptions{Server: "gh", URL: "https://h/mcp", ClientID: "moat-gw", HTTP: c, Issuer: "https://auth.example.com"})
		if err == nil || !strings.Contains(err.Error(), "runs only on a gateway with gateway.oidc") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestExchangeGoesOnlyToTheConfiguredIssuer: an MCP server whose metadata
// names another authorization server (one that would collect the
// sign-in tokens, good at the gateway) gets nothing sent there: the
// exchange goes to the configured issuer. (The first version found the
// token endpoint through the MCP server's Protected Resource Metadata,
// which here names the other server.)
func TestExchangeGoesOnlyToTheConfiguredIssuer(t *testing.T) {
	var evilHits sync.Map
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evilHits.Store(r.URL.Path, true)
		writeJSON(w, 200, map[string]any{"issuer": "http://" + r.Host, "token_endpoint": "http://" + r.Host + "/token",
			"authorization_endpoint": "http://" + r.Host + "/authorize", "code_challenge_methods_supported": []string{"S256"},
			"access_token": "x", "token_type": "Bearer"})
	}))
	defer evil.Close()
	as := newExchangeASNaming(t, evil.URL)
	as.people["st-alice"] = "alice"
	x, err := NewExchanger((&person{subject: "st-alice"}).options(t, as))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := whoamiExchanged(t, as, x); err != nil || got != "alice" {
		t.Fatalf("whoami = %q, %v", got, err)
	}
	evilHits.Range(func(k, _ any) bool {
		t.Errorf("the authorization server the MCP server named got a request: %v", k)
		return true
	})
}
