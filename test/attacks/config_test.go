package attacks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// configAttack checks a hostile config two ways: moat refuses to start on it
// (exit 2, the reason on stderr, nothing on stdout), and a running moat
// whose config file is replaced by it rejects the reload, keeps serving the
// old config, and records the rejection in the audit log.
//
// Every moat here runs in an empty network namespace: if the check were
// broken, the upstream it would dial does not exist there.
func configAttack(t *testing.T, bad map[string]any, want string) {
	t.Helper()
	netns := netnsWrapper(t)
	dir := t.TempDir()
	badPath := filepath.Join(dir, "bad.json")
	b, _ := json.Marshal(map[string]any{"mcpServers": bad})
	if err := os.WriteFile(badPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := runMoat(t, testutil.MoatEnv(t), "config", "validate", badPath)
	if code != 2 || !strings.Contains(out, want) {
		t.Errorf("moat config validate: exit %d, output %q; want exit 2 and %q", code, out, want)
	}
	code, out = runMoatWith(t, testutil.MoatEnv(t), netns, badPath)
	if code != 2 || !strings.Contains(out, want) {
		t.Errorf("moat serve: exit %d, output %q; want exit 2 and %q", code, out, want)
	}

	cfg := testutil.WriteConfig(t, dir, map[string]server{"good": testServer(t, "good")})
	m := startMoatWith(t, testutil.MoatEnv(t), netns, cfg)
	m.echoWorks(t, "good")
	testutil.ReplaceFile(t, cfg, b)
	waitFor(t, "the reload to be rejected", func() bool { return strings.Contains(m.stderr.String(), "config reload rejected") }, nil)
	m.echoWorks(t, "good")
	recs := m.auditLog(t)
	findRecord(t, recs, "the rejected reload", func(r audit.Record) bool {
		return r.Event == "config_reload" && r.Detail["accepted"] == "false" && strings.Contains(r.Detail["error"], want)
	})
}

// TestPathTraversalInServerName: a server named "../x" (which would name
// files and audit entries outside their place) is a config error, at start
// and on reload.
//
// SECURITY.md, overview row "config: undefined ${VAR} sent literally,
// duplicate keys silently merged, any server name".
func TestPathTraversalInServerName(t *testing.T) {
	configAttack(t, map[string]any{
		"../x": map[string]any{"description": "escapes", "command": "/bin/true"},
	}, "/mcpServers/..~1x")
}

// TestPlainHTTPUpstream: an http:// upstream that is not loopback is a
// config error (exit 2), at start and on reload; the address is never
// dialled (the config is refused before any connection is attempted).
//
// SECURITY.md, overview row "plain http:// accepted, even with bearer
// tokens" and Network, "HTTPS only".
func TestPlainHTTPUpstream(t *testing.T) {
	// 192.0.2.0/24 is TEST-NET-1: even a broken check would dial nothing real.
	configAttack(t, map[string]any{
		"remote": map[string]any{"description": "plain http", "url": "http://192.0.2.10/mcp"},
	}, "allow_insecure_http")
}
