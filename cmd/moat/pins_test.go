package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestPinsDiffAfterCommandChange pins issue 20: after only a server's
// command changed, `moat pins diff` printed every tool's whole definition
// as unchanged JSON lines, no "before", and nothing about the server. Now
// it says the identity changed (old and new command), lists the tools held
// for that alone, and shows only what changed in a tool that also changed.
func TestPinsDiffAfterCommandChange(t *testing.T) {
	dir := t.TempDir()
	env := append(testutil.MoatEnv(t), "MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG=")
	oldCmd := testutil.BuildTestServer(t)
	cfg := testutil.WriteConfig(t, dir, map[string]any{"test": testServer(t, "test")})
	if _, stderr, code := moatCLIEnv(t, env, "tools", "--config", cfg); code != exitOK {
		t.Fatalf("moat tools %s: exit %d\n%s", cfg, code, stderr)
	}

	newCmd := filepath.Join(t.TempDir(), "testserver-moved")
	if err := os.Symlink(oldCmd, newCmd); err != nil {
		t.Fatal(err)
	}
	moved := testServer(t, "test")
	moved["command"] = newCmd
	testutil.WriteConfig(t, dir, map[string]any{"test": moved})
	m := startMoatEnv(t, cfg, env)
	m.call(t, "get_dynamic_tools", map[string]any{"group": "test"})
	// Every tool is held now; approve set_description alone, to change echo.
	if out, stderr, code := moatCLIEnv(t, env, "pins", "approve", "test", "set_description"); code != exitOK {
		t.Fatalf("moat pins approve test set_description: exit %d\n%s%s", code, out, stderr)
	}
	testutil.Eventually(t, "set_description to be callable", func() bool {
		return !m.call(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "set_description", "args": map[string]any{"text": "Echoes, now louder."}}).IsError
	})
	testutil.Eventually(t, "echo's new description to be pinned as pending", func() bool {
		out, _, _ := moatCLIEnv(t, env, "pins", "diff", cfg)
		return strings.Contains(out, "louder")
	})

	out, stderr, code := moatCLIEnv(t, env, "pins", "diff", cfg)
	if code != exitOK {
		t.Fatalf("moat pins diff: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"== test: the server's identity changed since its tools were approved",
		`before: command "` + oldCmd + `" args "-name" "test"`,
		`after:  command "` + newCmd + `" args "-name" "test"`,
		"held with an unchanged definition: add, ",
		"== test echo: changed\n   - description: \"Echoes the message back.\"\n   + description: \"Echoes, now louder.\"\n   approve with: moat pins approve test echo\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("moat pins diff lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n > 20 || strings.Contains(out, "inputSchema") {
		t.Errorf("moat pins diff printed %d lines, or whole definitions:\n%s", n, out)
	}
}

// TestPinsDiffArguments: a config path is taken as the config, and a group
// the config does not have is an error that lists the groups (issue 20:
// both answered "no tool is held").
func TestPinsDiffArguments(t *testing.T) {
	env := append(testutil.MoatEnv(t), "MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG=")
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"files": testServer(t, "files"), "notes": testServer(t, "notes")})
	if _, stderr, code := moatCLIEnv(t, env, "tools", "--config", cfg); code != exitOK {
		t.Fatalf("moat tools: exit %d\n%s", code, stderr)
	}
	for _, tt := range []struct {
		args       []string
		code       int
		out, error string
	}{
		{[]string{cfg}, exitOK, "no tool is held", ""},
		{[]string{cfg, "files"}, exitOK, "no tool is held", ""},
		{[]string{"--config", cfg, "nope"}, exitUsage, "", `unknown group "nope" (groups: files, notes)`},
		{[]string{"nope"}, exitUsage, "", `unknown group "nope" (groups: files, notes)`},
		{[]string{filepath.Join(t.TempDir(), "missing.json")}, exitUsage, "", "missing.json"},
	} {
		out, stderr, code := moatCLIEnv(t, env, append([]string{"pins", "diff"}, tt.args...)...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(stderr, tt.error) {
			t.Errorf("moat pins diff %q: exit %d, stdout %q, stderr %q; want exit %d, %q, %q", tt.args, code, out, stderr, tt.code, tt.out, tt.error)
		}
	}
	if _, stderr, code := moatCLIEnv(t, env, "pins", "approve", "nope"); code != exitUsage || !strings.Contains(stderr, `unknown group "nope"`) {
		t.Errorf("moat pins approve nope: exit %d, stderr %q; want 2 and unknown group", code, stderr)
	}
}
