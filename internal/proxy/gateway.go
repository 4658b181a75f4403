package proxy

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/upstream"
)

// A Gateway serves many client sessions over one set of upstream groups:
// one process, one sandbox per server and one audit writer for every
// client of a user, or of a host. Each session is a Server of its own (its
// listings, subscriptions, progress tokens and exchanges), shown what its
// identity may see; what an upstream sends outside a call's result goes
// only to the session it belongs to (see the hooks in Open).
type Gateway struct {
	*shared
	// The catalog of each group is computed once, for every session; each
	// narrows it to its identity.
	catalogFn Catalog
	cat       catalogCache
	// upOpts make tenants' managers; perUser loads an identity's config.
	upOpts       upstream.Options
	perUser      func(identity string) (*config.Config, error)
	perUserOAuth func(id *guard.Identity, s *config.Server) (auth.OAuthHandler, error)
	login        Login
	tenants      tenants

	mu  sync.Mutex
	cfg *config.Config // the last applied
	// perUserOn says cfg has a per-user server enabled: read on every
	// lookup of a session's groups, so found once per Apply.
	perUserOn bool
	sessions  map[*Server]bool
	// subs counts the sessions subscribed to each URI of each group: the
	// upstream is unsubscribed when the last of them is.
	subs map[subscription]int
}

// subscription is a group's URI; owner is the tenant (by key) whose own
// session of the group it is ("" for a shared group).
type subscription struct{ group, uri, owner string }

// SessionOptions say who a gateway session acts for and what it is shown.
type SessionOptions struct {
	// ID names the session in audit records; empty gives it a random one.
	ID       string
	Identity *guard.Identity
	// Visible leaves out the groups the identity may not see; nil shows
	// every group.
	Visible func(group string) bool
	// Narrow leaves out of a group's catalog (Options.Catalog's entries for
	// its tools) what the identity may not see; nil leaves it whole.
	Narrow func(group string, entries []Entry, tools []*mcp.Tool) []Entry
	// Permit is Options.Permit as the identity sees it.
	Permit func(group string, kind guard.Kind, name string) bool
}

// NewGateway returns a Gateway with no groups; call Apply to load a config,
// then Open.
func NewGateway(opts Options) *Gateway {
	g := &Gateway{shared: newShared(opts), catalogFn: opts.Catalog, perUser: opts.PerUser, perUserOAuth: opts.PerUserOAuth, login: opts.Login, sessions: map[*Server]bool{}, subs: map[subscription]int{}}
	if g.catalogFn == nil {
		g.catalogFn = allTools
	}
	g.upOpts = opts.Upstream
	g.newManager(opts.Upstream, g.changed)
	return g
}

// Manager is the upstream manager, for status displays and tests.
func (g *Gateway) Manager() *upstream.Manager { return g.m }

// Apply loads cfg: new groups start, removed ones stop, changed ones
// restart; every session is shown the change. Per-user servers run in
// each tenant, loaded again from Options.PerUser.
func (g *Gateway) Apply(cfg *config.Config) {
	g.mu.Lock()
	g.cfg, g.perUserOn = cfg, hasPerUser(cfg)
	g.mu.Unlock()
	g.m.Apply(sharedPart(cfg))
	g.reloadTenants()
	g.changed()
}

// Invalidate drops every session's cached catalog (after pins were
// approved or a policy changed) and tells each client its tools may have
// changed.
func (g *Gateway) Invalidate() {
	g.cat.invalidate()
	g.changed()
}

// changed tells every session a group changed.
func (g *Gateway) changed() {
	for _, s := range g.live() {
		s.changed()
	}
}

func (g *Gateway) live() []*Server {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*Server, 0, len(g.sessions))
	for s := range g.sessions {
		out = append(out, s)
	}
	return out
}

// Open connects the upstreams. Notifications are handed to the session's
// own delivery queue (see deliveries): a shared server's notifications are
// handled one at a time, and a client that stops reading must not hold up
// the other sessions' share of them. Moat declares sampling and elicitation to
// them, since some session may take them; each such request goes to the
// session whose call it belongs to and is refused when that session's
// client cannot take it. Roots are not offered: the upstreams serve many
// clients, whose roots differ.
func (g *Gateway) Open() { g.m.Open(g.hooks("")) }

