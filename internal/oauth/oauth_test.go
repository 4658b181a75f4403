package oauth

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/secrets"
)

// login runs Login with a test browser and fails the test on error.
func (e *env) login(b *browser) {
	e.t.Helper()
	if err := Login(e.t.Context(), e.options(b)); err != nil {
		e.t.Fatalf("Login: %v", err)
	}
}

func (e *env) handler() *Handler {
	e.t.Helper()
	h, err := NewHandler(e.options(nil))
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *env) stored() *record {
	e.t.Helper()
	o := e.options(nil)
	r, err := load(e.t.Context(), &o)
	if err != nil || r == nil {
		e.t.Fatalf("no stored token: %v", err)
	}
	return r
}

// TestLoginDCRThenToolCall: a first login registers a client (no
// oauth_client_id), and the stored token then authorizes a tool call; after
// a restart (new store handle, new Handler) Moat connects without a prompt.
func TestLoginDCRThenToolCall(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t)
	e.login(b)
	opens, pages := b.results()
	if opens != 1 || len(pages) != 1 || !strings.HasPrefix(pages[0], "200 ") || !strings.Contains(pages[0], "Logged in") {
		t.Fatalf("browser: %d opens, pages %q; want one open and a success page", opens, pages)
	}
	prompt := string(e.logs.Bytes())
	if !strings.Contains(prompt, "http://127.0.0.1:") || !strings.Contains(prompt, e.as.srv.URL+"/authorize?") {
		t.Errorf("the prompt does not show the authorize URL with a 127.0.0.1 redirect:\n%s", prompt)
	}
	r := e.stored()
	if !r.Registered || !strings.HasPrefix(r.ClientID, "dcr-") || r.Resource != e.mcp.url || r.RefreshToken == "" {
		t.Errorf("stored record: registered=%v client=%q resource=%q refresh=%v; want a DCR client, resource %q and a refresh token",
			r.Registered, r.ClientID, r.Resource, r.RefreshToken != "", e.mcp.url)
	}

	cs, err := e.connect(e.mcp.url, e.handler())
	if err != nil {
		t.Fatalf("connect with the stored token: %v", err)
	}
	if who, err := whoami(t, cs); err != nil || who != "alice" {
		t.Errorf("whoami = %q, %v; want alice", who, err)
	}
	cs.Close()

	// Restart: a new store handle and Handler, same files.
	e.store = e.openStore(secrets.BackendFile)
	cs, err = e.connect(e.mcp.url, e.handler())
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	if who, err := whoami(t, cs); err != nil || who != "alice" {
		t.Errorf("after restart: whoami = %q, %v; want alice", who, err)
	}
	cs.Close()
	if e.as.authorizes != 1 {
		t.Errorf("the AS saw %d authorize requests; the restart must not log in again", e.as.authorizes)
	}
	for i, res := range e.as.resources {
		if res != e.mcp.url {
			t.Errorf("token request %d had resource %q, want %q (RFC 8707)", i, res, e.mcp.url)
		}
	}
	e.scanForTokens()
}

// TestPreregisteredClient: with oauth_client_id configured, no registration
// happens and the token is keyed by that client id.
func TestPreregisteredClient(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t)
	o := e.options(b)
	o.ClientID = "pre-registered"
	o.Scopes = []string{"tools"}
	if err := Login(t.Context(), o); err != nil {
		t.Fatalf("Login: %v", err)
	}
	r, err := load(t.Context(), &o)
	if err != nil || r == nil {
		t.Fatalf("no token under the client id's key: %v", err)
	}
	// Scopes are a set: their order in the token response is not fixed.
	scopes := strings.Fields(r.Scope)
	slices.Sort(scopes)
	if r.Registered || r.ClientID != "pre-registered" || !slices.Equal(scopes, []string{"offline_access", "tools"}) {
		t.Errorf("record: registered=%v client=%q scope=%q; want the configured client and scope", r.Registered, r.ClientID, r.Scope)
	}
	if len(e.as.clients) != 1 {
		t.Errorf("the AS has %d clients; a configured client id must not be registered again", len(e.as.clients))
	}
}

