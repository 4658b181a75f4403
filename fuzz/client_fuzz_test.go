package fuzz

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/testutil"
)

// clientMethods are the methods a client can send, by the spec of every
// protocol version Moat knows, and some it cannot: each fuzz input picks
// one. Server-to-client methods are in the list too, since a hostile client
// sends whatever it likes.
var clientMethods = []string{
	"initialize", "ping", "tools/list", "tools/call", "resources/list",
	"resources/templates/list", "resources/read", "resources/subscribe",
	"resources/unsubscribe", "prompts/list", "prompts/get",
	"completion/complete", "logging/setLevel", "server/discover",
	"subscriptions/listen", "tasks/get", "tasks/list", "tasks/cancel",
	"tasks/result", "sampling/createMessage", "elicitation/create",
	"roots/list", "notifications/initialized", "notifications/cancelled",
	"notifications/progress", "notifications/roots/list_changed",
	"notifications/message", "no/such/method",
}

// paramShapes turn the fuzzed payload into the request's params: omitted,
// null, empty, the wrong type, the payload itself, and the shapes real
// clients send with the payload in their fields (progress tokens, ids to
// cancel, a group, tool arguments).
var paramShapes = []func(payload string) string{
	func(string) string { return "" },
	func(string) string { return `,"params":null` },
	func(string) string { return `,"params":{}` },
	func(string) string { return `,"params":[]` },
	func(p string) string { return `,"params":` + p },
	func(p string) string { return `,"params":{"_meta":{"progressToken":` + p + `}}` },
	func(p string) string { return `,"params":{"requestId":` + p + `,"reason":"x"}` },
	func(p string) string { return `,"params":{"_meta":{"group":` + p + `}}` },
	func(p string) string {
		return `,"params":{"name":"call_dynamic_tool","arguments":{"group":"test","name":"echo","args":{"message":` + p + `}},"_meta":{"progressToken":` + p + `}}`
	},
	func(p string) string {
		return `,"params":{"uri":` + p + `,"name":` + p + `,"ref":` + p + `,"level":` + p + `}`
	},
	// 2026-07-28: the client speaks in each request's _meta, and retries
	// a call that asked for input with requestState and inputResponses.
	func(p string) string {
		return `,"params":{"_meta":{` + newMeta + `,"io.modelcontextprotocol/logLevel":` + p + `},"name":"call_dynamic_tool","arguments":{"group":"test","name":"ask_client","args":{"kind":"elicitation"}},"requestState":` + p + `,"inputResponses":` + p + `}`
	},
	func(p string) string {
		return `,"params":{"_meta":{` + newMeta + `},"uri":"test://static/hello","name":"greet","requestState":"` + strings.Trim(p, `"`) + `","inputResponses":{"moat-1":` + p + `}}`
	},
	func(p string) string { return `,"params":{"_meta":{` + newMeta + `},"notifications":` + p + `}` },
}

// newMeta is the _meta of a request of a 2026-07-28 client.
const newMeta = `"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"fuzz","version":"1"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{},"elicitation":{"form":{}}}`

// FuzzClientMessage drives the client side of a real moat binary (one per
// fuzz worker, with the Go test server as its one group) with one fuzzed
// message per input: a method of clientMethods, its params in one of
// paramShapes around the fuzzed payload, as a request or a notification,
// or the payload alone as a raw line. After each, moat must still be
// running, must have answered the message if it was a request (any answer:
// a result or an error), and must answer a ping and an echo call.
func FuzzClientMessage(f *testing.F) {
	for _, tok := range []string{`5`, `1.5`, `-0`, `1e400`, `18446744073709551616`, `"t"`, `null`, `true`, `{}`, `[]`, `"` + strings.Repeat("\u202e", 40) + `"`} {
		f.Add(uint8(5), uint8(3), false, tok) // tools/call with a progress token
		f.Add(uint8(6), uint8(23), true, tok) // notifications/cancelled of an unknown id
	}
	for i := range clientMethods {
		for j := range paramShapes {
			f.Add(uint8(j), uint8(i), false, `{"x":1}`)
		}
	}
	f.Add(uint8(0), uint8(0), false, strings.Repeat("[", 3000))
	fuzzClient(f, startMoat(f, ""))
}

