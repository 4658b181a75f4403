package tracing

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/moatmcp/moat/internal/guard"
)

// Attribute names: the OpenTelemetry semantic conventions for MCP and
// GenAI where they name the thing, moat.* for what only Moat has.
const (
	attrMethod         = "mcp.method.name"
	attrSession        = "mcp.session.id"
	attrOperation      = "gen_ai.operation.name"
	attrToolName       = "gen_ai.tool.name"
	attrPromptName     = "gen_ai.prompt.name"
	attrErrorType      = "error.type"
	attrGroup          = "moat.group"
	attrKind           = "moat.call.kind"
	attrOutcome        = "moat.outcome"
	attrIdentity       = "moat.identity.name"
	attrLayer          = "moat.layer"
	attrRule           = "moat.rule"
	attrResourceScheme = "moat.resource.scheme"
)

// The outcomes of a call or a layer, as moat.outcome and error.type say.
const (
	outcomeOK        = "ok"
	outcomeDenied    = "denied"
	outcomeTimeout   = "timeout"
	outcomeError     = "error"      // the upstream could not be reached or answered with an error
	outcomeToolError = "tool_error" // the tool's own result says it failed
)

// methods are the MCP methods a call of each kind answers, and the name the
// client called it by (the client's tool is Moat's call_dynamic_tool).
var methods = map[guard.Kind][2]string{
	guard.KindTool:      {"tools/call", "call_dynamic_tool"},
	guard.KindResource:  {"resources/read", ""},
	guard.KindPrompt:    {"prompts/get", ""},
	guard.KindSubscribe: {"resources/subscribe", ""},
	guard.KindComplete:  {"completion/complete", ""},
}

// callAttrs describes c by what may be shown: never arguments or the URI
// beyond its scheme (a URI can carry a path or a token).
func callAttrs(c *guard.Call, method string) []attribute.KeyValue {
	a := []attribute.KeyValue{
		attribute.String(attrMethod, method),
		attribute.String(attrGroup, c.Group),
		attribute.String(attrKind, c.Kind.String()),
	}
	switch c.Kind {
	case guard.KindTool:
		a = append(a, attribute.String(attrOperation, "execute_tool"), attribute.String(attrToolName, c.Name))
	case guard.KindPrompt:
		a = append(a, attribute.String(attrPromptName, c.Name))
	case guard.KindResource, guard.KindSubscribe:
		if i := indexScheme(c.URI); i > 0 {
			a = append(a, attribute.String(attrResourceScheme, c.URI[:i]))
		}
	}
	return a
}

// indexScheme returns the length of uri's scheme, or -1 when it has none
// made of the characters a scheme may hold (RFC 3986).
func indexScheme(uri string) int {
	for i := 0; i < len(uri) && i < 32; i++ {
		switch ch := uri[i]; {
		case ch == ':':
			return i
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', i > 0 && ('0' <= ch && ch <= '9' || ch == '+' || ch == '-' || ch == '.'):
		default:
			return -1
		}
	}
	return -1
}

// Calls wraps the guard chain with the span of each client request that
// became a call (server kind), child of the client's trace context.
func (t *Tracer) Calls(h guard.Handler) guard.Handler {
	if t == nil {
		return h
	}
	return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
		m := methods[c.Kind]
		name := m[0]
		if m[1] != "" {
			name += " " + m[1]
		} else if c.Kind == guard.KindPrompt {
			name += " " + c.Name
		}
		attrs := callAttrs(c, m[0])
		if c.Session != "" {
			attrs = append(attrs, attribute.String(attrSession, c.Session))
		}
		if c.Identity != nil {
			attrs = append(attrs, attribute.String(attrIdentity, c.Identity.Name))
		}
		ctx, span := t.tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		defer span.End()
		r, err := h(ctx, c)
		end(span, r, err)
		return r, err
	}
}

// Layer wraps l, the guard layer named name, with a span of its own: the
// time from the call's arrival at the layer to the layer's answer,
// including the layers inside it. A layer's refusal marks its span (and
// only its span names the rule); a refusal from further in passes through
// it as an outcome.
func (t *Tracer) Layer(name guard.LayerName, l guard.Layer) guard.Layer {
	if t == nil {
		return l
	}
	return func(next guard.Handler) guard.Handler {
		inner := l(next)
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			ctx, span := t.tr.Start(ctx, "moat.layer "+string(name), trace.WithAttributes(attribute.String(attrLayer, string(name))))
			defer span.End()
			r, err := inner(ctx, c)
			var d *guard.Denial
			if errors.As(err, &d) && refusedBy(d, name) {
				span.SetAttributes(attribute.String(attrOutcome, outcomeDenied), attribute.String(attrRule, d.Rule))
				span.SetStatus(codes.Error, "refused by "+string(d.Layer)+" rule "+d.Rule)
				return r, err
			}
			span.SetAttributes(attribute.String(attrOutcome, outcome(r, err)))
			return r, err
		}
	}
}

// refusedBy reports whether d is the refusal of the layer named name (the
// audit log's write-ahead record refuses as the audit layer).
func refusedBy(d *guard.Denial, name guard.LayerName) bool {
	return d.Layer == name || (name == guard.LayerIntent && d.Layer == guard.LayerAudit)
}

// Upstream wraps forward with the span of the request to the upstream
// (client kind); forward injects its context into the request's _meta.
func (t *Tracer) Upstream(forward guard.Handler) guard.Handler {
	if t == nil {
		return forward
	}
	return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
		m := methods[c.Kind]
		name := m[0]
		if c.Kind == guard.KindTool || c.Kind == guard.KindPrompt {
			name += " " + c.Name
		}
		ctx, span := t.tr.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(callAttrs(c, m[0])...))
		defer span.End()
		r, err := forward(ctx, c)
		end(span, r, err)
		return r, err
	}
}

// end records the outcome of a call's span, and for a refusal the layer
// and rule that refused.
func end(span trace.Span, r *guard.Result, err error) {
	o := outcome(r, err)
	span.SetAttributes(attribute.String(attrOutcome, o))
	var d *guard.Denial
	if errors.As(err, &d) {
		span.SetAttributes(attribute.String(attrLayer, string(d.Layer)), attribute.String(attrRule, d.Rule))
		span.SetStatus(codes.Error, "refused by "+string(d.Layer)+" rule "+d.Rule)
		span.SetAttributes(attribute.String(attrErrorType, o))
		return
	}
	if o != outcomeOK {
		fail(span, o)
	}
}

func outcome(r *guard.Result, err error) string {
	var d *guard.Denial
	switch {
	case errors.As(err, &d):
		return outcomeDenied
	case errors.Is(err, guard.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return outcomeTimeout
	case err != nil:
		return outcomeError
	case r != nil && r.Tool != nil && r.Tool.IsError:
		return outcomeToolError
	}
	return outcomeOK
}
