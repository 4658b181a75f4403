package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/upstream"
)

// useMoatLauncher makes children start through a real moat binary as the
// sandbox launcher. (The race-instrumented test binary cannot be the
// launcher: ThreadSanitizer needs more address space than RLIMIT_AS allows.)
func useMoatLauncher(t *testing.T) {
	sandbox.LauncherPath = testutil.BuildMoat(t)
}

// stdio returns a stdio server running the Go test server with args.
func stdio(t *testing.T, name string, args ...string) *config.Server {
	t.Helper()
	return &config.Server{
		Name:        name,
		Description: "test server " + name,
		Type:        config.Stdio,
		Command:     testutil.BuildTestServer(t),
		Args:        append([]string{"-name", name}, args...),
		Enabled:     true,
		Features:    config.Features{Tools: true, Resources: true, Prompts: true},
		Timeout:     config.Timeouts{Tools: 30 * time.Second, Resources: 10 * time.Second, Prompts: 10 * time.Second},
	}
}

func remote(name, url string, typ config.Transport) *config.Server {
	return &config.Server{
		Name: name, Description: "remote " + name, Type: typ, URL: url, Enabled: true,
		Features: config.Features{Tools: true, Resources: true, Prompts: true},
		Timeout:  config.Timeouts{Tools: 30 * time.Second, Resources: 10 * time.Second, Prompts: 10 * time.Second},
	}
}

func cfgOf(servers ...*config.Server) *config.Config {
	c := &config.Config{Servers: map[string]*config.Server{}}
	for _, s := range servers {
		c.Servers[s.Name] = s
	}
	return c
}

// maxMessageBytes is the stdio frame limit of the next start (0: default).
var maxMessageBytes int

// client is what a test sees of the downstream side.
type client struct {
	cs          *mcp.ClientSession
	mc          *mcp.Client
	p           *proxy.Server
	toolChanges atomic.Int32
	mu          sync.Mutex
	progress    []float64
	updated     []string
}

// start runs a proxy over in-memory transports with cfg and connects a
// go-sdk client to it, of the newest protocol both know. Retries are fast
// so recovery tests stay short.
func start(t *testing.T, cfg *config.Config, opts *mcp.ClientOptions, setup ...func(*mcp.Client)) *client {
	t.Helper()
	return startAt(t, "", cfg, opts, setup...)
}

// startAt is start with a client that asks for protocol version.
func startAt(t *testing.T, version string, cfg *config.Config, opts *mcp.ClientOptions, setup ...func(*mcp.Client)) *client {
	t.Helper()
	useMoatLauncher(t)
	p := proxy.New(proxy.Options{
		Logger: testLogger(t),
		Upstream: upstream.Options{
			ConnectTimeout:  10 * time.Second,
			GracePeriod:     2 * time.Second,
			Backoff:         []time.Duration{200 * time.Millisecond},
			RetryEvery:      200 * time.Millisecond,
			MaxMessageBytes: maxMessageBytes,
			HTTPClient: func(s *config.Server) (*http.Client, error) {
				return netguard.NewClient(s.URL, &netguard.Options{Headers: s.Headers})
			},
		},
	})
	p.Apply(cfg)
	ct, st := mcp.NewInMemoryTransports()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx, st); err != nil && ctx.Err() == nil {
			t.Logf("proxy Run: %v", err)
		}
	}()
	c := &client{p: p}
	if opts == nil {
		opts = &mcp.ClientOptions{}
	}
	opts.ToolListChangedHandler = func(context.Context, *mcp.ToolListChangedRequest) { c.toolChanges.Add(1) }
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
	mc := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1"}, opts)
	for _, f := range setup {
		f(mc)
	}
	c.mc = mc
	cs, err := mc.Connect(ctx, ct, &mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatalf("connecting to the proxy: %v", err)
	}
	c.cs = cs
	t.Cleanup(func() {
		cs.Close()
		cancel()
		<-done
	})
	return c
}

func (c *client) call(t *testing.T, tool string, args any) (*mcp.CallToolResult, error) {
	t.Helper()
	// Generous: only a hang should reach it. A 10 MiB round trip takes 4 s
	// alone, 30 s under -race, and over 60 s on a busy 2-core machine.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	return c.cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
}

func (c *client) mustCall(t *testing.T, tool string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := c.call(t, tool, args)
	if err != nil {
		t.Fatalf("%s(%.300v): %.2000v", tool, args, err) // bounded: some tests send megabytes
	}
	return res
}

