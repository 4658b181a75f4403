// Package proxy is the MCP server the client sees: two tools
// (get_dynamic_tools and call_dynamic_tool) in front of every upstream
// group, the groups' resources and prompts merged without letting one group
// shadow another, and the notifications and requests that pass between the
// client and the upstreams. Every call to an upstream goes through one
// guard.Handler chain.
package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/tracing"
	"github.com/moatmcp/moat/internal/upstream"
)

// Downstream protocol versions Moat serves: both generations. A client of
// 2026-07-28 (stateless MCP) sends no initialize; its first request opens
// the upstreams, and relayInputs carries the upstreams' requests to it.
var protocolVersions = []string{newProtocol, "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// Options configure a Server.
type Options struct {
	Logger   *slog.Logger
	Version  string
	Upstream upstream.Options // OnChange is set by the proxy
	// Layers wrap the handler that forwards every tool call, resource read
	// and prompt get; Layers[0] is outermost (see guard.Chain).
	Layers []guard.Layer
	// PerUser loads the config as identity sees it: its per-user servers
	// (config.Server.PerUser) with that identity's own secrets. A Gateway
	// runs them per person of each identity from it; without it, it runs
	// none of them.
	PerUser func(identity string) (*config.Config, error)
	// PerUserOAuth is Upstream.OAuth for the per-user servers of id's
	// tenant: their tokens are that identity's (`moat auth login
	// --identity`), or exchanged from its principal's own sign-in token
	// (token_exchange). Nil: they use Upstream.OAuth.
	PerUserOAuth func(id *guard.Identity, s *config.Server) (auth.OAuthHandler, error)
	// Login lets a person log their own copy of a per-user server in from
	// their client (see askLogin); nil offers no login links.
	Login Login
	// Catalog decides what get_dynamic_tools shows; nil shows every tool.
	Catalog Catalog
	// Permit decides which of a group's resources (kind guard.KindResource,
	// by URI, or a template by its URI template) and prompts
	// (guard.KindPrompt, by name) are listed, with the decision the chain
	// makes for each request; nil lists them all.
	Permit func(group string, kind guard.Kind, name string) bool
	// Refused learns of call_dynamic_tool requests refused before the chain,
	// for the audit log: malformed or smuggled arguments, an unknown group
	// or tool (JSON-RPC errors), a group whose tools are off (a
	// *guard.Denial) or that is unavailable (an error wrapping
	// upstream.ErrUnavailable, or the context's). c holds what could be
	// read of the request.
	Refused func(ctx context.Context, c *guard.Call, err error)
	// KillOnTimeout reports whether a timed-out call of tool restarts its
	// group's server; nil means never.
	KillOnTimeout func(group, tool string) bool
	// Incident learns of messages that failed inside Moat (a recovered
	// panic) or were refused at the frame (see Stdio), for the audit log.
	Incident func(ctx context.Context, in Incident)
	// MaxClientFrame bounds one message from the client; zero selects
	// frame.DefaultMaxBytes.
	MaxClientFrame int
	// Outbound is the client boundary: every message to the client, one
	// encoded line each (results, errors, notifications, requests, Moat's
	// own refusals), passes it last and is sent as it returns it. nil
	// sends messages as they are.
	Outbound func(msg []byte) []byte
	// Relay treats what an upstream sends toward the client outside a
	// call's result (log messages, progress, sampling and elicitation
	// requests, listed resources and prompts), as decoded JSON of size
	// bytes, before it is passed on: the size limit, the group's
	// credential patterns and the text cleaner, which the guard chain
	// applies to results. An error keeps the message from the client
	// (a request is refused to its upstream with it). nil passes them on
	// as they are (Outbound still applies).
	Relay func(group string, v any, size int) (any, error)
	// Tracer makes the spans of each call and of its request upstream;
	// nil makes none (a client's trace context is still passed on).
	Tracer *tracing.Tracer
}

// shared is what every session of one Moat shares: the upstream groups, the
// guard layers, and how what crosses the client boundary is treated. A
// stdio moat has one Server, which owns it; a Gateway has many.
type shared struct {
	log     *slog.Logger
	version string
	m       *upstream.Manager
	layers  []guard.Layer

	killOnTimeout  func(group, tool string) bool
	refused        func(ctx context.Context, c *guard.Call, err error)
	onIncident     func(ctx context.Context, in Incident)
	maxClientFrame int
	outbound       func([]byte) []byte
	relay          func(group string, v any, size int) (any, error)
	tracer         *tracing.Tracer
	// logLevels is the level the upstreams were asked for on behalf of
	// clients that ask per request or share them (see upstreamLevel).
	logLevels upstreamLevel
}

func newShared(opts Options) *shared {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	return &shared{
		log:            opts.Logger,
		version:        opts.Version,
		layers:         opts.Layers,
		tracer:         opts.Tracer,
		killOnTimeout:  opts.KillOnTimeout,
		refused:        opts.Refused,
		onIncident:     opts.Incident,
		maxClientFrame: opts.MaxClientFrame,
		outbound:       opts.Outbound,
		relay:          opts.Relay,
	}
}

// newManager starts the upstream manager of opts, telling onChange of
// every change of a group.
func (sh *shared) newManager(opts upstream.Options, onChange func()) {
	opts.Logger = sh.log
	opts.OnChange = onChange
	sh.m = upstream.NewManager(opts)
}

// Server is Moat's downstream MCP server for one client session: what that
// client is shown, and the state of its calls, subscriptions and progress.
type Server struct {
	*shared
	srv     *mcp.Server
	handler guard.Handler

	// gw is the gateway this session belongs to; nil for a stdio moat's
	// one client, which owns the upstream groups.
	gw *Gateway
	// identity is who the session acts for on a gateway (nil on stdio);
	// visible leaves out the groups it may not see (nil: every group).
	identity *guard.Identity
	visible  func(group string) bool
	// sid names the session in audit records when its transport has no
	// session ID of its own (a gateway's socket connection).
	sid string
	// queue holds a gateway session's notifications until its client
	// takes them; nil on stdio.
	queue *deliveries

	catalogFn Catalog
	permitFn  func(group string, kind guard.Kind, name string) bool
	cat       catalogCache
	// narrow is a gateway session's view of the gateway's catalog.
	narrow func(group string, entries []Entry, tools []*mcp.Tool) []Entry

	session  atomic.Pointer[mcp.ServerSession]
	opened   atomic.Bool // the client is initialized: the upstreams connect
	openOnce sync.Once
	exch     exchanges
	progress progressTokens
	subs     subscriptions
	calls    callsInFlight

	refreshMu sync.Mutex // serializes refresh
	refreshCh chan struct{}
	reg       registered // what is registered on srv; guarded by refreshMu
}

// New returns a Server with no groups; call Apply to load a config.
func New(opts Options) *Server {
	sh := newShared(opts)
	p := newServer(sh, opts.Catalog, opts.Permit)
	sh.newManager(opts.Upstream, p.changed)
	p.refresh()
	return p
}

// newServer returns a session's server over sh, whose manager may not be
// set yet; the caller refreshes it once it is.
func newServer(sh *shared, catalog Catalog, permit func(group string, kind guard.Kind, name string) bool) *Server {
	p := &Server{
		shared:    sh,
		catalogFn: catalog,
		permitFn:  permit,
		refreshCh: make(chan struct{}, 1),
	}
	p.handler = sh.tracer.Calls(guard.Chain(sh.tracer.Upstream(p.forward), sh.layers...))
	if p.catalogFn == nil {
		p.catalogFn = allTools
	}
	p.srv = mcp.NewServer(&mcp.Implementation{Name: "moat", Title: "Moat MCP proxy", Version: sh.version}, &mcp.ServerOptions{
		Logger:       sh.log,
		Instructions: instructions,
		Capabilities: &mcp.ServerCapabilities{
			Tools:       &mcp.ToolCapabilities{ListChanged: true},
			Resources:   &mcp.ResourceCapabilities{Subscribe: true, ListChanged: true},
			Prompts:     &mcp.PromptCapabilities{ListChanged: true},
			Logging:     &mcp.LoggingCapabilities{},
			Completions: &mcp.CompletionCapabilities{},
		},
		SupportedProtocolVersions: protocolVersions,
		// A gateway's HTTP session is known by the ID it audits under.
		GetSessionID:            func() string { return p.sid },
		SetCacheable:            setPrivateCache,
		InitializedHandler:      p.initialized,
		RootsListChangedHandler: p.rootsChanged,
		SubscribeHandler:        p.subscribe,
		UnsubscribeHandler:      p.unsubscribe,
		CompletionHandler:       p.complete,
	})
	p.srv.AddReceivingMiddleware(p.recoverPanics(""), tracing.Extract, p.relayInputs, p.route)
	return p
}

const instructions = "Moat fronts several MCP servers (groups). Call get_dynamic_tools with a group to see its tools, then call_dynamic_tool to run one."

// permit reports whether Options.Permit lists a group's resource or prompt.
func (p *Server) permit(group string, kind guard.Kind, name string) bool {
	return p.permitFn == nil || p.permitFn(group, kind, name)
}

// Manager is the upstream manager, for status displays and tests.
func (p *Server) Manager() *upstream.Manager { return p.m }

// Apply loads cfg: new groups start, removed ones stop, changed ones restart.
func (p *Server) Apply(cfg *config.Config) {
	p.m.Apply(cfg)
	p.refresh()
}

// Run serves one client over t until the client disconnects or ctx ends,
// then stops every upstream.
func (p *Server) Run(ctx context.Context, t mcp.Transport) error {
	defer p.m.Close()
	return p.serve(ctx, t)
}

// serve runs the session until its client disconnects or ctx ends. Every
// request of the session ends with it: their contexts derive from ctx.
func (p *Server) serve(ctx context.Context, t mcp.Transport) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.start(ctx)
	return p.connect(ctx, t)
}

