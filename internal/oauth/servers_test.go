package oauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/secrets"
)

// testAS is a real authorization server on loopback: RFC 8414 metadata,
// RFC 7591 registration, authorize with PKCE S256, and a token endpoint
// with refresh-token rotation.
type testAS struct {
	srv *httptest.Server

	mu         sync.Mutex
	clients    map[string][]string // client id -> redirect uris
	codes      map[string]codeGrant
	access     map[string]grant // access token -> grant
	refresh    map[string]grant // live refresh tokens
	issued     []string         // every token ever issued, for canary scans
	expiresIn  int              // seconds
	refuseRefr bool             // the refresh grant answers invalid_grant
	authErr    string           // authorize redirects with this error= instead of a code
	refreshes  int              // successful refresh grants
	authorizes int              // authorize requests
	resources  []string         // resource params seen on token requests
}

type codeGrant struct {
	challenge, client, redirect, resource, scope string
}

type grant struct {
	client, resource, scope string
	expiry                  time.Time
}

func newTestAS(t *testing.T) *testAS {
	as := &testAS{
		clients:   map[string][]string{"pre-registered": nil},
		codes:     map[string]codeGrant{},
		access:    map[string]grant{},
		refresh:   map[string]grant{},
		expiresIn: 3600,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", as.metadata)
	mux.HandleFunc("POST /register", as.register)
	mux.HandleFunc("GET /authorize", as.authorize)
	mux.HandleFunc("POST /token", as.token)
	as.srv = httptest.NewServer(mux)
	t.Cleanup(as.srv.Close)
	return as
}

func (as *testAS) metadata(w http.ResponseWriter, _ *http.Request) {
	u := as.srv.URL
	writeJSON(w, 200, map[string]any{
		"issuer":                                u,
		"authorization_endpoint":                u + "/authorize",
		"token_endpoint":                        u + "/token",
		"registration_endpoint":                 u + "/register",
		"response_types_supported":              []string{"code"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported":                      []string{"tools", "offline_access"},
	})
}

func (as *testAS) register(w http.ResponseWriter, r *http.Request) {
	var m oauthex.ClientRegistrationMetadata
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil || len(m.RedirectURIs) == 0 {
		writeJSON(w, 400, map[string]string{"error": "invalid_client_metadata"})
		return
	}
	id := "dcr-" + randText()
	as.mu.Lock()
	as.clients[id] = m.RedirectURIs
	as.mu.Unlock()
	writeJSON(w, 201, map[string]any{"client_id": id, "redirect_uris": m.RedirectURIs, "token_endpoint_auth_method": "none"})
}

func (as *testAS) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	as.mu.Lock()
	defer as.mu.Unlock()
	as.authorizes++
	uris, ok := as.clients[q.Get("client_id")]
	redirect := q.Get("redirect_uri")
	switch {
	case !ok:
		http.Error(w, "unknown client", 400)
		return
	case uris != nil && !contains(uris, redirect):
		http.Error(w, "redirect_uri not registered", 400)
		return
	case q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		http.Error(w, "PKCE S256 required", 400)
		return
	case q.Get("resource") == "":
		http.Error(w, "resource required", 400)
		return
	}
	back, _ := url.Parse(redirect)
	v := url.Values{"state": {q.Get("state")}}
	if as.authErr != "" {
		v.Set("error", as.authErr)
		v.Set("error_description", "the user said no\x1b[31m\nINJECTED")
	} else {
		code := randText()
		as.codes[code] = codeGrant{q.Get("code_challenge"), q.Get("client_id"), redirect, q.Get("resource"), q.Get("scope")}
		v.Set("code", code)
	}
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (as *testAS) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, 400, map[string]string{"error": "invalid_request"})
		return
	}
	f := r.PostForm
	as.mu.Lock()
	defer as.mu.Unlock()
	as.resources = append(as.resources, f.Get("resource"))
	var g grant
	switch f.Get("grant_type") {
	case "authorization_code":
		c, ok := as.codes[f.Get("code")]
		delete(as.codes, f.Get("code"))
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case !ok, c.client != clientOf(r), c.redirect != f.Get("redirect_uri"):
			writeJSON(w, 400, map[string]string{"error": "invalid_grant"})
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
			writeJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "PKCE verifier does not match"})
			return
		case c.resource != f.Get("resource"):
			writeJSON(w, 400, map[string]string{"error": "invalid_target"})
			return
		}
		g = grant{client: c.client, resource: c.resource, scope: c.scope}
	case "refresh_token":
		old, ok := as.refresh[f.Get("refresh_token")]
		if !ok || as.refuseRefr || old.client != clientOf(r) || old.resource != f.Get("resource") {
			writeJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "refresh token revoked"})
			return
		}
		delete(as.refresh, f.Get("refresh_token")) // rotation: the old one is spent
		as.refreshes++
		g = old
	default:
		writeJSON(w, 400, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	at, rt := "at-"+randText(), "rt-"+randText()
	g.expiry = time.Now().Add(time.Duration(as.expiresIn) * time.Second)
	as.access[at] = g
	as.refresh[rt] = g
	as.issued = append(as.issued, at, rt)
	writeJSON(w, 200, map[string]any{
		"access_token": at, "token_type": "Bearer", "expires_in": as.expiresIn,
		"refresh_token": rt, "scope": g.scope,
	})
}