func text(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func wantCode(t *testing.T, err error, code int64, fragment string) {
	t.Helper()
	var we *jsonrpc.Error
	if !errors.As(err, &we) {
		t.Fatalf("got error %v, want JSON-RPC error %d", err, code)
	}
	if we.Code != code || !strings.Contains(we.Message, fragment) {
		t.Fatalf("got error %d %q, want %d containing %q", we.Code, we.Message, code, fragment)
	}
}

func TestToolsListIsTwoToolsFromConfigAtOnce(t *testing.T) {
	// A group whose server never answers must not delay tools/list.
	hang := stdio(t, "zeta")
	hang.Command = "/bin/sleep"
	hang.Args = []string{"60"}
	c := start(t, cfgOf(stdio(t, "beta"), hang, stdio(t, "alpha")), nil)

	res, err := c.cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	if diff := cmp.Diff([]string{"call_dynamic_tool", "get_dynamic_tools"}, names); diff != "" {
		t.Fatalf("tools (-want +got):\n%s", diff)
	}
	for _, tool := range res.Tools {
		schema := tool.InputSchema.(map[string]any)
		enum := schema["properties"].(map[string]any)["group"].(map[string]any)["enum"]
		if diff := cmp.Diff([]any{"alpha", "beta", "zeta"}, enum); diff != "" {
			t.Errorf("%s group enum (-want +got):\n%s", tool.Name, diff)
		}
	}
	get := res.Tools[slices.IndexFunc(res.Tools, func(t *mcp.Tool) bool { return t.Name == "get_dynamic_tools" })]
	for _, want := range []string{"- alpha: test server alpha (", "- zeta: test server zeta ("} {
		if !strings.Contains(get.Description, want) {
			t.Errorf("get_dynamic_tools description lacks %q:\n%s", want, get.Description)
		}
	}
}

func TestGetAndCallThroughStdio(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test")), nil)

	res := c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"})
	var tools []map[string]any
	if err := json.Unmarshal([]byte(text(res)), &tools); err != nil {
		t.Fatalf("get_dynamic_tools returned %q: %v", text(res), err)
	}
	byName := map[string]map[string]any{}
	for _, tool := range tools {
		byName[tool["name"].(string)] = tool
	}
	for _, name := range []string{"echo", "add", "slow", "fail", "large"} {
		if byName[name] == nil {
			t.Errorf("get_dynamic_tools lacks %q", name)
		}
	}
	if _, ok := byName["add"]["outputSchema"]; !ok {
		t.Errorf("add lost its outputSchema: %v", byName["add"])
	}
	if _, ok := byName["annotated_delete"]["annotations"]; !ok {
		t.Errorf("annotated_delete lost its annotations: %v", byName["annotated_delete"])
	}
	for name, tool := range byName {
		if _, ok := tool["inputSchema"].(map[string]any)["$schema"]; ok {
			t.Errorf("%s: top-level $schema kept in inputSchema", name)
		}
	}

	res = c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "hi there"}})
	if res.IsError || text(res) != "hi there" {
		t.Errorf("echo: isError=%v text=%q", res.IsError, text(res))
	}
	res = c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "add", "args": map[string]any{"a": 2, "b": 3}})
	if diff := cmp.Diff(map[string]any{"sum": 5.0}, res.StructuredContent); diff != "" {
		t.Errorf("add structuredContent (-want +got):\n%s", diff)
	}
	res = c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "fail"})
	if !res.IsError || !strings.Contains(text(res), "failed on purpose") {
		t.Errorf("fail: upstream isError result not passed verbatim: isError=%v %q", res.IsError, text(res))
	}
}

func TestBadCallsAreInvalidParams(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test")), nil)
	for _, tt := range []struct {
		name     string
		tool     string
		args     any
		fragment string
	}{
		{"unknown group", "call_dynamic_tool", map[string]any{"group": "nope", "name": "echo"}, `unknown group "nope"; groups: test`},
		{"unknown tool", "call_dynamic_tool", map[string]any{"group": "test", "name": "nope"}, `unknown tool "nope" in group "test"`},
		{"missing name", "call_dynamic_tool", map[string]any{"group": "test"}, `missing required argument "name"`},
		{"args not an object", "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": []int{1}}, `"args" must be a JSON object`},
		{"case-variant key", "call_dynamic_tool", map[string]any{"group": "test", "Name": "echo", "name": "echo"}, `unknown argument "Name"`},
		{"get unknown group", "get_dynamic_tools", map[string]any{"group": "nope"}, `unknown group "nope"`},
		{"get group not a string", "get_dynamic_tools", map[string]any{"group": 7}, `"group" must be a non-empty string`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.call(t, tt.tool, tt.args)
			wantCode(t, err, jsonrpc.CodeInvalidParams, tt.fragment)
		})
	}
}

