package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
)

// seen is one request a test HTTP upstream received.
type seen struct {
	method, lastEventID, auth, header string
	at                                time.Time
}

// httpUpstream is an in-process go-sdk server on a loopback port, with
// tools to test limits and stream resumption, recording every request.
type httpUpstream struct {
	url      string
	mu       sync.Mutex
	requests []seen
	count    atomic.Int64 // the "count" tool's state
	closedAt atomic.Pointer[time.Time]
}

func (u *httpUpstream) seen() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.requests...)
}

// startHTTPUpstream serves mode: "streamable" (SSE responses, with an event
// store so streams can be resumed), "streamable-json" (JSON responses) or
// "sse" (the legacy transport, at /sse).
func startHTTPUpstream(t *testing.T, mode string) *httpUpstream {
	t.Helper()
	u := &httpUpstream{}
	srv := mcp.NewServer(&mcp.Implementation{Name: "http-upstream", Version: "1"}, nil)
	type sizeArgs struct {
		Bytes int `json:"bytes"`
	}
	type msgArgs struct {
		Message string `json:"message"`
	}
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(srv, &mcp.Tool{Name: "large"}, func(_ context.Context, _ *mcp.CallToolRequest, in sizeArgs) (*mcp.CallToolResult, any, error) {
		return text(strings.Repeat("x", in.Bytes)), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in msgArgs) (*mcp.CallToolResult, any, error) {
		return text(in.Message), nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "count"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return text(strconv.FormatInt(u.count.Add(1), 10)), nil, nil
	})
	// resume ends its own SSE stream mid-call, asking the client to come
	// back in 300 ms (SEP-1699), and answers after that.
	mcp.AddTool(srv, &mcp.Tool{Name: "resume"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if req.Extra == nil || req.Extra.CloseSSEStream == nil {
			return nil, nil, errors.New("no SSE stream to close")
		}
		now := time.Now()
		u.closedAt.Store(&now)
		req.Extra.CloseSSEStream(mcp.CloseSSEStreamArgs{RetryAfter: 300 * time.Millisecond})
		time.Sleep(50 * time.Millisecond)
		return text("answered on the resumed stream"), nil, nil
	})
	var h http.Handler
	switch mode {
	case "streamable":
		h = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)})
	case "streamable-json":
		h = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{JSONResponse: true})
	case "sse":
		h = mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.requests = append(u.requests, seen{method: r.Method, lastEventID: r.Header.Get("Last-Event-ID"),
			auth: r.Header.Get("Authorization"), header: r.Header.Get("X-Moat-Test"), at: time.Now()})
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	u.url = ts.URL
	if mode == "sse" {
		u.url += "/sse"
	}
	return u
}

func remoteServer(name, url string, typ config.Transport) *config.Server {
	s := server(name, typ)
	s.URL = url
	s.Headers = map[string]string{"X-Moat-Test": "guarded"}
	return s
}
