package attacks

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// TestCaseVariantKeysInCallDynamicTool smuggles a second group or tool name
// past Moat's checks with keys that a case-insensitive or last-wins decoder
// would read differently from a strict one. Each is refused as invalid
// params (-32602) and nothing reaches either upstream.
//
// Audit: these refusals happen at the protocol edge, before the call chain,
// and each refusal is in the audit log as a denied tool_call; a smuggled
// call that got through would show as a third allowed one.
//
// SECURITY.md, "The proxy": "Tool arguments are decoded strictly: unknown,
// duplicate and case-variant keys ... are refused, so the value Moat checks
// is the value it forwards."
func TestCaseVariantKeysInCallDynamicTool(t *testing.T) {
	dir := t.TempDir()
	recA, recB := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl")
	cfg := testutil.WriteConfig(t, dir, map[string]server{
		"a": testServer(t, "a", "-record", recA),
		"b": testServer(t, "b", "-record", recB),
	})
	m := startMoat(t, cfg)
	m.echoWorks(t, "a")
	m.echoWorks(t, "b")
	for _, tt := range []struct{ name, args, want string }{
		{"case-variant group", `{"group":"a","Group":"b","name":"echo","args":{"message":"smuggled"}}`, `"Group"`},
		{"duplicate group", `{"group":"a","group":"b","name":"echo","args":{"message":"smuggled"}}`, `"group" given twice`},
		{"case-variant name", `{"group":"a","name":"echo","NAME":"fail","args":{"message":"smuggled"}}`, `"NAME"`},
		{"duplicate args", `{"group":"a","name":"echo","args":{"message":"smuggled"},"args":{"message":"other"}}`, `"args" given twice`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.callRaw(t, "call_dynamic_tool", json.RawMessage(tt.args))
			var rpc *jsonrpc.Error
			if !errorsAs(err, &rpc) || rpc.Code != jsonrpc.CodeInvalidParams || !strings.Contains(rpc.Message, tt.want) {
				t.Fatalf("call_dynamic_tool(%s) = %v; want a -32602 error naming %s", tt.args, err, tt.want)
			}
		})
	}
	for _, rec := range []string{recA, recB} {
		if calls := recordedCalls(t, rec); len(calls) != 1 {
			t.Errorf("%s saw %d calls, want only the first honest echo: %v", filepath.Base(rec), len(calls), calls)
		}
	}
	recs := m.auditLog(t)
	allowed, refused := 0, 0
	for _, r := range recs {
		switch {
		case r.Event == "tool_call" && r.Decision == "allow":
			allowed++
		case r.Event == "tool_call" && r.Decision == "deny" && r.Rule == "proxy:invalid-request":
			refused++
		}
	}
	if allowed != 2 || refused != 4 {
		t.Errorf("the audit log has %d allowed and %d refused tool_call records, want the 2 honest echoes and the 4 smuggling attempts", allowed, refused)
	}
}

// TestDuplicateAndCaseVariantKeysInToolArgs sends the tool's own arguments
// with a duplicate or case-variant key, so that Moat's checks and the
// upstream could read different values. Both are refused by the first
// layer that reads the arguments (policy), through the one decoder every
// layer shares, audited as denied, and never reach the upstream.
//
// SECURITY.md, "The proxy": "Tool arguments are decoded strictly: unknown,
// duplicate and case-variant keys (`"Name"` beside `"name"`) are refused".
func TestDuplicateAndCaseVariantKeysInToolArgs(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "calls.jsonl")
	cfg := testutil.WriteConfig(t, dir, map[string]server{"test": testServer(t, "test", "-record", rec)})
	m := startMoat(t, cfg)
	for _, tt := range []struct{ args, want string }{
		{`{"message":"checked","Message":"forwarded"}`, "differ only in case"},
		{`{"message":"checked","message":"forwarded"}`, "duplicate key"},
		{`{"message":"checked","x":{"k":1,"K":2}}`, "differ only in case"},
	} {
		res, err := m.callRaw(t, "call_dynamic_tool", json.RawMessage(`{"group":"test","name":"echo","args":`+tt.args+`}`))
		if err != nil {
			t.Fatalf("args %s: %v", tt.args, err)
		}
		if !res.IsError || !strings.Contains(resultText(res), tt.want) {
			t.Errorf("args %s: isError=%v %q; want a refusal saying %q", tt.args, res.IsError, resultText(res), tt.want)
		}
		if strings.Contains(resultText(res), "forwarded") {
			t.Errorf("the refusal repeats an argument value: %q", resultText(res))
		}
	}
	if calls := recordedCalls(t, rec); len(calls) != 0 {
		t.Errorf("smuggled arguments reached the upstream: %v", calls)
	}
	recs := m.auditLog(t)
	for _, what := range []string{"differ only in case", "duplicate key"} {
		findRecord(t, recs, "the arguments ("+what+") denied by the policy layer's decoder", func(r audit.Record) bool {
			return r.Event == "tool_call" && r.Tool == "echo" && r.Decision == "deny" && r.Rule == "policy:args:decode" && strings.Contains(r.Reason, what)
		})
	}
}

// TestUpstreamGetsTheCheckedValue: the arguments an upstream receives are
// the encoding of the value Moat's layers judged, not the bytes the client
// sent: escapes in keys and strings, spacing and key order, which a
// careless reader on either side could read differently, never reach it.
//
// SECURITY.md, "The proxy": strict decoding.
func TestUpstreamGetsTheCheckedValue(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "calls.jsonl")
	cfg := testutil.WriteConfig(t, dir, map[string]server{"test": testServer(t, "test", "-record", rec)})
	m := startMoat(t, cfg)
	args := `{ "\u006dessage" : "x\u0041<&>\/\t" }`
	res, err := m.callRaw(t, "call_dynamic_tool", json.RawMessage(`{"group":"test","name":"echo","args":`+args+`}`))
	if err != nil || res.IsError {
		t.Fatalf("echo: %v %q", err, resultText(res))
	}
	calls := recordedCalls(t, rec)
	if len(calls) != 1 {
		t.Fatalf("the upstream saw %d calls, want 1", len(calls))
	}
	var c struct{ Arguments json.RawMessage }
	json.Unmarshal([]byte(calls[0]), &c)
	// go-sdk's client escapes <, & and > on the wire; nothing else of the
	// client's spelling survives (the key's escape, the spacing).
	if want := `{"message":"xA\u003c\u0026\u003e/\t"}`; string(c.Arguments) != want {
		t.Errorf("the upstream received %s, want the checked value's encoding %s", c.Arguments, want)
	}
}
