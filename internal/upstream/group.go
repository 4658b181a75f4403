package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/oauth"
)

// State is where a group is in its life.
type State int

const (
	Connecting  State = iota // a remote server's first attempt, or a retry, under way
	Ready                    // connected; lists cached
	Unavailable              // last attempt failed or the server went away; retrying
	Stopped                  // removed from the config or Moat is shutting down
	Starting                 // a stdio server's process is being started and initialized
	Idle                     // stopped unused (Options.IdleAfter); the next request starts it
)

// Pending reports whether a start or connect attempt is under way: a
// request for the group waits for it (see Group.Session).
func (s State) Pending() bool { return s == Connecting || s == Starting }

func (s State) String() string {
	switch s {
	case Connecting:
		return "connecting"
	case Ready:
		return "ready"
	case Unavailable:
		return "unavailable"
	case Stopped:
		return "stopped"
	case Starting:
		return "starting"
	case Idle:
		return "idle (stopped unused; the next call starts it)"
	}
	return "unknown"
}

// Status is a snapshot of a group's state, safe to show the model: Reason
// and Stderr are redacted, sanitized and short.
type Status struct {
	State    State
	Reason   string    // why Unavailable
	Attempts int       // failed attempts since the last success
	NextTry  time.Time // when Unavailable: the next attempt
	// LoginRequired: Unavailable because the server needs an OAuth login
	// (oauth.ErrLoginRequired) that Moat does not have.
	LoginRequired bool

	// While Pending: when this attempt began, how long it may take, and
	// whether the server has never been ready since Moat started it (a
	// package manager may be installing it).
	Since      time.Time
	Limit      time.Duration
	FirstStart bool
	// Stderr is the last line a stdio server wrote to stderr during the
	// current (or, when Unavailable, the failed) attempt.
	Stderr string
}

// Lists are what a ready group's server offers, all pages read.
type Lists struct {
	// Version changes whenever any list is read again, so callers can
	// cache what they derive from the lists.
	Version   uint64
	Tools     []*mcp.Tool
	Resources []*mcp.Resource
	Templates []*mcp.ResourceTemplate
	Prompts   []*mcp.Prompt
}

// listsVersion numbers every published Lists, across groups.
var listsVersion atomic.Uint64

// ErrUnavailable is wrapped by errors from groups that cannot serve now.
var ErrUnavailable = errors.New("group unavailable")

// Group is one upstream server.
type Group struct {
	name string
	cfg  *config.Server // fixed for the group's life: a change that needs a restart makes a new Group
	m    *Manager
	log  *slog.Logger
	// order is the current connection's notificationOrder.
	order atomic.Pointer[notificationOrder]
	// desc is the description the client is told; a reload that changes
	// only it keeps the group (config.Server.Equal ignores it).
	desc atomic.Pointer[string]

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	refresh chan struct{} // upstream said a list changed
	restart chan string   // Restart asked for a new connection, with why
	dirty   atomic.Uint32 // which lists (bits of listKind)
	// toolsWant counts the server's tools/list_changed notifications;
	// toolsHave (under mu) is the count the current tool list answers.
	// A call waits while they differ (ToolsSettled).
	toolsWant   atomic.Uint64
	clientMu    sync.Mutex
	client      *mcp.Client // the current connection's client, for roots
	rootURIs    []string    // roots given to client
	serverCaps  atomic.Pointer[mcp.ServerCapabilities]
	stderrLines *tailWriter
	stderrSeen  uint64 // stderr lines before the current attempt (run's goroutine only)
	everReady   bool   // the server has been ready once (run's goroutine only)

	mu        sync.Mutex
	status    Status
	session   *mcp.ClientSession
	lists     Lists
	toolsHave uint64
	waiters   chan struct{} // closed and replaced on every status or list change

	// For Options.IdleAfter: when a request last used the group, how many
	// are in progress, and how many subscriptions it holds (a server with
	// one is in use). wake asks an Idle group to start.
	lastUse    atomic.Int64 // UnixNano
	inUse      atomic.Int32
	subscribed atomic.Int32
	wake       chan struct{}
	// retry cuts short the wait of an Unavailable group (RetryNow).
	retry chan struct{}
}

type listKind uint32

const (
	listTools listKind = 1 << iota
	listResources
	listPrompts
)

