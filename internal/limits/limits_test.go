package limits

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/policy"
)

// upstream is a next handler that records the calls that reach it.
type upstream struct {
	mu     sync.Mutex
	calls  int
	result *guard.Result
	block  chan struct{} // when set, calls wait on it
}

func (u *upstream) handle(ctx context.Context, c *guard.Call) (*guard.Result, error) {
	u.mu.Lock()
	u.calls++
	u.mu.Unlock()
	if u.block != nil {
		<-u.block
	}
	if u.result != nil {
		return u.result, nil
	}
	return &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}}, nil
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls
}

func policies(t *testing.T, m map[string]string) PolicyFunc {
	t.Helper()
	ps := map[string]*policy.Policy{}
	for g, s := range m {
		p, err := policy.ParseServer([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		ps[g] = p
	}
	return func(g string) *policy.Policy { return ps[g] }
}

func toolCall(group, name, args string, ann *mcp.ToolAnnotations) *guard.Call {
	return &guard.Call{Kind: guard.KindTool, Group: group, Name: name, Args: json.RawMessage(args),
		Tool: &mcp.Tool{Name: name, Annotations: ann, InputSchema: map[string]any{"type": "object"}}}
}

func denial(t *testing.T, err error) *guard.Denial {
	t.Helper()
	var d *guard.Denial
	if !errors.As(err, &d) {
		t.Fatalf("err = %v, want a *guard.Denial", err)
	}
	return d
}

func TestPolicyLayer(t *testing.T) {
	get := policies(t, map[string]string{"files": `{"deny": ["write_*"], "destructive": "deny",
		"args": {"read_file": {"path": {"prefix": ["/home/me/project"]}}}}`})
	ro := &mcp.ToolAnnotations{ReadOnlyHint: true}
	for _, tt := range []struct {
		call     *guard.Call
		wantRule string // "" = reaches the upstream
	}{
		{toolCall("files", "read_file", `{"path": "/home/me/project/a"}`, ro), ""},
		{toolCall("files", "write_file", `{}`, ro), "deny:write_*"},
		{toolCall("files", "delete", `{}`, nil), "destructive"},
		{toolCall("files", "read_file", `{"path": "/home/me/project/../../etc/passwd"}`, ro), "args:read_file.path:prefix"},
		{toolCall("files", "read_file", `{"path": "/home/me/project/a", "path": "/etc/passwd"}`, ro), "args:decode"},
		{toolCall("files", "read_file", `[]`, ro), "args:decode"},
		{toolCall("other", "read_file", `{}`, ro), "no-policy"},
		{&guard.Call{Kind: guard.KindResource, Group: "files", URI: "file:///etc/passwd"}, ""},
	} {
		u := &upstream{}
		_, err := guard.Chain(u.handle, Policy(get, nil))(context.Background(), tt.call)
		if tt.wantRule == "" {
			if err != nil || u.count() != 1 {
				t.Errorf("%s %s: err %v, upstream calls %d; want it forwarded", tt.call.Name, tt.call.Args, err, u.count())
			}
			continue
		}
		if d := denial(t, err); d.Layer != "policy" || d.Rule != tt.wantRule || d.Reason == "" {
			t.Errorf("%s %s: denial %+v, want policy rule %s with a reason", tt.call.Name, tt.call.Args, d, tt.wantRule)
		}
		if u.count() != 0 {
			t.Errorf("%s %s: refused, but the upstream was called", tt.call.Name, tt.call.Args)
		}
		if strings.Contains(err.Error(), "/etc/passwd") {
			t.Errorf("denial %q repeats an argument value", err)
		}
	}
}

func TestRateLayer(t *testing.T) {
	get := policies(t, map[string]string{"g": `{"rate": "1/h", "burst": 3}`})
	reg := policy.NewLimits()
	reg.Update(nil, map[string]*policy.Policy{"g": get("g")})
	u := &upstream{}
	h := guard.Chain(u.handle, Rate(reg))
	var refused int
	for range 10 {
		if _, err := h(context.Background(), toolCall("g", "t", `{}`, nil)); err != nil {
			d := denial(t, err)
			if d.Layer != guard.LayerRate || d.Rule != "rate" || !strings.Contains(d.Reason, "retry after") {
				t.Errorf("denial %+v, want ratelimit/rate saying when to retry", d)
			}
			refused++
		}
	}
	if u.count() != 3 || refused != 7 {
		t.Errorf("10 calls at burst 3: %d reached the upstream, %d refused; want 3 and 7", u.count(), refused)
	}
}

func TestConcurrencyLayer(t *testing.T) {
	get := policies(t, map[string]string{"g": `{"max_concurrent": 2}`})
	reg := policy.NewLimits()
	reg.Update(nil, map[string]*policy.Policy{"g": get("g")})
	u := &upstream{block: make(chan struct{})}
	h := guard.Chain(u.handle, Concurrency(reg))
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := h(context.Background(), toolCall("g", "t", `{}`, nil)); err != nil {
				t.Error(err)
			}
		})
	}
	for u.count() < 2 { // both calls are in the upstream
		waitABit()
	}
	_, err := h(context.Background(), toolCall("g", "t", `{}`, nil))
	if d := denial(t, err); d.Layer != "concurrency" || d.Rule != "max_concurrent" || !strings.Contains(d.Reason, "retry when one has finished") {
		t.Errorf("third concurrent call: %+v, want max_concurrent refusal", d)
	}
	close(u.block)
	wg.Wait()
	if u.count() != 2 {
		t.Errorf("upstream saw %d calls, want 2 (the refused one must not reach it)", u.count())
	}
	if _, err := h(context.Background(), toolCall("g", "t", `{}`, nil)); err != nil {
		t.Errorf("after the calls finished: %v; the slots were not released", err)
	}
}

