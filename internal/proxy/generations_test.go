package proxy_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/upstream"
)

// TestBothGenerationsAreServed: clients of 2026-07-28 (no initialize;
// server/discover and per-request _meta) and of the versions before it get
// the same tools, resources and prompts through Moat, and Moat answers in
// the version they asked for.
func TestBothGenerationsAreServed(t *testing.T) {
	for _, version := range []string{"2026-07-28", "2025-11-25", "2025-06-18"} {
		for _, up := range []string{"2026-07-28", "2025-06-18"} {
			t.Run(version+" upstream "+up, func(t *testing.T) { bothGenerations(t, version, up) })
		}
	}
}

// bothGenerations is one client version and upstream version pair of
// TestBothGenerationsAreServed; the upstream accepts only its version.
func bothGenerations(t *testing.T, version, upstreamVersion string) {
	c := startAt(t, version, cfgOf(stdio(t, "test", "-protocols", upstreamVersion)), nil)
	if got := c.cs.InitializeResult().ProtocolVersion; got != version {
		t.Fatalf("negotiated %q, want %q", got, version)
	}
	// Asked right after start: the first request of a 2026-07-28 client
	// is what opens the upstreams.
	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "hi " + version}})
	if text(res) != "hi "+version {
		t.Fatalf("echo: %q", text(res))
	}
	rs, err := c.cs.ListResources(t.Context(), nil)
	if err != nil || len(rs.Resources) == 0 {
		t.Fatalf("resources/list: %v, %v", rs, err)
	}
	rr, err := c.cs.ReadResource(t.Context(), &mcp.ReadResourceParams{URI: rs.Resources[0].URI})
	if err != nil || len(rr.Contents) == 0 {
		t.Fatalf("resources/read %s: %v, %v", rs.Resources[0].URI, rr, err)
	}
	ps, err := c.cs.ListPrompts(t.Context(), nil)
	if err != nil || len(ps.Prompts) == 0 {
		t.Fatalf("prompts/list: %v, %v", ps, err)
	}
	if version < "2026-07-28" {
		return
	}
	// What Moat answers shows one user's servers through one user's
	// policy: no intermediary may share it between sessions.
	group, err := c.cs.ListResources(t.Context(), &mcp.ListResourcesParams{Meta: mcp.Meta{"group": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	for what, scope := range map[string]string{
		"resources/list": rs.CacheScope, "prompts/list": ps.CacheScope, "resources/read": rr.CacheScope,
		"resources/list of a group": group.CacheScope,
	} {
		if scope != "private" {
			t.Errorf("%s: cacheScope %q, want private", what, scope)
		}
	}
}

// TestInputRequestsReachANewClient: an upstream's elicitation and sampling
// requests reach a client of 2026-07-28, which takes no server requests, as
// input-required results of the call (SEP-2322); the answers go back to the
// upstream, whichever protocols the upstream itself accepts (Moat asks
// every upstream for 2025-11-25, which go-sdk servers of 2026-07-28 alone
// accept too).
func TestInputRequestsReachANewClient(t *testing.T) {
	for _, upstreamVersion := range []string{"2026-07-28", "2025-06-18"} {
		t.Run("upstream "+upstreamVersion, func(t *testing.T) {
			var mu sync.Mutex
			var asked []string
			opts := &mcp.ClientOptions{
				ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
					mu.Lock()
					asked = append(asked, "elicit: "+r.Params.Message)
					mu.Unlock()
					return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
				},
				CreateMessageHandler: func(_ context.Context, r *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
					mu.Lock()
					asked = append(asked, "sample: "+r.Params.Messages[0].Content.(*mcp.TextContent).Text)
					mu.Unlock()
					return &mcp.CreateMessageResult{Role: "assistant", Model: "m", Content: &mcp.TextContent{Text: "sampled"}}, nil
				},
			}
			c := startAt(t, "2026-07-28", cfgOf(stdio(t, "test", "-protocols", upstreamVersion)), opts)
			res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "elicitation"}})
			if res.IsError || !strings.Contains(text(res), `accept {"name":"Ada"}`) {
				t.Fatalf("elicitation: isError=%v %q", res.IsError, text(res))
			}
			res = c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "sampling"}})
			if res.IsError || text(res) != "sampled" {
				t.Fatalf("sampling: isError=%v %q", res.IsError, text(res))
			}
			mu.Lock()
			defer mu.Unlock()
			if want := []string{"elicit: What is your name?", "sample: sampling request from test"}; !slices.Equal(asked, want) {
				t.Fatalf("the client was asked %q, want %q", asked, want)
			}
		})
	}
}

