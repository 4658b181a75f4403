package clients

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestInspectorCLI runs the MCP Inspector's CLI mode as its documentation
// tells a user to: the inspector starts moat itself, with -e for its
// environment, runs one method, and prints the result as JSON.
func TestInspectorCLI(t *testing.T) {
	inspector := testutil.NodeBin(t, "mcp-inspector")
	up := upstreams(t)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{"ts": entry("Go test server", up["ts"])})
	moat := testutil.BuildMoat(t)
	env := testutil.MoatEnv(t)
	// -e rejects empty values (MOAT_MANAGED_POLICY=, MOAT_PASSPHRASE=),
	// which reach moat from the inspector's own environment instead. The
	// inspector never reads the server's stderr, so moat must not log
	// much: warn, not debug.
	var envArgs []string
	for _, k := range []string{"HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "DBUS_SESSION_BUS_ADDRESS"} {
		envArgs = append(envArgs, "-e", k+"="+testutil.EnvValue(env, k))
	}
	envArgs = append(envArgs, "-e", "MOAT_LOG=warn")

	run := func(t *testing.T, method ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		args := append(append([]string{"--cli"}, envArgs...), moat, cfg)
		cmd := exec.CommandContext(ctx, inspector, append(args, method...)...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.WaitDelay = 10 * time.Second
		if err := cmd.Run(); err != nil {
			t.Fatalf("mcp-inspector --cli %v: %v\nstdout: %s\nstderr: %s", method, err, clip(stdout.String()), tail(stderr.String()))
		}
		return stdout.Bytes()
	}

	t.Run("tools/list", func(t *testing.T) {
		out := run(t, "--method", "tools/list")
		var res struct{ Tools []struct{ Name string } }
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("output is not a tools/list result (%v): %s", err, clip(string(out)))
		}
		var names []string
		for _, tool := range res.Tools {
			names = append(names, tool.Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"call_dynamic_tool", "get_dynamic_tools"}) {
			t.Errorf("tools = %v, want call_dynamic_tool and get_dynamic_tools", names)
		}
	})

	t.Run("tools/call", func(t *testing.T) {
		out := run(t, "--method", "tools/call", "--tool-name", "call_dynamic_tool",
			"--tool-arg", "group=ts", "--tool-arg", "name=echo", "--tool-arg", `args={"message":"hi"}`)
		var res struct {
			IsError bool
			Content []struct{ Type, Text string }
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("output is not a tools/call result (%v): %s", err, clip(string(out)))
		}
		if res.IsError || len(res.Content) != 1 || res.Content[0].Type != "text" || res.Content[0].Text != "hi" {
			t.Errorf("call_dynamic_tool(ts, echo, hi) = %s, want one text item \"hi\"", clip(string(out)))
		}
	})
}
