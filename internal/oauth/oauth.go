// Package oauth authorizes Moat to OAuth-protected MCP servers (MCP
// authorization: RFC 9728, RFC 8414, RFC 7591, PKCE, RFC 8707) and keeps the
// tokens in the secret store.
//
// [Login] runs the interactive flow once, from `moat auth login NAME`: it
// asks the server for its 401, lets go-sdk's auth package discover the
// protected-resource and authorization-server metadata, register a client
// when no oauth_client_id is configured, and build the PKCE S256 authorize
// URL with `state` and `resource`; the URL is always printed to
// [Options.Prompt], and a browser opened when possible. A loopback listener
// on 127.0.0.1 (random port, redirect_uri http://127.0.0.1:PORT/callback)
// waits for the callback until [Options.LoginTimeout]: other paths get 404,
// a wrong `state` gets 400, and neither ends the wait; the success page is
// shown only after the code was exchanged for a token (so state and iss are
// verified by then).
//
// A [Handler] is the go-sdk auth.OAuthHandler of one server's streamable
// transport. It never runs a browser login: with no usable token its
// TokenSource returns an error wrapping [ErrLoginRequired], so a connect
// fails at once and the group can show "waiting for login". It refreshes a
// token when less than 5 minutes (or half its lifetime) remain, and once
// when the server answers 401; rotated refresh tokens replace the old one in
// the store; a refresh the authorization server refuses ends in
// ErrLoginRequired, never in a loop.
//
// # Storage
//
// A token is stored as JSON under secrets.TokenKey(server, url, clientID),
// with its refresh token, expiry, scope, resource, token endpoint and, when
// dynamic registration was used, the registered client. Changing a server's
// url therefore finds no token, and the old one is never sent to the new
// host. Token values never appear in logs or errors.
//
// Every OAuth HTTP request uses [Options.HTTP], which must come from
// netguard.NewOAuthClient (https except to loopback, SSRF-checked dialer,
// size limits, timeouts).
package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/moatmcp/moat/internal/secrets"
)

// ErrLoginRequired is returned (wrapped) when a server has no usable token
// and only an interactive `moat auth login NAME` can get one.
var ErrLoginRequired = errors.New("oauth: login required")

// DefaultLoginTimeout bounds an interactive login when Options.LoginTimeout is zero.
const DefaultLoginTimeout = 5 * time.Minute

// refreshMargin is how long before expiry a token is refreshed. A token
// whose whole lifetime is shorter than twice this is refreshed at half its
// life instead, so short-lived tokens are not refreshed on every request.
const refreshMargin = 5 * time.Minute

// stepTimeout bounds one refresh or probe request.
const stepTimeout = 30 * time.Second

// Options describe one server's OAuth setup.
type Options struct {
	Store *secrets.Store
	// Server, URL, ClientID and Scopes come from the config: the server's
	// name, url, oauth_client_id ("" means dynamic client registration) and
	// oauth_scopes (empty means the scopes the server advertises).
	Server   string
	URL      string
	ClientID string
	Scopes   []string
	// Identity, when set, is the gateway identity whose own token this
	// is (a per-user server's): stored apart from the user's own and every
	// other identity's, and logged in with `moat auth login --identity`.
	Identity string
	// HTTP sends every OAuth request (discovery, registration, token). It
	// must come from netguard.NewOAuthClient.
	HTTP *http.Client
	// MCPHTTP is the server's own client (netguard.NewClient, with its
	// configured headers), used by Login to ask the server for its 401.
	// Nil means netguard.NewClient(URL) with defaults.
	MCPHTTP *http.Client
	// OpenBrowser opens the login URL; nil tries xdg-open or open. The URL
	// is printed to Prompt either way.
	OpenBrowser func(url string) error
	// Prompt receives the login URL and progress lines (stderr; never stdout,
	// which carries MCP in serve mode). Nil discards them.
	Prompt io.Writer
	// LoginTimeout bounds an interactive login; 0 means DefaultLoginTimeout.
	LoginTimeout time.Duration
	// Logger receives refresh and failure notes, never token values. Nil
	// means slog.Default().
	Logger *slog.Logger
	// OnToken, when set, learns every token value this server's record
	// holds as it is read or stored (serve registers them with the
	// redactor, so a server echoing its own token gets it redacted).
	OnToken func(name, value string)
	// OnEvent, when set, learns of refreshes ("refreshed", "refresh_refused")
	// for the audit log; never token values.
	OnEvent func(event string)
	// TryWithoutToken (servers without oauth_client_id, which may need no
	// OAuth at all): with no token stored, the Handler sends requests
	// without one instead of failing them, and only a 401 from the server
	// ends in ErrLoginRequired.
	TryWithoutToken bool

	// now replaces time.Now in tests.
	now func() time.Time
}

