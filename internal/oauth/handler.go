package oauth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"
)

// rejectWindow: a token obtained by a 401-driven refresh that is itself
// refused with 401 within this window means the server will not take our
// tokens; the Handler then stops refreshing and asks for a login.
const rejectWindow = time.Minute

// A Handler supplies one server's streamable transport with its stored
// token (mcp.StreamableClientTransport.OAuthHandler). It never starts an
// interactive login; see the package doc. It is safe for concurrent use.
type Handler struct {
	o Options

	mu  sync.Mutex
	rec *record // the token in use; nil when none is loaded
	// blocked, when non-empty, says why the token in rec must not be used
	// until the store holds a different one (written by `moat auth login`).
	blocked string
	// refreshedOn401 is when a 401 last made us refresh, and fresh the
	// access token that refresh produced.
	refreshedOn401 time.Time
	fresh          string
	// anonymous: TryWithoutToken and no token stored when this Handler
	// was first asked; its requests go without a token.
	anonymous bool
}

var _ auth.OAuthHandler = (*Handler)(nil)

// NewHandler returns the Handler for one server. It reads nothing yet: the
// store is asked on the first TokenSource call.
func NewHandler(o Options) (*Handler, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	return &Handler{o: o}, nil
}

// HasToken reports whether a token is stored for the server (usable, or
// refreshable, or not), so the integrator can show "waiting for login"
// without connecting.
func (h *Handler) HasToken(ctx context.Context) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current(ctx) == nil
}

// current makes sure h.rec holds a token that may be used; it returns why
// not otherwise. The store is read again when there is no token or the one
// we have was refused, so a login done by another moat process is picked up.
func (h *Handler) current(ctx context.Context) error {
	if h.rec != nil && h.blocked == "" {
		return nil
	}
	r, err := load(ctx, &h.o)
	if err != nil {
		return err
	}
	if r == nil {
		return h.o.loginRequired("no token stored for " + hostOf(h.o.URL))
	}
	if h.blocked != "" && h.rec != nil && sameToken(r.AccessToken, h.rec.AccessToken) {
		return h.o.loginRequired(h.blocked)
	}
	h.rec, h.blocked = r, ""
	return nil
}

// TokenSource returns the source of the bearer token, or an error wrapping
// ErrLoginRequired when there is none: the transport then fails the request
// at once instead of sending it without a token.
func (h *Handler) TokenSource(ctx context.Context) (oauth2.TokenSource, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.anonymous {
		return nil, nil
	}
	if err := h.current(ctx); err != nil {
		if h.o.TryWithoutToken && h.rec == nil && errors.Is(err, ErrLoginRequired) {
			// No token and no sign yet that the server wants one: send the
			// request bare. A 401 reaches Authorize, which asks for a login.
			h.anonymous = true
			return nil, nil
		}
		return nil, err
	}
	return tokenSource{h}, nil
}

type tokenSource struct{ h *Handler }

// Token returns the current access token, refreshed first when it is due.
func (t tokenSource) Token() (*oauth2.Token, error) {
	h := t.h
	h.mu.Lock()
	defer h.mu.Unlock()
	// go-sdk gives Token no context; bound the store and refresh calls.
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := h.current(ctx); err != nil {
		return nil, err
	}
	if h.rec.refreshDue(h.o.now()) {
		if err := h.refresh(ctx); err != nil {
			if errors.Is(err, ErrLoginRequired) || h.rec.expired(h.o.now()) {
				return nil, err
			}
			// A transient failure with time left on the token: use it,
			// and try again on the next request.
			h.o.Logger.Warn("oauth: refreshing the token failed; using the current one until it expires",
				"server", h.o.Server, "err", err)
		}
	}
	return &oauth2.Token{AccessToken: h.rec.AccessToken, TokenType: "Bearer", Expiry: h.rec.Expiry}, nil
}

