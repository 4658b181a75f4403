package metrics

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/upstream"
)

// TestLayerCountsAsTheAuditLogClassifies: each call is counted under the
// outcome its audit record has, and a refusal under its layer and the kind
// of its rule, never the part that names a tool or an argument.
func TestLayerCountsAsTheAuditLogClassifies(t *testing.T) {
	m := New()
	results := []struct {
		res *guard.Result
		err error
	}{
		{&guard.Result{Tool: &mcp.CallToolResult{}}, nil},
		{&guard.Result{Tool: &mcp.CallToolResult{IsError: true}}, nil},
		{nil, &guard.Denial{Layer: guard.LayerPolicy, Rule: "args:write_file.path:prefix"}},
		{nil, &guard.Denial{Layer: guard.LayerRate, Rule: "rate"}},
		{nil, fmt.Errorf("upstream: %w", guard.ErrTimeout)},
		{nil, context.Canceled},
		{nil, errors.New("connection lost")},
	}
	i := 0
	h := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) {
		r := results[i]
		i++
		return r.res, r.err
	}, m.Layer())
	for range results {
		_, _ = h(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "files", Name: "write_file"})
	}
	for outcome, want := range map[string]float64{"ok": 1, "error": 2, "denied": 1, "limited": 1, "timeout": 1, "cancelled": 1} {
		if got := testutil.ToFloat64(m.calls.WithLabelValues("files", "tool", outcome)); got != want {
			t.Errorf("calls{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	if got := testutil.ToFloat64(m.refusals.WithLabelValues("policy", "args")); got != 1 {
		t.Errorf("refusals{policy, args} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.refusals.WithLabelValues("rate", "rate")); got != 1 {
		t.Errorf("refusals{rate, rate} = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(m.refusals); n != 2 {
		t.Errorf("%d refusal series, want 2", n)
	}
}

// TestLayerAllocatesNothing: once a group's series exist, counting a call
// costs no allocation.
func TestLayerAllocatesNothing(t *testing.T) {
	m := New()
	res := &guard.Result{Tool: &mcp.CallToolResult{}}
	h := m.Layer()(func(context.Context, *guard.Call) (*guard.Result, error) { return res, nil })
	c := &guard.Call{Kind: guard.KindTool, Group: "files"}
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { _, _ = h(ctx, c) }); n != 0 {
		t.Errorf("%v allocations per call", n)
	}
}

// TestUpstreamEvents: ready and unavailable set the group's up gauge;
// every child start after the first is a restart; a per-user server's
// copies (events naming an identity) are series of their own, and one
// going idle is down (seen failing with copies sharing the group's series).
func TestUpstreamEvents(t *testing.T) {
	m := New()
	for _, kind := range []string{"child_start", "upstream_ready", "child_exit", "upstream_unavailable", "child_start"} {
		m.Upstream(upstream.Event{Group: "files", Kind: kind})
	}
	if got := testutil.ToFloat64(m.up.WithLabelValues("files", "")); got != 0 {
		t.Errorf("up = %v after upstream_unavailable, want 0", got)
	}
	if got := testutil.ToFloat64(m.restarts.WithLabelValues("files", "")); got != 1 {
		t.Errorf("restarts = %v, want 1", got)
	}
	m.Upstream(upstream.Event{Group: "files", Kind: "upstream_ready"})
	if got := testutil.ToFloat64(m.up.WithLabelValues("files", "")); got != 1 {
		t.Errorf("up = %v after upstream_ready, want 1", got)
	}

	alice, bob := map[string]string{"identity": "alice"}, map[string]string{"identity": "bob"}
	for _, e := range []upstream.Event{
		{Group: "gh", Kind: "child_start", Detail: alice}, {Group: "gh", Kind: "upstream_ready", Detail: alice},
		{Group: "gh", Kind: "child_start", Detail: bob}, {Group: "gh", Kind: "upstream_ready", Detail: bob},
		{Group: "gh", Kind: "upstream_idle", Detail: bob},
	} {
		m.Upstream(e)
	}
	if a, b := testutil.ToFloat64(m.up.WithLabelValues("gh", "alice")), testutil.ToFloat64(m.up.WithLabelValues("gh", "bob")); a != 1 || b != 0 {
		t.Errorf("up: alice's copy %v (want 1), bob's idle copy %v (want 0)", a, b)
	}
	if n := testutil.CollectAndCount(m.restarts); n != 1 {
		t.Errorf("restarts has %d series, want files' only: each copy's first start is no restart", n)
	}

	// Two people of one identity (OIDC groups) have a copy each: the
	// series counts the copies ready, and one going idle leaves the other
	// counted (seen failing with the last event's state as the value).
	dev1 := map[string]string{"identity": "devs", "principal": "oidc https://idp u-1"}
	dev2 := map[string]string{"identity": "devs", "principal": "oidc https://idp u-2"}
	for _, e := range []upstream.Event{
		{Group: "gh", Kind: "child_start", Detail: dev1}, {Group: "gh", Kind: "upstream_ready", Detail: dev1},
		{Group: "gh", Kind: "child_start", Detail: dev2}, {Group: "gh", Kind: "upstream_ready", Detail: dev2},
	} {
		m.Upstream(e)
	}
	if got := testutil.ToFloat64(m.up.WithLabelValues("gh", "devs")); got != 2 {
		t.Errorf("up of devs' two ready copies = %v, want 2", got)
	}
	m.Upstream(upstream.Event{Group: "gh", Kind: "upstream_idle", Detail: dev2})
	if got := testutil.ToFloat64(m.up.WithLabelValues("gh", "devs")); got != 1 {
		t.Errorf("up after one of devs' copies went idle = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(m.restarts); n != 1 {
		t.Errorf("restarts has %d series, want files' only: each person's first start is no restart", n)
	}

	// A reload that removes gh drops its copies' up series, not files'
	// (seen failing with the series kept).
	m.Retain(&config.Config{Servers: map[string]*config.Server{"files": {Name: "files", Enabled: true}}})
	if n := testutil.CollectAndCount(m.up); n != 1 || testutil.ToFloat64(m.up.WithLabelValues("files", "")) != 1 {
		t.Errorf("after gh was removed: %d up series, want files' only", n)
	}
}

// TestNilCountsNothing: without a metrics block, every hook is a no-op and
// the layer is no layer.
func TestNilCountsNothing(t *testing.T) {
	var m *Metrics
	m.Refused(guard.LayerPolicy, "deny")
	m.Upstream(upstream.Event{Group: "g", Kind: "child_start"})
	m.AuthRefused(AuthNoToken)
	m.SessionStarted("alice")()
	m.Audit(nil)
	called := false
	h := m.Layer()(func(context.Context, *guard.Call) (*guard.Result, error) { called = true; return nil, nil })
	_, _ = h(context.Background(), &guard.Call{})
	if !called {
		t.Error("a nil Metrics's layer does not call next")
	}
}
