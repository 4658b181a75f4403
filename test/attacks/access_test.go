package attacks

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// TestResourceAndPromptPolicy: the policy allows and denies resources by URI
// and prompts by name, as it does tools (on 588eb74 it could not: a
// "resources" or "prompts" key was a config error). What it denies is not
// listed, not read, not subscribed, not got and not completed; every
// refusal is audited, and the upstream never sees the request.
func TestResourceAndPromptPolicy(t *testing.T) {
	s := testServer(t, "test")
	s["policy"] = map[string]any{
		"resources": map[string]any{"deny": []string{"test://static/binary", "test://items/*"}},
		"prompts":   map[string]any{"deny": []string{"greet"}},
	}
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{"test": s}))
	ctx := t.Context()
	// go-sdk's client of 2026-07-28 opens the subscription as a listen
	// stream and does not wait for it: its refusal shows in the audit log.
	if err := m.cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://static/binary"}); err != nil {
		t.Logf("subscribe: %v", err)
	}

	rs, err := m.cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, r := range rs.Resources {
		uris = append(uris, r.URI)
	}
	if !slices.Contains(uris, "test://static/hello") || slices.Contains(uris, "test://static/binary") {
		t.Errorf("resources/list shows %v, want hello and not the denied binary", uris)
	}
	ts, err := m.cs.ListResourceTemplates(ctx, nil)
	if err != nil || len(ts.ResourceTemplates) != 0 {
		t.Errorf("resources/templates/list: %v %v, want none (test://items/* is denied)", ts, err)
	}
	ps, err := m.cs.ListPrompts(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps.Prompts {
		if p.Name == "greet" {
			t.Errorf("prompts/list shows the denied prompt greet")
		}
	}

	for _, uri := range []string{"test://static/binary", "test://items/42"} {
		if _, err := m.cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri}); err == nil || !strings.Contains(err.Error(), "deny rule") {
			t.Errorf("reading the denied %s: %v, want the policy's refusal", uri, err)
		}
	}
	if r, err := m.cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static/hello"}); err != nil || r.Contents[0].Text != "hello from test" {
		t.Errorf("reading the allowed hello: %v %v", r, err)
	}
	if _, err := m.cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "Ada"}}); err == nil || !strings.Contains(err.Error(), "deny rule") {
		t.Errorf("getting the denied prompt: %v, want the policy's refusal", err)
	}
	_, err = m.cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/prompt", Name: "greet"}, Argument: mcp.CompleteParamsArgument{Name: "name", Value: "a"}})
	if err == nil || !strings.Contains(err.Error(), "deny rule") {
		t.Errorf("completing the denied prompt: %v, want the policy's refusal", err)
	}

	log := auditPath(m.env)
	waitFor(t, "the refused subscription in the audit log", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), `"resource_subscribe"`)
	}, func() string { return "" })
	recs := m.auditLog(t)
	for _, want := range []struct{ event, what string }{
		{"resource_subscribe", "test://static/binary"},
		{"resource_read", "test://static/binary"},
		{"resource_read", "test://items/42"},
		{"prompt_get", "greet"},
		{"completion", "greet"},
	} {
		findRecord(t, recs, want.event+" "+want.what+" denied by the policy", func(r audit.Record) bool {
			return r.Event == want.event && r.Tool == want.what && r.Decision == "deny" && strings.HasPrefix(r.Rule, "policy:")
		})
	}
	findRecord(t, recs, "the allowed read", func(r audit.Record) bool {
		return r.Event == "resource_read" && r.Tool == "test://static/hello" && r.Outcome == audit.OutcomeOK
	})
	if strings.Contains(m.stderr.String(), "subscribe test://static/binary") {
		t.Error("the denied subscription reached the upstream")
	}
}