func TestSizeLayer(t *testing.T) {
	get := policies(t, map[string]string{"g": `{"max_args_bytes": 64, "max_result_bytes": "1KiB", "tools": {"small": {"max_result_bytes": 10}}}`})
	big := strings.Repeat("x", 2000)
	for _, tt := range []struct {
		name, tool, args string
		result           *guard.Result
		wantRule         string
		wantUpstream     int
	}{
		{"fits", "t", `{"a": 1}`, nil, "", 1},
		{"args too big", "t", `{"a": "` + strings.Repeat("y", 100) + `"}`, nil, "max_args_bytes", 0},
		{"text too big", "t", `{}`, &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: big}}}}, "max_result_bytes", 1},
		{"items add up", "t", `{}`, &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{
			&mcp.TextContent{Text: big[:600]}, &mcp.ImageContent{Data: []byte(big[:400]), MIMEType: "image/png"}}}}, "max_result_bytes", 1},
		{"structured", "t", `{}`, &guard.Result{Tool: &mcp.CallToolResult{StructuredContent: map[string]any{"x": big}}}, "max_result_bytes", 1},
		{"per-tool limit", "small", `{}`, nil, "", 1},
		{"per-tool limit hit", "small", `{}`, &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "eleven byte"}}}}, "max_result_bytes", 1},
		{"resource", "", ``, &guard.Result{Resource: &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "x", Blob: []byte(big)}}}}, "max_result_bytes", 1},
	} {
		u := &upstream{result: tt.result}
		c := toolCall("g", tt.tool, tt.args, nil)
		if tt.tool == "" {
			c = &guard.Call{Kind: guard.KindResource, Group: "g", URI: "x"}
		}
		res, err := guard.Chain(u.handle, Size(get))(context.Background(), c)
		if u.count() != tt.wantUpstream {
			t.Errorf("%s: upstream called %d times, want %d", tt.name, u.count(), tt.wantUpstream)
		}
		if tt.wantRule == "" {
			if err != nil || res == nil {
				t.Errorf("%s: %v, want the result", tt.name, err)
			}
			continue
		}
		if d := denial(t, err); d.Layer != guard.LayerSize || d.Rule != tt.wantRule || res != nil {
			t.Errorf("%s: denial %+v, result %v; want limits/%s and no result", tt.name, d, res, tt.wantRule)
		}
	}
}

func TestTimeoutLayer(t *testing.T) {
	get := policies(t, map[string]string{"g": `{"timeout": "1s"}`})
	var hasDeadline bool
	h := guard.Chain(func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
		_, hasDeadline = ctx.Deadline()
		return &guard.Result{}, nil
	}, Timeout(get))
	h(context.Background(), toolCall("g", "t", `{}`, nil))
	if !hasDeadline {
		t.Error("the call's context has no deadline")
	}
}