func TestToolsFeatureOffBlocksListAndCall(t *testing.T) {
	s := stdio(t, "test", "-record", filepath.Join(t.TempDir(), "calls.jsonl"))
	s.Features.Tools = false
	c := start(t, cfgOf(s), nil)
	if res := c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"}); text(res) != "[]" {
		t.Errorf("get_dynamic_tools with tools off = %q, want []", text(res))
	}
	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "x"}})
	if !res.IsError || !strings.Contains(text(res), "features.tools: false") {
		t.Errorf("call with tools off: isError=%v %q", res.IsError, text(res))
	}
	if b, _ := os.ReadFile(s.Args[len(s.Args)-1]); len(b) > 0 {
		t.Errorf("the upstream received a call although tools are off: %s", b)
	}
}

func TestSlowCallDoesNotDelayOthersAndProgressFlows(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test")), nil)
	c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"}) // wait for connect

	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "slow", "args": map[string]any{"ms": 3000}})
	}()
	time.Sleep(100 * time.Millisecond)
	c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "fast"}})
	select {
	case <-slowDone:
		t.Fatal("the fast call returned only after the slow one: calls are serialized")
	default:
	}
	<-slowDone

	params := &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "progress", "args": map[string]any{"steps": 3}}}
	params.SetProgressToken("tok-1")
	if _, err := c.cs.CallTool(context.Background(), params); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "3 progress notifications", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.progress) == 3
	})
}

func TestLargeMessagesPass(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test")), nil)
	const size = 10 << 20
	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "large", "args": map[string]any{"bytes": size}})
	if res.IsError || len(text(res)) != size {
		t.Fatalf("large: isError=%v, got %d bytes, want %d", res.IsError, len(text(res)), size)
	}
	big := strings.Repeat("y", size)
	res = c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": big}})
	if text(res) != big {
		t.Fatalf("a 10 MiB argument did not come back intact (%d bytes)", len(text(res)))
	}
}

func TestResourcesAndPromptsAreMergedWithoutShadowing(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "one", "-same-uris"), stdio(t, "two", "-same-uris"), stdio(t, "solo")), nil)
	ctx := context.Background()
	for _, g := range []string{"one", "two", "solo"} {
		c.mustCall(t, "get_dynamic_tools", map[string]any{"group": g})
	}
	testutil.Eventually(t, "resources of all three groups", func() bool {
		seen := map[string]int{}
		for r := range c.cs.Resources(ctx, nil) {
			if r != nil {
				seen[r.URI] = len(r.Meta)
			}
		}
		_, solo := seen["solo://static/hello"]
		return solo && seen["test://static/hello"] > 0 && c.cs != nil && sharedHasTwo(ctx, c.cs)
	})
	groupsOf := map[string]any{}
	for r, err := range c.cs.Resources(ctx, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if g, ok := r.Meta["group"]; ok {
			groupsOf[r.URI] = g
		} else {
			groupsOf[r.URI] = r.Meta["groups"]
		}
	}
	if groupsOf["solo://static/hello"] != "solo" {
		t.Errorf("solo's resource has _meta %v, want group solo", groupsOf["solo://static/hello"])
	}
	if diff := cmp.Diff([]any{"one", "two"}, groupsOf["test://static/hello"]); diff != "" {
		t.Errorf("shared URI _meta.groups (-want +got):\n%s", diff)
	}

	res, err := c.cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "solo://static/hello"})
	if err != nil || res.Contents[0].Text != "hello from solo" {
		t.Fatalf("read solo: %v %v", res, err)
	}
	res, err = c.cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "solo://items/42"})
	if err != nil || res.Contents[0].Text != "item 42" {
		t.Fatalf("read through a template: %v %v", res, err)
	}
	_, err = c.cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static/hello"})
	wantCode(t, err, jsonrpc.CodeInvalidParams, "offered by groups one and two")
	res, err = c.cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://static/hello", Meta: mcp.Meta{"group": "two"}})
	if err != nil || res.Contents[0].Text != "hello from two" {
		t.Fatalf("read with _meta.group two: %v %v", res, err)
	}
	_, err = c.cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "nobody://x"})
	// go-sdk answers "Resource not found" with -32602, as current MCP
	// versions specify (the older -32002 is deprecated).
	wantCode(t, err, jsonrpc.CodeInvalidParams, "Resource not found")

	pr, err := c.cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "Ada"}, Meta: mcp.Meta{"group": "solo"}})
	if err != nil || !strings.Contains(pr.Messages[0].Content.(*mcp.TextContent).Text, "Hello, Ada!") {
		t.Fatalf("get prompt greet: %v %v", pr, err)
	}
	_, err = c.cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"name": "Ada"}})
	wantCode(t, err, jsonrpc.CodeInvalidParams, "offered by groups one and solo and two")
}

