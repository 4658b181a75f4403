package proxy

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/upstream"
)

// A tenant is one person's own sessions of a gateway's per-user servers
// (config.Server.PerUser): its own processes, started with its identity's
// secrets, whose requests and notifications reach only that person's
// sessions. Its servers stop when unused for gateway.per_user_idle and
// start again on the next call; the tenant is retired once none of its
// sessions has been live for as long.
//
// A person is an identity and a principal (guard.Identity: a uid, a moat
// token, an OIDC subject), so the people of a group identity do not share
// a process or its notifications, and a server whose token is exchanged
// from a person's own sign-in token (token_exchange) never acts for
// another.
type tenant struct {
	identity string // the identity's name: its secrets and logins
	key      string // ownerOf the identity: who its sessions serve
	m        *upstream.Manager
	// event reports an event of the tenant's (its upstreams' OnEvent,
	// naming the identity and principal); nil without one.
	event func(upstream.Event)
	// retire, while set, closes the tenant once no session of it has
	// been live for gateway.per_user_idle (guarded by tenants.mu).
	retire *time.Timer
	// exchangers are its token_exchange servers' OAuth handlers, by
	// server: kept across reconnects, since what they hold (a token
	// exchanged, a sign-in token refused) must outlive a connection.
	mu         sync.Mutex
	exchangers map[string]heldHandler
	// loadErr is why the identity's copy of the config could not be
	// loaded (a secret of its own not stored, say), or nil: its per-user
	// servers are then stopped, and calls to them are refused with it.
	// Written by load, read by sessions.
	loadErr atomic.Pointer[error]
}

type heldHandler struct {
	s *config.Server
	h auth.OAuthHandler
}

// tenants are a gateway's tenants, by key.
type tenants struct {
	mu sync.Mutex
	by map[string]*tenant
	// making holds the keys whose tenant is being made, outside mu (its
	// config load reads secrets, which may take seconds, and every
	// session's lookups take mu); each channel is closed when done.
	making map[string]chan struct{}
	// reloads counts reloadTenants calls, so that a tenant made while one
	// ran is loaded again.
	reloads int
	closed  bool // the gateway closed: no tenant is made or retired
	// retiring counts tenants being closed by retireTenant, which
	// closeTenants waits for: none outlives the gateway.
	retiring sync.WaitGroup
}

// sharedPart is cfg without its per-user servers, which the shared manager
// never runs; perUserPart is what a tenant runs of an identity's config.
func sharedPart(cfg *config.Config) *config.Config { return serversWhere(cfg, false) }

func perUserPart(cfg *config.Config) *config.Config { return serversWhere(cfg, true) }

func serversWhere(cfg *config.Config, perUser bool) *config.Config {
	c := *cfg
	c.Servers = maps.Collect(func(yield func(string, *config.Server) bool) {
		for name, s := range cfg.Servers {
			if s.PerUser == perUser && !yield(name, s) {
				return
			}
		}
	})
	return &c
}

// hasPerUser reports whether cfg has a per-user server enabled.
func hasPerUser(cfg *config.Config) bool {
	for _, s := range cfg.Servers {
		if s.PerUser && s.Enabled {
			return true
		}
	}
	return false
}

