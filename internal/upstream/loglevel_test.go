package upstream

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/testutil"
)

// TestLevelSetWhileConnectingReachesTheServer: a client sets its log level
// right after it initializes (Claude Desktop does), often while a server
// is still starting. The level must reach that server once it is ready:
// otherwise it sends no log messages at all (an MCP server sends none
// until it is given a level).
func TestLevelSetWhileConnectingReachesTheServer(t *testing.T) {
	var (
		mu     sync.Mutex
		levels []mcp.LoggingLevel
	)
	listing := make(chan struct{})
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	var once sync.Once
	srv := mcp.NewServer(&mcp.Implementation{Name: "slow-lister", Version: "1"}, &mcp.ServerOptions{
		Capabilities: &mcp.ServerCapabilities{Logging: &mcp.LoggingCapabilities{}, Tools: &mcp.ToolCapabilities{}},
	})
	srv.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			switch method {
			case "tools/list":
				// Hold the connection in its listing phase until the
				// test has set a level.
				once.Do(func() { close(listing) })
				<-release
			case "logging/setLevel":
				mu.Lock()
				levels = append(levels, req.GetParams().(*mcp.SetLoggingLevelParams).Level)
				mu.Unlock()
			}
			return next(ctx, method, req)
		}
	})
	ts := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(ts.Close)

	logs := &testutil.SyncBuffer{}
	m := NewManager(Options{
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ConnectTimeout: 30 * time.Second,
		GracePeriod:    2 * time.Second,
		HTTPClient: func(s *config.Server) (*http.Client, error) {
			return netguard.NewClient(s.URL, &netguard.Options{})
		},
	})
	s := server("slow", config.HTTP)
	s.URL = ts.URL
	m.Apply(&config.Config{Servers: map[string]*config.Server{s.Name: s}})
	m.Open(Client{})
	t.Cleanup(func() {
		unblock()
		m.Close()
		if t.Failed() {
			t.Logf("manager log:\n%s", logs.String())
		}
	})

	select {
	case <-listing:
	case <-time.After(30 * time.Second):
		t.Fatal("the server was never asked for its tools")
	}
	m.SetLoggingLevel(context.Background(), "info")
	unblock()
	testutil.Eventually(t, "the level set while connecting to reach the server", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(levels, "info")
	})
}