// TestSubscribeForwardsUpdates: resources/subscribe of 2025-11-25 and
// the subscriptions/listen stream of 2026-07-28 both reach the upstream.
func TestSubscribeForwardsUpdates(t *testing.T) {
	for _, version := range []string{"2026-07-28", "2025-11-25"} {
		t.Run(version, func(t *testing.T) { subscribeForwardsUpdates(t, version) })
	}
}

func subscribeForwardsUpdates(t *testing.T, version string) {
	c := startAt(t, version, cfgOf(stdio(t, "test")), nil)
	c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"})
	ctx := context.Background()
	if err := c.cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "test://static/hello"}); err != nil {
		t.Fatal(err)
	}
	// A 2026-07-28 subscription is a subscriptions/listen stream, which
	// go-sdk's Subscribe opens without waiting for it to be in place.
	testutil.Eventually(t, "resources/updated", func() bool {
		c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "touch", "args": map[string]any{"uri": "test://static/hello"}})
		c.mu.Lock()
		defer c.mu.Unlock()
		return slices.Contains(c.updated, "test://static/hello")
	})
}

// TestSamplingRequestsReachTheClient: as a request of Moat's own to a client
// of 2025-11-25 (TestInputRequestsReachANewClient has 2026-07-28).
func TestSamplingRequestsReachTheClient(t *testing.T) {
	opts := &mcp.ClientOptions{
		CreateMessageHandler: func(context.Context, *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return &mcp.CreateMessageResult{Model: "m", Role: "assistant", Content: &mcp.TextContent{Text: "sampled answer"}}, nil
		},
	}
	c := startAt(t, "2025-11-25", cfgOf(stdio(t, "test")), opts)
	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "ask_client", "args": map[string]any{"kind": "sampling"}})
	if res.IsError || !strings.Contains(text(res), "sampled answer") {
		t.Fatalf("ask_client sampling: isError=%v %q", res.IsError, text(res))
	}
}

func TestUpstreamListChangedRefreshesTools(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test")), nil)
	c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"})
	c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "set_description", "args": map[string]any{"text": "a brand new description"}})
	testutil.Eventually(t, "the new description in get_dynamic_tools", func() bool {
		return strings.Contains(text(c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"})), "a brand new description")
	})
}

func TestPaginatedUpstreamListsAreReadWhole(t *testing.T) {
	c := start(t, cfgOf(stdio(t, "test", "-page-size", "2", "-extra-tools", "7")), nil)
	var tools []map[string]any
	json.Unmarshal([]byte(text(c.mustCall(t, "get_dynamic_tools", map[string]any{"group": "test"}))), &tools)
	n := 0
	for _, tool := range tools {
		if strings.HasPrefix(tool["name"].(string), "t0") {
			n++
		}
	}
	if n != 7 {
		t.Fatalf("got %d of the 7 extra tools across pages", n)
	}
}

func TestFailedGroupRecoversWithoutRestart(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "ok")
	c := start(t, cfgOf(stdio(t, "flaky", "-fail-until", flag), stdio(t, "steady")), nil)

	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "flaky", "name": "echo", "args": map[string]any{"message": "x"}})
	if !res.IsError || !strings.Contains(text(res), `group "flaky" is unavailable`) {
		t.Fatalf("call to a failing group: isError=%v %q", res.IsError, text(res))
	}
	// The other group is not affected.
	if res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "steady", "name": "echo", "args": map[string]any{"message": "ok"}}); text(res) != "ok" {
		t.Fatalf("steady group: %q", text(res))
	}
	before := c.toolChanges.Load()
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "flaky to recover", func() bool {
		g, _ := c.p.Manager().Group("flaky")
		return g.Status().State == upstream.Ready
	})
	if res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "flaky", "name": "echo", "args": map[string]any{"message": "back"}}); text(res) != "back" {
		t.Fatalf("recovered group: %q", text(res))
	}
	testutil.Eventually(t, "tools/list_changed after recovery", func() bool { return c.toolChanges.Load() > before })
}