// FuzzNewClientMessage is FuzzClientMessage with a client of 2026-07-28:
// no initialize, server/discover first, then each request carries the
// client's _meta; calls that ask for input return input-required results
// (which it leaves unanswered, as a hostile client may) and retries.
func FuzzNewClientMessage(f *testing.F) {
	for i := range clientMethods {
		for j := range paramShapes {
			f.Add(uint8(j), uint8(i), false, `{"x":1}`)
		}
	}
	for _, p := range []string{`"debug"`, `"no-such-state"`, `{"moat-1":{"action":"accept","content":{"name":"x"}}}`, `{"toolsListChanged":true}`, `null`} {
		for j := len(paramShapes) - 3; j < len(paramShapes); j++ {
			f.Add(uint8(j), uint8(3), false, p)  // tools/call
			f.Add(uint8(j), uint8(6), false, p)  // resources/read
			f.Add(uint8(j), uint8(14), false, p) // subscriptions/listen
		}
	}
	fuzzClient(f, startMoat(f, newMeta))
}

func fuzzClient(f *testing.F, m *moatProc) {
	f.Fuzz(func(t *testing.T, shape, method uint8, notify bool, payload string) {
		if strings.ContainsAny(payload, "\r\n") {
			return // one message is one line (MCP stdio)
		}
		id := m.nextID()
		var line string
		switch {
		case int(method) >= len(clientMethods):
			line = payload // not even JSON-RPC
		case notify:
			line = fmt.Sprintf(`{"jsonrpc":"2.0","method":%q%s}`, clientMethods[method], paramShapes[int(shape)%len(paramShapes)](payload))
		default:
			line = fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q%s}`, id, clientMethods[method], paramShapes[int(shape)%len(paramShapes)](payload))
		}
		m.send(t, line)
		// A well-formed request gets an answer; a malformed line may be
		// answered with a null id or not at all.
		// subscriptions/listen is answered only when the client cancels it.
		if !notify && int(method) < len(clientMethods) && clientMethods[method] != "subscriptions/listen" && json.Valid([]byte(line)) {
			m.await(t, id, line)
		}
		ping := m.nextID()
		m.send(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"%s}`, ping, m.params("")))
		m.await(t, ping, line)
		echo := m.nextID()
		m.send(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call"%s}`, echo, m.params(`"name":"call_dynamic_tool","arguments":{"group":"test","name":"echo","args":{"message":"alive"}}`)))
		if resp := m.await(t, echo, line); !strings.Contains(resp, "alive") {
			t.Fatalf("echo after %.300q answered %.300s", line, resp)
		}
	})
}

// moatProc is one real moat, spoken to in raw JSON-RPC lines.
type moatProc struct {
	meta   string // the _meta members of each request; "" before 2026-07-28
	cmd    *exec.Cmd
	in     io.Writer
	stderr *testutil.SyncBuffer

	mu      sync.Mutex
	id      int
	answers map[int]string
	arrived *sync.Cond
	exited  bool
}

// params returns the params member of a request of m's client, with
// members and the client's _meta.
func (m *moatProc) params(members string) string {
	if m.meta == "" {
		if members == "" {
			return ""
		}
		return `,"params":{` + members + `}`
	}
	if members != "" {
		members = "," + members
	}
	return `,"params":{"_meta":{` + m.meta + `}` + members + `}`
}

