package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/upstream"
)

// rawClient speaks JSON-RPC lines to a proxy's Stdio transport, so a test
// can send what a go-sdk client never would: no params, numeric progress
// tokens, bombs, garbage.
type rawClient struct {
	t    *testing.T
	in   io.Writer
	mu   sync.Mutex
	got  map[string]json.RawMessage // response by id
	note []string                   // notifications, raw
	cond *sync.Cond
	done chan struct{}
}

type response struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func startRaw(t *testing.T, opts proxy.Options, servers ...string) (*rawClient, *proxy.Server) {
	t.Helper()
	useMoatLauncher(t)
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	opts.Upstream.ConnectTimeout = 20 * time.Second
	p := proxy.New(opts)
	var cfgServers = cfgOf()
	for _, s := range servers {
		cfgServers.Servers[s] = stdio(t, s)
	}
	p.Apply(cfgServers)
	cr, cw := io.Pipe() // client → moat
	sr, sw := io.Pipe() // moat → client
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = p.Run(ctx, p.Stdio(cr, sw))
	}()
	c := &rawClient{t: t, in: cw, got: map[string]json.RawMessage{}, done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(sr)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			var m struct {
				ID     json.RawMessage `json:"id"`
				Method string          `json:"method"`
			}
			line := append([]byte(nil), sc.Bytes()...)
			if json.Unmarshal(line, &m) != nil {
				continue
			}
			c.mu.Lock()
			if m.Method != "" {
				c.note = append(c.note, string(line))
			} else {
				c.got[string(m.ID)] = line
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	t.Cleanup(func() {
		cancel()
		cw.Close()
		sw.Close()
		<-ran
	})
	c.send(`{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	c.wait(`"init"`)
	c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return c, p
}

func (c *rawClient) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		c.t.Fatalf("writing to moat: %v", err)
	}
}

// wait returns the response with that raw id, failing after a generous
// deadline (the proxy is in-process: only a hang takes that long).
func (c *rawClient) wait(id string) response {
	c.t.Helper()
	deadline := time.AfterFunc(60*time.Second, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer deadline.Stop()
	start := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if line, ok := c.got[id]; ok {
			var r response
			if err := json.Unmarshal(line, &r); err != nil {
				c.t.Fatalf("response %s: %v", id, err)
			}
			return r
		}
		select {
		case <-c.done:
			c.t.Fatalf("moat closed its output before answering id %s", id)
		default:
		}
		if time.Since(start) > 59*time.Second {
			c.t.Fatalf("no answer to id %s within 60s", id)
		}
		c.cond.Wait()
	}
}

func (c *rawClient) notes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.note...)
}

// Requests the TypeScript SDK sends without params, and a second client's
// quirks, are answered; none ends the session.
func TestRequestsWithoutParams(t *testing.T) {
	c, _ := startRaw(t, proxy.Options{}, "test")
	for i, tc := range []struct{ line, want string }{
		{`{"jsonrpc":"2.0","id":1,"method":"resources/list"}`, `"uri"`},
		{`{"jsonrpc":"2.0","id":2,"method":"resources/templates/list"}`, `"uriTemplate"`},
		{`{"jsonrpc":"2.0","id":3,"method":"prompts/list"}`, `"name"`},
		{`{"jsonrpc":"2.0","id":4,"method":"prompts/list","params":null}`, `"name"`},
		{`{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}`, `call_dynamic_tool`},
		{`{"jsonrpc":"2.0","id":6,"method":"ping"}`, `{}`},
	} {
		c.send(tc.line)
		r := c.wait(fmt.Sprint(i + 1))
		if r.Error != nil || !strings.Contains(string(r.Result), tc.want) {
			t.Errorf("%s: got result %.200s, error %+v; want a result with %s", tc.line, r.Result, r.Error, tc.want)
		}
	}
	// Methods that need params say so, as -32602/-32600, and nothing dies.
	for i, m := range []string{"resources/read", "prompts/get", "resources/subscribe", "resources/unsubscribe", "completion/complete", "logging/setLevel", "tools/call"} {
		id := 100 + i
		c.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q}`, id, m))
		if r := c.wait(fmt.Sprint(id)); r.Error == nil || (r.Error.Code != -32602 && r.Error.Code != -32600) {
			t.Errorf("%s without params: got %+v, want an invalid-params or invalid-request error", m, r.Error)
		}
	}
	c.send(`{"jsonrpc":"2.0","id":"last","method":"ping"}`)
	if r := c.wait(`"last"`); r.Error != nil {
		t.Fatalf("ping after the bad requests: %+v", r.Error)
	}
}