// start runs what a session needs beside its connection until ctx ends:
// its exchanges end with ctx, and its listings follow the upstreams.
func (p *Server) start(ctx context.Context) {
	p.exch.stop = ctx
	go p.refreshLoop(ctx)
}

// connect serves the client on t until it disconnects or ctx ends.
func (p *Server) connect(ctx context.Context, t mcp.Transport) error {
	ss, err := p.srv.Connect(ctx, groupParamTransport{t}, nil)
	if err != nil {
		return fmt.Errorf("serving the client: %w", err)
	}
	p.session.Store(ss)
	done := make(chan error, 1)
	go func() { done <- ss.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		_ = ss.Close()
		<-done
		return nil
	}
}

// initialized runs once a client of the older generation has finished the
// handshake; a client of 2026-07-28 has none, and route opens on its first
// request.
func (p *Server) initialized(ctx context.Context, r *mcp.InitializedRequest) {
	p.open(ctx, r.Session)
}

// open lets the upstreams connect, now that Moat knows the client's
// capabilities: what it offers them depends on what the client can do. A
// gateway's upstreams are open from its start, for every session alike.
func (p *Server) open(ctx context.Context, ss *mcp.ServerSession) {
	if p.gw != nil {
		return
	}
	p.openOnce.Do(func() { p.openFor(ctx, ss) })
}

