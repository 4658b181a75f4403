package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/guard"
)

// TestSelfLoginRefusals: a login link is offered only to a person on the
// gateway's machine (a Unix socket peer) whose identity is one person, for
// a per-user server of their own; each refusal says why and names the
// admin's command, and no login starts.
func TestSelfLoginRefusals(t *testing.T) {
	secretEnv(t)
	cfg := filepath.Join(t.TempDir(), "moat.json")
	body := `{"mcpServers": {
  "linear": {"description": "d", "url": "https://mcp.linear.example/mcp", "per_user": true},
  "shared": {"description": "d", "url": "https://mcp.shared.example/mcp"}},
  "gateway": {"identities": {"bob": {"uids": [1001], "tokens": ["bobs-laptop"]}, "devs": {"unix_groups": ["devs"]}}}}`
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	sl := newSelfLogins(slog.Default(), cfg, nil)
	defer sl.close()
	for _, tt := range []struct {
		name  string
		id    guard.Identity
		group string
		want  string
	}{
		{"over HTTP", guard.Identity{Name: "bob", Principal: "token bobs-laptop", UID: -1}, "linear",
			"a login link is offered only to a session through the gateway's socket (moat connect), since the login's browser redirect comes back to the gateway's machine; the gateway's user can log identity \"bob\" in with `moat auth login --identity bob linear`"},
		{"a group identity", guard.Identity{Name: "devs", Principal: "uid 1002", UID: 1002}, "linear",
			"identity \"devs\" is matched by unix_groups, so its login would serve everyone in it; the gateway's user can log identity \"devs\" in with `moat auth login --identity devs linear`"},
		{"a shared server", guard.Identity{Name: "bob", Principal: "uid 1001", UID: 1001}, "shared", `group "shared" takes no login of its own for identity "bob"`},
	} {
		_, _, err := sl.login(context.Background(), &tt.id, tt.group)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v\nwant %q", tt.name, err, tt.want)
		}
	}
	if len(sl.pending) != 0 {
		t.Errorf("%d logins started", len(sl.pending))
	}
}
