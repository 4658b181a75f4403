package upstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
)

// ErrTimeout is wrapped by errors from calls that ran out of their
// configured timeout: it is guard.ErrTimeout, the one timeout outcome.
var ErrTimeout = guard.ErrTimeout

// withTimeout runs f under the configured timeout d, waiting first for the
// group to be ready, and names the timeout in the error so the user knows
// which setting to raise. It returns once the notifications the server
// sent before its answer have been handled.
func withTimeout[R any](ctx context.Context, g *Group, d time.Duration, what string, f func(context.Context, *mcp.ClientSession) (R, error)) (R, error) {
	var zero R
	g.inUse.Add(1)
	defer func() {
		g.lastUse.Store(time.Now().UnixNano())
		g.inUse.Add(-1)
	}()
	cs, err := g.Session(ctx)
	if err != nil {
		return zero, err
	}
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	r, err := f(cctx, cs)
	// What the server sent before its answer is handled before it
	// (notificationOrder): a call's progress and log messages, of any
	// kind of request.
	g.order.Load().settle()
	if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return zero, fmt.Errorf("%s did not answer within %s (timeout.%s in the config for %q): %w", what, d, timeoutKey(what), g.name, ErrTimeout)
	}
	return r, asTooLarge(err)
}

func timeoutKey(what string) string {
	switch what {
	case "tools/call":
		return "tools"
	case "prompts/get", "completion/complete":
		return "prompts"
	}
	return "resources"
}

// CallTool forwards tools/call.
func (g *Group) CallTool(ctx context.Context, p *mcp.CallToolParams) (*mcp.CallToolResult, error) {
	return withTimeout(ctx, g, g.cfg.Timeout.Tools, "tools/call", func(ctx context.Context, cs *mcp.ClientSession) (*mcp.CallToolResult, error) {
		return cs.CallTool(ctx, p)
	})
}

// ReadResource forwards resources/read.
func (g *Group) ReadResource(ctx context.Context, p *mcp.ReadResourceParams) (*mcp.ReadResourceResult, error) {
	return withTimeout(ctx, g, g.cfg.Timeout.Resources, "resources/read", func(ctx context.Context, cs *mcp.ClientSession) (*mcp.ReadResourceResult, error) {
		return cs.ReadResource(ctx, p)
	})
}

// GetPrompt forwards prompts/get.
func (g *Group) GetPrompt(ctx context.Context, p *mcp.GetPromptParams) (*mcp.GetPromptResult, error) {
	return withTimeout(ctx, g, g.cfg.Timeout.Prompts, "prompts/get", func(ctx context.Context, cs *mcp.ClientSession) (*mcp.GetPromptResult, error) {
		return cs.GetPrompt(ctx, p)
	})
}

// Complete forwards completion/complete.
func (g *Group) Complete(ctx context.Context, p *mcp.CompleteParams) (*mcp.CompleteResult, error) {
	return withTimeout(ctx, g, g.cfg.Timeout.Prompts, "completion/complete", func(ctx context.Context, cs *mcp.ClientSession) (*mcp.CompleteResult, error) {
		return cs.Complete(ctx, p)
	})
}

// Subscribe forwards resources/subscribe.
func (g *Group) Subscribe(ctx context.Context, p *mcp.SubscribeParams) error {
	_, err := withTimeout(ctx, g, g.cfg.Timeout.Resources, "resources/subscribe", func(ctx context.Context, cs *mcp.ClientSession) (struct{}, error) {
		return struct{}{}, cs.Subscribe(ctx, p)
	})
	if err == nil {
		g.subscribed.Add(1)
	}
	return err
}

// Unsubscribe forwards resources/unsubscribe.
func (g *Group) Unsubscribe(ctx context.Context, p *mcp.UnsubscribeParams) error {
	_, err := withTimeout(ctx, g, g.cfg.Timeout.Resources, "resources/unsubscribe", func(ctx context.Context, cs *mcp.ClientSession) (struct{}, error) {
		return struct{}{}, cs.Unsubscribe(ctx, p)
	})
	if g.subscribed.Add(-1) < 0 {
		g.subscribed.Store(0)
	}
	return err
}

// Capabilities returns what the server declared, once connected.
func (g *Group) Capabilities() *mcp.ServerCapabilities {
	return g.serverCaps.Load()
}
