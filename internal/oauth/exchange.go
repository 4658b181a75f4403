package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"golang.org/x/oauth2"
)

// An ExchangeError is why a token_exchange server's copy has no token; Why
// is fit for the server's status line. It never holds a token.
type ExchangeError struct {
	Server, Why string
	err         error
}

func (e *ExchangeError) Error() string { return fmt.Sprintf("oauth: server %q: %s", e.Server, e.Why) }
func (e *ExchangeError) Unwrap() error { return e.err }

func exchangeFail(server, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &ExchangeError{Server: server, Why: err.Error(), err: errors.Unwrap(err)}
}

// RFC 8693 names.
const (
	grantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
)

// ExchangeOptions describe one person's copy of a server whose token is
// exchanged (config token_exchange).
type ExchangeOptions struct {
	// Server, URL, ClientID, Scopes, ClientSecret, Issuer, Audience and
	// TokenURL come from the config: the server's name, url,
	// oauth_client_id, oauth_scopes and token_exchange block. Issuer or
	// TokenURL is set; the audience is Issuer when not given.
	Server       string
	URL          string
	ClientID     string
	Scopes       []string
	ClientSecret string
	Issuer       string
	Audience     string
	TokenURL     string
	// Principal names the person (guard.Identity.Principal): the
	// exchanged tokens are registered with OnToken under a name of their
	// own (ExchangedTokenName), so no one's are dropped for another's.
	Principal string
	// SubjectToken returns the person's current sign-in token (the
	// gateway's OIDC access token of its last request), or "" when none
	// unexpired is held.
	SubjectToken func() string
	// HTTP sends the discovery and token requests. It must come from
	// netguard.NewOAuthClient.
	HTTP *http.Client
	// Logger receives exchanges and failures, never token values. Nil
	// means slog.Default().
	Logger *slog.Logger
	// OnToken, when set, learns each exchanged token (for the redactor).
	OnToken func(name, value string)
	// OnEvent, when set, learns of exchanges ("exchanged",
	// "exchange_refused") for the audit log.
	OnEvent func(event string)

	// now replaces time.Now in tests.
	now func() time.Time
}

// An Exchanger supplies one person's copy of a server with an access token
// got by OAuth 2.0 Token Exchange (RFC 8693) of that person's own sign-in
// token: the go-sdk auth.OAuthHandler of its streamable transport. The
// exchanged token is held in memory only (it is derived, short-lived, and
// got again from the next sign-in token), exchanged again before it
// expires and once when the server answers 401. It is safe for concurrent
// use.
type Exchanger struct {
	o ExchangeOptions

	mu sync.Mutex
	// tokenURL is found on the first exchange when the config does not
	// give it.
	tokenURL, audience string
	tok                *record // the exchanged token; nil before the first
	// exchangedOn401 is when a 401 last made us exchange, and fresh the
	// token it gave.
	exchangedOn401 time.Time
	fresh          string
	// refused is the sign-in token the authorization server last refused,
	// and refusal why: it is not sent again (the answer would be the
	// same), only the person's next sign-in token is.
	refused string
	refusal error
}

var _ auth.OAuthHandler = (*Exchanger)(nil)