func (k listKind) String() string {
	var names []string
	for _, n := range []struct {
		k    listKind
		name string
	}{{listTools, "tools"}, {listResources, "resources"}, {listPrompts, "prompts"}} {
		if k&n.k != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

func newGroup(m *Manager, s *config.Server) *Group {
	ctx, cancel := context.WithCancel(context.Background())
	log := m.log.With("group", s.Name)
	g := &Group{
		name:        s.Name,
		cfg:         s,
		m:           m,
		log:         log,
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
		refresh:     make(chan struct{}, 1),
		restart:     make(chan string, 1),
		wake:        make(chan struct{}, 1),
		retry:       make(chan struct{}, 1),
		stderrLines: newTailWriter(log, 20),
		waiters:     make(chan struct{}),
	}
	g.desc.Store(&s.Description)
	return g
}

// Name is the group's name in the config.
func (g *Group) Name() string { return g.name }

// Config is the server's configuration.
func (g *Group) Config() *config.Server { return g.cfg }

// Description is the server's description as the latest config gives it.
func (g *Group) Description() string { return *g.desc.Load() }

// Status reports the group's current state.
func (g *Group) Status() Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.status
}

// Lists returns the cached lists. They are never modified after they are
// published, so callers may keep them.
func (g *Group) Lists() Lists {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lists
}

// ToolsSettled waits while the server has announced a changed tool list
// that Moat has not read yet, so that a call is judged (listed tool,
// schema, pin) against the list the server has now, not the one it
// replaced. It is bounded by ctx and the Manager's StartWait; a group
// that is not ready returns nil at once (Session reports that).
func (g *Group) ToolsSettled(ctx context.Context) error {
	want := g.toolsWant.Load()
	limit := time.NewTimer(g.m.opts.StartWait)
	defer limit.Stop()
	for {
		g.mu.Lock()
		have, st, ch := g.toolsHave, g.status.State, g.waiters
		g.mu.Unlock()
		if have >= want || st != Ready {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-limit.C:
			return fmt.Errorf("group %q announced a changed tool list and has not sent it within %v; try again shortly: %w", g.name, g.m.opts.StartWait, ErrUnavailable)
		}
	}
}

// Session returns the group's session, waiting while the group starts or
// connects (bounded by ctx and the Manager's StartWait; a start may take
// longer, and the error then says how far it is).
func (g *Group) Session(ctx context.Context) (*mcp.ClientSession, error) {
	g.lastUse.Store(time.Now().UnixNano())
	limit := time.NewTimer(g.m.opts.StartWait)
	defer limit.Stop()
	for {
		g.mu.Lock()
		st, cs, ch := g.status, g.session, g.waiters
		g.mu.Unlock()
		switch st.State {
		case Ready:
			return cs, nil
		case Idle:
			select {
			case g.wake <- struct{}{}:
			default:
			}
		case Unavailable:
			return nil, g.unavailableError(st)
		case Stopped:
			return nil, fmt.Errorf("group %q was removed or Moat is shutting down: %w", g.name, ErrUnavailable)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-limit.C:
			return nil, fmt.Errorf("group %q is still %s; try again shortly: %w", g.name, g.Status().Summary(time.Now()), ErrUnavailable)
		}
	}
}

func (g *Group) unavailableError(st Status) error {
	msg := fmt.Sprintf("group %q is %s", g.name, st.Summary(time.Now()))
	if !st.NextTry.IsZero() {
		if d := time.Until(st.NextTry).Round(time.Second); d > 0 {
			msg += fmt.Sprintf("; Moat retries in %s", d)
		} else {
			msg += "; Moat is retrying now"
		}
	}
	return fmt.Errorf("%s: %w", msg, ErrUnavailable)
}

func (g *Group) readySession() *mcp.ClientSession {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.status.State != Ready {
		return nil
	}
	return g.session
}

func (g *Group) serverHasLogging() bool {
	c := g.serverCaps.Load()
	return c != nil && c.Logging != nil
}

// setStatus publishes a new status and wakes waiters.
func (g *Group) setStatus(st Status, cs *mcp.ClientSession, lists *Lists) {
	g.mu.Lock()
	g.status = st
	g.session = cs
	if lists != nil {
		g.lists = *lists
		g.lists.Version = listsVersion.Add(1)
	} else if st.State != Ready && st.State != Idle {
		// An idle group keeps its lists: it is listed as it was, and the
		// call that wakes it is judged against them.
		g.lists = Lists{Version: listsVersion.Add(1)}
	}
	close(g.waiters)
	g.waiters = make(chan struct{})
	g.mu.Unlock()
	g.m.changed()
}

func (g *Group) stop() {
	g.cancel()
	<-g.done
}

// run is the group's supervisor: connect, serve until the session ends,
// back off, repeat, until the group is stopped.
func (g *Group) run() {
	defer close(g.done)
	defer g.setStatus(Status{State: Stopped}, nil, nil)
	select {
	case <-g.m.gate:
	case <-g.ctx.Done():
		return
	}
	failures := 0
	for {
		st := g.startStatus(failures)
		g.setStatus(st, nil, nil)
		stopWatch := g.watchStderr()
		c, err := g.connect(g.ctx, st.Limit)
		stopWatch()
		if g.ctx.Err() != nil {
			if c != nil {
				c.close(g.m.opts.GracePeriod)
			}
			return
		}
		stderr := ""
		if err == nil {
			if failures > 0 {
				g.log.Info("upstream recovered", "after_failures", failures)
			} else {
				g.log.Info("upstream ready", "took", time.Since(st.Since).Round(time.Millisecond))
			}
			g.m.event(g.name, "upstream_ready", c.describe(failures))
			g.everReady = true
			failures = 0
			err = g.serve(c)
			if g.ctx.Err() != nil {
				return
			}
			if errors.Is(err, errIdle) {
				if !g.sleep() {
					return
				}
				continue
			}
		} else if line, n := g.stderrLines.last(); n > g.stderrSeen {
			stderr = g.shown(line, "stderr")
		}
		failures++
		wait := g.m.opts.RetryEvery
		if failures <= len(g.m.opts.Backoff) {
			wait = g.m.opts.Backoff[failures-1]
		}
		reason := g.shown(err.Error(), "reason")
		var xe *oauth.ExchangeError
		if errors.As(err, &xe) {
			// Not the transport's wrapping: what went wrong, and what to do.
			reason = g.shown("token exchange: "+xe.Why, "reason")
		}
		login := errors.Is(err, oauth.ErrLoginRequired)
		if login {
			cmd := "moat auth login " + g.name
			if id := g.m.opts.Identity; id != "" {
				cmd = "moat auth login --identity " + id + " " + g.name
			}
			reason = fmt.Sprintf("waiting for login: run `%s`", cmd)
		}
		g.m.event(g.name, "upstream_unavailable", map[string]string{"reason": reason, "attempts": strconv.Itoa(failures), "retry_in": wait.String()})
		g.log.Warn("upstream unavailable", "err", err, "retry_in", wait, "stderr_tail", g.stderrLines.tail())
		g.setStatus(Status{State: Unavailable, Reason: reason, Attempts: failures, NextTry: time.Now().Add(wait), Stderr: stderr, LoginRequired: login}, nil, nil)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-g.retry:
			t.Stop()
		case <-g.ctx.Done():
			t.Stop()
			return
		}
	}
}

