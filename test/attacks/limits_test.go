package attacks

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// TestOversizedStdioResponse: a stdio upstream answers a call with one
// 100 MiB line. Moat reads no more of it than max_message_bytes (32 MiB by
// default): the caller gets a short tool error naming the key to raise, the
// hostile group answers its next call on the same session (no reconnect, so
// no lost server state), the other group is unaffected, and the refusal is
// audited beside the failed call.
//
// SECURITY.md, overview row "no size limits on upstream lines or HTTP
// bodies": "a larger one fails only the call it answers".
func TestOversizedStdioResponse(t *testing.T) {
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"big":   hostileStdio(t, "huge-line"),
		"other": testServer(t, "other"),
	}))
	m.echoWorks(t, "big")
	res := m.call(t, "big", "huge", nil)
	if !res.IsError || len(resultText(res)) > 4096 || !strings.Contains(resultText(res), "max_message_bytes") {
		t.Fatalf("a 100 MiB line: isError=%v, %.300q; want a short tool error naming max_message_bytes", res.IsError, resultText(res))
	}
	m.echoWorks(t, "big")
	m.echoWorks(t, "other")
	recs := m.auditLog(t)
	findRecord(t, recs, "the oversized call, failed", func(r audit.Record) bool {
		return r.Event == "tool_call" && r.Group == "big" && r.Tool == "huge" && r.Outcome == "error"
	})
	findRecord(t, recs, "the refused answer", func(r audit.Record) bool {
		return r.Event == "message_too_large" && r.Group == "big"
	})
	for _, r := range recs {
		if r.Event == "upstream_unavailable" && r.Group == "big" {
			t.Errorf("group big went unavailable after one oversized answer: %+v", r)
		}
	}
}

// TestEndlessHTTPBody: a streamable HTTP upstream answers a tools/call with
// a JSON body that never ends. Moat stops reading at its body limit (32
// MiB): the call fails with an error that says so, the other group is
// unaffected, and the call is audited with outcome error.
//
// SECURITY.md, Network, "Limits": response bodies (32 MiB) (internal/netguard:
// TestEndlessBody).
func TestEndlessHTTPBody(t *testing.T) {
	url := startHostileHTTP(t, "-mode", "http")
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"evil":  {"description": "endless body", "url": url, "type": "http"},
		"other": testServer(t, "other"),
	}))
	if res := m.call(t, "evil", "echo", nil); res.IsError {
		t.Fatalf("the hostile server's echo failed before the attack: %q", resultText(res))
	}
	start := time.Now()
	res := m.call(t, "evil", "endless", nil)
	if !res.IsError || !strings.Contains(strings.ToLower(resultText(res)), "limit") {
		t.Fatalf("an endless body: isError=%v %.300q; want a tool error naming the limit", res.IsError, resultText(res))
	}
	t.Logf("after %v the caller reads: %.300s", time.Since(start), resultText(res))
	m.echoWorks(t, "other")
	recs := m.auditLog(t)
	findRecord(t, recs, "the endless call, failed", func(r audit.Record) bool {
		return r.Event == "tool_call" && r.Group == "evil" && r.Tool == "endless" && r.Outcome == "error"
	})
}

// TestSlowlorisUpstream: a streamable HTTP upstream sends the response
// headers and then one byte every two seconds, forever. The group's tool
// timeout (3s here) ends the call; while it hangs, calls to another group
// are answered at once; the call is audited with outcome timeout.
//
// SECURITY.md, Network, "Limits": connect, TLS and response-header
// timeouts, and the per-server call timeout ("The timeout applies to remote
// servers too", README).
func TestSlowlorisUpstream(t *testing.T) {
	url := startHostileHTTP(t, "-mode", "http")
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"evil":  {"description": "slowloris", "url": url, "type": "http", "timeout": map[string]any{"tools": "3s"}},
		"other": testServer(t, "other"),
	}))
	m.echoWorks(t, "other")
	var wg sync.WaitGroup
	var res *mcp.CallToolResult
	var elapsed time.Duration
	wg.Go(func() {
		start := time.Now()
		r, err := m.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "evil", "name": "drip"}})
		elapsed = time.Since(start)
		if err != nil {
			t.Errorf("drip: %v", err)
			return
		}
		res = r
	})
	time.Sleep(500 * time.Millisecond)
	for range 5 {
		start := time.Now()
		m.echoWorks(t, "other")
		if d := time.Since(start); d > time.Second {
			t.Errorf("echo on another group took %v while the slowloris call hung", d)
		}
	}
	wg.Wait()
	if res == nil {
		return
	}
	if !res.IsError || !strings.Contains(resultText(res), "timed out") {
		t.Fatalf("the slowloris call: isError=%v %q; want a timeout", res.IsError, resultText(res))
	}
	if elapsed > 10*time.Second {
		t.Errorf("the slowloris call took %v to fail with a 3s timeout", elapsed)
	}
	recs := m.auditLog(t)
	findRecord(t, recs, "the drip call, timed out", func(r audit.Record) bool {
		return r.Event == "tool_call" && r.Group == "evil" && r.Tool == "drip" && r.Outcome == "timeout"
	})
}