// TestMetaCountsTowardTheResultSize: a result that hides its bulk in
// _meta (the result's, or an item's) is held to max_result_bytes too; on
// 588eb74 a 200 KB _meta passed a 16 KiB limit.
func TestMetaCountsTowardTheResultSize(t *testing.T) {
	get := policies(t, map[string]string{"g": `{"max_result_bytes": "16KiB"}`})
	big := mcp.Meta{"blob": strings.Repeat("x", 200<<10)}
	for name, res := range map[string]*mcp.CallToolResult{
		"result _meta": {Meta: big, Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}},
		"item _meta":   {Content: []mcp.Content{&mcp.TextContent{Text: "ok", Meta: big}}},
	} {
		h := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) {
			return &guard.Result{Tool: res}, nil
		}, Size(get))
		out, err := h(context.Background(), toolCall("g", "t", `{}`, nil))
		if d := denial(t, err); d.Rule != "max_result_bytes" || out != nil {
			t.Errorf("%s: %+v, %v; want the size limit to refuse it", name, d, out)
		}
	}
}

// TestPolicyTimeoutIsATimeout: a call the policy's timeout ends is the
// same outcome as one the server's configured timeout ends (guard.ErrTimeout,
// audited as "timeout"), and its message names the bound; run in a synctest
// bubble, the second passes at once.
func TestPolicyTimeoutIsATimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		get := policies(t, map[string]string{"g": `{"timeout": "2s"}`})
		h := guard.Chain(func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, Timeout(get))
		_, err := h(context.Background(), toolCall("g", "slow", `{}`, nil))
		if !errors.Is(err, guard.ErrTimeout) || !strings.Contains(err.Error(), "within 2s (the policy's timeout)") {
			t.Fatalf("a call past the policy's timeout: %v, want guard.ErrTimeout naming the bound", err)
		}
		// A caller's own cancellation is not a timeout.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := h(ctx, toolCall("g", "slow", `{}`, nil)); errors.Is(err, guard.ErrTimeout) {
			t.Fatalf("a cancelled call is reported as a timeout: %v", err)
		}
	})
}

// waitABit yields so goroutines under test can make progress.
func waitABit() { runtime.Gosched() }

