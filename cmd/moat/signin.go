package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/oauth"
)

// signIns hold each OIDC principal's latest verified sign-in token (the
// bearer of its last HTTP request), in memory only, for the per-user
// servers whose token is exchanged from it (token_exchange). A principal's
// token is only ever given to its own tenant's Exchanger.
type signIns struct {
	mu    sync.Mutex
	by    map[string]signIn // by guard.Identity.Principal
	swept time.Time
	now   func() time.Time
}

type signIn struct {
	raw string
	exp time.Time
}

func newSignIns() *signIns { return &signIns{by: map[string]signIn{}, now: time.Now} }

// put keeps raw as principal's sign-in token unless the one held lives
// longer. Expired tokens are dropped at most once a minute.
func (s *signIns) put(principal, raw string, exp time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.swept) > time.Minute {
		for p, t := range s.by {
			if !now.Before(t.exp) {
				delete(s.by, p)
			}
		}
		s.swept = now
	}
	if held, ok := s.by[principal]; ok && held.exp.After(exp) {
		return
	}
	s.by[principal] = signIn{raw, exp}
}

// get is principal's sign-in token, or "" when none unexpired is held.
func (s *signIns) get(principal string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.by[principal]
	if !ok || !s.now().Before(t.exp) {
		return ""
	}
	return t.raw
}

// exchangerFor is the OAuth handler of a token_exchange server's copy for
// id: a token exchanged from id's principal's own sign-in token (held by
// sis), with each exchange and refusal in the audit log l. Outside a
// gateway (sis nil) the Exchanger says it runs only on one.
func exchangerFor(log *slog.Logger, l *auditlog.Log, sis *signIns, id *guard.Identity, s *config.Server) (auth.OAuthHandler, error) {
	if sis != nil && (id == nil || !strings.HasPrefix(id.Principal, "oidc ")) {
		name := ""
		if id != nil {
			name = id.Name
		}
		return nil, fmt.Errorf("server %q exchanges each person's OIDC sign-in token, and identity %q connected without one (a Unix socket peer or a moat token); connect with a token of gateway.oidc's issuer", s.Name, name)
	}
	oc, err := netguard.NewOAuthClient(netOptions(s))
	if err != nil {
		return nil, err
	}
	o := oauth.ExchangeOptions{
		Server: s.Name, URL: s.URL, ClientID: s.OAuthClientID, Scopes: s.OAuthScopes,
		ClientSecret: s.TokenExchange.ClientSecret, Issuer: s.TokenExchange.Issuer, Audience: s.TokenExchange.Audience, TokenURL: s.TokenExchange.TokenURL,
		HTTP: oc, Logger: log, OnToken: secretSink,
	}
	if id != nil {
		o.Principal = id.Principal
	}
	if sis != nil {
		principal := id.Principal
		o.SubjectToken = func() string { return sis.get(principal) }
		o.OnEvent = func(event string) {
			ctx, cancel := context.WithTimeout(context.Background(), auditEventTimeout)
			defer cancel()
			_ = l.Write(ctx, &audit.Record{Event: "oauth_" + event, Group: s.Name, Identity: auditIdentity(id), Detail: map[string]string{"principal": principal}})
		}
	}
	return oauth.NewExchanger(o)
}