// A client's progress token may be any JSON number or string: an integer
// (the TypeScript SDK's) comes back as the same integer, and an upstream
// only ever sees a token of Moat's.
func TestNumericProgressTokens(t *testing.T) {
	c, _ := startRaw(t, proxy.Options{}, "test")
	for i, tok := range []string{`5`, `1.5`, `"s"`, `9007199254740991`, `{"x":1}`, `null`} {
		id := 10 + i
		c.send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"progress","args":{"steps":2}},"_meta":{"progressToken":%s}}}`, id, tok))
		if r := c.wait(fmt.Sprint(id)); r.Error != nil || !strings.Contains(string(r.Result), "done 2 steps") {
			t.Errorf("progress token %s: got %.200s %+v; want the tool's result", tok, r.Result, r.Error)
		}
	}
	var seen []string
	for _, n := range c.notes() {
		var m struct {
			Method string `json:"method"`
			Params struct {
				Token json.RawMessage `json:"progressToken"`
			} `json:"params"`
		}
		if json.Unmarshal([]byte(n), &m) == nil && m.Method == "notifications/progress" {
			seen = append(seen, string(m.Params.Token))
		}
	}
	// Each valid token gets both of its notifications, echoed exactly.
	for _, tok := range []string{`5`, `1.5`, `"s"`, `9007199254740991`} {
		if n := count(seen, tok); n != 2 {
			t.Errorf("progress token %s: %d notifications reached the client, want 2 (all seen: %v)", tok, n, seen)
		}
	}
	if len(seen) != 8 {
		t.Errorf("got %d progress notifications, want 8 (none for an invalid token): %v", len(seen), seen)
	}
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// panicAt is a layer that panics on one tool, standing in for any bug a
// request can reach.
func panicAt(tool string) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			if c.Name == tool {
				panic("boom at " + tool)
			}
			return next(ctx, c)
		}
	}
}

// A panic, a depth bomb, a frame over the limit and text that is not JSON
// each fail their own message: the session, the group and the other calls
// go on, and each is reported for the audit log.
func TestOneBadMessageFailsAlone(t *testing.T) {
	var mu sync.Mutex
	var incidents []proxy.Incident
	c, p := startRaw(t, proxy.Options{
		Layers:         []guard.Layer{panicAt("add")},
		MaxClientFrame: 64 << 10,
		Incident: func(_ context.Context, in proxy.Incident) {
			mu.Lock()
			incidents = append(incidents, in)
			mu.Unlock()
		},
	}, "test")
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	big := strings.Repeat("a", 100<<10)
	c.send(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"add","args":{"a":1,"b":2}}}}`)
	c.send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"echo","args":{"message":` + deep + `}}}}`)
	c.send(`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"echo","args":{"message":"` + big + `"}}}}`)
	c.send(`{"jsonrpc":"2.0","id":4,"method":`)
	c.send(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"echo","args":{"message":"still here"}}}}`)
	for id, code := range map[string]int{"1": -32603, "2": -32600, "3": -32600, "4": -32700} {
		if r := c.wait(id); r.Error == nil || r.Error.Code != code {
			t.Errorf("id %s: got %+v, want error %d", id, r.Error, code)
		}
	}
	if r := c.wait("5"); r.Error != nil || !strings.Contains(string(r.Result), "still here") {
		t.Fatalf("the call after the bad ones: %.200s %+v", r.Result, r.Error)
	}
	if st := p.Manager().Groups()[0].Status(); st.State != upstream.Ready {
		t.Errorf("the group is %v after the bad messages, want ready", st.State)
	}
	mu.Lock()
	defer mu.Unlock()
	kinds := map[proxy.IncidentKind]int{}
	for _, in := range incidents {
		kinds[in.Kind]++
	}
	if kinds[proxy.IncidentPanic] != 1 || kinds[proxy.IncidentRefusedMessage] != 3 {
		t.Errorf("incidents %v, want 1 panic and 3 refused messages", incidents)
	}
}

