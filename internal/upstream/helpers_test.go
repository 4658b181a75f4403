package upstream

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/testutil"
)

// events records what a Manager reports.
type events struct {
	mu   sync.Mutex
	list []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, ev)
}

func (e *events) of(kind string) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.list {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// harness is one Manager with one group, connected.
type harness struct {
	m      *Manager
	g      *Group
	events *events
	logs   *testutil.SyncBuffer
}

// startGroup runs s through a Manager and waits until it is ready. oauth
// may be nil. Children start through the real sandbox launcher.
func startGroup(t *testing.T, s *config.Server, oauth auth.OAuthHandler) *harness {
	t.Helper()
	return startGroupNet(t, s, oauth, netguard.Options{})
}

// startGroupNet is startGroup with netguard options of the test's own (the
// configured headers are added).
func startGroupNet(t *testing.T, s *config.Server, oauth auth.OAuthHandler, nopts netguard.Options) *harness {
	t.Helper()
	return startGroupClient(t, s, oauth, nopts, Client{})
}

// startGroupClient is startGroupNet for a client with c's capabilities and
// handlers.
func startGroupClient(t *testing.T, s *config.Server, oauth auth.OAuthHandler, nopts netguard.Options, c Client) *harness {
	t.Helper()
	if s.Type == config.Stdio {
		sandbox.LauncherPath = testutil.BuildMoat(t)
	}
	h := &harness{events: &events{}, logs: &testutil.SyncBuffer{}}
	h.m = NewManager(Options{
		Logger:         slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ConnectTimeout: 10 * time.Second,
		GracePeriod:    2 * time.Second,
		Backoff:        []time.Duration{200 * time.Millisecond},
		RetryEvery:     200 * time.Millisecond,
		OnEvent:        h.events.add,
		HTTPClient: func(s *config.Server) (*http.Client, error) {
			o := nopts
			o.Headers = s.Headers
			return netguard.NewClient(s.URL, &o)
		},
		OAuth: func(*config.Server) (auth.OAuthHandler, error) { return oauth, nil },
	})
	h.m.Apply(&config.Config{Servers: map[string]*config.Server{s.Name: s}})
	h.m.Open(c)
	t.Cleanup(func() {
		h.m.Close()
		if t.Failed() {
			t.Logf("manager log:\n%s", h.logs.String())
		}
	})
	g, ok := h.m.Group(s.Name)
	if !ok {
		t.Fatalf("no group %q", s.Name)
	}
	h.g = g
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := g.Session(ctx); err != nil {
		t.Fatalf("group %q did not connect: %v\n%s", s.Name, err, h.logs.String())
	}
	return h
}

// server is a config.Server as the loader would fill it in.
func server(name string, typ config.Transport) *config.Server {
	return &config.Server{
		Name: name, Description: "test " + name, Type: typ, Enabled: true,
		Features:        config.Features{Tools: true, Resources: true, Prompts: true},
		Timeout:         config.Timeouts{Tools: 60 * time.Second, Resources: 10 * time.Second, Prompts: 10 * time.Second},
		MaxMessageBytes: config.DefaultMaxMessageBytes,
	}
}

// call runs a tool through the group, as the proxy does.
func (h *harness) call(t *testing.T, tool string, args map[string]any) (string, error) {
	t.Helper()
	res, err := h.g.CallTool(context.Background(), &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return "", err
	}
	var text string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text += tc.Text
		}
	}
	if res.IsError {
		t.Fatalf("%s returned a tool error: %s", tool, text)
	}
	return text, nil
}

func (h *harness) mustCall(t *testing.T, tool string, args map[string]any) string {
	t.Helper()
	text, err := h.call(t, tool, args)
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return text
}
