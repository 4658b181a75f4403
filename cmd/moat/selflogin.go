package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/oauth"
)

// selfLogins run the OAuth logins that people start from their clients
// (proxy.Options.Login) for their own copies of per-user servers: the
// same flow as `moat auth login --identity`, run by the gateway, with the
// authorize URL sent to the person's session instead of printed. The
// redirect comes back to a loopback listener of the gateway's machine, so
// only a person on it (a Unix socket peer) is offered one; and only for an
// identity that is one person, since the token serves the whole identity.
// One login runs at a time per identity and server; they end with the
// gateway.
type selfLogins struct {
	ctx    context.Context // the gateway's: logins end with it
	cancel context.CancelFunc
	wg     sync.WaitGroup
	log    *slog.Logger
	path   string // the config file
	audit  *auditlog.Log

	mu      sync.Mutex
	pending map[string]*pendingLogin // by identity and server
}

// pendingLogin is one login in progress, shared by the sessions of its
// identity that ask for it. ready is closed once url is known, or the
// login ended without one (err then says why).
type pendingLogin struct {
	ready   chan struct{}
	url     string
	err     error
	waiters []chan error
}

func newSelfLogins(log *slog.Logger, path string, l *auditlog.Log) *selfLogins {
	ctx, cancel := context.WithCancel(context.Background())
	return &selfLogins{ctx: ctx, cancel: cancel, log: log, path: path, audit: l, pending: map[string]*pendingLogin{}}
}

// close ends the logins in progress and waits for them.
func (sl *selfLogins) close() {
	sl.cancel()
	sl.wg.Wait()
}

// login is proxy.Options.Login.
func (sl *selfLogins) login(ctx context.Context, id *guard.Identity, group string) (string, <-chan error, error) {
	admin := fmt.Sprintf("the gateway's user can log identity %q in with `moat auth login --identity %s %s`", id.Name, id.Name, group)
	if id.UID < 0 {
		return "", nil, fmt.Errorf("a login link is offered only to a session through the gateway's socket (moat connect), since the login's browser redirect comes back to the gateway's machine; %s", admin)
	}
	cfg, err := config.Load(sl.path, identityLoadOptions(id.Name))
	if err != nil {
		return "", nil, fmt.Errorf("the config does not load for identity %q (%v); %s", id.Name, err, admin)
	}
	s := cfg.Servers[group]
	if s == nil || !s.PerUser || s.URL == "" || s.TokenExchange != nil {
		return "", nil, fmt.Errorf("group %q takes no login of its own for identity %q", group, id.Name)
	}
	// With no identities in the config, the gateway serves its own user
	// alone: one person.
	switch who := cfg.Gateway.Identities[id.Name]; {
	case who == nil && len(cfg.Gateway.Identities) > 0:
		return "", nil, fmt.Errorf("identity %q is no longer in the config", id.Name)
	case who != nil && who.SharedBy() != "":
		return "", nil, fmt.Errorf("identity %q is matched by %s, so its login would serve everyone in it; %s", id.Name, who.SharedBy(), admin)
	}

	key := id.Name + "\x00" + group
	done := make(chan error, 1)
	sl.mu.Lock()
	p, ok := sl.pending[key]
	if !ok {
		p = &pendingLogin{ready: make(chan struct{})}
		sl.pending[key] = p
		sl.wg.Go(func() {
			err := sl.run(id, s, func(url string) {
				sl.mu.Lock()
				defer sl.mu.Unlock()
				p.url = url
				close(p.ready)
			})
			sl.mu.Lock()
			delete(sl.pending, key)
			if p.url == "" {
				p.err = err
				close(p.ready)
			}
			waiters := p.waiters
			sl.mu.Unlock()
			for _, w := range waiters {
				w <- err
			}
		})
	}
	p.waiters = append(p.waiters, done)
	sl.mu.Unlock()
	select {
	case <-p.ready:
	case <-ctx.Done():
		return "", nil, ctx.Err()
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if p.url == "" {
		return "", nil, fmt.Errorf("the login could not start (%v); %s", p.err, admin)
	}
	return p.url, done, nil
}

// run is one login: oauth.Login with the identity's own server, its URL
// given to show instead of to a browser, and its outcome audited.
func (sl *selfLogins) run(id *guard.Identity, s *config.Server, show func(url string)) error {
	err := func() error {
		store, err := processStore.get(sl.ctx)
		if err != nil {
			return err
		}
		oc, err := netguard.NewOAuthClient(netOptions(s))
		if err != nil {
			return err
		}
		mc, err := httpClientFor(s)
		if err != nil {
			return err
		}
		return oauth.Login(sl.ctx, oauth.Options{
			Store: store, Server: s.Name, URL: s.URL, ClientID: s.OAuthClientID, Scopes: s.OAuthScopes, Identity: id.Name,
			HTTP: oc, MCPHTTP: mc, Logger: sl.log, OnToken: secretSink, Prompt: io.Discard,
			OpenBrowser: func(u string) error {
				show(u)
				return nil
			},
		})
	}()
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	ctx, cancel := context.WithTimeout(context.Background(), auditEventTimeout)
	defer cancel()
	_ = sl.audit.Write(ctx, &audit.Record{Event: "oauth_login", Group: s.Name, Identity: auditIdentity(id),
		Detail: map[string]string{"url": s.URL, "outcome": outcome, "via": "client"}})
	return err
}
