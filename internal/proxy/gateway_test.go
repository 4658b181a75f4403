package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/upstream"
)

// startGateway runs a gateway over cfg's groups, open to sessions.
func startGateway(t *testing.T, cfg *config.Config) *proxy.Gateway {
	t.Helper()
	return startGatewayWith(t, cfg, nil)
}

// startGatewayWith is startGateway with a gateway that loads identities'
// configs with perUser.
func startGatewayWith(t *testing.T, cfg *config.Config, perUser func(string) (*config.Config, error)) *proxy.Gateway {
	t.Helper()
	return startGatewayEvents(t, cfg, perUser, nil)
}

// startGatewayEvents is startGatewayWith whose upstreams' events go to
// onEvent.
func startGatewayEvents(t *testing.T, cfg *config.Config, perUser func(string) (*config.Config, error), onEvent func(upstream.Event)) *proxy.Gateway {
	t.Helper()
	useMoatLauncher(t)
	gw := proxy.NewGateway(proxy.Options{
		Logger:  testLogger(t),
		PerUser: perUser,
		Upstream: upstream.Options{
			ConnectTimeout: 10 * time.Second,
			GracePeriod:    2 * time.Second,
			Backoff:        []time.Duration{200 * time.Millisecond},
			RetryEvery:     200 * time.Millisecond,
			OnEvent:        onEvent,
		},
	})
	gw.Apply(cfg)
	gw.Open()
	t.Cleanup(gw.Close)
	return gw
}

// session connects a go-sdk client as one session of gw, over a
// connection as a socket gives it. close ends the client's side alone.
func session(t *testing.T, gw *proxy.Gateway, so proxy.SessionOptions, opts *mcp.ClientOptions) (c *client, leave func()) {
	t.Helper()
	cc, sc := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := gw.Serve(ctx, sc, so); err != nil && ctx.Err() == nil {
			t.Logf("gateway session: %v", err)
		}
	}()
	c = &client{}
	if opts == nil {
		opts = &mcp.ClientOptions{}
	}
	opts.ProgressNotificationHandler = func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
		c.mu.Lock()
		c.progress = append(c.progress, r.Params.Progress)
		c.mu.Unlock()
	}
	opts.ResourceUpdatedHandler = func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) {
		c.mu.Lock()
		c.updated = append(c.updated, r.Params.URI)
		c.mu.Unlock()
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "gw-client", Version: "1"}, opts).Connect(ctx, &mcp.IOTransport{Reader: cc, Writer: cc}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatalf("connecting a session: %v", err)
	}
	c.cs = cs
	leave = func() { cs.Close() }
	t.Cleanup(func() {
		cs.Close()
		cancel()
		<-done
	})
	return c, leave
}

func groupEnum(t *testing.T, c *client) []any {
	t.Helper()
	res, err := c.cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range res.Tools {
		if tool.Name == "call_dynamic_tool" {
			return tool.InputSchema.(map[string]any)["properties"].(map[string]any)["group"].(map[string]any)["enum"].([]any)
		}
	}
	t.Fatal("no call_dynamic_tool")
	return nil
}

