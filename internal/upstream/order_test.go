package upstream

import (
	"context"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/testutil"
)

// TestProgressComesBeforeTheResult: a server sends three progress
// notifications and answers at once, over stdio, streamable HTTP (an event
// stream per call) and legacy SSE. go-sdk queues the notifications and
// hands the response straight to the caller; CallTool still returns only
// once the client's progress handler has had all three, every time.
func TestProgressComesBeforeTheResult(t *testing.T) {
	for _, transport := range []config.Transport{config.Stdio, config.HTTP, config.SSE} {
		t.Run(string(transport), func(t *testing.T) {
			s := stdioTestServer(t, "p")
			if transport != config.Stdio {
				url := testutil.StartHTTPServer(t, testutil.BuildTestServer(t), "-transport", string(transport))
				s = remoteServer("p", url, transport)
			}
			var mu sync.Mutex
			var got []float64
			h := startGroupClient(t, s, nil, netguard.Options{}, Client{
				Progress: func(_ context.Context, _ string, p *mcp.ProgressNotificationParams) {
					mu.Lock()
					got = append(got, p.Progress)
					mu.Unlock()
				},
			})
			for i := range 30 {
				mu.Lock()
				got = nil
				mu.Unlock()
				params := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{"steps": 3}}
				params.SetProgressToken("tok")
				if _, err := h.g.CallTool(context.Background(), params); err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				n := len(got)
				mu.Unlock()
				if n != 3 {
					t.Fatalf("call %d: the result came back with %d of its 3 progress notifications handled", i+1, n)
				}
			}
		})
	}
}