// signalAt closes entered when a call to tool reaches the layer, and left
// when the rest of the chain has returned.
func signalAt(tool string, entered, left chan struct{}) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			if c.Name != tool {
				return next(ctx, c)
			}
			close(entered)
			defer close(left)
			return next(ctx, c)
		}
	}
}

// TestCancelledRequestGetsNoAnswer: MCP says the receiver of
// notifications/cancelled should not answer the request; the TypeScript SDK
// reports an answer to a request it forgot as an error. The call ends at
// the upstream, nothing for its id reaches the client, and the session
// goes on. A cancellation of an id never sent, or already answered, is
// ignored.
func TestCancelledRequestGetsNoAnswer(t *testing.T) {
	entered, left := make(chan struct{}), make(chan struct{})
	c, _ := startRaw(t, proxy.Options{Layers: []guard.Layer{signalAt("slow", entered, left)}}, "test")
	c.send(`{"jsonrpc":"2.0","id":"done","method":"ping"}`)
	c.wait(`"done"`)
	c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"done"}}`)
	c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":12345}}`)
	c.send(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"slow","args":{"ms":60000}}}}`)
	<-entered
	c.send(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7.0,"reason":"user pressed stop"}}`)
	<-left
	c.send(`{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"echo","args":{"message":"after"}}}}`)
	if r := c.wait("8"); r.Error != nil {
		t.Fatalf("the call after a cancellation failed: %+v", r.Error)
	}
	c.mu.Lock()
	line, answered := c.got["7"]
	c.mu.Unlock()
	if answered {
		t.Fatalf("moat answered the cancelled request: %s", line)
	}
}

// TestUndecodableMessagesFailAlone: valid JSON that is not a JSON-RPC 2.0
// message made go-sdk end the whole session (found by FuzzClientMessage: a
// bare "5"). Each is now answered as an invalid request, with its id when
// it has a usable one and null otherwise; notifications get no answer; the
// session goes on.
func TestUndecodableMessagesFailAlone(t *testing.T) {
	c, _ := startRaw(t, proxy.Options{}, "test")
	for _, tt := range []struct {
		line, id, want string
	}{
		{`5`, "null", "not a JSON-RPC 2.0 message"},
		{`"ping"`, "null", "not a JSON-RPC 2.0 message"},
		{`{"id":3,"method":"ping"}`, "3", `version tag`},
		{`{"jsonrpc":"2.0","id":true,"method":"ping"}`, "null", "not a JSON-RPC 2.0 message"},
		{`{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, "null", "not a JSON-RPC 2.0 message"},
		{`{"jsonrpc":"2.0","method":7}`, "null", "not a JSON-RPC 2.0 message"},
		{`[{"jsonrpc":"2.0","id":4,"method":"ping"}]`, "null", "batches are not supported"},
		{`[]`, "null", "batches are not supported"},
		{`{"method":"notifications/initialized"}`, "", ""}, // a notification: no answer
	} {
		c.send(tt.line)
		if tt.id == "" {
			continue
		}
		r := c.wait(tt.id)
		if r.Error == nil || r.Error.Code != -32600 || !strings.Contains(r.Error.Message, tt.want) {
			t.Errorf("%s: answered %+v, want -32600 naming %q", tt.line, r.Error, tt.want)
		}
		c.mu.Lock()
		delete(c.got, tt.id)
		c.mu.Unlock()
	}
	c.send(`{"jsonrpc":"2.0","id":"after","method":"tools/call","params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"echo","args":{"message":"still here"}}}}`)
	if r := c.wait(`"after"`); r.Error != nil || !strings.Contains(string(r.Result), "still here") {
		t.Fatalf("the call after the undecodable messages: %.200s %+v", r.Result, r.Error)
	}
}