// TestGatewaySessionsSeeOnlyTheirGroups: a group a session's identity may
// not see is not listed and does not exist for its calls.
func TestGatewaySessionsSeeOnlyTheirGroups(t *testing.T) {
	gw := startGateway(t, cfgOf(stdio(t, "alpha"), stdio(t, "beta")))
	a, _ := session(t, gw, proxy.SessionOptions{Identity: &guard.Identity{Name: "a"}, Visible: func(g string) bool { return g == "alpha" }}, nil)
	b, _ := session(t, gw, proxy.SessionOptions{Identity: &guard.Identity{Name: "b"}}, nil)

	if diff := cmp.Diff([]any{"alpha"}, groupEnum(t, a)); diff != "" {
		t.Errorf("session a's groups (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{"alpha", "beta"}, groupEnum(t, b)); diff != "" {
		t.Errorf("session b's groups (-want +got):\n%s", diff)
	}
	_, err := a.call(t, "call_dynamic_tool", map[string]any{"group": "beta", "name": "echo", "args": map[string]any{"message": "x"}})
	wantCode(t, err, jsonrpc.CodeInvalidParams, `unknown group "beta"; groups: alpha`)
	if res := b.mustCall(t, "call_dynamic_tool", map[string]any{"group": "beta", "name": "echo", "args": map[string]any{"message": "from b"}}); !strings.Contains(text(res), "from b") {
		t.Fatalf("b's call: %q", text(res))
	}
}

// TestGatewayNotificationsReachOnlyTheirSession: progress, resource updates
// and log messages of a shared server go to the session they belong to.
func TestGatewayNotificationsReachOnlyTheirSession(t *testing.T) {
	gw := startGateway(t, cfgOf(stdio(t, "test")))
	var logsA, logsB atomic.Int32
	a, closeA := session(t, gw, proxy.SessionOptions{}, &mcp.ClientOptions{
		LoggingMessageHandler: func(context.Context, *mcp.LoggingMessageRequest) { logsA.Add(1) },
	})
	b, _ := session(t, gw, proxy.SessionOptions{}, &mcp.ClientOptions{
		LoggingMessageHandler: func(context.Context, *mcp.LoggingMessageRequest) { logsB.Add(1) },
	})
	ctx := context.Background()
	for _, c := range []*client{a, b} {
		if err := c.cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			t.Fatal(err)
		}
	}

	// Progress: a's call, a's token.
	params := &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "progress", "args": map[string]any{"steps": 3}}}
	params.SetProgressToken("a-token")
	if _, err := a.cs.CallTool(ctx, params); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "a's progress", func() bool { a.mu.Lock(); defer a.mu.Unlock(); return len(a.progress) == 3 })

	// Log messages: within a's call, to a.
	a.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "log", "args": map[string]any{"level": "error", "message": "for a"}})
	testutil.Eventually(t, "a's log message", func() bool { return logsA.Load() == 1 })

	// Resource updates: to the sessions subscribed, and the upstream stays
	// subscribed while one of them is.
	const uri = "test://static/hello"
	for _, c := range []*client{a, b} {
		if err := c.cs.Subscribe(ctx, &mcp.SubscribeParams{URI: uri}); err != nil {
			t.Fatal(err)
		}
	}
	closeA()
	touch := func() {
		b.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "touch", "args": map[string]any{"uri": uri}})
	}
	testutil.Eventually(t, "b's resource update after a left", func() bool {
		touch()
		b.mu.Lock()
		defer b.mu.Unlock()
		return slices.Contains(b.updated, uri)
	})

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.progress) != 0 || logsB.Load() != 0 {
		t.Errorf("session b received %d progress notifications and %d log messages of a's calls", len(b.progress), logsB.Load())
	}
}

// TestGatewayRequestsGoToTheCaller: a shared server's sampling request goes
// to the session whose call it came from, and is refused when that
// session's client cannot take it.
func TestGatewayRequestsGoToTheCaller(t *testing.T) {
	gw := startGateway(t, cfgOf(stdio(t, "test")))
	var asked atomic.Int32
	sampler := func(who string) *mcp.ClientOptions {
		return &mcp.ClientOptions{CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			asked.Add(1)
			return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "answered by " + who}}, nil
		}}
	}
	a, _ := session(t, gw, proxy.SessionOptions{}, sampler("a"))
	b, _ := session(t, gw, proxy.SessionOptions{}, sampler("b"))
	plain, _ := session(t, gw, proxy.SessionOptions{}, nil)
	for _, c := range []struct {
		c    *client
		want string
	}{{a, "answered by a"}, {b, "answered by b"}, {plain, "does not take sampling requests"}} {
		res := c.c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "sampling"}})
		if !strings.Contains(text(res), c.want) {
			t.Errorf("ask_client: %q, want %q", text(res), c.want)
		}
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("the clients were asked %d times, want 2", n)
	}
}