// hooks route what the upstreams of owner's tenant (of the shared groups
// when owner is "") send outside a call's result to the sessions that may
// receive it.
func (g *Gateway) hooks(owner string) upstream.Client {
	return upstream.Client{
		Middleware: g.recoverPanics,
		Progress: func(ctx context.Context, group string, pp *mcp.ProgressNotificationParams) {
			// Moat's progress tokens are unique in the process: the
			// session that gave one out is the only one that finds it.
			for _, s := range g.live() {
				if !s.owns(owner) {
					continue
				}
				if _, ok := s.progress.route(group, pp.ProgressToken); ok {
					s.deliver(func(ctx context.Context) { s.forwardProgress(ctx, group, pp) })
					return
				}
			}
			g.log.Debug("dropped progress for a token no session gave this group", "group", group)
		},
		Log: func(ctx context.Context, group string, lp *mcp.LoggingMessageParams) {
			s, err := g.caller(ctx, owner, group)
			if err != nil {
				g.log.Debug("dropped a log message of a shared server", "group", group, "err", err)
				return
			}
			s.deliver(func(ctx context.Context) { s.forwardLog(ctx, group, lp) })
		},
		ResourceUpdated: func(ctx context.Context, group string, u *mcp.ResourceUpdatedNotificationParams) {
			for _, s := range g.live() {
				if !s.owns(owner) {
					continue
				}
				if o, ok := s.subs.owner(u.URI); ok && o == group {
					s.deliver(func(ctx context.Context) { s.forwardResourceUpdated(ctx, group, u) })
				}
			}
		},
		CreateMessage: func(ctx context.Context, group string, cp *mcp.CreateMessageParams) (*mcp.CreateMessageResult, error) {
			s, err := g.caller(ctx, owner, group)
			if err != nil {
				return nil, fmt.Errorf("moat refused a sampling request: %w", err)
			}
			return s.createMessage(ctx, group, cp)
		},
		Elicit: func(ctx context.Context, group string, ep *mcp.ElicitParams) (*mcp.ElicitResult, error) {
			s, err := g.caller(ctx, owner, group)
			if err != nil {
				return nil, fmt.Errorf("moat refused an elicitation request: %w", err)
			}
			return s.elicitInput(ctx, group, ep)
		},
	}
}

// caller is the session a request or log message of group's upstream
// belongs to: the one whose exchange it came through, else the one session
// with a call to group in progress. With none or several, it belongs to no session Moat
// can name, and goes to none: a shared server's message never reaches a
// client it was not meant for.
func (g *Gateway) caller(ctx context.Context, owner, group string) (*Server, error) {
	sessions := slices.DeleteFunc(g.live(), func(s *Server) bool { return !s.owns(owner) })
	if x := exchangeOf(ctx); x != nil {
		for _, s := range sessions {
			if s.session.Load() == x.ss {
				return s, nil
			}
		}
	}
	var found []*Server
	for _, s := range sessions {
		if s.calls.count(group) > 0 {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no client session has a call to group %q in progress", group)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%d client sessions have calls to group %q in progress, and a server shared by several clients does not say which call its request belongs to", len(found), group)
}

// Serve runs one client session on conn until the client disconnects or
// ctx ends. Its calls end with it; other sessions go on.
func (g *Gateway) Serve(ctx context.Context, conn io.ReadWriteCloser, so SessionOptions) error {
	s, ctx, end := g.begin(ctx, so)
	defer end()
	defer conn.Close()
	// Closing the connection is what ends a read in progress on it.
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	return s.connect(ctx, g.transport(conn, conn, so.Identity))
}

// begin sets up a session of so, whatever its transport: a Server shown
// what so allows, in the gateway's session set, with its delivery queue
// and refresh loop running until the returned context ends. end, called
// once the session is over, ends that context, takes the session out of
// the set and releases its subscriptions.
func (g *Gateway) begin(ctx context.Context, so SessionOptions) (s *Server, sctx context.Context, end func()) {
	s = newServer(g.shared, nil, so.Permit)
	s.gw = g
	s.narrow = so.Narrow
	s.identity = so.Identity
	s.visible = so.Visible
	s.sid = so.ID
	if s.sid == "" {
		s.sid = NewSessionID()
	}
	s.opened.Store(true)
	s.queue = newDeliveries()
	s.refresh()
	g.mu.Lock()
	g.sessions[s] = true
	g.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	s.start(sctx)
	go s.queue.run(sctx, s.recovered)
	return s, sctx, func() {
		cancel()
		g.mu.Lock()
		delete(g.sessions, s)
		g.mu.Unlock()
		s.releaseSubscriptions(context.WithoutCancel(ctx))
		if s.identity != nil {
			g.left(ownerOf(s.identity))
		}
	}
}

// NewSessionID returns a random name for a gateway session.
func NewSessionID() string { return "gw-" + rand.Text()[:16] }

// Sessions is how many client sessions are connected.
func (g *Gateway) Sessions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sessions)
}

