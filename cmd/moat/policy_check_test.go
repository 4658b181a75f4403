package main

import (
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestPolicyCheckShowsTheTimeoutCallsGet pins issue 20: `moat policy check`
// showed the policy's timeout (1m by default) where calls time out at the
// server's timeout.tools (30 s by default). It shows the shorter of the two,
// and a call really ends there.
func TestPolicyCheckShowsTheTimeoutCallsGet(t *testing.T) {
	env := append(testutil.MoatEnv(t), "MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG=")
	quick := testServer(t, "quick")
	quick["timeout"] = map[string]any{"tools": "1"}
	capped := testServer(t, "capped")
	capped["timeout"] = map[string]any{"tools": "2min"}
	capped["policy"] = map[string]any{"timeout": "45s"}
	long := testServer(t, "long")
	long["timeout"] = map[string]any{"tools": "5min"}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"default": testServer(t, "default"), "quick": quick, "capped": capped, "long": long})
	out, stderr, code := moatCLIEnv(t, env, "policy", "check", cfg)
	if code != exitOK {
		t.Fatalf("moat policy check: exit %d\n%s", code, stderr)
	}
	for group, want := range map[string]string{"default": "timeout 30s", "quick": "timeout 1s", "capped": "timeout 45s", "long": "timeout 1m"} {
		_, block, _ := strings.Cut(out, "== "+group+" ")
		block, _, _ = strings.Cut(block, "\n== ")
		if !strings.Contains(block, "slow: allowed") || !strings.Contains(block, want+"\n") {
			t.Errorf("policy check of group %s does not show %q:\n%s", group, want, block)
		}
	}
	out, stderr, _ = moatCLIEnv(t, env, "call", "--config", cfg, "quick", "slow", `{"ms": 5000}`)
	if !strings.Contains(out+stderr, "did not answer within 1s") {
		t.Errorf("a 5 s call to group quick did not time out after 1s:\n%s%s", out, stderr)
	}
}