// TestRateLimitBurst: echo is limited to 5/s with a burst of 5. A burst of
// 200 calls gets about burst + rate × elapsed through; the rest are refused
// with a retry hint, never reach the upstream, and are audited as limited;
// another tool of the same group is not limited.
//
// SECURITY.md: "Calls" / rate limits (cmd/moat: TestRateLimitBurst).
func TestRateLimitBurst(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "calls.jsonl")
	srv := testServer(t, "test", "-record", rec)
	srv["policy"] = map[string]any{"tools": map[string]any{"echo": map[string]any{"rate": "5/s", "burst": 5}}}
	m := startMoat(t, testutil.WriteConfig(t, dir, map[string]server{"test": srv}))
	m.tools(t, "test")
	allowed, limited := 0, 0
	start := time.Now()
	for range 200 {
		res := m.call(t, "test", "echo", map[string]any{"message": "x"})
		switch {
		case !res.IsError:
			allowed++
		case strings.Contains(resultText(res), "retry"):
			limited++
		default:
			t.Fatalf("unexpected refusal: %q", resultText(res))
		}
	}
	elapsed := time.Since(start).Seconds()
	if most := 5 + int(5*elapsed) + 1; allowed < 5 || allowed > most {
		t.Fatalf("%d calls allowed in %.1fs at 5/s burst 5; want between 5 and %d", allowed, elapsed, most)
	}
	if got := len(recordedCalls(t, rec)); got != allowed {
		t.Fatalf("the upstream saw %d calls; %d were allowed", got, allowed)
	}
	if res := m.call(t, "test", "add", map[string]any{"a": 1, "b": 2}); res.IsError {
		t.Fatalf("another tool is limited too: %q", resultText(res))
	}
	recs := m.auditLog(t)
	n := 0
	for _, r := range recs {
		if r.Event == "tool_call" && r.Tool == "echo" && r.Outcome == "limited" {
			n++
		}
	}
	if n != limited {
		t.Fatalf("the audit log has %d limited echo calls; %d were refused", n, limited)
	}
}

// TestConcurrencyCapIsAuditedAsLimited: with max_concurrent 1, a second
// call while the first runs is refused at once, and the audit log records
// it as limited (a cap reached), not as a policy denial.
func TestConcurrencyCapIsAuditedAsLimited(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "calls.jsonl")
	srv := testServer(t, "test", "-record", rec)
	srv["policy"] = map[string]any{"max_concurrent": 1}
	m := startMoat(t, testutil.WriteConfig(t, dir, map[string]server{"test": srv}))
	m.echoWorks(t, "test")
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Not m.callRaw: t.Fatal must not run outside the test's goroutine.
		m.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool",
			Arguments: map[string]any{"group": "test", "name": "slow", "args": map[string]any{"ms": 3000}}})
	}()
	waitFor(t, "the slow call to reach the upstream", func() bool {
		for _, c := range recordedCalls(t, rec) {
			if strings.Contains(c, `"slow"`) {
				return true
			}
		}
		return false
	}, nil)
	res := m.call(t, "test", "echo", map[string]any{"message": "second"})
	<-done
	if !res.IsError || !strings.Contains(resultText(res), "max_concurrent") {
		t.Fatalf("a second call while one runs under max_concurrent 1: isError=%v %q", res.IsError, resultText(res))
	}
	findRecord(t, m.auditLog(t), "the capped call, recorded as limited", func(r audit.Record) bool {
		return r.Event == "tool_call" && r.Tool == "echo" && r.Outcome == "limited" && r.Rule == "concurrency:max_concurrent"
	})
}
