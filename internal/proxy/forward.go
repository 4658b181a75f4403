package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/tracing"
	"github.com/moatmcp/moat/internal/upstream"
)

// forward is the innermost handler: it sends a call that every layer let
// through to its group.
func (p *Server) forward(ctx context.Context, c *guard.Call) (*guard.Result, error) {
	g, ok := p.group(c.Group)
	if !ok {
		return nil, fmt.Errorf("group %q is no longer configured", c.Group)
	}
	if p.gw != nil {
		// A shared server's requests and log messages find their session
		// by its calls in progress; a stdio moat has one session.
		defer p.calls.enter(c.Group)()
	}
	// A client of 2026-07-28 asks for log messages per request; the
	// upstream is asked for them at the same level.
	var meta mcp.Meta
	if x := exchangeOf(ctx); x != nil {
		if level := x.joined(c.Group); level != "" {
			meta = mcp.Meta{mcp.MetaKeyLogLevel: level}
			p.logLevels.raise(ctx, level, p.managers)
		}
	}
	// The upstream continues the client's trace (see tracing.Inject).
	meta = tracing.Inject(ctx, meta)
	switch c.Kind {
	case guard.KindTool:
		// The layers judged the decoded arguments; what leaves is their
		// encoding (decoded here if no layer needed them).
		if _, err := c.Value(); err != nil {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "the arguments are not acceptable: " + err.Error()}
		}
		params := &mcp.CallToolParams{Meta: meta, Name: c.Name, Arguments: c.Args}
		if validProgressToken(c.Progress) {
			tok, release := p.progress.track(c.Group, c.Progress)
			defer release()
			params.SetProgressToken(tok)
		}
		r, err := g.CallTool(ctx, params)
		if params.GetProgressToken() != nil {
			p.delivered(ctx)
		}
		if err != nil && p.killOnTimeout != nil && timedOut(ctx, err) && p.killOnTimeout(c.Group, c.Name) {
			g.Restart(fmt.Sprintf("tool %s timed out and its policy says kill_on_timeout", c.Name))
			err = fmt.Errorf("%w; the server is being restarted (kill_on_timeout)", err)
		}
		return &guard.Result{Tool: r}, err
	case guard.KindResource:
		r, err := g.ReadResource(ctx, &mcp.ReadResourceParams{Meta: meta, URI: c.URI})
		return &guard.Result{Resource: r}, err
	case guard.KindPrompt:
		r, err := g.GetPrompt(ctx, &mcp.GetPromptParams{Meta: meta, Name: c.Name, Arguments: c.Strings})
		return &guard.Result{Prompt: r}, err
	case guard.KindSubscribe:
		return &guard.Result{}, g.Subscribe(ctx, &mcp.SubscribeParams{Meta: meta, URI: c.URI})
	case guard.KindComplete:
		r, err := g.Complete(ctx, c.Complete)
		return &guard.Result{Complete: r}, err
	}
	return nil, fmt.Errorf("unknown call kind %v", c.Kind)
}

// upstreamLevel is the log level Moat set on upstreams of the older
// protocol for clients that ask per request: those upstreams take a level
// per session only. It only grows more verbose; each message still reaches
// the client only with a call that asked for its level (see forwardLog).
type upstreamLevel struct {
	mu    sync.Mutex
	level mcp.LoggingLevel
}

// logLevelRank orders MCP's levels, most verbose first.
var logLevelRank = map[mcp.LoggingLevel]int{
	"debug": 0, "info": 1, "notice": 2, "warning": 3, "error": 4, "critical": 5, "alert": 6, "emergency": 7,
}

// current is the level set so far ("" for none).
func (u *upstreamLevel) current() mcp.LoggingLevel {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.level
}

// raise asks the upstreams of managers for level if it is more verbose
// than the one they have.
func (u *upstreamLevel) raise(ctx context.Context, level mcp.LoggingLevel, managers func() []*upstream.Manager) {
	rank, ok := logLevelRank[level]
	if !ok {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if cur, set := logLevelRank[u.level]; set && cur <= rank {
		return
	}
	u.level = level
	for _, m := range managers() {
		m.SetLoggingLevel(ctx, level)
	}
}

// timedOut reports whether a call failed for running out of time: its
// group's configured timeout, or a deadline set by a layer (the policy's).
func timedOut(ctx context.Context, err error) bool {
	return errors.Is(err, guard.ErrTimeout) || errors.Is(ctx.Err(), context.DeadlineExceeded)
}

// progressTokens maps the tokens Moat gives upstreams back to the client's.
// Each forwarded call gets a token of Moat's own: the client's token may be
// any JSON number or string (the TypeScript SDK sends integers, which
// decode as float64 and which go-sdk will not send on), and an upstream
// must not be able to report progress for a call it was not given.
type progressTokens struct {
	mu     sync.Mutex
	active map[string]progressRoute
}

// progressSeq numbers Moat's progress tokens across every session of the
// process, so that on a gateway a token names one session's call.
var progressSeq atomic.Uint64

type progressRoute struct {
	group  string
	client any // the token the client sent, echoed back as it was
}

// progressGrace keeps a token valid a little after its call returns: go-sdk
// may handle an upstream's last progress notification after the response.
const progressGrace = 2 * time.Second

// validProgressToken reports whether a client's token is one MCP allows:
// a string or a number.
func validProgressToken(t any) bool {
	switch t.(type) {
	case string, float64, int, int64, json.Number:
		return true
	}
	return false
}

// track returns the token to send group in place of the client's, and a
// release to call when the call has returned.
func (t *progressTokens) track(group string, client any) (upstreamToken string, release func()) {
	t.mu.Lock()
	if t.active == nil {
		t.active = map[string]progressRoute{}
	}
	tok := "moat-progress-" + strconv.FormatUint(progressSeq.Add(1), 10)
	t.active[tok] = progressRoute{group, client}
	t.mu.Unlock()
	return tok, func() {
		time.AfterFunc(progressGrace, func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			delete(t.active, tok)
		})
	}
}

// route returns the client's token for an upstream's, if group owns it.
func (t *progressTokens) route(group string, upstreamToken any) (any, bool) {
	s, ok := upstreamToken.(string)
	if !ok {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.active[s]
	if !ok || r.group != group {
		return nil, false
	}
	return r.client, true
}

func (p *Server) forwardProgress(ctx context.Context, group string, pp *mcp.ProgressNotificationParams) {
	client, ok := p.progress.route(group, pp.ProgressToken)
	if !ok {
		p.log.Debug("dropped progress for a token this group does not own", "group", group)
		return
	}
	q, err := relayParams(p.shared, group, pp)
	if err != nil {
		p.log.Warn("dropped a progress notification", "group", group, "err", err)
		return
	}
	q.ProgressToken = client
	if ss := p.session.Load(); ss != nil {
		if err := ss.NotifyProgress(ctx, q); err != nil {
			p.log.Debug("forwarding progress failed", "group", group, "err", err)
		}
	}
}