func TestReloadTouchesOnlyWhatChanged(t *testing.T) {
	keep, change, drop := stdio(t, "keep"), stdio(t, "change"), stdio(t, "drop")
	c := start(t, cfgOf(keep, change, drop), nil)
	for _, g := range []string{"keep", "change", "drop"} {
		c.mustCall(t, "get_dynamic_tools", map[string]any{"group": g})
	}
	envOf := func(group string) string {
		res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": group, "name": "env"})
		return text(res)
	}
	session := func(group string) *mcp.ClientSession {
		g, ok := c.p.Manager().Group(group)
		if !ok {
			t.Fatalf("group %q missing", group)
		}
		cs, err := g.Session(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	keepSession := session("keep")

	changed := stdio(t, "change")
	changed.Env = map[string]string{"MARK": "second"}
	c.p.Apply(cfgOf(stdio(t, "keep"), changed, stdio(t, "added")))

	if _, ok := c.p.Manager().Group("drop"); ok {
		t.Error("removed group still present")
	}
	if !strings.Contains(envOf("change"), "MARK=second") {
		t.Error("changed group was not restarted with its new env")
	}
	if res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "added", "name": "echo", "args": map[string]any{"message": "new"}}); text(res) != "new" {
		t.Errorf("added group: %q", text(res))
	}
	if session("keep") != keepSession {
		t.Error("unchanged group was reconnected by the reload")
	}
}

func TestRemoteUpstreams(t *testing.T) {
	bin := testutil.BuildTestServer(t)
	httpURL := testutil.StartHTTPServer(t, bin, "-name", "web")
	sseURL := testutil.StartHTTPServer(t, bin, "-name", "legacy", "-transport", "sse")
	inferred := remote("guess", testutil.StartHTTPServer(t, bin, "-name", "guess", "-transport", "sse"), config.HTTP)
	inferred.TypeInferred = true
	c := start(t, cfgOf(remote("web", httpURL, config.HTTP), remote("legacy", sseURL, config.SSE), inferred), nil)
	for _, g := range []string{"web", "legacy", "guess"} {
		res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": g, "name": "echo", "args": map[string]any{"message": "via " + g}})
		if res.IsError || text(res) != "via "+g {
			t.Errorf("%s: isError=%v %q", g, res.IsError, text(res))
		}
	}
}

// testLogger sends the proxy's debug log to the test log, and drops what
// is logged after the test ends (t.Log would panic then).
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func sharedHasTwo(ctx context.Context, cs *mcp.ClientSession) bool {
	for r := range cs.Resources(ctx, nil) {
		if r != nil && r.URI == "test://static/hello" {
			gs, _ := r.Meta["groups"].([]any)
			return len(gs) == 2
		}
	}
	return false
}

// TestOversizedUpstreamAnswerFailsOnlyItsCall: an answer over the group's
// message limit fails that call with an error naming the key; the same
// session answers the next call at once, and other groups are unaffected.
func TestOversizedUpstreamAnswerFailsOnlyItsCall(t *testing.T) {
	maxMessageBytes = 1 << 20
	t.Cleanup(func() { maxMessageBytes = 0 })
	c := start(t, cfgOf(stdio(t, "big"), stdio(t, "other")), nil)
	res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": "big", "name": "large", "args": map[string]any{"bytes": 4 << 20}})
	if !res.IsError || !strings.Contains(text(res), "max_message_bytes") {
		t.Fatalf("a 4 MiB answer through a 1 MiB limit: isError=%v %.300q; want an error naming max_message_bytes", res.IsError, text(res))
	}
	for _, g := range []string{"big", "other"} {
		if res := c.mustCall(t, "call_dynamic_tool", map[string]any{"group": g, "name": "echo", "args": map[string]any{"message": "fine"}}); text(res) != "fine" {
			t.Fatalf("group %q after the oversized answer: %q, want %q", g, text(res), "fine")
		}
	}
}