// BenchmarkLayers is the cost these layers add to one allowed call.
func BenchmarkLayers(b *testing.B) {
	p, _ := policy.Parse([]byte(`{"deny": ["write_*"], "rate": "1000000/s", "args": {"read_file": {"path": {"prefix": ["/home/me/project"]}}}}`))
	get := func(string) *policy.Policy { return p }
	reg := policy.NewLimits()
	reg.Update(&policy.Policy{Global: policy.Settings{Rate: policy.Rate{N: 1000000, Per: 1e9}}}, map[string]*policy.Policy{"g": p})
	u := &upstream{}
	h := guard.Chain(u.handle, Size(get), Policy(get, nil), Concurrency(reg), Rate(reg))
	c := toolCall("g", "read_file", `{"path": "/home/me/project/src/main.go"}`, &mcp.ToolAnnotations{ReadOnlyHint: true})
	for b.Loop() {
		if _, err := h(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPolicyLayerJudgesTheIdentity: a call made for a gateway identity
// passes only when its group's policy and the identity's rules both
// allow it; each refusal names the identity and the config key to change,
// and a call without an identity meets the group's policy alone.
func TestPolicyLayerJudgesTheIdentity(t *testing.T) {
	get := policies(t, map[string]string{"files": `{"deny": ["rm"]}`, "kb": `{}`})
	idPolicy, err := policy.ParseIdentity([]byte(`{"deny": ["write_*"], "args": {"read_file": {"path": {"prefix": ["/srv"]}}}, "resources": {"deny": ["file:///etc/*"]}, "prompts": {"allow": ["hello"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	ids := func(name string) *IdentityRules {
		switch name {
		case "alice":
			return &IdentityRules{Name: "alice", Servers: []string{"files"}, Policy: idPolicy}
		case "root":
			return &IdentityRules{Name: "root"}
		}
		return nil
	}
	alice := &guard.Identity{Name: "alice", UID: 1000, GID: 1000, PID: 42}
	as := func(id *guard.Identity, c *guard.Call) *guard.Call { c.Identity = id; return c }
	ro := &mcp.ToolAnnotations{ReadOnlyHint: true}
	for _, tt := range []struct {
		name       string
		call       *guard.Call
		wantRule   string // "" = reaches the upstream
		wantReason string
	}{
		{"allowed by both", as(alice, toolCall("files", "read_file", `{"path": "/srv/a"}`, ro)), "", ""},
		{"no identity: the group alone", toolCall("files", "write_x", `{}`, ro), "", ""},
		{"group denies first", as(alice, toolCall("files", "rm", `{}`, ro)), "deny:rm", "this group's policy"},
		{"identity denies", as(alice, toolCall("files", "write_x", `{}`, ro)), "identity:deny:write_*", "for identity alice: tool \"write_x\" matches the deny rule \"write_*\" of this identity's policy; do not retry: ask the user to change the policy if the call is needed (the rule is in gateway.identities.alice.policy of the config)"},
		{"identity's argument rule", as(alice, toolCall("files", "read_file", `{"path": "/etc/passwd"}`, ro)), "identity:args:read_file.path:prefix", "gateway.identities.alice.policy"},
		{"group not visible", as(alice, toolCall("kb", "read_file", `{}`, ro)), "identity:server", "identity alice may not use group kb; the config's gateway.identities.alice.servers lists what it may use"},
		{"not visible before the arguments are read", as(alice, toolCall("kb", "read_file", `{"a": 1, "a": 2}`, ro)), "identity:server", "gateway.identities.alice.servers"},
		{"removed identity", as(&guard.Identity{Name: "bob"}, toolCall("files", "read_file", `{}`, ro)), "identity:unknown", "identity bob is not in the config's gateway.identities"},
		{"identity without rules", as(&guard.Identity{Name: "root"}, toolCall("kb", "write_x", `{}`, ro)), "", ""},
		{"identity's resource rule", as(alice, &guard.Call{Kind: guard.KindResource, Group: "files", URI: "file:///etc/passwd"}), "identity:resources.deny:file:///etc/*", "this identity's policy (resources.deny)"},
		{"identity's prompt rule", as(alice, &guard.Call{Kind: guard.KindPrompt, Group: "files", Name: "other"}), "identity:prompts.allow", "this identity's prompts.allow list"},
		{"identity's prompt allowed", as(alice, &guard.Call{Kind: guard.KindPrompt, Group: "files", Name: "hello"}), "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := &upstream{}
			_, err := guard.Chain(u.handle, Policy(get, ids))(context.Background(), tt.call)
			if tt.wantRule == "" {
				if err != nil || u.count() != 1 {
					t.Fatalf("err %v, upstream calls %d; want it forwarded", err, u.count())
				}
				return
			}
			if d := denial(t, err); d.Layer != guard.LayerPolicy || d.Rule != tt.wantRule || !strings.Contains(d.Reason, tt.wantReason) {
				t.Errorf("denial rule %q reason %q; want rule %q with a reason containing %q", d.Rule, d.Reason, tt.wantRule, tt.wantReason)
			}
			if u.count() != 0 {
				t.Error("refused, but the upstream was called")
			}
			// Decide, which listings ask, says the same for the same call
			// (without arguments, so only for rules that do not read them).
			if !strings.HasPrefix(tt.wantRule, "identity:args") && len(tt.call.Args) < 3 {
				if d := Decide(get(tt.call.Group), ids, tt.call, nil); d == nil || d.Rule != tt.wantRule {
					t.Errorf("Decide = %v, want the layer's rule %q", d, tt.wantRule)
				}
			}
		})
	}
}

// TestIdentityLimitsLayers: the rate and concurrency layers count a call
// against its identity's own limits, which two identities never share.
func TestIdentityLimitsLayers(t *testing.T) {
	get := policies(t, map[string]string{"g": `{}`})
	reg := policy.NewLimits()
	reg.Update(nil, map[string]*policy.Policy{"g": get("g")})
	one, err := policy.ParseIdentity([]byte(`{"global": {"rate": "1/h"}}`))
	if err != nil {
		t.Fatal(err)
	}
	reg.UpdateIdentities(map[string]*policy.Policy{"alice": one, "bob": one})
	u := &upstream{}
	h := guard.Chain(u.handle, Concurrency(reg), Rate(reg))
	call := func(who string) error {
		c := toolCall("g", "t", `{}`, nil)
		c.Identity = &guard.Identity{Name: who, UID: -1, GID: -1, PID: -1}
		_, err := h(context.Background(), c)
		return err
	}
	if err := call("alice"); err != nil {
		t.Fatal(err)
	}
	if d := denial(t, call("alice")); d.Layer != guard.LayerRate {
		t.Errorf("alice's second call: %+v, want refused by her rate", d)
	}
	if err := call("bob"); err != nil {
		t.Errorf("bob's first call was refused (%v): he shares alice's limiter", err)
	}
}
