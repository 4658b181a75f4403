// Package oidcverify checks the JWT access tokens of the gateway's OpenID
// Connect issuer (gateway.oidc), so that the HTTP listener can be an OAuth
// 2.1 resource server as the MCP authorization spec asks. It finds the
// issuer's keys by discovery and refetches them when a token names a key
// it does not know (key rotation), at a bounded rate (keys.go), through the
// one HTTP client factory
// (internal/netguard), and checks what go-oidc leaves to its caller: exp,
// nbf and iat with a bounded clock skew, and the required scopes.
package oidcverify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
)

// Claims are what a verified token says of its bearer.
type Claims struct {
	Issuer  string
	Subject string
	Groups  []string // of the configured groups claim
	Scopes  []string // of the scope (space-separated) or scp claim
	Expiry  time.Time
}

// Error is a refused token: Reason says why in a few words fit for the
// audit log and the WWW-Authenticate error_description (never the token);
// InsufficientScope is set when the token is valid but lacks a required
// scope (403, not 401).
type Error struct {
	Reason            string
	InsufficientScope bool
}

func (e *Error) Error() string { return e.Reason }

func refuse(format string, args ...any) error { return &Error{Reason: fmt.Sprintf(format, args...)} }

// Verifier checks tokens of one issuer. Its zero value is not usable: make
// one with New and run Discover.
type Verifier struct {
	cfg    *config.GatewayOIDC
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier // nil until discovery succeeds
	lastErr  error                 // why discovery last failed
}

// NewClient is the HTTP client that reaches the issuer: https except to a
// loopback host, with netguard's SSRF guard (a loopback address only for a
// loopback issuer) and size limits.
func NewClient() (*http.Client, error) {
	return netguard.NewOAuthClient(&netguard.Options{Logger: slog.Default()})
}

// New returns a Verifier for cfg that has not yet discovered its issuer.
func New(cfg *config.GatewayOIDC, log *slog.Logger) (*Verifier, error) {
	c, err := NewClient()
	if err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, client: c, log: log, now: time.Now, lastErr: errors.New("discovery has not completed yet")}, nil
}

// Provider discovers issuer with client: its discovery document, whose
// issuer must equal issuer. Keys are fetched through client too.
func Provider(ctx context.Context, client *http.Client, issuer string) (*oidc.Provider, error) {
	// The provider keeps the client of this context for its key fetches,
	// and a background context: its lifetime is the process's.
	return oidc.NewProvider(oidc.ClientContext(ctx, client), issuer)
}

// Retry bounds between discovery attempts.
const (
	firstRetry = time.Second
	lastRetry  = 30 * time.Second
)

// Discover finds the issuer's keys, retrying with backoff until it
// succeeds or ctx ends; until then Verify refuses every token saying the
// issuer could not be reached. Run it in its own goroutine: serving must
// not wait for the issuer.
func (v *Verifier) Discover(ctx context.Context) {
	wait := firstRetry
	for {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		p, err := Provider(actx, v.client, v.cfg.Issuer)
		cancel()
		var doc struct {
			JWKS string `json:"jwks_uri"`
		}
		if err == nil {
			if err = p.Claims(&doc); err == nil && doc.JWKS == "" {
				err = errors.New("its discovery document has no jwks_uri")
			}
		}
		if err == nil {
			keys := newKeySet(v.client, doc.JWKS, v.cfg.AllowedAlgs, func() time.Time { return v.now() })
			// go-oidc checks exp without leeway and nbf with 5 minutes;
			// Verify checks all three times with max_clock_skew instead.
			vf := oidc.NewVerifier(v.cfg.Issuer, keys, &oidc.Config{ClientID: v.cfg.Audience, SupportedSigningAlgs: v.cfg.AllowedAlgs, SkipExpiryCheck: true})
			v.mu.Lock()
			v.verifier, v.lastErr = vf, nil
			v.mu.Unlock()
			v.log.Info("gateway.oidc: the issuer is discovered; JWT access tokens are accepted", "issuer", v.cfg.Issuer)
			return
		}
		v.mu.Lock()
		v.lastErr = err
		v.mu.Unlock()
		v.log.Warn("gateway.oidc: the issuer cannot be reached; JWT access tokens are refused until it can (moat tokens still work); retrying",
			"issuer", v.cfg.Issuer, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, lastRetry)
	}
}

// LooksLikeJWT reports whether a bearer token has a JWT's form (three
// base64url parts), as a moat token (moat_…) never has.
func LooksLikeJWT(tok string) bool {
	return strings.Count(tok, ".") == 2 && !strings.HasPrefix(tok, "moat_")
}

