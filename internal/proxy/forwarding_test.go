package proxy_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestElicitationReachesTheClient: as a request of Moat's own to a client
// of 2025-11-25 (TestInputRequestsReachANewClient has 2026-07-28).
func TestElicitationReachesTheClient(t *testing.T) {
	opts := &mcp.ClientOptions{
		ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "Ada"}}, nil
		},
	}
	c := startAt(t, "2025-11-25", cfgOf(stdio(t, "test")), opts)
	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "elicitation"}})
	if res.IsError || !strings.Contains(text(res), `accept {"name":"Ada"}`) {
		t.Fatalf("ask_client elicitation: isError=%v %q", res.IsError, text(res))
	}
}

func TestClientWithoutSamplingIsNotDeclaredUpstream(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test")), nil)
	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "sampling"}})
	if !res.IsError || !strings.Contains(text(res), "sampling failed") {
		t.Fatalf("sampling from an upstream when the client cannot sample: isError=%v %q", res.IsError, text(res))
	}
}

// TestRootsFollowTheClient: roots pass to the upstreams for clients of
// 2025-11-25 and before (2026-07-28 clients give them only inside a call:
// TestNewClientsRootsAreNotOffered).
func TestRootsFollowTheClient(t *testing.T) {
	c := startAt(t, "2025-11-25", cfgOf(stdio(t, "test")), nil, func(mc *mcp.Client) {
		mc.AddRoots(&mcp.Root{URI: "file:///work/one", Name: "one"})
	})
	ask := func() string {
		return text(c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "roots"}}))
	}
	testutil.Eventually(t, "the client's root upstream", func() bool { return ask() == "file:///work/one" })
	c.mc.AddRoots(&mcp.Root{URI: "file:///work/two"})
	testutil.Eventually(t, "the added root upstream", func() bool { return ask() == "file:///work/one\nfile:///work/two" })
	c.mc.RemoveRoots("file:///work/one")
	testutil.Eventually(t, "the removed root gone upstream", func() bool { return ask() == "file:///work/two" })
}

// TestLoggingIsForwardedBothWays: a client of 2025-11-25 sets its level for
// the session (2026-07-28 clients ask per request: TestNewClientsLogPerCall).
func TestLoggingIsForwardedBothWays(t *testing.T) {
	var mu sync.Mutex
	var got []string
	opts := &mcp.ClientOptions{
		LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
			mu.Lock()
			got = append(got, r.Params.Logger+": "+r.Params.Data.(string))
			mu.Unlock()
		},
	}
	c := startAt(t, "2025-11-25", cfgOf(stdio(t, "test")), opts)
	c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"})
	if err := c.cs.SetLoggingLevel(context.Background(), &mcp.SetLoggingLevelParams{Level: "info"}); err != nil {
		t.Fatal(err)
	}
	// The upstream only sends log messages once its client set a level:
	// receiving one proves logging/setLevel reached it.
	testutil.Eventually(t, "a log message from the upstream", func() bool {
		c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "log", "args": map[string]any{"level": "warning", "message": "disk almost full"}})
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(got, "test/test: disk almost full")
	})
}

func TestCompletionRoutesToTheOwningGroup(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test"), stdio(t, "other")), nil)
	c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"})
	c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "other"})
	res, err := c.cs.Complete(context.Background(), &mcp.CompleteParams{
		Ref:      &mcp.CompleteReference{Type: "ref/prompt", Name: "greet"},
		Argument: mcp.CompleteParamsArgument{Name: "name", Value: "a"},
		Meta:     mcp.Meta{"group": "other"},
	})
	if err != nil || !slices.Equal(res.Completion.Values, []string{"alice"}) {
		t.Fatalf("complete greet name=a: %v %v", res, err)
	}
}

// TestCompletionOfATemplateArgument: a ref/resource names the template
// itself, not a URI it expands to; the group that lists that template answers.
func TestCompletionOfATemplateArgument(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test")), nil)
	res, err := c.cs.Complete(context.Background(), &mcp.CompleteParams{
		Ref:      &mcp.CompleteReference{Type: "ref/resource", URI: "test://items/{id}"},
		Argument: mcp.CompleteParamsArgument{Name: "id", Value: "4"},
	})
	if err != nil || !slices.Equal(res.Completion.Values, []string{"42"}) {
		t.Fatalf("complete test://items/{id} id=4: %+v %v, want [42]", res, err)
	}
}

func TestCancellationReachesTheUpstream(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test")), nil)
	c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "slow", "args": map[string]any{"ms": 20000}}})
	if err == nil {
		t.Fatal("a cancelled call returned a result")
	}
	if time.Since(t0) > 10*time.Second {
		t.Fatal("cancellation did not end the call")
	}
	// The group keeps serving after a cancelled call.
	if res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "alive"}}); text(res) != "alive" {
		t.Fatalf("after cancellation: %q", text(res))
	}
}