// TestNoTokenNeverBlocks: without a stored token a connect fails at once
// with ErrLoginRequired, sends nothing, and opens no browser.
func TestNoTokenNeverBlocks(t *testing.T) {
	e := newEnv(t)
	h := e.handler()
	if h.HasToken(t.Context()) {
		t.Fatal("HasToken is true with an empty store")
	}
	start := time.Now()
	_, err := e.connect(e.mcp.url, h)
	if !errors.Is(err, ErrLoginRequired) {
		t.Fatalf("connect without a token: %v; want ErrLoginRequired", err)
	}
	if !strings.Contains(err.Error(), "moat auth login protected") {
		t.Errorf("the error %q does not say what to run", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("connect took %s; it must fail at once, not wait for a login", d)
	}
	if got := e.mcp.authHeaders(); len(got) != 0 {
		t.Errorf("the server saw %d requests; none should be sent without a token", len(got))
	}
}

// TestRefreshBeforeExpiry: with less than 5 minutes left, the next request
// refreshes first; the rotated refresh token replaces the old one.
func TestRefreshBeforeExpiry(t *testing.T) {
	e := newEnv(t)
	e.login(newBrowser(t))
	before := e.stored()
	h := e.handler()
	cs, err := e.connect(e.mcp.url, h)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if e.as.refreshes != 0 {
		t.Fatalf("%d refreshes with an hour left; want 0", e.as.refreshes)
	}
	e.clock.advance(56 * time.Minute) // 4 minutes left
	if who, err := whoami(t, cs); err != nil || who != "alice" {
		t.Fatalf("whoami after the clock moved: %q, %v", who, err)
	}
	if e.as.refreshes != 1 {
		t.Errorf("%d refreshes with 4 minutes left; want 1", e.as.refreshes)
	}
	after := e.stored()
	if after.RefreshToken == before.RefreshToken || after.AccessToken == before.AccessToken {
		t.Error("the store still holds the old tokens after a rotating refresh")
	}
	hdrs := e.mcp.authHeaders()
	if last := hdrs[len(hdrs)-1]; last != "Bearer "+after.AccessToken {
		t.Error("the last request did not carry the refreshed token")
	}
	// The spent refresh token is useless: the AS rotated it.
	e.as.mu.Lock()
	_, live := e.as.refresh[before.RefreshToken]
	e.as.mu.Unlock()
	if live {
		t.Error("the old refresh token is still live at the AS")
	}
	e.scanForTokens()
}

// TestRefreshOn401: a token the server rejects (revoked, or expired by the
// server's clock) is refreshed once and the call retried.
func TestRefreshOn401(t *testing.T) {
	e := newEnv(t)
	e.login(newBrowser(t))
	cs, err := e.connect(e.mcp.url, e.handler())
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	e.as.revokeAccess()
	if who, err := whoami(t, cs); err != nil || who != "alice" {
		t.Fatalf("whoami after revocation: %q, %v; want a refresh and alice", who, err)
	}
	if e.as.refreshes != 1 {
		t.Errorf("%d refreshes after one 401; want 1", e.as.refreshes)
	}
}

// TestFailedRefreshNeedsLogin: when the AS refuses the refresh, the call
// fails with ErrLoginRequired, and later requests too, without a refresh
// loop; a new login (another process) is picked up without a restart.
func TestFailedRefreshNeedsLogin(t *testing.T) {
	e := newEnv(t)
	e.login(newBrowser(t))
	h := e.handler()
	cs, err := e.connect(e.mcp.url, h)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	e.as.mu.Lock()
	e.as.refuseRefr = true
	e.as.mu.Unlock()
	e.as.revokeAccess()
	_, err = whoami(t, cs)
	if err == nil || !strings.Contains(err.Error(), "moat auth login protected") {
		t.Fatalf("whoami after a refused refresh: %v; want a login-required error", err)
	}
	sent := len(e.mcp.authHeaders())
	for range 3 {
		if _, err := h.TokenSource(t.Context()); !errors.Is(err, ErrLoginRequired) {
			t.Fatalf("TokenSource after a refused refresh: %v; want ErrLoginRequired", err)
		}
	}
	if n := len(e.mcp.authHeaders()); n != sent {
		t.Errorf("%d more requests after the refusal; want none", n-sent)
	}

	// The user logs in again; the same Handler uses the new token.
	e.as.mu.Lock()
	e.as.refuseRefr = false
	e.as.mu.Unlock()
	e.login(newBrowser(t))
	if _, err := h.TokenSource(t.Context()); err != nil {
		t.Errorf("TokenSource after a new login: %v", err)
	}
}

// TestServerRejectsFreshToken: a server that refuses even a just-refreshed
// token gets one refresh, then ErrLoginRequired, never a loop.
func TestServerRejectsFreshToken(t *testing.T) {
	e := newEnv(t)
	e.login(newBrowser(t))
	h := e.handler()
	cs, err := e.connect(e.mcp.url, h)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	e.as.mu.Lock()
	e.as.expiresIn = -10 // every new token is dead on arrival at the server
	e.as.mu.Unlock()
	e.as.revokeAccess()
	// The first call refreshes once; the retry's 401 closes the session.
	if _, err := whoami(t, cs); err == nil {
		t.Fatal("whoami succeeded with tokens the server refuses")
	}
	// The integrator reconnects: the fresh token is refused again, and the
	// Handler gives up instead of refreshing once more.
	for range 2 {
		if _, err := e.connect(e.mcp.url, h); !errors.Is(err, ErrLoginRequired) {
			t.Fatalf("reconnect: %v; want ErrLoginRequired", err)
		}
	}
	if e.as.refreshes != 1 {
		t.Errorf("%d refreshes; want exactly 1 before giving up", e.as.refreshes)
	}
	if _, err := h.TokenSource(t.Context()); !errors.Is(err, ErrLoginRequired) {
		t.Errorf("TokenSource: %v; want ErrLoginRequired", err)
	}
}

// TestTokenBoundToURL: after the config's url changes, the old token is not
// found and is never sent to the new host.
func TestTokenBoundToURL(t *testing.T) {
	e := newEnv(t)
	e.login(newBrowser(t))
	other := newTestMCP(t, e.as)
	o := e.options(nil)
	o.URL = other.url
	h, err := NewHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.connect(other.url, h); !errors.Is(err, ErrLoginRequired) {
		t.Errorf("connect to the new url: %v; want ErrLoginRequired", err)
	}
	for _, a := range other.authHeaders() {
		if a != "" {
			t.Errorf("the new host received an Authorization header")
		}
	}
	st := Status(t.Context(), e.store, []*config.Server{
		{Name: "protected", URL: e.mcp.url},
		{Name: "protected", URL: other.url},
		{Name: "local", Command: "x"},
	})
	if len(st) != 2 || !st[0].HasToken || st[1].HasToken || st[0].Expiry.IsZero() || !st[0].Refreshable {
		t.Errorf("Status = %+v; want a refreshable token for the old url only, and no stdio server", st)
	}
}

// TestCallbackListener: stray requests, wrong paths and a wrong state are
// refused without ending the login, which then succeeds.
func TestCallbackListener(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t)
	b.before = []string{
		"/favicon.ico",
		"/callback/extra?state=x",
		"/callback?state=wrong&code=stolen",
		"/callback?state=wrong&error=access_denied",
		"/callback?code=nostate",
	}
	e.login(b)
	_, pages := b.results()
	want := []string{"404", "404", "400", "400", "400", "200"}
	if len(pages) != len(want) {
		t.Fatalf("pages = %q; want %d answers", pages, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(pages[i], w+" ") {
			t.Errorf("request %d answered %.40q; want status %s", i, pages[i], w)
		}
	}
	if !strings.Contains(pages[5], "Logged in") {
		t.Errorf("final page %q; want the success page", pages[5])
	}
}

// TestAuthorizationServerError: error= from the AS ends the login with its
// description, cleaned of control characters.
func TestAuthorizationServerError(t *testing.T) {
	e := newEnv(t)
	e.as.authErr = "access_denied"
	b := newBrowser(t)
	err := Login(t.Context(), e.options(b))
	if err == nil || !strings.Contains(err.Error(), "access_denied: the user said no") {
		t.Fatalf("Login = %v; want the AS's error and description", err)
	}
	if strings.ContainsAny(err.Error(), "\x1b\n") {
		t.Errorf("the error %q carries control characters from the network", err)
	}
	_, pages := b.results()
	if len(pages) != 1 || !strings.Contains(pages[0], "Login refused") {
		t.Errorf("pages = %q; want the refusal page", pages)
	}
}

// TestLoginTimeout: no browser answer ends the login at its deadline.
func TestLoginTimeout(t *testing.T) {
	e := newEnv(t)
	o := e.options(nil)
	o.OpenBrowser = func(string) error { return errors.New("no display") }
	o.LoginTimeout = 300 * time.Millisecond
	err := Login(t.Context(), o)
	if err == nil || !strings.Contains(err.Error(), "did not finish within") {
		t.Fatalf("Login = %v; want a timeout", err)
	}
	if !strings.Contains(string(e.logs.Bytes()), "Open the URL above by hand") {
		t.Error("no hint to open the URL by hand after the browser failed")
	}
}

// TestLogoutAndAdopt: logout removes the token; a migrated dynamic-mcp token
// is bound to a url only by AdoptMigrated, which removes the unbound item.
func TestLogoutAndAdopt(t *testing.T) {
	e := newEnv(t)
	e.login(newBrowser(t))
	o := e.options(nil)
	if err := Logout(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if err := Logout(t.Context(), o); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("second Logout = %v; want ErrNotFound", err)
	}

	old := `{"access_token":"dmcp-canary-access","refresh_token":"dmcp-canary-refresh","expires_at":"2099-01-02T03:04:05Z"}`
	if err := e.store.Set(t.Context(), secrets.DynamicMCPPrefix+"protected", secrets.NewSecret(old)); err != nil {
		t.Fatal(err)
	}
	if e.handler().HasToken(t.Context()) {
		t.Fatal("a migrated token was used before it was adopted")
	}
	if err := AdoptMigrated(t.Context(), e.store, "protected", e.mcp.url, ""); err != nil {
		t.Fatal(err)
	}
	r := e.stored()
	if r.AccessToken != "dmcp-canary-access" || r.Expiry.Year() != 2099 || r.URL != e.mcp.url {
		t.Errorf("adopted record: expiry %v url %q; want the migrated token bound to %q", r.Expiry, r.URL, e.mcp.url)
	}
	if _, err := e.store.Get(t.Context(), secrets.DynamicMCPPrefix+"protected"); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("the unbound item is still there: %v", err)
	}
	if err := AdoptMigrated(t.Context(), e.store, "protected", e.mcp.url, ""); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("adopting twice = %v; want ErrNotFound", err)
	}
}