// Authorize is called by the transport after a 401 or 403. A 401 makes it
// refresh the token once; it never starts a browser login (that would run
// inside a connect or a tool call), but returns an error wrapping
// ErrLoginRequired instead.
func (h *Handler) Authorize(ctx context.Context, req *http.Request, resp *http.Response) error {
	if resp.StatusCode == http.StatusForbidden {
		if scope, ok := insufficientScope(resp); ok {
			return h.o.loginRequired("the server needs more scopes (" + scope + ") than the token has")
		}
		// Any other 403 is not about the token: let the transport retry once
		// and report the server's answer, as go-sdk's own handler does.
		return nil
	}
	drain(resp)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.current(ctx); err != nil {
		return err
	}
	// A login stored a token since this request left bare: use it.
	h.anonymous = false
	sent := strings.TrimSpace(strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer "))
	if !sameToken(sent, h.rec.AccessToken) {
		// The token changed since the request left (another request
		// refreshed it, or a login stored a new one): retry with it.
		return nil
	}
	now := h.o.now()
	if h.fresh != "" && sameToken(sent, h.fresh) && now.Sub(h.refreshedOn401) < rejectWindow {
		h.blocked = "the server refused a freshly refreshed token"
		return h.o.loginRequired(h.blocked)
	}
	if h.rec.RefreshToken == "" || h.rec.TokenURL == "" {
		h.blocked = "the server refused the token and it cannot be refreshed"
		return h.o.loginRequired(h.blocked)
	}
	if err := h.refresh(ctx); err != nil {
		return err
	}
	h.refreshedOn401, h.fresh = now, h.rec.AccessToken
	return nil
}

// refresh replaces h.rec by a refreshed token and stores it. The caller
// holds h.mu. A refusal by the authorization server blocks the token and
// returns an error wrapping ErrLoginRequired.
func (h *Handler) refresh(ctx context.Context) error {
	unlock := lockKey(h.o.key())
	defer unlock()
	// Another Handler or process may have rotated the refresh token since
	// we read it: using our copy would then fail (or, with strict rotation,
	// revoke the whole grant). Take the stored one when it is newer.
	if r, err := load(ctx, &h.o); err == nil && r != nil && !sameToken(r.AccessToken, h.rec.AccessToken) {
		h.rec = r
		if !r.refreshDue(h.o.now()) {
			return nil
		}
	}
	if h.rec.RefreshToken == "" || h.rec.TokenURL == "" {
		h.blocked = "the token expired and cannot be refreshed"
		return h.o.loginRequired(h.blocked)
	}
	next, err := refreshRecord(ctx, &h.o, h.rec)
	if err != nil {
		var re *refusedError
		if errors.As(err, &re) {
			if h.o.OnEvent != nil {
				h.o.OnEvent("refresh_refused")
			}
			h.blocked = "the authorization server refused to refresh the token (" + re.code + ")"
			h.o.Logger.Warn("oauth: refresh refused; a new login is needed", "server", h.o.Server, "error", re.code)
			return h.o.loginRequired(h.blocked)
		}
		return fmt.Errorf("oauth: refreshing the token of %q: %w", h.o.Server, err)
	}
	if err := save(ctx, &h.o, next); err != nil {
		// The old refresh token may be spent already: keep the new token in
		// memory so this process works, and say that a restart needs a login.
		h.o.Logger.Error("oauth: the refreshed token could not be stored; after a restart a new login may be needed",
			"server", h.o.Server, "err", err)
	}
	h.rec = next
	h.o.Logger.Info("oauth: token refreshed", "server", h.o.Server, "expires", next.Expiry)
	if h.o.OnEvent != nil {
		h.o.OnEvent("refreshed")
	}
	return nil
}

// refusedError is an OAuth error response from the token endpoint (RFC 6749
// section 5.2): the grant is unusable, and retrying will not help.
type refusedError struct{ code string }

func (e *refusedError) Error() string { return "the authorization server refused: " + e.code }

// tokenResponse is RFC 6749 section 5.1.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	// IssuedTokenType is RFC 8693's: what a token exchange issued.
	IssuedTokenType string `json:"issued_token_type"`
	Error           string `json:"error"`
	ErrorDesc       string `json:"error_description"`
}

// drain reads a little of a refused response and closes it, so its
// connection can be reused.
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// insufficientScope drains a 403 and reports whether its challenge says
// the token lacks a scope (RFC 6750 §3.1), and which (cleaned for a line).
func insufficientScope(resp *http.Response) (scope string, ok bool) {
	drain(resp)
	cs, _ := oauthex.ParseWWWAuthenticate(resp.Header.Values("WWW-Authenticate"))
	for _, c := range cs {
		if c.Scheme == "bearer" && c.Params["error"] == "insufficient_scope" {
			return clean(c.Params["scope"]), true
		}
	}
	return "", false
}

// refreshRecord runs the refresh_token grant for r, with the RFC 8707
// resource, and returns the new record. x/oauth2 cannot add `resource` to a
// refresh, hence this small client of our own.
func refreshRecord(ctx context.Context, o *Options, r *record) (*record, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.RefreshToken}}
	if r.Resource != "" {
		form.Set("resource", r.Resource)
	}
	basic := r.ClientSecret != "" && oauth2.AuthStyle(r.AuthStyle) != oauth2.AuthStyleInParams
	tr, err := postToken(ctx, o.HTTP, r.TokenURL, form, r.ClientID, r.ClientSecret, basic)
	if err != nil {
		return nil, err
	}
	now := o.now()
	next := *r
	next.AccessToken, next.TokenType, next.Obtained = tr.AccessToken, tr.TokenType, now
	next.Expiry = time.Time{}
	if tr.ExpiresIn > 0 {
		next.Expiry = now.Add(time.Duration(tr.ExpiresIn) * time.Second)
	}
	if tr.RefreshToken != "" { // rotation; otherwise the old one stays valid
		next.RefreshToken = tr.RefreshToken
	}
	if tr.Scope != "" {
		next.Scope = tr.Scope
	}
	return &next, nil
}

// postToken sends one grant to a token endpoint, authenticating as
// clientID (with its secret in HTTP Basic when basic, else in the form),
// and returns the token response. An OAuth error answer is a
// *refusedError; no error ever quotes the answer's body, which may hold a
// token.
func postToken(ctx context.Context, client *http.Client, tokenURL string, form url.Values, clientID, secret string, basic bool) (*tokenResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if !basic {
		form.Set("client_id", clientID)
		if secret != "" {
			form.Set("client_secret", secret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("token endpoint %q: %v", tokenURL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the token response: %v", err)
	}
	var tr tokenResponse
	// Never quote body or json's error: a malformed success holds tokens.
	jsonErr := json.Unmarshal(body, &tr)
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		code := "HTTP " + resp.Status
		if jsonErr == nil && tr.Error != "" {
			code = clean(tr.Error)
			if tr.ErrorDesc != "" {
				code += ": " + clean(tr.ErrorDesc)
			}
		}
		return nil, &refusedError{code: code}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("token endpoint answered %s", resp.Status)
	}
	if jsonErr != nil || tr.AccessToken == "" {
		return nil, errors.New("the token endpoint's answer is not a token response")
	}
	return &tr, nil
}

// sameToken compares two token strings in constant time.
func sameToken(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "its url"
	}
	return u.Host
}
