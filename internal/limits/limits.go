// Package limits adapts the public policy package to the call guard: the
// policy decision, rate limits, concurrency caps, size limits and timeouts,
// each as its own guard.Layer so the chain can place them where they belong.
//
// Every layer refuses with a *guard.Denial whose Reason says what to do and
// never repeats argument values; a refused call never reaches next.
package limits

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/policy"
)

// PolicyFunc returns the effective policy of a group, or nil when the group
// has none (its calls are then refused: fail closed).
type PolicyFunc func(group string) *policy.Policy

// Annotations converts a tool's MCP annotations for policy.Decide. The
// proxy uses it for listing too, so list and call read the same tiers.
func Annotations(t *mcp.Tool) *policy.Annotations {
	if t == nil || t.Annotations == nil {
		return nil
	}
	return &policy.Annotations{ReadOnlyHint: t.Annotations.ReadOnlyHint, DestructiveHint: t.Annotations.DestructiveHint}
}

func noPolicy(group string) *guard.Denial {
	return &guard.Denial{Layer: guard.LayerPolicy, Rule: "no-policy", Reason: fmt.Sprintf("group %q has no policy loaded, so Moat refuses its calls (fail closed); check the config and the managed policy", group)}
}

// IdentityRules are what the policy layer judges of a gateway identity
// beside its group's policy.
type IdentityRules struct {
	Name string
	// Servers are the groups the identity may see and use; nil: every one.
	Servers []string
	// Policy is the identity's own policy (policy.ParseIdentity), nil for
	// none: the group's policy alone decides.
	Policy *policy.Policy
}

// Visible reports whether the identity may see and use group.
func (r *IdentityRules) Visible(group string) bool {
	return r.Servers == nil || slices.Contains(r.Servers, group)
}

// IdentityFunc returns the rules of the gateway identity named name as the
// latest config has them, or nil when it has no such identity (the
// identity's requests are then refused: fail closed).
type IdentityFunc func(name string) *IdentityRules

// Policy refuses what the group's policy denies: tool calls by name, by
// annotation tier, or by argument constraints, resource reads by URI and
// prompt gets by name. A call made for a gateway identity (c.Identity) is
// also refused when the identity is no longer configured, when it may not
// use the group, and when its own policy denies it: the group's rules and
// the identity's must both allow. The arguments are decoded strictly
// (duplicate keys refused) so Moat judges exactly what the upstream will
// read. ids may be nil when no identity is ever configured.
func Policy(get PolicyFunc, ids IdentityFunc) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			p := get(c.Group)
			if p == nil {
				return nil, noPolicy(c.Group)
			}
			// Who may use the group at all is settled before anything
			// reads the arguments.
			if _, d := Admit(ids, c); d != nil {
				return nil, d
			}
			var args map[string]any
			if c.Kind == guard.KindTool {
				var err error
				if args, err = c.Value(); err != nil {
					return nil, &guard.Denial{Layer: guard.LayerPolicy, Rule: "args:decode", Cause: err,
						Reason: fmt.Sprintf("the arguments are not acceptable: %v; send one JSON object with each key once (not twice, nor in two cases), nested at most %d levels", err, guard.MaxArgsDepth)}
				}
			}
			if d := Decide(p, ids, c, args); d != nil {
				return nil, d
			}
			return next(ctx, c)
		}
	}
}

// Decide is the policy layer's one decision, for calls and listings alike:
// nil when p (the group's effective policy) and, for a call made for a
// gateway identity, that identity's rules allow c. args are the decoded
// tool arguments, nil when listing (the tool is judged by its name and
// annotations, c.Tool). The gate's catalog and resource and prompt
// listings ask it with the call a request would make, so nothing is listed
// that the chain would refuse.
func Decide(p *policy.Policy, ids IdentityFunc, c *guard.Call, args map[string]any) *guard.Denial {
	if p == nil {
		return noPolicy(c.Group)
	}
	who, d := Admit(ids, c)
	if d != nil {
		return d
	}
	judge := func(q *policy.Policy) policy.Decision {
		if c.Kind == guard.KindTool {
			return q.Decide(c.Name, Annotations(c.Tool), args)
		}
		return DecideAccess(q, c)
	}
	if dec := judge(p); !dec.Allow {
		return &guard.Denial{Layer: guard.LayerPolicy, Rule: dec.Rule, Reason: dec.Reason}
	}
	if who != nil && who.Policy != nil {
		if dec := judge(who.Policy); !dec.Allow {
			return &guard.Denial{Layer: guard.LayerPolicy, Rule: "identity:" + dec.Rule,
				Reason: fmt.Sprintf("for identity %s: %s (the rule is in gateway.identities.%s.policy of the config)", who.Name, dec.Reason, who.Name)}
		}
	}
	return nil
}