// TestGatewayDisconnectEndsOnlyItsCalls: a client that goes away mid-call
// cancels its own call; another session's call and the server go on.
func TestGatewayDisconnectEndsOnlyItsCalls(t *testing.T) {
	gw := startGateway(t, cfgOf(stdio(t, "test")))
	a, closeA := session(t, gw, proxy.SessionOptions{}, nil)
	b, _ := session(t, gw, proxy.SessionOptions{}, nil)
	aDone := make(chan error, 1)
	go func() {
		_, err := a.call(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "slow", "args": map[string]any{"ms": 600000}})
		aDone <- err
	}()
	bDone := make(chan *mcp.CallToolResult, 1)
	go func() {
		bDone <- b.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "slow", "args": map[string]any{"ms": 300}})
	}()
	testutil.Eventually(t, "two sessions", func() bool { return gw.Sessions() == 2 })
	closeA()
	<-aDone
	testutil.Eventually(t, "a's session to end", func() bool { return gw.Sessions() == 1 })
	if res := <-bDone; res.IsError {
		t.Fatalf("b's call failed when a left: %q", text(res))
	}
	if res := b.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "still here"}}); !strings.Contains(text(res), "still here") {
		t.Fatalf("b after a left: %q", text(res))
	}
}

// TestGatewaySlowClientBlocksNoOther: a client that stops reading holds up
// neither a shared server's notifications to other sessions nor their
// calls.
func TestGatewaySlowClientBlocksNoOther(t *testing.T) {
	gw := startGateway(t, cfgOf(stdio(t, "test")))
	const uri = "test://static/hello"

	// The stalled client speaks by hand: it subscribes, then never reads.
	cc, sc := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); gw.Serve(ctx, sc, proxy.SessionOptions{}) }()
	t.Cleanup(func() { cancel(); cc.Close(); <-done })
	r := bufio.NewReader(cc)
	send := func(line string) {
		t.Helper()
		if _, err := cc.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	answer := func() {
		t.Helper()
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"stalled","version":"1"}}}`)
	answer()
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	send(`{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"` + uri + `"}}`)
	for { // list_changed notifications may come first
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, `"id":2`) {
			break
		}
	}

	b, _ := session(t, gw, proxy.SessionOptions{}, nil)
	if err := b.cs.Subscribe(context.Background(), &mcp.SubscribeParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
	// Each touch sends both sessions an update; the stalled one's pile up
	// unread while b's keep arriving.
	for i := range 5 {
		b.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "touch", "args": map[string]any{"uri": uri}})
		testutil.Eventually(t, fmt.Sprintf("b's update %d", i+1), func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.updated) >= i+1
		})
	}
}

// TestRefuseAnswersEveryRequest: a client that will not be served reads
// why in the answer to each request it makes (go-sdk tries server/discover,
// then initialize), notifications get none, and an endless line ends it.
func TestRefuseAnswersEveryRequest(t *testing.T) {
	in := strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"server/discover"}` + "\n" +
		`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n" +
		`{"jsonrpc":"2.0","id":"two","method":"initialize","params":{}}` + "\n")
	var out strings.Builder
	if err := proxy.Refuse(in, &out, "go away: add uid 7 to gateway.identities"); err == nil {
		t.Fatal("Refuse returned no error at the end of its input")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"id":1`) || !strings.Contains(lines[1], `"id":"two"`) {
		t.Fatalf("answers:\n%s\nwant one for id 1 and one for id \"two\"", out.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "add uid 7 to gateway.identities") || !strings.Contains(l, `"code":-32000`) {
			t.Errorf("answer %s lacks the reason or the code", l)
		}
	}

	out.Reset()
	endless := io.MultiReader(strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"x","params":"`), strings.NewReader(strings.Repeat("a", 2<<20)))
	if err := proxy.Refuse(endless, &out, "no"); err == nil || out.Len() != 0 {
		t.Fatalf("a 2 MiB line: err %v, wrote %q", err, out.String())
	}
}