// TestInputRequiredOnTheWire: what a 2026-07-28 client gets is the
// protocol's input-required result, and its retry names the call by
// requestState; a retry naming no call gets an error that says what to do.
func TestInputRequiredOnTheWire(t *testing.T) {
	opts := &mcp.ClientOptions{
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "decline"}, nil
		},
		MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true},
	}
	c := startAt(t, "2026-07-28", cfgOf(stdio(t, "test")), opts)
	call := &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "elicitation"}}}
	res, err := c.cs.CallTool(t.Context(), call)
	if err != nil {
		t.Fatal(err)
	}
	if !res.NeedsInput() || len(res.InputRequests) != 1 || res.RequestState == "" {
		b, _ := json.Marshal(res)
		t.Fatalf("want an input-required result with one request and a state, got %s", b)
	}
	var id string
	for k, ir := range res.InputRequests {
		ep, ok := ir.(*mcp.ElicitParams)
		if !ok || ep.Message != "What is your name?" {
			t.Fatalf("input request %q is %#v, want the upstream's elicitation", k, ir)
		}
		id = k
	}

	bogus := *call
	bogus.RequestState = "no-such-call"
	bogus.InputResponses = mcp.InputResponseMap{id: &mcp.ElicitResult{Action: "decline"}}
	if _, err := c.cs.CallTool(t.Context(), &bogus); err == nil || !strings.Contains(err.Error(), "without requestState") {
		t.Fatalf("a retry naming no call: %v, want an error that says to call again", err)
	}

	retry := *call
	retry.RequestState = res.RequestState
	retry.InputResponses = mcp.InputResponseMap{id: &mcp.ElicitResult{Action: "decline"}}
	res, err = c.cs.CallTool(t.Context(), &retry)
	if err != nil || res.NeedsInput() || !strings.HasPrefix(text(res), "decline") {
		t.Fatalf("the retry with the answer: %v, %v, want the upstream's result", res, err)
	}
	// The call is over: its state names nothing any more.
	if _, err := c.cs.CallTool(t.Context(), &retry); err == nil {
		t.Fatal("a second retry of a finished call was answered")
	}
}

// TestNewClientsLogPerCall: a client of 2026-07-28 asks for log messages
// per request (_meta io.modelcontextprotocol/logLevel); it gets an
// upstream's messages during the calls that asked, at their level.
func TestNewClientsLogPerCall(t *testing.T) {
	var mu sync.Mutex
	var got []string
	opts := &mcp.ClientOptions{
		LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
			mu.Lock()
			got = append(got, r.Params.Logger+": "+r.Params.Data.(string))
			mu.Unlock()
		},
	}
	c := startAt(t, "2026-07-28", cfgOf(stdio(t, "test")), opts)
	logCall := func(level, msg string, meta mcp.Meta) {
		t.Helper()
		res, err := c.cs.CallTool(t.Context(), &mcp.CallToolParams{Meta: meta, Name: "call_dynamic_tool",
			Arguments: map[string]any{"group": "test", "name": "log", "args": map[string]any{"level": level, "message": msg}}})
		if err != nil || res.IsError {
			t.Fatalf("log %s: %v %v", msg, res, err)
		}
	}
	logCall("warning", "not asked for", nil)
	logCall("info", "below the level", mcp.Meta{mcp.MetaKeyLogLevel: "warning"})
	logCall("warning", "disk almost full", mcp.Meta{mcp.MetaKeyLogLevel: "warning"})
	// The client handles notifications apart from results: wait for the
	// last one; the ones not asked for were sent before it.
	testutil.Eventually(t, "the log message asked for", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"test/test: disk almost full"}; !slices.Equal(got, want) {
		t.Fatalf("log messages: %q, want %q", got, want)
	}
}

// TestNewClientsRootsAreNotOffered: a 2026-07-28 client gives roots only
// inside a call, so Moat declares no roots upstream (go-sdk answers an
// undeclared roots/list with an empty list, as for a client without roots).
func TestNewClientsRootsAreNotOffered(t *testing.T) {
	c := startAt(t, "2026-07-28", cfgOf(stdio(t, "test")), nil, func(mc *mcp.Client) {
		mc.AddRoots(&mcp.Root{URI: "file:///work/one", Name: "one"})
	})
	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "roots"}})
	if res.IsError || text(res) != "" {
		t.Fatalf("roots asked of a 2026-07-28 client: isError=%v %q", res.IsError, text(res))
	}
}

// TestDiscoverOpensTheUpstreams: server/discover is a 2026-07-28 client's
// handshake; the servers start on it, as on initialized for older clients,
// not only at the client's first request. The client sets no handlers: a
// list_changed handler would open a subscriptions/listen stream, itself a
// first request.
func TestDiscoverOpensTheUpstreams(t *testing.T) {
	useMoatLauncher(t)
	p := proxy.New(proxy.Options{Logger: testLogger(t)})
	p.Apply(cfgOf(stdio(t, "test")))
	ct, st := mcp.NewInMemoryTransports()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx, st) }()
	t.Cleanup(func() { cancel(); <-done })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "bare", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	g, _ := p.Manager().Group("test")
	testutil.Eventually(t, "the group ready after server/discover alone", func() bool { return g.Status().State == upstream.Ready })
}