// Admit decides whether the gateway identity of c (none: always) may use
// c.Group at all, and returns its rules. An identity the config no longer
// has is refused everything; one whose servers do not list the group is
// refused that group.
func Admit(ids IdentityFunc, c *guard.Call) (*IdentityRules, *guard.Denial) {
	if c.Identity == nil {
		return nil, nil
	}
	name := c.Identity.Name
	var who *IdentityRules
	if ids != nil {
		who = ids(name)
	}
	if who == nil {
		return nil, &guard.Denial{Layer: guard.LayerPolicy, Rule: "identity:unknown",
			Reason: fmt.Sprintf("identity %s is not in the config's gateway.identities (a reload removed it), so Moat refuses its requests; do not retry: ask the gateway's administrator", name)}
	}
	if !who.Visible(c.Group) {
		return nil, &guard.Denial{Layer: guard.LayerPolicy, Rule: "identity:server",
			Reason: fmt.Sprintf("identity %s may not use group %s; the config's gateway.identities.%s.servers lists what it may use", name, c.Group, name)}
	}
	return who, nil
}

// DecideAccess judges a call that is not a tool call by the policy's
// resource and prompt rules: a subscription as a read of its URI, a
// completion as a use of the prompt or resource template it completes.
// The proxy's listings ask it too, so nothing is listed that a request
// for it would be refused.
func DecideAccess(p *policy.Policy, c *guard.Call) policy.Decision {
	if c.Kind == guard.KindPrompt || (c.Kind == guard.KindComplete && c.Name != "") {
		return p.DecidePrompt(c.Name)
	}
	return p.DecideResource(c.URI)
}

// Rate refuses a call when its tool's, group's, gateway identity's or the
// global rate limit is reached, saying when to retry. Place it just before the forward, so only
// calls that will really reach the upstream spend tokens.
func Rate(reg *policy.Limits) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			if ok, retry := reg.AllowAs(identityOf(c), c.Group, toolOf(c)); !ok {
				if retry == 0 {
					return nil, noPolicy(c.Group)
				}
				return nil, &guard.Denial{Layer: guard.LayerRate, Rule: "rate", Reason: fmt.Sprintf("the rate limit for %s is reached; retry after %d ms", what(c), retry.Milliseconds()+1)}
			}
			return next(ctx, c)
		}
	}
}

// Concurrency refuses a call at once when its tool's, group's, gateway
// identity's or the global max_concurrent calls are already running; it
// does not queue.
func Concurrency(reg *policy.Limits) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			release, err := reg.AcquireAs(ctx, identityOf(c), c.Group, toolOf(c))
			if err != nil {
				var busy *policy.BusyError
				if errors.As(err, &busy) {
					// Layer "concurrency": the audit log records it as limited, not denied.
					return nil, &guard.Denial{Layer: guard.LayerConcurrency, Rule: "max_concurrent", Reason: busy.Error(), Cause: err}
				}
				if ctx.Err() != nil {
					return nil, err
				}
				return nil, noPolicy(c.Group)
			}
			defer release()
			return next(ctx, c)
		}
	}
}

// Timeout bounds each call by its tool's effective policy timeout.
func Timeout(get PolicyFunc) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			p := get(c.Group)
			if p == nil {
				return nil, noPolicy(c.Group)
			}
			d := p.ToolSettings(toolOf(c)).Timeout
			tctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			res, err := next(tctx, c)
			if err != nil && !errors.Is(err, guard.ErrTimeout) && errors.Is(tctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
				// The same outcome as the server's own timeout, naming
				// this bound's key.
				return nil, fmt.Errorf("%s did not answer within %v (the policy's timeout): %w: %w", what(c), d, guard.ErrTimeout, err)
			}
			return res, err
		}
	}
}