// serve publishes a ready connection and keeps its lists fresh until the
// session ends or the group stops. It returns why the session ended.
func (g *Group) serve(c *conn) error {
	g.mu.Lock()
	g.toolsHave = max(g.toolsHave, c.toolsWant)
	g.mu.Unlock()
	g.setStatus(Status{State: Ready}, c.session, &c.lists)
	// A client that set a level while this connection was being made found
	// no ready session to tell (SetLoggingLevel): tell it now. Each side
	// publishes its own state before reading the other's, so one of them
	// sees the level.
	if _, _, level := g.m.clientHooks(); level != "" && level != c.level && g.serverHasLogging() {
		ctx, cancel := context.WithTimeout(g.ctx, g.m.opts.ConnectTimeout)
		if err := c.session.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: level}); err != nil {
			g.log.Debug("logging/setLevel not accepted", "err", err)
		}
		cancel()
	}
	ended := make(chan error, 1)
	go func() { ended <- c.session.Wait() }()
	defer c.close(g.m.opts.GracePeriod)
	var idle <-chan time.Time // nil: never idle
	if d := g.m.opts.IdleAfter; d > 0 {
		g.lastUse.Store(time.Now().UnixNano())
		t := time.NewTimer(d)
		defer t.Stop()
		idle = t.C
	}
	for {
		select {
		case <-g.ctx.Done():
			return g.ctx.Err()
		case <-idle:
			if left := g.idleLeft(); left > 0 {
				idle = time.After(left)
				continue
			}
			// Idle before the connection closes, so no request is given
			// a session about to end: one arriving now wakes the group.
			g.setStatus(Status{State: Idle}, nil, nil)
			return errIdle
		case err := <-ended:
			return c.endReason(err)
		case why := <-g.restart:
			g.log.Warn("restarting the server", "why", why)
			return errors.New(why)
		case <-g.refresh:
			want := g.toolsWant.Load()
			kinds := listKind(g.dirty.Swap(0))
			lists := g.Lists()
			if err := g.relist(g.ctx, c.session, kinds, &lists); err != nil {
				// Calls wait for this list (ToolsSettled): a new
				// connection lists everything afresh.
				g.log.Warn("refreshing lists after list_changed failed; reconnecting", "err", err)
				return fmt.Errorf("reading the server's lists after list_changed: %w", err)
			}
			g.mu.Lock()
			if g.session == c.session {
				g.lists = lists
				g.lists.Version = listsVersion.Add(1)
				g.toolsHave = max(g.toolsHave, want)
				close(g.waiters)
				g.waiters = make(chan struct{})
			}
			g.mu.Unlock()
			g.log.Debug("lists re-read after list_changed", "kinds", kinds, "tools", len(lists.Tools), "resources", len(lists.Resources), "templates", len(lists.Templates), "prompts", len(lists.Prompts))
			g.m.changed()
		}
	}
}