// verify is the MCP server's token check.
func (as *testAS) verify(_ context.Context, tok string, _ *http.Request) (*auth.TokenInfo, error) {
	as.mu.Lock()
	defer as.mu.Unlock()
	g, ok := as.access[tok]
	if !ok || time.Now().After(g.expiry) {
		return nil, auth.ErrInvalidToken
	}
	return &auth.TokenInfo{Expiration: g.expiry, Scopes: strings.Fields(g.scope), UserID: "alice"}, nil
}

// revokeAccess makes every issued access token invalid, as a server-side
// revocation or an expiry the client's clock did not see.
func (as *testAS) revokeAccess() {
	as.mu.Lock()
	defer as.mu.Unlock()
	clear(as.access)
}

func (as *testAS) tokens() []string {
	as.mu.Lock()
	defer as.mu.Unlock()
	return append([]string(nil), as.issued...)
}

// testMCP is a go-sdk streamable MCP server behind auth.RequireBearerToken,
// with RFC 9728 metadata, that records every Authorization header it sees.
type testMCP struct {
	srv  *httptest.Server
	url  string
	mu   sync.Mutex
	seen []string
}

func newTestMCP(t *testing.T, as *testAS) *testMCP {
	m := &testMCP{}
	server := mcp.NewServer(&mcp.Implementation{Name: "protected", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "who is calling"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "alice"}}}, nil, nil
		})
	mux := http.NewServeMux()
	m.srv = httptest.NewServer(mux)
	t.Cleanup(m.srv.Close)
	m.url = m.srv.URL + "/mcp"
	prm := m.srv.URL + "/.well-known/oauth-protected-resource/mcp"
	mux.Handle("/.well-known/oauth-protected-resource/mcp", auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource:             m.url,
		AuthorizationServers: []string{as.srv.URL},
		ScopesSupported:      []string{"tools"},
	}))
	protected := auth.RequireBearerToken(as.verify, &auth.RequireBearerTokenOptions{ResourceMetadataURL: prm})(
		mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	mux.Handle("/mcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.seen = append(m.seen, r.Header.Get("Authorization"))
		m.mu.Unlock()
		protected.ServeHTTP(w, r)
	}))
	return m
}

func (m *testMCP) authHeaders() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.seen...)
}

// browser plays the user's browser: it follows the authorize URL to the
// authorization server, then the redirect to Moat's loopback listener, in
// its own goroutine as a real browser would. Each step uses netguard's
// OAuth client (no other HTTP client may exist in Moat).
type browser struct {
	t     *testing.T
	c     *http.Client
	wg    sync.WaitGroup
	mu    sync.Mutex
	opens int
	pages []string // status and body of each callback answer
	// before, if set, is sent to the listener (as paths with query) first.
	before []string
}

func newBrowser(t *testing.T) *browser {
	c, err := netguard.NewOAuthClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, c: c}
	t.Cleanup(b.wg.Wait)
	return b
}