// tenantOf is id's tenant, made (and its servers started) on the first
// session that needs it; nil when the config has no per-user server.
func (g *Gateway) tenantOf(id *guard.Identity) *tenant {
	g.mu.Lock()
	cfg, on := g.cfg, g.perUserOn
	g.mu.Unlock()
	if id == nil || !on {
		return nil
	}
	if g.perUser == nil {
		// A gateway built without a way to load an identity's config
		// runs no per-user server: none is shared by mistake.
		return nil
	}
	key := ownerOf(id)
	g.tenants.mu.Lock()
	for {
		if t, ok := g.tenants.by[key]; ok {
			g.tenants.mu.Unlock()
			return t
		}
		if g.tenants.closed {
			g.tenants.mu.Unlock()
			return nil
		}
		made, busy := g.tenants.making[key]
		if !busy {
			break
		}
		g.tenants.mu.Unlock()
		<-made
		g.tenants.mu.Lock()
	}
	made := make(chan struct{})
	if g.tenants.making == nil {
		g.tenants.making = map[string]chan struct{}{}
	}
	g.tenants.making[key] = made
	reloads := g.tenants.reloads
	g.tenants.mu.Unlock()

	name, who := id.Name, *id
	t := &tenant{identity: name, key: key}
	opts := g.upOpts
	opts.Logger = g.log.With("identity", name)
	opts.IdleAfter = cfg.Gateway.PerUserIdle
	opts.Identity = name
	if g.perUserOAuth != nil {
		opts.OAuth = func(s *config.Server) (auth.OAuthHandler, error) {
			return t.oauth(s, func() (auth.OAuthHandler, error) { return g.perUserOAuth(&who, s) })
		}
	}
	opts.OnChange = func() { g.changedFor(key) }
	if onEvent := opts.OnEvent; onEvent != nil {
		opts.OnEvent = func(e upstream.Event) {
			d := maps.Clone(e.Detail)
			if d == nil {
				d = map[string]string{}
			}
			d["identity"] = name
			if who.Principal != "" {
				d["principal"] = who.Principal
			}
			e.Detail = d
			onEvent(e)
		}
	}
	t.event = opts.OnEvent
	t.m = upstream.NewManager(opts)
	g.load(t)
	t.m.Open(g.hooks(key))

	g.tenants.mu.Lock()
	closed, reloaded := g.tenants.closed, g.tenants.reloads != reloads
	if !closed {
		if g.tenants.by == nil {
			g.tenants.by = map[string]*tenant{}
		}
		g.tenants.by[key] = t
	}
	delete(g.tenants.making, key)
	g.tenants.mu.Unlock()
	// closeTenants waits for made: t's servers stop before it returns.
	defer close(made)
	if closed {
		t.m.Close()
		return nil
	}
	if reloaded {
		// Loaded with a config a reload has replaced since.
		g.load(t)
	}
	// Read after t is listed, and outside the tenants' lock (raise holds
	// the level's lock while it lists them): a level raised meanwhile
	// reaches t either way.
	if level := g.logLevels.current(); level != "" {
		t.m.SetLoggingLevel(context.Background(), level)
	}
	return t
}

// load applies t's identity's copy of the per-user servers. On failure
// they stop: none keeps running with credentials the config no longer
// gives.
func (g *Gateway) load(t *tenant) {
	cfg, err := g.perUser(t.identity)
	if err != nil {
		g.log.Warn("per-user servers not loaded for an identity", "identity", t.identity, "err", err)
		t.loadErr.Store(&err)
		t.m.Apply(&config.Config{})
		return
	}
	t.loadErr.Store(nil)
	t.m.Apply(perUserPart(cfg))
}

// reloadTenants applies a new config to every tenant, outside the
// tenants' lock (a load reads secrets).
func (g *Gateway) reloadTenants() {
	g.tenants.mu.Lock()
	g.tenants.reloads++
	ts := slices.Collect(maps.Values(g.tenants.by))
	g.tenants.mu.Unlock()
	for _, t := range ts {
		g.load(t)
	}
}

// closeTenants stops every tenant's servers, those being made included.
func (g *Gateway) closeTenants() {
	defer g.tenants.retiring.Wait()
	g.tenants.mu.Lock()
	g.tenants.closed = true
	making := slices.Collect(maps.Values(g.tenants.making))
	ts := g.tenants.by
	g.tenants.by = nil
	for _, t := range ts {
		if t.retire != nil {
			t.retire.Stop()
		}
	}
	g.tenants.mu.Unlock()
	for _, t := range ts {
		t.m.Close()
	}
	// A tenant being made sees closed once made, and its maker closes
	// its servers before made is closed.
	for _, made := range making {
		<-made
	}
}

// oauth is the OAuth handler of t's copy of s: made anew for each
// connection, except a token_exchange server's, which is kept while the
// server's config is unchanged.
func (t *tenant) oauth(s *config.Server, newHandler func() (auth.OAuthHandler, error)) (auth.OAuthHandler, error) {
	if s.TokenExchange == nil {
		return newHandler()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if held, ok := t.exchangers[s.Name]; ok && held.s.Equal(s) {
		return held.h, nil
	}
	h, err := newHandler()
	if err != nil {
		return nil, err
	}
	if t.exchangers == nil {
		t.exchangers = map[string]heldHandler{}
	}
	t.exchangers[s.Name] = heldHandler{s, h}
	return h, nil
}

// left is told that a session of key's tenant ended. When none of its
// sessions is left, the tenant is retired after gateway.per_user_idle: a
// person gone for the day leaves no manager, goroutine or process behind.
func (g *Gateway) left(key string) {
	g.tenants.mu.Lock()
	defer g.tenants.mu.Unlock()
	t := g.tenants.by[key]
	if t == nil || g.tenants.closed {
		return
	}
	if t.retire != nil {
		t.retire.Stop()
	}
	t.retire = time.AfterFunc(g.perUserIdle(), func() { g.retireTenant(t) })
}

func (g *Gateway) perUserIdle() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cfg == nil || g.cfg.Gateway.PerUserIdle <= 0 {
		return config.DefaultPerUserIdle
	}
	return g.cfg.Gateway.PerUserIdle
}

