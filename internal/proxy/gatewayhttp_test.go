package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/redact"
	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/upstream"
)

// httpGateway serves gw's Streamable HTTP handler. The test's identity
// header stands for the authentication cmd/moat puts in front of it;
// sessions of "a" see group alpha only. It records what the handler told
// it (sessions started and ended, refusals) and every byte it sent.
type httpGateway struct {
	url    string
	mu     sync.Mutex
	events []string
	wire   bytes.Buffer
	// listening counts flushes of GET streams: go-sdk flushes a session's
	// stream for notifications once it is set up, and a notification
	// sent before is lost (go-sdk keeps none without an EventStore).
	listening int
}

func (h *httpGateway) record(e string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

func (h *httpGateway) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

func serveHTTP(t *testing.T, gw *proxy.Gateway) *httpGateway {
	t.Helper()
	hg := &httpGateway{}
	ctx, cancel := context.WithCancel(context.Background())
	h := gw.HTTP(ctx, proxy.HTTPOptions{
		Identity: func(r *http.Request) *guard.Identity {
			if n := r.Header.Get("X-Test-Identity"); n != "" {
				return &guard.Identity{Name: n, UID: -1, GID: -1, PID: -1}
			}
			return nil
		},
		Session: func(id *guard.Identity) proxy.SessionOptions {
			so := proxy.SessionOptions{}
			if id.Name == "a" {
				so.Visible = func(g string) bool { return g == "alpha" }
			}
			return so
		},
		Started: func(so proxy.SessionOptions, _ *http.Request) { hg.record("start " + so.Identity.Name) },
		Ended:   func(so proxy.SessionOptions, _ time.Duration) { hg.record("end " + so.Identity.Name) },
		Refused: func(_ *http.Request, id *guard.Identity, reason string) {
			hg.record("refused " + id.Name + ": " + reason)
		},
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&teeWriter{ResponseWriter: w, hg: hg, listen: r.Method == http.MethodGet}, r)
	}))
	t.Cleanup(func() {
		cancel()
		srv.CloseClientConnections()
		srv.Close()
	})
	hg.url = srv.URL
	return hg
}

// teeWriter keeps a copy of what the gateway wrote to the wire.
type teeWriter struct {
	http.ResponseWriter
	hg     *httpGateway
	listen bool // a GET: the session's stream for what is not an answer
}

func (w *teeWriter) Write(b []byte) (int, error) {
	w.hg.mu.Lock()
	w.hg.wire.Write(b)
	w.hg.mu.Unlock()
	return w.ResponseWriter.Write(b)
}

func (w *teeWriter) Flush() {
	w.ResponseWriter.(http.Flusher).Flush()
	if w.listen {
		w.hg.mu.Lock()
		w.hg.listening++
		w.hg.mu.Unlock()
	}
}

// asIdentity adds the test's identity header to every request.
type asIdentity struct {
	name string
}

func (a *asIdentity) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Test-Identity", a.name)
	r.Header.Set("Authorization", "Bearer test") // what cmd/moat verified
	return http.DefaultTransport.RoundTrip(r)
}