// NewExchanger returns the Exchanger of one person's copy of a server. It
// sends nothing yet.
func NewExchanger(o ExchangeOptions) (*Exchanger, error) {
	switch {
	case o.Server == "":
		return nil, errors.New("oauth: no server name")
	case o.URL == "":
		return nil, fmt.Errorf("oauth: server %q has no url", o.Server)
	case o.ClientID == "":
		return nil, fmt.Errorf("oauth: server %q: token_exchange needs oauth_client_id", o.Server)
	case o.HTTP == nil:
		return nil, errors.New("oauth: no HTTP client (use netguard.NewOAuthClient)")
	case o.Issuer == "" && o.TokenURL == "":
		return nil, fmt.Errorf("oauth: server %q: token_exchange needs its issuer or token_url", o.Server)
	case o.SubjectToken == nil:
		return nil, fmt.Errorf("oauth: server %q exchanges each person's sign-in token, and runs only on a gateway with gateway.oidc (moat serve --listen HOST:PORT)", o.Server)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.now == nil {
		o.now = time.Now
	}
	audience := o.Audience
	if audience == "" {
		audience = o.Issuer
	}
	return &Exchanger{o: o, tokenURL: o.TokenURL, audience: audience}, nil
}

// TokenSource returns the source of the exchanged token, exchanging one
// first when there is none; an error when no exchange is possible, so the
// transport fails the request instead of sending it without a token.
func (x *Exchanger) TokenSource(ctx context.Context) (oauth2.TokenSource, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.current(ctx); err != nil {
		return nil, err
	}
	return exchangeSource{x}, nil
}

type exchangeSource struct{ x *Exchanger }

// Token returns the exchanged token, exchanged again first when it is due.
func (s exchangeSource) Token() (*oauth2.Token, error) {
	x := s.x
	x.mu.Lock()
	defer x.mu.Unlock()
	// go-sdk gives Token no context; postToken bounds each request.
	if err := x.current(context.Background()); err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: x.tok.AccessToken, TokenType: "Bearer", Expiry: x.tok.Expiry}, nil
}

// current makes sure x.tok holds a token that may be used, exchanging one
// when there is none or it is due. A failed exchange with time left on the
// current token keeps it until the next request. The caller holds x.mu.
func (x *Exchanger) current(ctx context.Context) error {
	now := x.o.now()
	if x.tok != nil && !x.tok.refreshDue(now) {
		return nil
	}
	err := x.exchange(ctx)
	if err != nil && x.tok != nil && !x.tok.expired(now) {
		x.o.Logger.Warn("oauth: exchanging the token again failed; using the current one until it expires",
			"server", x.o.Server, "err", err)
		return nil
	}
	return err
}