// Verify checks raw: signature by a key of the issuer with an allowed
// algorithm, iss, aud, exp, nbf and iat (with max_clock_skew), and the
// required scopes. A refusal is an *Error.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	v.mu.Lock()
	vf, lastErr := v.verifier, v.lastErr
	v.mu.Unlock()
	if vf == nil {
		return nil, refuse("the OIDC issuer %s could not be reached to fetch its keys (%v)", v.cfg.Issuer, lastErr)
	}
	tok, err := vf.Verify(ctx, raw)
	if err != nil {
		return nil, classify(err)
	}
	var c struct {
		Exp   *json.Number    `json:"exp"`
		Nbf   *json.Number    `json:"nbf"`
		Iat   *json.Number    `json:"iat"`
		Scope json.RawMessage `json:"scope"`
		Scp   json.RawMessage `json:"scp"`
	}
	if err := tok.Claims(&c); err != nil {
		return nil, refuse("malformed claims (%v)", err)
	}
	var all map[string]json.RawMessage
	if err := tok.Claims(&all); err != nil {
		return nil, refuse("malformed claims (%v)", err)
	}
	now, skew := v.now(), v.cfg.MaxClockSkew
	if c.Exp == nil {
		return nil, refuse("the token has no exp claim; an access token must expire")
	}
	exp, ok := unixTime(c.Exp)
	switch {
	case !ok:
		return nil, refuse("the token's exp claim is not a time")
	case !now.Before(exp.Add(skew)):
		return nil, refuse("expired at %s", exp.UTC().Format(time.RFC3339))
	}
	if c.Nbf != nil {
		nbf, ok := unixTime(c.Nbf)
		if !ok {
			return nil, refuse("the token's nbf claim is not a time")
		}
		if now.Add(skew).Before(nbf) {
			return nil, refuse("not valid yet: nbf is %s", nbf.UTC().Format(time.RFC3339))
		}
	}
	if c.Iat != nil {
		iat, ok := unixTime(c.Iat)
		if !ok {
			return nil, refuse("the token's iat claim is not a time")
		}
		if now.Add(skew).Before(iat) {
			return nil, refuse("issued in the future: iat is %s", iat.UTC().Format(time.RFC3339))
		}
	}
	if tok.Subject == "" {
		return nil, refuse("the token has no sub claim")
	}
	out := &Claims{Issuer: tok.Issuer, Subject: tok.Subject, Scopes: scopes(c.Scope, c.Scp), Groups: strs(all[v.cfg.GroupsClaim]), Expiry: exp}
	for _, s := range v.cfg.RequiredScopes {
		if !slices.Contains(out.Scopes, s) {
			return out, &Error{Reason: fmt.Sprintf("the token lacks the required scope %q", s), InsufficientScope: true}
		}
	}
	return out, nil
}

// classify turns go-oidc's error into a refusal naming the cause.
func classify(err error) error {
	msg := err.Error()
	var expired *oidc.TokenExpiredError
	switch {
	case errors.As(err, &expired):
		return refuse("expired at %s", expired.Expiry.UTC().Format(time.RFC3339))
	case strings.Contains(msg, "issued by a different provider"):
		return refuse("wrong issuer (%s)", strings.TrimPrefix(msg, "oidc: "))
	case strings.Contains(msg, "expected audience"):
		return refuse("wrong audience (%s)", strings.TrimPrefix(msg, "oidc: "))
	case strings.Contains(msg, "unexpected signature algorithm"):
		return refuse("signature algorithm not allowed by gateway.oidc.allowed_algs (%s)", strings.TrimPrefix(msg, "oidc: "))
	case strings.Contains(msg, "malformed jwt"):
		return refuse("malformed or unsigned JWT (%s)", strings.TrimPrefix(msg, "oidc: "))
	case strings.Contains(msg, "failed to verify signature"):
		return refuse("bad signature: no key the issuer publishes verifies it (%s)", msg)
	}
	return refuse("invalid token (%s)", strings.TrimPrefix(msg, "oidc: "))
}

func unixTime(n *json.Number) (time.Time, bool) {
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

// scopes reads the scope claim (RFC 9068: space-separated) or scp (an
// array or a string, as some issuers write it).
func scopes(scope, scp json.RawMessage) []string {
	var s string
	if json.Unmarshal(scope, &s) == nil {
		return strings.Fields(s)
	}
	if json.Unmarshal(scp, &s) == nil {
		return strings.Fields(s)
	}
	return strs(scp)
}

// strs reads a claim that is an array of strings or one string.
func strs(raw json.RawMessage) []string {
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return []string{s}
	}
	return nil
}
