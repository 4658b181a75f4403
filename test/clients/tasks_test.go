package clients

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestTaskToolFailsClearly: go-sdk, and so Moat, does not implement the
// tasks extension. A tool that requires a task (server-everything's
// simulate-research-query, taskSupport "required") is called as a plain
// call, and the model gets its server's own refusal, not an empty result.
// The client here asks for 2026-07-28, on the real binary.
func TestTaskToolFailsClearly(t *testing.T) {
	requireSDK(t)
	up := upstreams(t)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"everything": entry("MCP reference server", up["everything"]),
	})
	cmd := exec.Command(testutil.BuildMoat(t), cfg)
	cmd.Env = testutil.MoatEnv(t)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "tasks-test", Version: "1"}, nil).
		Connect(t.Context(), &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting to moat: %v", err)
	}
	defer cs.Close()
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Errorf("negotiated %q with a go-sdk client, want 2026-07-28", v)
	}
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{
		"group": "everything", "name": "simulate-research-query", "args": map[string]any{"topic": "moats"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var text string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text += tc.Text
		}
	}
	if !res.IsError || !strings.Contains(text, "requires task augmentation") {
		t.Fatalf("a task-only tool through moat: isError=%v %q, want the server's refusal", res.IsError, text)
	}
}
