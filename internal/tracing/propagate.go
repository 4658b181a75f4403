package tracing

import (
	"context"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"net/http"
)

// w3c reads and writes traceparent and tracestate; it refuses a malformed
// traceparent, so an invalid one is never passed on.
var w3c = propagation.TraceContext{}

// The _meta keys of trace context, as MCP clients and servers send it.
const (
	metaTraceparent = "traceparent"
	metaTracestate  = "tracestate"
)

// metaCarrier reads and writes trace context in a request's _meta: string
// values only.
type metaCarrier map[string]any

func (m metaCarrier) Get(key string) string {
	s, _ := m[key].(string)
	return s
}

func (m metaCarrier) Set(key, value string) { m[key] = value }

func (m metaCarrier) Keys() []string { return []string{metaTraceparent, metaTracestate} }

// Extract is go-sdk receiving middleware that makes a client's trace
// context the context of its request: a valid traceparent (and its
// tracestate) from the request's _meta, else from the HTTP headers of the
// gateway's HTTP listener. It runs whether or not tracing is on, so that
// Inject can pass the client's context on.
func Extract(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		return next(extract(ctx, req), method, req)
	}
}

func extract(ctx context.Context, req mcp.Request) context.Context {
	meta, ok := callMeta(req)
	if !ok {
		return ctx
	}
	if meta[metaTraceparent] != nil {
		if sc := trace.SpanContextFromContext(w3c.Extract(context.Background(), metaCarrier(meta))); sc.IsValid() {
			return trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	if x := req.GetExtra(); x != nil && x.Header.Get(metaTraceparent) != "" {
		if sc := trace.SpanContextFromContext(w3c.Extract(context.Background(), propagation.HeaderCarrier(x.Header))); sc.IsValid() {
			return trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	return ctx
}

// callMeta returns the _meta of a request that becomes a call (the others
// carry no trace on), and whether req is one. (A request's params may be
// a nil pointer: go-sdk's Params interface does not say.)
func callMeta(req mcp.Request) (mcp.Meta, bool) {
	switch r := req.(type) {
	case *mcp.CallToolRequest:
		if r.Params != nil {
			return r.Params.Meta, true
		}
	case *mcp.ReadResourceRequest:
		if r.Params != nil {
			return r.Params.Meta, true
		}
	case *mcp.GetPromptRequest:
		if r.Params != nil {
			return r.Params.Meta, true
		}
	case *mcp.SubscribeRequest:
		if r.Params != nil {
			return r.Params.Meta, true
		}
	case *mcp.CompleteRequest:
		if r.Params != nil {
			return r.Params.Meta, true
		}
	}
	return nil, false
}

// Inject adds ctx's trace context to meta, a forwarded request's _meta
// (allocated if nil and there is a context to add), and returns it. With
// tracing on that is Moat's upstream span; off, the client's own context
// unchanged.
func Inject(ctx context.Context, meta mcp.Meta) mcp.Meta {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return meta
	}
	if meta == nil {
		meta = mcp.Meta{}
	}
	w3c.Inject(ctx, metaCarrier(meta))
	return meta
}

// HasContext reports whether ctx carries a trace context to pass on.
func HasContext(ctx context.Context) bool { return trace.SpanContextFromContext(ctx).IsValid() }

// InjectHeader sets ctx's trace context as the W3C traceparent and
// tracestate headers of an HTTP request to an upstream, as Inject does in
// its _meta: servers that trace at the HTTP layer read them there.
func InjectHeader(ctx context.Context, h http.Header) {
	w3c.Inject(ctx, propagation.HeaderCarrier(h))
}
