package proxy

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/upstream"
)

// A tenant is one identity's own sessions of a gateway's per-user servers
// (config.Server.PerUser): its own processes, started with its own
// secrets, whose requests and notifications reach only its sessions. Its
// servers stop when unused for gateway.per_user_idle and start again on
// the next call.
//
// An identity whose sessions can be several people (an OIDC identity
// matched by groups or scopes) has one tenant per person (guard.Identity
// Principal): a server whose token is exchanged from the person's own
// sign-in token (token_exchange) must never act for another person.
type tenant struct {
	identity string // the identity's name: its secrets and logins
	key      string // ownerOf the identity: who its sessions serve
	m        *upstream.Manager
	// err is why the identity's copy of the config could not be loaded
	// (a secret of its own not stored, say): its per-user servers are
	// then stopped, and calls to them are refused with it.
	err error
}

// tenants are a gateway's tenants, by key.
type tenants struct {
	mu sync.Mutex
	by map[string]*tenant
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
	if t, ok := g.tenants.by[key]; ok {
		g.tenants.mu.Unlock()
		return t
	}
	name, who := id.Name, *id
	opts := g.upOpts
	opts.Logger = g.log.With("identity", name)
	opts.IdleAfter = cfg.Gateway.PerUserIdle
	opts.Identity = name
	if g.perUserOAuth != nil {
		opts.OAuth = func(s *config.Server) (auth.OAuthHandler, error) { return g.perUserOAuth(&who, s) }
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
	t := &tenant{identity: name, key: key, m: upstream.NewManager(opts)}
	g.load(t)
	t.m.Open(g.hooks(key))
	if g.tenants.by == nil {
		g.tenants.by = map[string]*tenant{}
	}
	g.tenants.by[key] = t
	g.tenants.mu.Unlock()
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
		t.err = err
		t.m.Apply(&config.Config{})
		return
	}
	t.err = nil
	t.m.Apply(perUserPart(cfg))
}

// reloadTenants applies a new config to every tenant.
func (g *Gateway) reloadTenants() {
	g.tenants.mu.Lock()
	defer g.tenants.mu.Unlock()
	for _, t := range g.tenants.by {
		g.load(t)
	}
}

// closeTenants stops every tenant's servers.
func (g *Gateway) closeTenants() {
	g.tenants.mu.Lock()
	defer g.tenants.mu.Unlock()
	for _, t := range g.tenants.by {
		t.m.Close()
	}
	g.tenants.by = nil
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

// tenant is this session's identity's tenant; nil on stdio or without
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
	if t == nil || t.err == nil {
		return nil
	}
	p.gw.mu.Lock()
	s := p.gw.cfg.Servers[name]
	p.gw.mu.Unlock()
	if s == nil || !s.PerUser || (p.visible != nil && !p.visible(name)) {
		return nil
	}
	return invalidParams("group %q runs per user, and identity %q's copy could not be loaded: %s",
		name, t.identity, strings.TrimPrefix(t.err.Error(), "config: "))
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
