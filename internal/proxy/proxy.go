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

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
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
}

// Server is Moat's downstream MCP server.
type Server struct {
	log     *slog.Logger
	srv     *mcp.Server
	m       *upstream.Manager
	handler guard.Handler

	catalogFn      Catalog
	permitFn       func(group string, kind guard.Kind, name string) bool
	cat            catalogCache
	killOnTimeout  func(group, tool string) bool
	refused        func(ctx context.Context, c *guard.Call, err error)
	onIncident     func(ctx context.Context, in Incident)
	maxClientFrame int
	outbound       func([]byte) []byte
	relay          func(group string, v any, size int) (any, error)

	session   atomic.Pointer[mcp.ServerSession]
	opened    atomic.Bool // the client is initialized: the upstreams connect
	openOnce  sync.Once
	exch      exchanges
	logLevels upstreamLevel
	progress  progressTokens
	subs      subscriptions

	refreshMu sync.Mutex // serializes refresh
	refreshCh chan struct{}
	reg       registered // what is registered on srv; guarded by refreshMu
}

// New returns a Server with no groups; call Apply to load a config.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	p := &Server{
		log:       opts.Logger,
		refreshCh: make(chan struct{}, 1),
	}
	uo := opts.Upstream
	uo.Logger = opts.Logger
	uo.OnChange = p.changed
	p.m = upstream.NewManager(uo)
	p.handler = guard.Chain(p.forward, opts.Layers...)
	p.catalogFn = opts.Catalog
	p.permitFn = opts.Permit
	p.killOnTimeout = opts.KillOnTimeout
	p.refused = opts.Refused
	p.onIncident = opts.Incident
	p.maxClientFrame = opts.MaxClientFrame
	p.outbound = opts.Outbound
	p.relay = opts.Relay
	if p.catalogFn == nil {
		p.catalogFn = allTools
	}
	p.srv = mcp.NewServer(&mcp.Implementation{Name: "moat", Title: "Moat MCP proxy", Version: opts.Version}, &mcp.ServerOptions{
		Logger:       opts.Logger,
		Instructions: instructions,
		Capabilities: &mcp.ServerCapabilities{
			Tools:       &mcp.ToolCapabilities{ListChanged: true},
			Resources:   &mcp.ResourceCapabilities{Subscribe: true, ListChanged: true},
			Prompts:     &mcp.PromptCapabilities{ListChanged: true},
			Logging:     &mcp.LoggingCapabilities{},
			Completions: &mcp.CompletionCapabilities{},
		},
		SupportedProtocolVersions: protocolVersions,
		SetCacheable:              setPrivateCache,
		InitializedHandler:        p.initialized,
		RootsListChangedHandler:   func(ctx context.Context, r *mcp.RootsListChangedRequest) { p.syncRoots(ctx, r.Session) },
		SubscribeHandler:          p.subscribe,
		UnsubscribeHandler:        p.unsubscribe,
		CompletionHandler:         p.complete,
	})
	p.srv.AddReceivingMiddleware(p.recoverPanics(""), p.relayInputs, p.route)
	p.refresh()
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.exch.stop = ctx
	go p.refreshLoop(ctx)
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
// capabilities: what it offers them depends on what the client can do.
func (p *Server) open(ctx context.Context, ss *mcp.ServerSession) {
	p.openOnce.Do(func() { p.openFor(ctx, ss) })
}

func (p *Server) openFor(ctx context.Context, ss *mcp.ServerSession) {
	p.session.Store(ss)
	caps := &mcp.ClientCapabilities{}
	if ip := ss.InitializeParams(); ip != nil && ip.Capabilities != nil {
		caps = ip.Capabilities
	}
	hooks := upstream.Client{
		Middleware: p.recoverPanics,
		Progress:   p.forwardProgress,
		Log:        p.forwardLog,
		ResourceUpdated: func(ctx context.Context, group string, u *mcp.ResourceUpdatedNotificationParams) {
			p.forwardResourceUpdated(ctx, group, u)
		},
	}
	relayed := speaksNewProtocol(ss)
	if caps.Sampling != nil {
		hooks.CreateMessage = func(ctx context.Context, group string, cp *mcp.CreateMessageParams) (*mcp.CreateMessageResult, error) {
			cp, err := relayParams(p, group, cp)
			if err != nil {
				p.log.Warn("refused a sampling request", "group", group, "err", err)
				return nil, err
			}
			p.log.Info("forwarding sampling request to the client", "group", group)
			if relayed {
				return p.sample(ctx, group, cp)
			}
			return ss.CreateMessage(ctx, cp)
		}
	}
	if caps.Elicitation != nil {
		hooks.Elicit = func(ctx context.Context, group string, ep *mcp.ElicitParams) (*mcp.ElicitResult, error) {
			ep, err := relayParams(p, group, ep)
			if err != nil {
				p.log.Warn("refused an elicitation request", "group", group, "err", err)
				return nil, err
			}
			p.log.Info("forwarding elicitation request to the client", "group", group)
			if relayed {
				return p.elicit(ctx, group, ep)
			}
			return ss.Elicit(ctx, ep)
		}
	}
	// A client of 2026-07-28 gives its roots only inside a call, so Moat
	// has none to offer the upstreams (roots are deprecated there).
	if caps.RootsV2 != nil && !relayed { // go-sdk sets it whenever the client declares roots
		hooks.Roots = true
		// Roots are fetched outside the handler: the client may not answer
		// requests until its initialized notification has been handled.
		go p.syncRoots(context.WithoutCancel(ctx), ss)
	}
	p.m.Open(hooks)
	p.opened.Store(true)
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
	q, err := relayParams(p, group, lp)
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