// TestGatewayPerUserServers: a per-user server runs once per identity,
// with that identity's own environment (its secrets), and what it sends
// reaches only that identity's sessions; an identity whose copy cannot be
// loaded is told why, and keeps its shared servers.
func TestGatewayPerUserServers(t *testing.T) {
	mine := func(canary string) *config.Server {
		s := stdio(t, "mine")
		s.PerUser = true
		s.Env = map[string]string{"MOAT_TEST_CANARY": canary}
		return s
	}
	cfg := cfgOf(stdio(t, "shared"), mine("the-shared-load-has-no-secrets"))
	gw := startGatewayWith(t, cfg, func(identity string) (*config.Config, error) {
		if identity == "carol" {
			return nil, errors.New(`secret "token" used in server "mine" env cannot be read: store it for the identity with ` + "`moat secret set --identity carol token`")
		}
		return cfgOf(stdio(t, "shared"), mine("canary-of-"+identity)), nil
	})
	var logsA, logsB atomic.Int32
	alice, _ := session(t, gw, proxy.SessionOptions{Identity: &guard.Identity{Name: "alice"}}, &mcp.ClientOptions{
		LoggingMessageHandler: func(context.Context, *mcp.LoggingMessageRequest) { logsA.Add(1) },
	})
	bob, _ := session(t, gw, proxy.SessionOptions{Identity: &guard.Identity{Name: "bob"}}, &mcp.ClientOptions{
		LoggingMessageHandler: func(context.Context, *mcp.LoggingMessageRequest) { logsB.Add(1) },
	})
	carol, _ := session(t, gw, proxy.SessionOptions{Identity: &guard.Identity{Name: "carol"}}, nil)

	env := func(c *client, group string) string {
		return text(c.mustCall(t, "call_dynamic_tool", map[string]any{"group": group, "name": "env", "args": map[string]any{}}))
	}
	for _, c := range []struct {
		c          *client
		own, other string
	}{{alice, "canary-of-alice", "canary-of-bob"}, {bob, "canary-of-bob", "canary-of-alice"}} {
		got := env(c.c, "mine")
		if !strings.Contains(got, "MOAT_TEST_CANARY="+c.own) || strings.Contains(got, c.other) || strings.Contains(got, "the-shared-load") {
			t.Errorf("%s's per-user server has MOAT_TEST_CANARY=%q, want only %s's own", c.own, canaryIn(got), c.own)
		}
	}

	// alice's own server's log message goes to alice, even while bob has
	// a call to his own copy in progress (on a shared server, two callers
	// would leave Moat unable to say whose it is).
	ctx := context.Background()
	for _, c := range []*client{alice, bob} {
		if err := c.cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
			t.Fatal(err)
		}
	}
	slow := make(chan error, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "mine", "name": "slow", "args": map[string]any{"ms": 3000}}}
		params.SetProgressToken("bob's")
		_, err := bob.cs.CallTool(ctx, params)
		slow <- err
	}()
	testutil.Eventually(t, "bob's slow call to be running", func() bool { bob.mu.Lock(); defer bob.mu.Unlock(); return len(bob.progress) > 0 })
	alice.mustCall(t, "call_dynamic_tool", map[string]any{"group": "mine", "name": "log", "args": map[string]any{"level": "error", "message": "for alice"}})
	testutil.Eventually(t, "alice's log message", func() bool { return logsA.Load() == 1 })
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if n := logsB.Load(); n != 0 {
		t.Errorf("bob received %d log messages of alice's server", n)
	}

	// carol: her copy could not be loaded; the model is told why and
	// what to run, and her shared server still answers.
	_, err := carol.call(t, "call_dynamic_tool", map[string]any{"group": "mine", "name": "env", "args": map[string]any{}})
	wantCode(t, err, jsonrpc.CodeInvalidParams, "moat secret set --identity carol token")
	if got := env(carol, "shared"); strings.Contains(got, "MOAT_TEST_CANARY") {
		t.Errorf("the shared server has a per-user server's environment: %q", canaryIn(got))
	}

	// Reloads while carol is told why: each replaces the reason while her
	// calls read it, and she is still told.
	reloaded := make(chan struct{})
	go func() {
		defer close(reloaded)
		for range 50 {
			gw.Apply(cfg)
		}
	}()
	for range 50 {
		_, err := carol.call(t, "call_dynamic_tool", map[string]any{"group": "mine", "name": "env", "args": map[string]any{}})
		wantCode(t, err, jsonrpc.CodeInvalidParams, "moat secret set --identity carol token")
	}
	<-reloaded
}