func (b *browser) open(authURL string) error {
	b.mu.Lock()
	b.opens++
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		resp, err := b.c.Get(authURL)
		if resp == nil {
			b.t.Errorf("browser: authorize: %v", err)
			return
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusFound || loc == "" {
			b.t.Errorf("browser: authorize answered %s, not a redirect", resp.Status)
			return
		}
		cb, _ := url.Parse(loc)
		for _, p := range b.before {
			b.get(cb.Scheme + "://" + cb.Host + p)
		}
		b.get(loc)
	}()
	return nil
}

func (b *browser) get(u string) {
	resp, err := b.c.Get(u)
	if err != nil {
		b.t.Errorf("browser: GET %s: %v", u, err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	b.mu.Lock()
	b.pages = append(b.pages, fmt.Sprintf("%d %s", resp.StatusCode, body))
	b.mu.Unlock()
}

func (b *browser) results() (int, []string) {
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opens, append([]string(nil), b.pages...)
}

// env is one test's world: temp HOME and XDG dirs, a file-backed store, an
// AS, an MCP server, a log buffer.
type env struct {
	t     *testing.T
	home  string
	store *secrets.Store
	as    *testAS
	mcp   *testMCP
	logs  *syncBuffer
	clock *clock
}

func newEnv(t *testing.T) *env {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_DATA_HOME", filepath.Join(home, ".local", "share"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(home, ".local", "state"))
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "disabled:")
	t.Setenv("MOAT_PASSPHRASE", "correct horse battery staple")
	e := &env{t: t, home: home, logs: &syncBuffer{}, clock: &clock{}}
	e.store = e.openStore(secrets.BackendFile)
	e.as = newTestAS(t)
	e.mcp = newTestMCP(t, e.as)
	return e
}

func (e *env) openStore(backend string) *secrets.Store {
	s, err := secrets.Open(e.t.Context(), &secrets.Options{Backend: backend})
	if err != nil {
		e.t.Fatalf("opening the %s store: %v", backend, err)
	}
	return s
}

func (e *env) options(b *browser) Options {
	c, err := netguard.NewOAuthClient(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	o := Options{
		Store:  e.store,
		Server: "protected",
		URL:    e.mcp.url,
		HTTP:   c,
		Prompt: e.logs,
		Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		now:    e.clock.now,
	}
	if b != nil {
		o.OpenBrowser = b.open
	} else {
		o.OpenBrowser = func(string) error {
			e.t.Error("a browser was opened, but this step must not need a login")
			return errors.New("no browser in this test")
		}
	}
	return o
}

// connect opens an MCP session to url with h as its OAuth handler.
func (e *env) connect(url string, h *Handler) (*mcp.ClientSession, error) {
	hc, err := netguard.NewClient(url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "moat-test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	return c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, HTTPClient: hc, OAuthHandler: h, DisableStandaloneSSE: true}, nil)
}

func whoami(t *testing.T, cs *mcp.ClientSession) (string, error) {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{}})
	if err != nil {
		return "", err
	}
	if len(res.Content) == 0 {
		return "", errors.New("empty result")
	}
	return res.Content[0].(*mcp.TextContent).Text, nil
}

// scanForTokens fails if any token the AS issued appears in a file under
// HOME or in the logs and prompts.
func (e *env) scanForTokens() {
	toks := e.as.tokens()
	if len(toks) == 0 {
		e.t.Fatal("canary scan: the AS issued no tokens, so the scan would prove nothing")
	}
	check := func(where string, data []byte) {
		for _, tok := range toks {
			if bytes.Contains(data, []byte(tok)) {
				e.t.Errorf("token %.6s… found in plain text in %s", tok, where)
			}
		}
	}
	files := 0
	err := filepath.WalkDir(e.home, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		check(p, b)
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if files == 0 {
		e.t.Error("canary scan: no files under HOME; the store should have written some")
	}
	check("the logs and prompts", e.logs.Bytes())
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// clock is the Handler's time: real time plus an offset the test advances.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// clientOf returns the client id of a token request: in the form, or as
// the user of HTTP basic auth.
func clientOf(r *http.Request) string {
	if id, _, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(id)
		return id
	}
	return r.PostForm.Get("client_id")
}

func randText() string { return rand.Text() }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