// Size refuses arguments larger than max_args_bytes before anything parses
// them, and results larger than max_result_bytes (any one content item or
// all together) before they go back. It is the second line: the transport
// must already stop reading an oversized message; this layer keeps a result
// that fit the transport but not this tool's policy from reaching the model.
func Size(get PolicyFunc) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			p := get(c.Group)
			if p == nil {
				return nil, noPolicy(c.Group)
			}
			s := p.ToolSettings(toolOf(c))
			if n := int64(len(c.Args)); n > s.MaxArgsBytes {
				return nil, &guard.Denial{Layer: guard.LayerSize, Rule: "max_args_bytes", Reason: fmt.Sprintf("the arguments are %d bytes; %s accepts at most %d; send less data per call", n, what(c), s.MaxArgsBytes)}
			}
			res, err := next(ctx, c)
			if err != nil || res == nil {
				return res, err
			}
			if n, over := resultSize(res, s.MaxResultBytes); over {
				return nil, &guard.Denial{Layer: guard.LayerSize, Rule: "max_result_bytes", Reason: fmt.Sprintf("the result of %s is larger than its limit of %d bytes (at least %d), so Moat dropped it; ask for less (a narrower query, a page, a range)", what(c), s.MaxResultBytes, n)}
			}
			return res, nil
		}
	}
}

// resultSize adds up the payload bytes of a result, stopping as soon as
// the total passes limit. Text counts its bytes, binary data its encoded
// (base64) size, anything else its JSON encoding; every _meta counts too,
// the result's and each item's, since it reaches the client as well.
func resultSize(r *guard.Result, limit int64) (int64, bool) {
	var total int64
	add := func(n int64) bool {
		total += n
		return total > limit
	}
	var meta mcp.Meta
	switch {
	case r.Tool != nil:
		meta = r.Tool.Meta
	case r.Resource != nil:
		meta = r.Resource.Meta
	case r.Prompt != nil:
		meta = r.Prompt.Meta
	case r.Complete != nil:
		meta = r.Complete.Meta
	}
	if add(metaSize(meta)) {
		return total, true
	}
	switch {
	case r.Tool != nil:
		for _, c := range r.Tool.Content {
			if add(contentSize(c)) {
				return total, true
			}
		}
		if r.Tool.StructuredContent != nil && add(jsonSize(r.Tool.StructuredContent)) {
			return total, true
		}
	case r.Resource != nil:
		for _, rc := range r.Resource.Contents {
			if rc != nil && add(resourceSize(rc)) {
				return total, true
			}
		}
	case r.Prompt != nil:
		for _, m := range r.Prompt.Messages {
			if m != nil && add(contentSize(m.Content)) {
				return total, true
			}
		}
	case r.Complete != nil:
		for _, v := range r.Complete.Completion.Values {
			if add(int64(len(v))) {
				return total, true
			}
		}
	}
	return total, false
}

func contentSize(c mcp.Content) int64 {
	switch x := c.(type) {
	case *mcp.TextContent:
		return int64(len(x.Text)) + metaSize(x.Meta)
	case *mcp.ImageContent:
		return b64(len(x.Data)) + metaSize(x.Meta)
	case *mcp.AudioContent:
		return b64(len(x.Data)) + metaSize(x.Meta)
	case *mcp.EmbeddedResource:
		n := metaSize(x.Meta)
		if x.Resource != nil {
			n += resourceSize(x.Resource)
		}
		return n
	case nil:
		return 0
	}
	return jsonSize(c)
}

func resourceSize(rc *mcp.ResourceContents) int64 {
	return int64(len(rc.Text)) + b64(len(rc.Blob)) + int64(len(rc.URI)) + metaSize(rc.Meta)
}

func metaSize(m mcp.Meta) int64 {
	if len(m) == 0 {
		return 0
	}
	return jsonSize(m)
}

func b64(n int) int64 { return int64((n + 2) / 3 * 4) }

func jsonSize(v any) int64 {
	b, err := json.Marshal(v)
	if err != nil {
		return 0
	}
	return int64(len(b))
}

// identityOf is the name of the gateway identity the limits count c under
// ("" for none).
func identityOf(c *guard.Call) string {
	if c.Identity == nil {
		return ""
	}
	return c.Identity.Name
}

// toolOf is the tool name the limits count a call under: "" for resource
// reads and prompts, which count against their group and the global limits.
func toolOf(c *guard.Call) string {
	if c.Kind == guard.KindTool {
		return c.Name
	}
	return ""
}

func what(c *guard.Call) string {
	switch c.Kind {
	case guard.KindTool:
		return fmt.Sprintf("tool %s of group %s", c.Name, c.Group)
	case guard.KindResource, guard.KindSubscribe:
		return "resources of group " + c.Group
	case guard.KindComplete:
		return "completions of group " + c.Group
	}
	return "prompts of group " + c.Group
}