// retireTenant closes t unless a session of it is live (its end retires
// it later) or one of its servers is still up or starting (it is looked
// at again after gateway.per_user_idle, by when an unused one has stopped).
// The check is made under the tenants' lock, which a session takes to
// find its tenant: one that begins meanwhile gets a new tenant.
func (g *Gateway) retireTenant(t *tenant) {
	g.tenants.mu.Lock()
	if g.tenants.closed || g.tenants.by[t.key] != t || slices.ContainsFunc(g.live(), func(s *Server) bool { return s.identity != nil && s.owns(t.key) }) {
		g.tenants.mu.Unlock()
		return
	}
	for _, grp := range t.m.Groups() {
		if st := grp.Status().State; st == upstream.Ready || st.Pending() {
			t.retire = time.AfterFunc(g.perUserIdle(), func() { g.retireTenant(t) })
			g.tenants.mu.Unlock()
			return
		}
	}
	delete(g.tenants.by, t.key)
	g.tenants.retiring.Add(1)
	defer g.tenants.retiring.Done()
	g.tenants.mu.Unlock()
	groups := t.m.Groups()
	t.m.Close()
	g.log.Info("per-user servers retired: no session of their identity for gateway.per_user_idle", "identity", t.identity)
	if t.event != nil {
		for _, grp := range groups {
			t.event(upstream.Event{Group: grp.Name(), Kind: "per_user_retired"})
		}
	}
}

// tenantManagers are the running tenants' managers.
func (g *Gateway) tenantManagers() []*upstream.Manager {
	g.tenants.mu.Lock()
	defer g.tenants.mu.Unlock()
	var ms []*upstream.Manager
	for _, t := range g.tenants.by {
		ms = append(ms, t.m)
	}
	return ms
}

// managers are the upstream managers this session's calls may reach: the
// shared one and, on a gateway, every tenant's (a level raised for one
// session applies to every upstream, as on a shared server).
func (p *Server) managers() []*upstream.Manager {
	ms := []*upstream.Manager{p.m}
	if p.gw != nil {
		ms = append(ms, p.gw.tenantManagers()...)
	}
	return ms
}

// changedFor tells the sessions of a tenant (by key) that one of its
// groups changed.
func (g *Gateway) changedFor(key string) {
	for _, s := range g.live() {
		if s.owns(key) {
			s.changed()
		}
	}
}

// owns reports whether the session is one of a tenant's (by key); ""
// names what every session shares.
func (p *Server) owns(key string) bool {
	return key == "" || p.identity != nil && ownerOf(p.identity) == key
}

// tenant is this session's person's tenant; nil on stdio or without
// per-user servers.
func (p *Server) tenant() *tenant {
	if p.gw == nil {
		return nil
	}
	return p.gw.tenantOf(p.identity)
}

// ownerOf is the tenant (by key) whose own session of group this session
// uses, or "" for a shared group.
func (p *Server) ownerOf(group string) string {
	if t := p.tenant(); t != nil {
		if _, ok := t.m.Group(group); ok {
			return t.key
		}
	}
	return ""
}

// perUserError is why a per-user group of this session's identity is not
// there, if that is why name is unknown.
func (p *Server) perUserError(name string) error {
	t := p.tenant()
	if t == nil {
		return nil
	}
	loadErr := t.loadErr.Load()
	if loadErr == nil {
		return nil
	}
	p.gw.mu.Lock()
	s := p.gw.cfg.Servers[name]
	p.gw.mu.Unlock()
	if s == nil || !s.PerUser || (p.visible != nil && !p.visible(name)) {
		return nil
	}
	return invalidParams("group %q runs per user, and identity %q's copy could not be loaded: %s",
		name, t.identity, strings.TrimPrefix((*loadErr).Error(), "config: "))
}

// withTenant adds t's groups to shared ones, sorted by name.
func withTenant(shared []*upstream.Group, t *tenant) []*upstream.Group {
	if t == nil {
		return shared
	}
	all := append(shared, t.m.Groups()...)
	slices.SortFunc(all, func(a, b *upstream.Group) int { return strings.Compare(a.Name(), b.Name()) })
	return all
}
