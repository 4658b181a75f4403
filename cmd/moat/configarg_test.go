package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestConfigArgument pins issue 20: `moat tools CONFIG` (positional, as
// `moat doctor CONFIG` takes it) printed the full help. Every command that
// reads the config takes it as --config FILE or as its first argument when
// that ends in .json or .jsonc, and never falls back to printing the help.
func TestConfigArgument(t *testing.T) {
	env := append(testutil.MoatEnv(t), "MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG=")
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
	echo := `{"message": "hi"}`
	for _, tt := range []struct {
		args []string
		want string // on stdout
	}{
		{[]string{"tools", cfg}, "Echoes the message back."},
		{[]string{"tools", cfg, "test"}, "Echoes the message back."},
		{[]string{"tools", "--config", cfg, "test"}, "Echoes the message back."},
		{[]string{"tools", "test", "--config=" + cfg}, "Echoes the message back."},
		{[]string{"call", cfg, "test", "echo", echo}, `"text": "hi"`},
		{[]string{"call", "--config", cfg, "test", "echo", echo}, `"text": "hi"`},
		{[]string{"policy", "check", cfg}, "echo: allowed"},
		{[]string{"policy", "check", "--config", cfg}, "echo: allowed"},
		{[]string{"config", "validate", cfg}, "config OK"},
		{[]string{"config", "validate", "--config", cfg}, "config OK"},
		{[]string{"pins", "diff", cfg}, "no tool is held"},
		{[]string{"pins", "diff", "--config", cfg, "test"}, "no tool is held"},
	} {
		out, stderr, code := moatCLIEnv(t, env, tt.args...)
		if code != exitOK || !strings.Contains(out, tt.want) || strings.Contains(stderr, "Usage:") {
			t.Errorf("moat %s: exit %d, stdout %.300q, stderr %.300q; want 0 and %q", strings.Join(tt.args, " "), code, out, stderr, tt.want)
		}
	}
}

func TestConfigArg(t *testing.T) {
	for _, tt := range []struct {
		in, cfg, rest []string
	}{
		{[]string{"a.json", "g"}, []string{"a.json"}, []string{"g"}},
		{[]string{"a.jsonc"}, []string{"a.jsonc"}, nil},
		{[]string{"g", "a.json"}, nil, []string{"g", "a.json"}}, // only the first argument
		{[]string{"g", "--config", "x"}, []string{"x"}, []string{"g"}},
		{[]string{"--config=x", "b.json"}, []string{"x"}, []string{"b.json"}},
		{[]string{"files"}, nil, []string{"files"}},
	} {
		cfg, rest := configArg(tt.in)
		if !slices.Equal(cfg, tt.cfg) || !slices.Equal(rest, tt.rest) {
			t.Errorf("configArg(%q) = %q, %q; want %q, %q", tt.in, cfg, rest, tt.cfg, tt.rest)
		}
	}
}

// TestConfigValidatePerUser: `moat config validate` and `moat pins diff`
// do not demand a shared secret of a per-user server when the config names
// gateway identities (each holds its own), and do when it names none (stdio
// serve uses the shared one); seen failing with the shared load for both.
func TestConfigValidatePerUser(t *testing.T) {
	env := append(testutil.MoatEnv(t), "MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG=")
	const server = `"kb": {"description": "d", "url": "https://kb.example.com/mcp", "per_user": true,
		"headers": {"Authorization": "Bearer ${secret:kb-token}"}}`
	dir := t.TempDir()
	gateway := filepath.Join(dir, "gateway.json")
	stdio := filepath.Join(dir, "stdio.json")
	for p, body := range map[string]string{
		gateway: `{"mcpServers": {` + server + `}, "gateway": {"identities": {"alice": {"uids": [1000]}}}}`,
		stdio:   `{"mcpServers": {` + server + `}}`,
	} {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"config", "validate", gateway}, {"pins", "diff", gateway}} {
		if out, stderr, code := moatCLIEnv(t, env, args...); code != exitOK {
			t.Errorf("moat %s: exit %d, stdout %.300q, stderr %.300q; want 0", strings.Join(args, " "), code, out, stderr)
		}
	}
	if _, stderr, code := moatCLIEnv(t, env, "config", "validate", stdio); code == exitOK || !strings.Contains(stderr, "moat secret set kb-token") {
		t.Errorf("moat config validate without identities: exit %d, stderr %.400q; want the shared secret demanded", code, stderr)
	}
}