func (p *Server) openFor(ctx context.Context, ss *mcp.ServerSession) {
	p.session.Store(ss)
	caps := clientCaps(ss)
	hooks := upstream.Client{
		Middleware:      p.recoverPanics,
		Progress:        p.forwardProgress,
		Log:             p.forwardLog,
		ResourceUpdated: p.forwardResourceUpdated,
	}
	if caps.Sampling != nil {
		hooks.CreateMessage = p.createMessage
	}
	if caps.Elicitation != nil {
		hooks.Elicit = p.elicitInput
	}
	// A client of 2026-07-28 gives its roots only inside a call, so Moat
	// has none to offer the upstreams (roots are deprecated there).
	if caps.RootsV2 != nil && !speaksNewProtocol(ss) { // go-sdk sets it whenever the client declares roots
		hooks.Roots = true
		// Roots are fetched outside the handler: the client may not answer
		// requests until its initialized notification has been handled.
		go p.syncRoots(context.WithoutCancel(ctx), ss)
	}
	p.m.Open(hooks)
	p.opened.Store(true)
}

// clientCaps is what the client of ss declared it can do.
func clientCaps(ss *mcp.ServerSession) *mcp.ClientCapabilities {
	if ip := ss.InitializeParams(); ip != nil && ip.Capabilities != nil {
		return ip.Capabilities
	}
	return &mcp.ClientCapabilities{}
}