func httpSession(t *testing.T, hg *httpGateway, name string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "http-client", Version: "1"}, opts).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: hg.url, HTTPClient: &http.Client{Transport: &asIdentity{name: name}}}, nil)
	if err != nil {
		t.Fatalf("connecting as %s: %v", name, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// TestGatewayHTTPSessions: an HTTP session is a gateway session like a
// socket's: shown what its identity may see, counted in the gateway's
// sessions while it lasts, and gone (with its end told) once the client
// ends it with DELETE.
func TestGatewayHTTPSessions(t *testing.T) {
	gw := startGateway(t, cfgOf(stdio(t, "alpha"), stdio(t, "beta")))
	hg := serveHTTP(t, gw)
	a := httpSession(t, hg, "a", nil)
	b := httpSession(t, hg, "b", nil)
	if diff := cmp.Diff([]any{"alpha"}, groupEnum(t, &client{cs: a})); diff != "" {
		t.Errorf("session a's groups (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{"alpha", "beta"}, groupEnum(t, &client{cs: b})); diff != "" {
		t.Errorf("session b's groups (-want +got):\n%s", diff)
	}
	// A request that begins a session go-sdk does not keep (one that is
	// no initialize) ends it once answered: it may be counted a moment.
	testutil.Eventually(t, "the gateway to count the 2 sessions", func() bool { return gw.Sessions() == 2 })
	a.Close() // DELETE
	testutil.Eventually(t, "session a's end", func() bool { return gw.Sessions() == 1 })
	testutil.Eventually(t, "session a's end to be told", func() bool {
		for _, e := range hg.seen() {
			if e == "end a" {
				return true
			}
		}
		return false
	})
	if diff := cmp.Diff([]string{"start a", "start b", "end a"}, hg.seen()); diff != "" {
		t.Errorf("sessions told (-want +got):\n%s", diff)
	}
}

// TestGatewayHTTPSessionBelongsToItsIdentity: a request naming another
// identity's session is refused (403) and told, and reaches nothing.
func TestGatewayHTTPSessionBelongsToItsIdentity(t *testing.T) {
	gw := startGateway(t, cfgOf(stdio(t, "alpha")))
	hg := serveHTTP(t, gw)
	a := httpSession(t, hg, "a", nil)
	testutil.Eventually(t, "session a's start", func() bool { return len(hg.seen()) > 0 })
	body := `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`
	req, _ := http.NewRequest(http.MethodPost, hg.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Mcp-Session-Id", a.ID())
	req.Header.Set("X-Test-Identity", "b")
	req.Header.Set("Authorization", "Bearer test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || strings.Contains(string(got), "call_dynamic_tool") {
		t.Errorf("b on a's session: %d %q; want 403 and no listing", resp.StatusCode, got)
	}
	if diff := cmp.Diff([]string{"start a", "refused b: the session belongs to another identity or subject"}, hg.seen()); diff != "" {
		t.Errorf("told (-want +got):\n%s", diff)
	}
	// a's own session goes on.
	if _, err := a.ListTools(context.Background(), nil); err != nil {
		t.Errorf("a's session after the refusal: %v", err)
	}
}

// TestGatewayHTTPClientBoundary: what an upstream sends an HTTP client
// passes Options.Outbound, in a result and in a notification alike: a
// secret Moat resolved never reaches the wire. The notification reaches
// the session whose call it belongs to, not another.
func TestGatewayHTTPClientBoundary(t *testing.T) {
	const secret = "sk-http-canary-8e2f61c0d9"
	useMoatLauncher(t)
	rd := redact.New()
	rd.Add("leaky-token", secret)
	gw := proxy.NewGateway(proxy.Options{
		Logger:   testLogger(t),
		Outbound: rd.Message,
		Upstream: upstream.Options{ConnectTimeout: 10 * time.Second, GracePeriod: 2 * time.Second,
			Backoff: []time.Duration{200 * time.Millisecond}, RetryEvery: 200 * time.Millisecond},
	})
	leaky := stdio(t, "leaky", "-leak-env", "LEAK_TOKEN")
	leaky.Env = map[string]string{"LEAK_TOKEN": secret}
	gw.Apply(cfgOf(leaky))
	gw.Open()
	t.Cleanup(gw.Close)
	hg := serveHTTP(t, gw)

	var mu sync.Mutex
	var logged []string
	cs := httpSession(t, hg, "b", &mcp.ClientOptions{LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, r.Params.Data.(string))
	}})
	// A second session, which must not get the first's notifications.
	var otherLogged []string
	other := httpSession(t, hg, "c", &mcp.ClientOptions{LoggingMessageHandler: func(_ context.Context, r *mcp.LoggingMessageRequest) {
		mu.Lock()
		defer mu.Unlock()
		otherLogged = append(otherLogged, r.Params.Data.(string))
	}})
	testutil.Eventually(t, "both sessions' notification streams", func() bool {
		hg.mu.Lock()
		defer hg.mu.Unlock()
		return hg.listening >= 2
	})
	ctx := context.Background()
	c := &client{cs: cs}
	// A resource read's result holds the secret, as does the log message
	// the leak tool sends while it runs. The read waits for the group to
	// be ready, so the log level below reaches its server.
	res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "leaky://leak/described"})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Contents[0].Text; !strings.HasPrefix(got, "Holds ") {
		t.Errorf("the resource reads %q", got)
	}
	for _, s := range []*mcp.ClientSession{cs, other} {
		if err := s.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			t.Fatal(err)
		}
	}
	c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "leaky", "name": "leak", "args": map[string]any{"channel": "log"}})
	testutil.Eventually(t, "the log message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(logged) > 0
	})
	// Anything sent to the other session's stream was sent before the
	// first's arrived; a request of its own flushes its stream's order.
	if _, err := other.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(otherLogged) > 0 {
		t.Errorf("the other session got the first's log messages: %q", otherLogged)
	}
	mu.Unlock()
	hg.mu.Lock()
	wire := hg.wire.String()
	hg.mu.Unlock()
	if strings.Contains(wire, secret) {
		i := strings.Index(wire, secret)
		t.Errorf("the secret reached the HTTP client: …%s…", wire[max(0, i-200):min(len(wire), i+100)])
	}
	if !strings.Contains(wire, "token=") || !strings.Contains(wire, "Holds ") {
		t.Errorf("the wire does not show the log message and the result, so the test proves nothing:\n%.2000s", wire)
	}
}

// TestGatewayHTTPWaitOutlastsTheSessions: once the gateway's context is
// done, Wait returns only after every session's Ended has returned, so
// cmd/moat closes the audit log after the last session_end record.
func TestGatewayHTTPWaitOutlastsTheSessions(t *testing.T) {
	gw := startGateway(t, cfgOf(stdio(t, "alpha")))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	var mu sync.Mutex
	entered := 0
	h := gw.HTTP(ctx, proxy.HTTPOptions{
		Identity: func(*http.Request) *guard.Identity { return &guard.Identity{Name: "a", UID: -1, GID: -1, PID: -1} },
		Session:  func(*guard.Identity) proxy.SessionOptions { return proxy.SessionOptions{} },
		Ended: func(proxy.SessionOptions, time.Duration) {
			mu.Lock()
			entered++
			mu.Unlock()
			<-release // a slow audit write
		},
	})
	srv := httptest.NewServer(h)
	defer srv.Close()
	hg := &httpGateway{url: srv.URL}
	httpSession(t, hg, "a", nil)
	httpSession(t, hg, "a", nil)

	waited := make(chan struct{})
	go func() {
		h.Wait()
		close(waited)
	}()
	cancel()
	testutil.Eventually(t, "both sessions' Ended", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return entered == 2
	})
	select {
	case <-waited:
		t.Fatal("Wait returned while the sessions' Ended had not")
	default:
	}
	close(release)
	select {
	case <-waited:
	case <-time.After(time.Minute):
		t.Fatal("Wait did not return once the sessions ended")
	}
}