// errIdle ends a connection unused for Options.IdleAfter.
var errIdle = errors.New("unused")

// idleLeft is how long the group must still go unused before it stops: a
// request in progress or a subscription held keeps it in use.
func (g *Group) idleLeft() time.Duration {
	d := g.m.opts.IdleAfter
	if g.inUse.Load() > 0 || g.subscribed.Load() > 0 {
		return d
	}
	return d - time.Since(time.Unix(0, g.lastUse.Load()))
}

// sleep waits, once an Idle group's connection has ended (its process
// stopped), for a request to wake it; false when the group is stopped
// meanwhile.
func (g *Group) sleep() bool {
	d := g.m.opts.IdleAfter
	g.log.Info("upstream stopped unused", "idle_after", d)
	g.m.event(g.name, "upstream_idle", map[string]string{"idle_after": d.String()})
	select {
	case <-g.wake:
		return true
	case <-g.ctx.Done():
		return false
	}
}

// RetryNow makes an Unavailable group try again at once instead of at the
// end of its backoff (a login just stored the token it was waiting for).
func (g *Group) RetryNow() {
	select {
	case g.retry <- struct{}{}:
	default:
	}
}

// Restart ends the current connection (stopping a child's whole process
// tree) and reconnects with the usual backoff; why becomes the group's
// reason meanwhile. A restart already pending absorbs this one.
func (g *Group) Restart(why string) {
	select {
	case g.restart <- why:
	default:
	}
}

// markDirty is called from upstream notifications, possibly before the
// session is published, so it only records the change; serve re-lists.
func (g *Group) markDirty(k listKind) {
	if k&listTools != 0 {
		g.toolsWant.Add(1)
	}
	for {
		old := g.dirty.Load()
		if g.dirty.CompareAndSwap(old, old|uint32(k)) {
			break
		}
	}
	select {
	case g.refresh <- struct{}{}:
	default:
	}
}

func (g *Group) setRoots(roots []*mcp.Root) {
	g.clientMu.Lock()
	defer g.clientMu.Unlock()
	if g.client == nil {
		return
	}
	keep := make(map[string]bool, len(roots))
	for _, r := range roots {
		keep[r.URI] = true
	}
	var gone []string
	for _, u := range g.rootURIs {
		if !keep[u] {
			gone = append(gone, u)
		}
	}
	if len(gone) > 0 {
		g.client.RemoveRoots(gone...)
	}
	if len(roots) > 0 {
		g.client.AddRoots(roots...)
	}
	g.rootURIs = g.rootURIs[:0]
	for _, r := range roots {
		g.rootURIs = append(g.rootURIs, r.URI)
	}
}
