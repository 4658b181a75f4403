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

// TestNotificationsComeBeforeTheResult: a server sends three progress
// notifications, or a log message, and answers at once, over stdio,
// streamable HTTP (an event stream per call) and legacy SSE. go-sdk queues
// the notifications and hands the response straight to the caller;
// CallTool still returns only once the client's handlers have had them,
// every time: a client drops progress that comes after the result, and a
// gateway gives a shared server's log message to the session whose call is
// in progress.
func TestNotificationsComeBeforeTheResult(t *testing.T) {
	for _, transport := range []config.Transport{config.Stdio, config.HTTP, config.SSE} {
		t.Run(string(transport), func(t *testing.T) {
			s := stdioTestServer(t, "p")
			if transport != config.Stdio {
				url := testutil.StartHTTPServer(t, testutil.BuildTestServer(t), "-transport", string(transport))
				s = remoteServer("p", url, transport)
			}
			var mu sync.Mutex
			var progress, logs int
			h := startGroupClient(t, s, nil, netguard.Options{}, Client{
				Progress: func(context.Context, string, *mcp.ProgressNotificationParams) {
					mu.Lock()
					progress++
					mu.Unlock()
				},
				Log: func(context.Context, string, *mcp.LoggingMessageParams) {
					mu.Lock()
					logs++
					mu.Unlock()
				},
			})
			h.m.SetLoggingLevel(context.Background(), "debug")
			handled := func() (int, int) {
				mu.Lock()
				defer mu.Unlock()
				p, l := progress, logs
				progress, logs = 0, 0
				return p, l
			}
			for i := range 30 {
				params := &mcp.CallToolParams{Name: "progress", Arguments: map[string]any{"steps": 3}}
				params.SetProgressToken("tok")
				if _, err := h.g.CallTool(context.Background(), params); err != nil {
					t.Fatal(err)
				}
				if p, _ := handled(); p != 3 {
					t.Fatalf("call %d: the result came back with %d of its 3 progress notifications handled", i+1, p)
				}
				params = &mcp.CallToolParams{Name: "log", Arguments: map[string]any{"level": "info", "message": "m"}}
				if _, err := h.g.CallTool(context.Background(), params); err != nil {
					t.Fatal(err)
				}
				if _, l := handled(); l != 1 {
					t.Fatalf("call %d: the result came back with %d of its 1 log message handled", i+1, l)
				}
			}
		})
	}
}
