package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestFortyMiBResultOverHTTP: with max_result_bytes raised to 40 MiB, a
// 40 MiB tool result from a streamable HTTP upstream reaches the client
// whole, through the network guard (whose own bounds follow the server's
// max_message_bytes, 80 MiB here) and the framing behind it.
func TestFortyMiBResultOverHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 40 MiB through three processes")
	}
	const size = 40 << 20
	url := testutil.StartHTTPServer(t, testutil.BuildTestServer(t))
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"remote": map[string]any{"description": "Go test server over HTTP", "url": url,
			"policy": map[string]any{"max_result_bytes": "40MiB"}},
	})
	cmd := exec.Command(testutil.BuildMoat(t), cfg)
	cmd.Env = testutil.MoatEnv(t)
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("moat stderr:\n%s", stderr)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx,
		&mcp.IOTransport{Reader: out, Writer: in, MaxLineLength: 2 * size}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{
		"group": "remote", "name": "large", "args": map[string]any{"bytes": size}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resultText(res); res.IsError || len(got) != size || strings.Trim(got, "x") != "" {
		t.Fatalf("a 40 MiB result: isError=%v, %d bytes (%.200q), want %d bytes of x", res.IsError, len(got), got, size)
	}
}
