package upstream

import (
	"context"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestIdleServerStopsAndWakes: with IdleAfter, a server no request has
// used for that long is stopped (its process exits) while the group keeps
// its lists, a call in progress longer than IdleAfter keeps it running, and
// the next call starts it again and is answered.
func TestIdleServerStopsAndWakes(t *testing.T) {
	const idle = time.Second
	st := startUnwaited(t, stdioTestServer(t, "sleepy"), Options{IdleAfter: idle, ConnectTimeout: 30 * time.Second})
	ctx := context.Background()
	call := func(tool string, args map[string]any) {
		t.Helper()
		res, err := st.g.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %+v", tool, err, res)
		}
	}

	// A call three times as long as IdleAfter is not cut short: the
	// group is still ready when it returns (the idle time counts from
	// then), and its process never exited.
	call("slow", map[string]any{"ms": 3 * idle.Milliseconds()})
	if s := st.g.Status(); s.State != Ready {
		t.Fatalf("after a call longer than IdleAfter, the group is %s", s.Summary(time.Now()))
	}
	if n := len(st.events.of("child_exit")); n != 0 {
		t.Fatalf("the server exited %d times during a call", n)
	}

	got := st.await(t, "idle", time.Minute, func(s Status) bool { return s.State == Idle })
	if got.Summary(time.Now()) != "idle (stopped unused; the next call starts it)" {
		t.Errorf("idle summary: %q", got.Summary(time.Now()))
	}
	testutil.Eventually(t, "the idle server's process to exit", func() bool { return len(st.events.of("upstream_idle")) == 1 })
	if n := len(st.events.of("child_exit")); n != 1 {
		t.Errorf("%d process exits before upstream_idle, want 1", n)
	}
	if len(st.g.Lists().Tools) == 0 {
		t.Error("an idle group lost its tool list")
	}

	call("echo", map[string]any{"message": "wake up"})
	if n := len(st.events.of("child_start")); n != 2 {
		t.Errorf("%d processes started, want 2 (the first and the woken one)", n)
	}
}
