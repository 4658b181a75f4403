package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/upstream"
)

// forward is the innermost handler: it sends a call that every layer let
// through to its group.
func (p *Server) forward(ctx context.Context, c *guard.Call) (*guard.Result, error) {
	g, ok := p.m.Group(c.Group)
	if !ok {
		return nil, fmt.Errorf("group %q is no longer configured", c.Group)
	}
	switch c.Kind {
	case guard.KindTool:
		params := &mcp.CallToolParams{Name: c.Name, Arguments: c.Args}
		if c.Progress != nil {
			params.SetProgressToken(c.Progress)
			defer p.progress.track(c.Group, c.Progress)()
		}
		r, err := g.CallTool(ctx, params)
		if err != nil && p.killOnTimeout != nil && timedOut(ctx, err) && p.killOnTimeout(c.Group, c.Name) {
			g.Restart(fmt.Sprintf("tool %s timed out and its policy says kill_on_timeout", c.Name))
			err = fmt.Errorf("%w; the server is being restarted (kill_on_timeout)", err)
		}
		return &guard.Result{Tool: r}, err
	case guard.KindResource:
		r, err := g.ReadResource(ctx, &mcp.ReadResourceParams{URI: c.URI})
		return &guard.Result{Resource: r}, err
	case guard.KindPrompt:
		r, err := g.GetPrompt(ctx, &mcp.GetPromptParams{Name: c.Name, Arguments: c.Strings})
		return &guard.Result{Prompt: r}, err
	}
	return nil, fmt.Errorf("unknown call kind %v", c.Kind)
}

// timedOut reports whether a call failed for running out of time: its
// group's configured timeout, or a deadline set by a layer (the policy's).
func timedOut(ctx context.Context, err error) bool {
	return errors.Is(err, upstream.ErrTimeout) || errors.Is(ctx.Err(), context.DeadlineExceeded)
}

// progressTokens remembers which group may report progress for which
// token, so one upstream cannot send progress for another's call.
type progressTokens struct {
	mu     sync.Mutex
	active map[progressKey]int
}

type progressKey struct {
	group string
	token any
}

// progressGrace keeps a token valid a little after its call returns: go-sdk
// may handle an upstream's last progress notification after the response.
const progressGrace = 2 * time.Second

func (t *progressTokens) track(group string, token any) (release func()) {
	k := progressKey{group, token}
	t.mu.Lock()
	if t.active == nil {
		t.active = map[progressKey]int{}
	}
	t.active[k]++
	t.mu.Unlock()
	return func() {
		time.AfterFunc(progressGrace, func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			if t.active[k]--; t.active[k] <= 0 {
				delete(t.active, k)
			}
		})
	}
}

func (t *progressTokens) allowed(group string, token any) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active[progressKey{group, token}] > 0
}

func (p *Server) forwardProgress(ctx context.Context, group string, pp *mcp.ProgressNotificationParams) {
	if !p.progress.allowed(group, pp.ProgressToken) {
		p.log.Debug("dropped progress for a token this group does not own", "group", group)
		return
	}
	if ss := p.session.Load(); ss != nil {
		if err := ss.NotifyProgress(ctx, pp); err != nil {
			p.log.Debug("forwarding progress failed", "group", group, "err", err)
		}
	}
}

// cleanText makes upstream-controlled text safe to show: no control or
// invisible characters, valid UTF-8, at most max characters.
func cleanText(s string, max int) string {
	var b strings.Builder
	n := 0
	for i, r := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				r = '?'
			}
		}
		if r == '\n' || r == '\t' {
			r = ' '
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			continue
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