// TestKeyringLoginAndRestart runs login and restart against a real Secret
// Service (scripts/with-keyring.sh).
func TestKeyringLoginAndRestart(t *testing.T) {
	if os.Getenv("MOAT_TEST_KEYRING") != "1" {
		if os.Getenv("CI") == "true" {
			t.Fatal("MOAT_TEST_KEYRING is not 1 under CI=true: run the tests through scripts/with-keyring.sh")
		}
		t.Skip("SKIPPING the real-keyring OAuth test: run it with scripts/with-keyring.sh (sets MOAT_TEST_KEYRING=1)")
	}
	bus := os.Getenv("DBUS_SESSION_BUS_ADDRESS")
	e := newEnv(t)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", bus)
	e.store = e.openStore(secrets.BackendKeychain)
	o := e.options(newBrowser(t))
	o.Server = "protected-" + randText()[:8]
	if err := Login(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Logout(t.Context(), o) })
	e.store = e.openStore(secrets.BackendKeychain)
	o2 := e.options(nil)
	o2.Server = o.Server
	h, err := NewHandler(o2)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := e.connect(e.mcp.url, h)
	if err != nil {
		t.Fatalf("connect after restart with the keyring: %v", err)
	}
	defer cs.Close()
	if who, err := whoami(t, cs); err != nil || who != "alice" {
		t.Errorf("whoami = %q, %v", who, err)
	}
	e.scanForTokens()
}