// startMoat starts a moat and opens a session: with initialize when meta
// is "", with server/discover and meta (a 2026-07-28 client's) otherwise.
func startMoat(f *testing.F, meta string) *moatProc {
	f.Helper()
	dir := f.TempDir()
	cfg := testutil.WriteConfig(f, dir, map[string]any{
		"test": map[string]any{
			"description": "the Go test server",
			"command":     testutil.BuildTestServer(f),
			"args":        []string{"-name", "test"},
		},
	}, map[string]any{"defaults": map[string]any{"policy": map[string]any{
		// Every input makes an echo call: the default 100/s would refuse some.
		"global": map[string]any{"rate": "100000/s", "burst": 100000},
		"rate":   "100000/s", "burst": 100000,
	}}})
	m := &moatProc{meta: meta, stderr: &testutil.SyncBuffer{}, answers: map[int]string{}}
	m.arrived = sync.NewCond(&m.mu)
	m.cmd = exec.Command(testutil.BuildMoat(f), cfg)
	m.cmd.Env = testutil.MoatEnv(f)
	m.cmd.Stderr = m.stderr
	m.cmd.SysProcAttr = testutil.GroupAttr()
	in, err := m.cmd.StdinPipe()
	if err != nil {
		f.Fatal(err)
	}
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		f.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		f.Fatal(err)
	}
	m.in = in
	go m.read(out)
	f.Cleanup(func() {
		in.Close()
		_ = m.cmd.Process.Kill()
		_ = m.cmd.Wait()
	})
	init := m.nextID()
	if meta != "" {
		m.send(f, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"server/discover"%s}`, init, m.params("")))
		if a := m.await(f, init, "server/discover"); !strings.Contains(a, `"supportedVersions"`) {
			f.Fatalf("server/discover answered %.500s", a)
		}
		return m
	}
	m.send(f, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{},"elicitation":{},"roots":{}},"clientInfo":{"name":"fuzz","version":"1"}}}`, init))
	m.await(f, init, "initialize")
	m.send(f, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	return m
}

func (m *moatProc) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var msg struct {
			ID     *int            `json:"id"`
			Method string          `json:"method"`
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		line := sc.Text()
		if json.Unmarshal([]byte(line), &msg) != nil {
			continue
		}
		if msg.Method != "" && msg.ID != nil {
			// moat asks the client (roots, sampling, elicitation): answer
			// with an error so nothing waits on the fuzzer.
			go m.reply(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"error":{"code":-32601,"message":"not in this test"}}`, *msg.ID))
			continue
		}
		if msg.ID == nil {
			continue
		}
		m.mu.Lock()
		m.answers[*msg.ID] = line
		m.arrived.Broadcast()
		m.mu.Unlock()
	}
	m.mu.Lock()
	m.exited = true
	m.arrived.Broadcast()
	m.mu.Unlock()
}

func (m *moatProc) reply(line string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, _ = io.WriteString(m.in, line+"\n")
}

func (m *moatProc) nextID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id++
	return 1000 + m.id
}

func (m *moatProc) send(t testing.TB, line string) {
	t.Helper()
	m.mu.Lock()
	_, err := io.WriteString(m.in, line+"\n")
	m.mu.Unlock()
	if err != nil {
		t.Fatalf("writing to moat failed (%v) after %.300q; moat's stderr ends:\n%s", err, line, m.tail())
	}
}

// await returns the answer to id, failing if moat exits or takes longer
// than any answer should (a hang).
func (m *moatProc) await(t testing.TB, id int, after string) string {
	t.Helper()
	timer := time.AfterFunc(30*time.Second, func() {
		m.mu.Lock()
		m.arrived.Broadcast()
		m.mu.Unlock()
	})
	defer timer.Stop()
	start := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		if a, ok := m.answers[id]; ok {
			delete(m.answers, id)
			return a
		}
		if m.exited {
			t.Fatalf("moat exited after %.300q; its stderr ends:\n%s", after, m.tail())
		}
		if time.Since(start) >= 30*time.Second {
			t.Fatalf("moat did not answer id %d within 30s after %.300q; its stderr ends:\n%s", id, after, m.tail())
		}
		m.arrived.Wait()
	}
}

func (m *moatProc) tail() string {
	s := m.stderr.String()
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}
