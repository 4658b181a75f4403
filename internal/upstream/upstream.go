// Package upstream keeps one Group per configured MCP server: it connects
// (stdio child, streamable HTTP or legacy SSE), retries with backoff, caches
// the server's tools, resources and prompts, and reconnects when the server
// goes away. Groups never block each other: each has its own supervisor
// goroutine and its own lock.
package upstream

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
)

// ProtocolVersion is what Moat asks of every upstream. 2025-11-25 is the
// newest version with stateful sessions (subscribe, logging/setLevel) that
// Moat forwards as they are; go-sdk's default 2026-07-28 replaces them.
const ProtocolVersion = "2025-11-25"

// Defaults for Options fields left at zero.
const (
	// DefaultConnectTimeout bounds one start (spawn or first request,
	// initialize, lists) of a server whose config sets no
	// timeout.connect: every start of a remote server, and the restarts
	// of a stdio server that has been ready once.
	DefaultConnectTimeout = 30 * time.Second
	// DefaultFirstStartTimeout bounds the starts of a stdio server whose
	// config sets no timeout.connect until it is first ready: `npx -y`,
	// `uvx` or `docker run` may be fetching it, which takes minutes on a
	// busy machine or a slow network.
	DefaultFirstStartTimeout = 2 * time.Minute
	// DefaultStartWait is how long a request for a starting group waits
	// before it is answered with the group's progress.
	DefaultStartWait   = 30 * time.Second
	DefaultGracePeriod = 5 * time.Second
	DefaultRetryEvery  = 30 * time.Second
	// DefaultMaxMessageBytes bounds one message from an upstream whose
	// config does not set MaxMessageBytes (the loader always does; this is
	// for servers built by hand). It is config's default.
	DefaultMaxMessageBytes = config.DefaultMaxMessageBytes
)

// DefaultBackoff is the wait after the first, second and third failed
// connect; after that Moat retries every RetryEvery.
var DefaultBackoff = []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second}

// Client is what the upstream side needs from the downstream client: the
// capabilities to declare to each upstream, and where to send the requests
// and notifications an upstream addresses to the client. Nil funcs mean the
// client lacks that capability; Moat then does not declare it upstream.
type Client struct {
	Roots           bool // the client offers roots (see Manager.SetRoots)
	CreateMessage   func(ctx context.Context, group string, p *mcp.CreateMessageParams) (*mcp.CreateMessageResult, error)
	Elicit          func(ctx context.Context, group string, p *mcp.ElicitParams) (*mcp.ElicitResult, error)
	Progress        func(ctx context.Context, group string, p *mcp.ProgressNotificationParams)
	Log             func(ctx context.Context, group string, p *mcp.LoggingMessageParams)
	ResourceUpdated func(ctx context.Context, group string, p *mcp.ResourceUpdatedNotificationParams)
	// Middleware, if set, wraps every request and notification an
	// upstream sends (the proxy recovers panics there).
	Middleware func(group string) mcp.Middleware
}

// Options configure a Manager. Zero values select the defaults above.
type Options struct {
	Logger *slog.Logger
	// ConnectTimeout and FirstStartTimeout bound one start of a server
	// whose config sets no timeout.connect (see the defaults).
	ConnectTimeout    time.Duration
	FirstStartTimeout time.Duration
	// StartWait bounds how long a request waits for a group that is
	// starting or connecting.
	StartWait       time.Duration
	GracePeriod     time.Duration
	Backoff         []time.Duration
	RetryEvery      time.Duration
	MaxMessageBytes int
	// IdleAfter, if set, stops a server's connection (and a stdio
	// server's process) once no request has used it for that long, and
	// no subscription holds it; the group keeps its lists and the next
	// request starts it again. A gateway's per-user servers use it.
	IdleAfter time.Duration
	// Identity is the gateway identity these servers run for (a tenant of
	// per-user servers), or "": what a user is told to run names it.
	Identity string

	// Redact, if set, removes known secrets from upstream text that Moat
	// shows the model (a failed start's reason, a starting server's last
	// stderr line).
	Redact func(string) string

	// HTTPClient builds the guarded client for one remote server. It is
	// required for http and sse servers.
	HTTPClient func(s *config.Server) (*http.Client, error)

	// OAuth returns the OAuth handler of a streamable HTTP server, or nil
	// when the server needs none. A handler whose TokenSource fails with an
	// error wrapping oauth.ErrLoginRequired leaves the group waiting for
	// login.
	OAuth func(s *config.Server) (auth.OAuthHandler, error)

	// OnEvent receives the security-relevant events of every group (for
	// the audit log). It is called synchronously: keep it quick.
	OnEvent func(Event)

	// Hide are Moat's own files and directories (config, audit log, stores,
	// runtime directory) that no stdio server may see; each server also has
	// the other servers' working directories hidden (sandbox.Spec.Hide).
	Hide []string

	// OnChange is called (from any goroutine, never under a Manager lock)
	// whenever a group's state or cached lists change, or groups are added
	// or removed.
	OnChange func()
}