// TestAPersonsFirstLoadHoldsUpNoOneElse: making a person's copy reads
// their identity's secrets (a keychain may take seconds); meanwhile the
// other sessions' calls go on, and the person's own session gets its
// copy once the load is done (seen failing with the copy made under the
// lock every session's lookups take: alice's call waited for carol's
// load).
func TestAPersonsFirstLoadHoldsUpNoOneElse(t *testing.T) {
	mine := stdio(t, "mine")
	mine.PerUser = true
	cfg := cfgOf(stdio(t, "shared"), mine)
	loading, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	gw := startGatewayWith(t, cfg, func(identity string) (*config.Config, error) {
		if identity == "carol" {
			once.Do(func() { close(loading) })
			<-release // a slow keychain
		}
		return cfg, nil
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	carolDone := make(chan *client, 1)
	go func() {
		c, _ := session(t, gw, proxy.SessionOptions{Identity: &guard.Identity{Name: "carol"}}, nil)
		carolDone <- c
	}()
	<-loading

	aliceDone := make(chan string, 1)
	go func() {
		alice, _ := session(t, gw, proxy.SessionOptions{Identity: &guard.Identity{Name: "alice"}}, nil)
		aliceDone <- text(alice.mustCall(t, "call_dynamic_tool", map[string]any{"group": "shared", "name": "echo", "args": map[string]any{"message": "not held up"}}))
	}()
	select {
	case got := <-aliceDone:
		if !strings.Contains(got, "not held up") {
			t.Fatalf("alice's call while carol's copy loads: %q", got)
		}
	case <-time.After(time.Minute):
		t.Fatal("alice's session and call waited a minute for carol's copy to load")
	}
	close(release)
	carol := <-carolDone
	if got := text(carol.mustCall(t, "call_dynamic_tool", map[string]any{"group": "mine", "name": "echo", "args": map[string]any{"message": "mine"}})); !strings.Contains(got, "mine") {
		t.Errorf("carol's own copy after the load: %q", got)
	}
}

// canaryIn is the MOAT_TEST_CANARY line of an env listing, for messages.
func canaryIn(env string) string {
	for line := range strings.Lines(env) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "MOAT_TEST_CANARY="); ok {
			return v
		}
	}
	return ""
}

// TestPerUserCopiesRetire: a tenant (an identity's, or a person's, copies
// of the per-user servers) is retired once none of its sessions has been
// live for gateway.per_user_idle and its servers have stopped, so a person
// gone for the day leaves nothing running; one with a session left is
// kept, and the next session gets a working copy again (seen failing
// with tenants kept for the gateway's lifetime).
func TestPerUserCopiesRetire(t *testing.T) {
	mine := stdio(t, "mine")
	mine.PerUser = true
	cfg := cfgOf(stdio(t, "shared"), mine)
	cfg.Gateway.PerUserIdle = 300 * time.Millisecond
	var mu sync.Mutex
	retired := map[string]int{}
	retiredOf := func(who string) int { mu.Lock(); defer mu.Unlock(); return retired[who] }
	gw := startGatewayEvents(t, cfg, func(string) (*config.Config, error) { return cfg, nil }, func(e upstream.Event) {
		if e.Kind == "per_user_retired" {
			mu.Lock()
			retired[e.Detail["identity"]+" "+e.Detail["principal"]]++
			mu.Unlock()
		}
	})
	call := func(c *client) {
		t.Helper()
		if got := text(c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "mine", "name": "echo", "args": map[string]any{"message": "hi"}})); !strings.Contains(got, "hi") {
			t.Fatalf("echo through the per-user copy: %q", got)
		}
	}
	x := &guard.Identity{Name: "devs", Principal: "oidc https://idp u-x"}
	y := &guard.Identity{Name: "devs", Principal: "oidc https://idp u-y"}
	x1, leaveX1 := session(t, gw, proxy.SessionOptions{Identity: x}, nil)
	x2, leaveX2 := session(t, gw, proxy.SessionOptions{Identity: x}, nil)
	y1, leaveY1 := session(t, gw, proxy.SessionOptions{Identity: y}, nil)
	for _, c := range []*client{x1, x2, y1} {
		call(c)
	}
	// x1 leaves first, then y1: u-y's copy is retired (after its server
	// has gone idle); u-x's, whose x2 is still live, is not. u-x's timer
	// was set before u-y's, so by u-y's retirement it has run.
	leaveX1()
	leaveY1()
	testutil.Eventually(t, "u-y's copies retired", func() bool { return retiredOf("devs oidc https://idp u-y") == 1 })
	if n := retiredOf("devs oidc https://idp u-x"); n != 0 {
		t.Fatalf("u-x's copies were retired %d times while x2 was live", n)
	}
	call(x2)
	leaveX2()
	testutil.Eventually(t, "u-x's copies retired once x2 left", func() bool { return retiredOf("devs oidc https://idp u-x") == 1 })

	// u-y comes back: a copy of her own again.
	y2, _ := session(t, gw, proxy.SessionOptions{Identity: y}, nil)
	call(y2)
}