// Close stops every upstream. Sessions still running should have ended
// first (their contexts cancelled).
func (g *Gateway) Close() {
	g.closeTenants()
	g.m.Close()
}

// subscribed records that a session holds a subscription to uri of group.
func (g *Gateway) subscribed(group, uri, owner string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.subs[subscription{group, uri, owner}]++
}

// unsubscribed releases a session's subscription, and reports whether it
// was the last one, so that the upstream's must end too.
func (g *Gateway) unsubscribed(group, uri, owner string) (last bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := subscription{group, uri, owner}
	if g.subs[k] <= 1 {
		delete(g.subs, k)
		return true
	}
	g.subs[k]--
	return false
}

// releaseSubscriptions ends a closed session's subscriptions.
func (p *Server) releaseSubscriptions(ctx context.Context) {
	for uri, group := range p.subs.all() {
		p.endSubscription(ctx, group, uri)
	}
}

// groups are the groups this session may see, sorted by name.
func (p *Server) groups() []*upstream.Group {
	all := withTenant(p.m.Groups(), p.tenant())
	if p.visible == nil {
		return all
	}
	return slices.DeleteFunc(all, func(g *upstream.Group) bool { return !p.visible(g.Name()) })
}

// group is the named group, if this session may see it: to a session, a
// group it may not see does not exist.
func (p *Server) group(name string) (*upstream.Group, bool) {
	g, ok := p.m.Group(name)
	if t := p.tenant(); !ok && t != nil {
		g, ok = t.m.Group(name)
	}
	if !ok || (p.visible != nil && !p.visible(name)) {
		return nil, false
	}
	return g, true
}

// sessionID names ss in audit records: its transport's session ID, else
// the one the gateway gave the connection.
func (p *Server) sessionID(ss *mcp.ServerSession) string {
	if ss != nil {
		if id := ss.ID(); id != "" {
			return id
		}
	}
	return p.sid
}

// callsInFlight counts a session's calls in progress per group, so that
// what a shared upstream sends can be given to the session that called it.
// A call's last log messages are handled before its result (upstream's
// notificationOrder), so a call that ended has nothing more to claim.
type callsInFlight struct {
	mu sync.Mutex
	n  map[string]int
}

// enter counts a call to group until the returned func is called.
func (c *callsInFlight) enter(group string) (leave func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[group]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.n[group]--
	}
}

// count is how many calls to group are in progress.
func (c *callsInFlight) count(group string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[group]
}

// deliveryQueue bounds the notifications waiting for one gateway session's
// client: past it, the client is not reading, and more are dropped (and
// logged) rather than held.
const deliveryQueue = 256

// deliveries is a gateway session's queue of notifications to send its
// client, sent in order by one goroutine of the session's own.
type deliveries struct {
	ch chan func(context.Context)
}

func newDeliveries() *deliveries {
	return &deliveries{ch: make(chan func(context.Context), deliveryQueue)}
}

// run sends what is queued until ctx ends.
func (d *deliveries) run(ctx context.Context, recovered func(context.Context, string)) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-d.ch:
			func() {
				defer recovered(ctx, "delivering a notification")
				f(ctx)
			}()
		}
	}
}

// deliver queues f, which sends a notification to this session's client,
// or sends it at once on stdio (whose one client owns the upstreams).
func (p *Server) deliver(f func(context.Context)) {
	if p.queue == nil {
		f(context.Background())
		return
	}
	select {
	case p.queue.ch <- f:
	default:
		p.log.Warn("dropped a notification: the client of this gateway session is not reading", "session", p.sid)
	}
}

// delivered waits until every notification queued before it has been
// sent, so that a call's progress reaches the client before its result,
// as it does on stdio. A session's end, or ctx's, ends the wait.
func (p *Server) delivered(ctx context.Context) {
	if p.queue == nil {
		return
	}
	done := make(chan struct{})
	select {
	case p.queue.ch <- func(context.Context) { close(done) }:
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}