// createMessage relays an upstream's sampling request to this session's
// client.
func (p *Server) createMessage(ctx context.Context, group string, cp *mcp.CreateMessageParams) (*mcp.CreateMessageResult, error) {
	return relayRequest(ctx, p, group, "sampling", cp,
		func(c *mcp.ClientCapabilities) bool { return c.Sampling != nil }, p.sample, (*mcp.ServerSession).CreateMessage)
}

// elicitInput relays an upstream's elicitation request to this session's
// client.
func (p *Server) elicitInput(ctx context.Context, group string, ep *mcp.ElicitParams) (*mcp.ElicitResult, error) {
	return relayRequest(ctx, p, group, "elicitation", ep,
		func(c *mcp.ClientCapabilities) bool { return c.Elicitation != nil }, p.elicit, (*mcp.ServerSession).Elicit)
}

// relayRequest passes an upstream's request of kind to the session's
// client, when it declared it takes them, treated as results are
// (relayParams): within the call it belongs to for a client of 2026-07-28
// (ask), as a request of Moat's own for the others (send).
func relayRequest[P, R any](ctx context.Context, p *Server, group, kind string, params *P,
	declared func(*mcp.ClientCapabilities) bool,
	ask func(context.Context, string, *P) (*R, error),
	send func(*mcp.ServerSession, context.Context, *P) (*R, error)) (*R, error) {
	ss := p.session.Load()
	if ss == nil || !declared(clientCaps(ss)) {
		return nil, fmt.Errorf("the client of the session that called group %q does not take %s requests", group, kind)
	}
	params, err := relayParams(p.shared, group, params)
	if err != nil {
		p.log.Warn("refused a request for the client", "kind", kind, "group", group, "err", err)
		return nil, err
	}
	p.log.Info("forwarding a request to the client", "kind", kind, "group", group)
	if speaksNewProtocol(ss) {
		return ask(ctx, group, params)
	}
	return send(ss, ctx, params)
}

// rootsChanged re-reads the client's roots for the upstreams. A gateway
// offers its upstreams no roots: they serve many clients, whose roots
// differ.
func (p *Server) rootsChanged(ctx context.Context, r *mcp.RootsListChangedRequest) {
	if p.gw == nil {
		p.syncRoots(ctx, r.Session)
	}
}

func (p *Server) syncRoots(ctx context.Context, ss *mcp.ServerSession) {
	defer p.recovered(ctx, "roots/list")
	res, err := ss.ListRoots(ctx, nil)
	if err != nil {
		p.log.Warn("could not read the client's roots", "err", err)
		return
	}
	p.m.SetRoots(res.Roots)
}

func (p *Server) forwardLog(ctx context.Context, group string, lp *mcp.LoggingMessageParams) {
	ss := p.session.Load()
	if ss == nil {
		return
	}
	q, err := relayParams(p.shared, group, lp)
	if err != nil {
		p.log.Warn("dropped a log message", "group", group, "err", err)
		return
	}
	if q.Logger != "" {
		q.Logger = group + "/" + q.Logger
	} else {
		q.Logger = group
	}
	if speaksNewProtocol(ss) {
		// Such a client asks for messages per request, not for the
		// session: a message goes with a call in progress to its group
		// that asked for messages (go-sdk filters by that call's level).
		if xctx := p.exch.logContext(group); xctx != nil {
			ctx = xctx
		}
	}
	if err := ss.Log(ctx, q); err != nil {
		p.log.Debug("forwarding a log message failed", "group", group, "err", err)
	}
}

// changed is called by the upstream manager; refreshLoop coalesces bursts.
func (p *Server) changed() {
	select {
	case p.refreshCh <- struct{}{}:
	default:
	}
}

func (p *Server) refreshLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.refreshCh:
			func() {
				defer p.recovered(ctx, "refresh")
				p.refresh()
			}()
		}
	}
}