func (o *Options) check() error {
	switch {
	case o.Store == nil:
		return errors.New("oauth: no secret store")
	case o.Server == "":
		return errors.New("oauth: no server name")
	case o.URL == "":
		return fmt.Errorf("oauth: server %q has no url", o.Server)
	case o.HTTP == nil:
		return errors.New("oauth: no HTTP client (use netguard.NewOAuthClient)")
	}
	if o.Prompt == nil {
		o.Prompt = io.Discard
	}
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = DefaultLoginTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.now == nil {
		o.now = time.Now
	}
	return nil
}

func (o *Options) key() string {
	server := o.Server
	if o.Identity != "" {
		// A server's name never holds '@': no identity's key is another
		// server's.
		server = secrets.ForIdentity(server, o.Identity)
	}
	return secrets.TokenKey(server, o.URL, o.ClientID)
}

// loginCommand is what gets this token.
func (o *Options) loginCommand() string {
	if o.Identity != "" {
		return "moat auth login --identity " + o.Identity + " " + o.Server
	}
	return "moat auth login " + o.Server
}

// record is what the store holds for one server. It holds secrets in plain
// strings, so it is never logged or put into an error.
type record struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
	Obtained     time.Time `json:"obtained,omitzero"`
	Scope        string    `json:"scope,omitempty"`
	// URL is the server url the token was issued for; a record whose URL
	// differs from the configured one is never used (the key binds it too).
	URL      string `json:"url"`
	Resource string `json:"resource,omitempty"`
	TokenURL string `json:"token_url,omitempty"`
	// AuthStyle is oauth2.AuthStyle for the token endpoint.
	AuthStyle    int    `json:"auth_style,omitempty"`
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	// Registered is true when the client came from dynamic registration.
	Registered bool `json:"registered,omitempty"`
}

func (r *record) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// refreshDue reports whether r should be refreshed at now.
func (r *record) refreshDue(now time.Time) bool {
	if r.Expiry.IsZero() {
		return false
	}
	margin := refreshMargin
	if !r.Obtained.IsZero() {
		if life := r.Expiry.Sub(r.Obtained); life < 2*refreshMargin {
			margin = life / 2
		}
	}
	return !now.Before(r.Expiry.Add(-margin))
}

func (r *record) expired(now time.Time) bool {
	return !r.Expiry.IsZero() && !now.Before(r.Expiry)
}

// keyLocks serializes read-modify-write of one stored token across every
// Handler and Login in this process (a config reload may briefly hold two
// Handlers for one server).
var keyLocks sync.Map // key -> *sync.Mutex

func lockKey(key string) func() {
	m, _ := keyLocks.LoadOrStore(key, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// load reads the record stored for o; (nil, nil) when there is none.
func load(ctx context.Context, o *Options) (*record, error) {
	v, err := o.Store.Get(ctx, o.key())
	if errors.Is(err, secrets.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("oauth: reading the token of %q: %w", o.Server, err)
	}
	var r record
	// json's error could quote the value: say only that it is unreadable.
	if json.Unmarshal([]byte(v.Reveal()), &r) != nil || r.AccessToken == "" {
		return nil, fmt.Errorf("oauth: the stored token of %q is unreadable; run `moat auth logout %s` and log in again", o.Server, o.Server)
	}
	if r.URL != o.URL {
		return nil, nil
	}
	o.learn(&r)
	return &r, nil
}

// learn tells OnToken about r's token values.
func (o *Options) learn(r *record) {
	if o.OnToken == nil {
		return
	}
	// An identity's token is named for it: a redactor keeps a few values
	// per name, and one identity's refreshes must not drop another's.
	name := "oauth-" + o.Server
	if o.Identity != "" {
		name += "-" + o.Identity
	}
	o.OnToken(name+"-access-token", r.AccessToken)
	if r.RefreshToken != "" {
		o.OnToken(name+"-refresh-token", r.RefreshToken)
	}
}

func save(ctx context.Context, o *Options, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("oauth: encoding the token of %q failed", o.Server)
	}
	if err := o.Store.Set(ctx, o.key(), secrets.NewSecret(string(b))); err != nil {
		return fmt.Errorf("oauth: storing the token of %q: %w", o.Server, err)
	}
	o.learn(r)
	return nil
}

// loginRequired wraps ErrLoginRequired with the server's name, why, and
// what to run.
func (o *Options) loginRequired(why string) error {
	return &loginError{server: o.Server, why: why, cmd: o.loginCommand()}
}

type loginError struct{ server, why, cmd string }

func (e *loginError) Error() string {
	return fmt.Sprintf("oauth: server %q: %s: run `%s`", e.server, e.why, e.cmd)
}
func (e *loginError) Unwrap() error { return ErrLoginRequired }

// Hints lets the CLI print a `moat: hint:` line.
func (e *loginError) Hints() []string {
	return []string{"run `" + e.cmd + "` in a terminal; it prints a URL to open in a browser"}
}

// clean makes text from the network safe for one terminal line: printable
// ASCII only, at most 200 bytes.
func clean(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= 200 {
			b.WriteString("…")
			break
		}
		if c >= 0x20 && c < 0x7f {
			b.WriteRune(c)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}