// Authorize is called by the transport after a 401 or 403. A 401 makes it
// exchange the token again, once: a token freshly exchanged and refused
// again means the server does not take what its authorization server
// issues, and retrying would loop.
func (x *Exchanger) Authorize(ctx context.Context, req *http.Request, resp *http.Response) error {
	if resp.StatusCode == http.StatusForbidden {
		if scope, ok := insufficientScope(resp); ok {
			return exchangeFail(x.o.Server, "it needs more scopes (%s) than the exchanged token has: add them to its oauth_scopes", scope)
		}
		return nil
	}
	drain(resp)
	x.mu.Lock()
	defer x.mu.Unlock()
	sent := strings.TrimSpace(strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer "))
	if x.tok != nil && !sameToken(sent, x.tok.AccessToken) {
		return nil // exchanged again since the request left: retry with it
	}
	now := x.o.now()
	if x.fresh != "" && sameToken(sent, x.fresh) && now.Sub(x.exchangedOn401) < rejectWindow {
		return exchangeFail(x.o.Server, "it refused a token freshly exchanged at its authorization server; check that the server trusts that authorization server and accepts tokens for %s", x.o.URL)
	}
	if err := x.exchange(ctx); err != nil {
		return err
	}
	x.exchangedOn401, x.fresh = now, x.tok.AccessToken
	return nil
}

// exchange replaces x.tok by a token exchanged for the person's current
// sign-in token. The caller holds x.mu.
func (x *Exchanger) exchange(ctx context.Context) error {
	subject := x.o.SubjectToken()
	if subject == "" {
		return exchangeFail(x.o.Server, "no unexpired sign-in token of this user is held to exchange; the user's client sends a new one with its next request")
	}
	if x.refused != "" && sameToken(subject, x.refused) {
		return x.refusal
	}
	if x.tokenURL == "" {
		if err := x.discover(ctx); err != nil {
			return err
		}
	}
	form := url.Values{
		"grant_type":           {grantTokenExchange},
		"subject_token":        {subject},
		"subject_token_type":   {tokenTypeAccessToken},
		"requested_token_type": {tokenTypeAccessToken},
		"resource":             {x.o.URL},
	}
	if x.audience != "" {
		form.Set("audience", x.audience)
	}
	if len(x.o.Scopes) > 0 {
		form.Set("scope", strings.Join(x.o.Scopes, " "))
	}
	tr, err := postToken(ctx, x.o.HTTP, x.tokenURL, form, x.o.ClientID, x.o.ClientSecret, x.o.ClientSecret != "")
	if err != nil {
		var re *refusedError
		if errors.As(err, &re) {
			x.event("exchange_refused")
			x.refused = subject
			x.refusal = exchangeFail(x.o.Server, "its authorization server refused to exchange this user's sign-in token (%s)", re.code)
			return x.refusal
		}
		return exchangeFail(x.o.Server, "token exchange at %s: %w", x.tokenURL, err)
	}
	switch {
	case tr.IssuedTokenType != "" && tr.IssuedTokenType != tokenTypeAccessToken && tr.IssuedTokenType != tokenTypeJWT:
		return exchangeFail(x.o.Server, "the token exchange issued a %s, not an access token", clean(tr.IssuedTokenType))
	case !strings.EqualFold(tr.TokenType, "bearer"):
		return exchangeFail(x.o.Server, "the token exchange issued a token of type %q, not a bearer token", clean(tr.TokenType))
	}
	now := x.o.now()
	next := &record{AccessToken: tr.AccessToken, TokenType: tr.TokenType, Obtained: now, URL: x.o.URL, Scope: tr.Scope}
	if tr.ExpiresIn > 0 {
		next.Expiry = now.Add(time.Duration(tr.ExpiresIn) * time.Second)
	}
	x.tok = next
	if x.o.OnToken != nil {
		x.o.OnToken(ExchangedTokenName(x.o.Server, x.o.Principal), next.AccessToken)
	}
	x.o.Logger.Info("oauth: token exchanged", "server", x.o.Server, "expires", next.Expiry)
	x.event("exchanged")
	return nil
}

// ExchangedTokenName is the name under which the tokens exchanged for
// principal's copy of server are redacted: one per person (a redactor
// keeps a few values per name), and not naming the person.
func ExchangedTokenName(server, principal string) string {
	sum := sha256.Sum256([]byte(principal))
	return "oauth-" + server + "-exchanged-" + hex.EncodeToString(sum[:4])
}

func (x *Exchanger) event(e string) {
	if x.o.OnEvent != nil {
		x.o.OnEvent(e)
	}
}

// discover finds the token endpoint from the configured issuer's
// metadata. The caller holds x.mu.
func (x *Exchanger) discover(ctx context.Context) error {
	tokenURL, err := DiscoverTokenExchange(ctx, x.o.HTTP, x.o.Server, x.o.Issuer)
	if err != nil {
		return err
	}
	x.tokenURL = tokenURL
	return nil
}

// DiscoverTokenExchange finds the token endpoint of issuer, the
// authorization server a token_exchange server's config names, from its
// metadata (RFC 8414, or OpenID Connect discovery), through client
// (netguard.NewOAuthClient), and checks that it offers token exchange. It
// never asks the MCP server which authorization server to use: a
// sign-in token goes only where the config says. An error says what is
// missing and what to do.
func DiscoverTokenExchange(ctx context.Context, client *http.Client, server, issuer string) (tokenURL string, err error) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	fix := "check token_exchange.issuer, or set token_exchange.token_url"
	asm, err := auth.GetAuthServerMetadata(ctx, issuer, client)
	if err != nil || asm == nil {
		if err == nil {
			err = errors.New("no metadata document at its well-known paths")
		}
		return "", exchangeFail(server, "the metadata of its authorization server %s could not be read (%v); %s", issuer, err, fix)
	}
	if len(asm.GrantTypesSupported) > 0 && !slices.Contains(asm.GrantTypesSupported, grantTokenExchange) {
		return "", exchangeFail(server, "its authorization server %s does not offer token exchange (RFC 8693); log each identity in with `moat auth login --identity ID %s` instead, and remove token_exchange", issuer, server)
	}
	if asm.TokenEndpoint == "" {
		return "", exchangeFail(server, "its authorization server %s names no token endpoint; %s", issuer, fix)
	}
	return asm.TokenEndpoint, nil
}