// staticToken is an OAuth handler that always has one token.
type staticToken struct{}

func (staticToken) TokenSource(context.Context) (oauth2.TokenSource, error) {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t", TokenType: "Bearer"}), nil
}
func (staticToken) Authorize(context.Context, *http.Request, *http.Response) error { return nil }

// TestExchangeHandlerOutlivesAReconnect: a token_exchange server's OAuth
// handler, which holds the token it exchanged (or a sign-in token it saw
// refused), is made once per person's copy and kept when the copy
// reconnects (here: after it stopped idle), so nothing is exchanged again
// for nothing; other servers get a new handler per connection (seen
// failing with a handler made on every connect).
func TestExchangeHandlerOutlivesAReconnect(t *testing.T) {
	bin := testutil.BuildTestServer(t)
	xs := remote("xs", testutil.StartHTTPServer(t, bin, "-name", "xs"), config.HTTP)
	xs.PerUser, xs.TokenExchange = true, &config.TokenExchange{Issuer: "https://auth.example.com"}
	plain := remote("plain", testutil.StartHTTPServer(t, bin, "-name", "plain"), config.HTTP)
	plain.PerUser = true
	cfg := cfgOf(xs, plain)
	cfg.Gateway.PerUserIdle = 300 * time.Millisecond
	var mu sync.Mutex
	made := map[string]int{}
	idled := map[string]bool{}
	useMoatLauncher(t)
	gw := proxy.NewGateway(proxy.Options{
		Logger:  testLogger(t),
		PerUser: func(string) (*config.Config, error) { return cfg, nil },
		PerUserOAuth: func(_ *guard.Identity, s *config.Server) (auth.OAuthHandler, error) {
			mu.Lock()
			made[s.Name]++
			mu.Unlock()
			return staticToken{}, nil
		},
		Upstream: upstream.Options{
			ConnectTimeout: 10 * time.Second,
			Backoff:        []time.Duration{200 * time.Millisecond},
			RetryEvery:     200 * time.Millisecond,
			HTTPClient: func(s *config.Server) (*http.Client, error) {
				return netguard.NewClient(s.URL, nil)
			},
			OnEvent: func(e upstream.Event) {
				if e.Kind == "upstream_idle" {
					mu.Lock()
					idled[e.Group] = true
					mu.Unlock()
				}
			},
		},
	})
	gw.Apply(cfg)
	gw.Open()
	t.Cleanup(gw.Close)
	c, _ := session(t, gw, proxy.SessionOptions{Identity: &guard.Identity{Name: "alice", Principal: "oidc https://idp u-alice"}}, nil)
	call := func(group string) {
		t.Helper()
		if got := text(c.mustCall(t, "call_dynamic_tool", map[string]any{"group": group, "name": "echo", "args": map[string]any{"message": "hi"}})); got != "hi" {
			t.Fatalf("echo through %s: %q", group, got)
		}
	}
	call("xs")
	call("plain")
	testutil.Eventually(t, "both copies to stop idle", func() bool { mu.Lock(); defer mu.Unlock(); return idled["xs"] && idled["plain"] })
	call("xs")
	call("plain")
	mu.Lock()
	defer mu.Unlock()
	if made["xs"] != 1 || made["plain"] != 2 {
		t.Errorf("handlers made: token_exchange server %d (want 1, kept), other %d (want 2, one per connection)", made["xs"], made["plain"])
	}
}