// Manager owns the groups of one configuration and applies new ones.
type Manager struct {
	opts Options
	log  *slog.Logger

	gateOnce sync.Once
	gate     chan struct{} // closed by Open: no group connects before

	mu     sync.Mutex
	groups map[string]*Group
	client Client
	roots  []*mcp.Root
	level  mcp.LoggingLevel
	closed bool
}

// NewManager returns a Manager with no groups. Groups added by Apply connect
// only after Open, so that Moat can first learn the client's capabilities.
func NewManager(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.FirstStartTimeout <= 0 {
		opts.FirstStartTimeout = DefaultFirstStartTimeout
	}
	if opts.StartWait <= 0 {
		opts.StartWait = DefaultStartWait
	}
	if opts.GracePeriod <= 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	if len(opts.Backoff) == 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.RetryEvery <= 0 {
		opts.RetryEvery = DefaultRetryEvery
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	return &Manager{
		opts:   opts,
		log:    opts.Logger,
		gate:   make(chan struct{}),
		groups: make(map[string]*Group),
	}
}

// Open lets groups connect, declaring c's capabilities to each upstream.
// Calls after the first are ignored.
func (m *Manager) Open(c Client) {
	m.gateOnce.Do(func() {
		m.mu.Lock()
		m.client = c
		m.mu.Unlock()
		close(m.gate)
	})
}

// SetRoots replaces the roots Moat offers upstream (the client's roots).
// Connected groups are told through roots/list_changed.
func (m *Manager) SetRoots(roots []*mcp.Root) {
	m.mu.Lock()
	m.roots = roots
	groups := m.sortedLocked()
	m.mu.Unlock()
	for _, g := range groups {
		g.setRoots(roots)
	}
}

// SetLoggingLevel forwards logging/setLevel to every ready group and
// remembers it for groups that connect later.
func (m *Manager) SetLoggingLevel(ctx context.Context, level mcp.LoggingLevel) {
	m.mu.Lock()
	m.level = level
	groups := m.sortedLocked()
	m.mu.Unlock()
	for _, g := range groups {
		if cs := g.readySession(); cs != nil && g.serverHasLogging() {
			if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: level}); err != nil {
				g.log.Debug("logging/setLevel not accepted", "err", err)
			}
		}
	}
}

// Apply makes the running groups match cfg: it starts added servers, stops
// removed or disabled ones and restarts changed ones. Unchanged groups keep
// their connections.
func (m *Manager) Apply(cfg *config.Config) {
	var stop []*Group
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	for name, g := range m.groups {
		s, ok := cfg.Servers[name]
		if !ok || !s.Enabled || !s.Equal(g.cfg) {
			stop = append(stop, g)
			delete(m.groups, name)
		}
	}
	for name, s := range cfg.Servers {
		if !s.Enabled {
			continue
		}
		if g, ok := m.groups[name]; ok {
			desc := s.Description
			g.desc.Store(&desc)
			continue
		}
		g := newGroup(m, s)
		m.groups[name] = g
		go g.run()
	}
	m.mu.Unlock()
	m.stopAll(stop)
	m.changed()
}

// hideFor is what server name must not see: Moat's own paths and the
// working directories of the other servers.
func (m *Manager) hideFor(name string) []string {
	hide := slices.Clone(m.opts.Hide)
	m.mu.Lock()
	defer m.mu.Unlock()
	for other, g := range m.groups {
		if other != name && g.cfg.Cwd != "" {
			hide = append(hide, g.cfg.Cwd)
		}
	}
	return hide
}

// Close stops every group and waits until their processes are reaped.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	groups := m.sortedLocked()
	m.groups = map[string]*Group{}
	m.mu.Unlock()
	m.stopAll(groups)
}

func (m *Manager) stopAll(groups []*Group) {
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Go(g.stop)
	}
	wg.Wait()
}

// Group returns the named group, if it is configured and enabled.
func (m *Manager) Group(name string) (*Group, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.groups[name]
	return g, ok
}

// Groups returns every group, sorted by name.
func (m *Manager) Groups() []*Group {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sortedLocked()
}

func (m *Manager) sortedLocked() []*Group {
	gs := make([]*Group, 0, len(m.groups))
	for _, g := range m.groups {
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].name < gs[j].name })
	return gs
}

func (m *Manager) clientHooks() (Client, []*mcp.Root, mcp.LoggingLevel) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.client, m.roots, m.level
}

// Event is something that happened to a group's connection or process.
type Event struct {
	Group  string
	Kind   string // upstream_ready, upstream_unavailable, upstream_idle, child_start, child_exit
	Detail map[string]string
}

func (m *Manager) event(group, kind string, detail map[string]string) {
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(Event{Group: group, Kind: kind, Detail: detail})
	}
}

func (m *Manager) changed() {
	if m.opts.OnChange != nil {
		m.opts.OnChange()
	}
}
