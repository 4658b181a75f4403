package validate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
)

// tool builds a tool whose schema is what go-sdk's client hands over: the
// result of decoding JSON into any.
func tool(t testing.TB, name, schema string) *mcp.Tool {
	t.Helper()
	var s any
	if err := json.Unmarshal([]byte(schema), &s); err != nil {
		t.Fatalf("bad test schema %s: %v", schema, err)
	}
	return &mcp.Tool{Name: name, InputSchema: s}
}

const fileSchema = `{
	"type": "object",
	"properties": {
		"path": {"type": "string", "pattern": "^[a-zA-Z0-9_./-]{1,256}$"},
		"mode": {"enum": ["read", "write", "append"]},
		"count": {"type": "integer", "minimum": 1, "maximum": 100},
		"tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
		"opts": {"$ref": "#/$defs/opts"}
	},
	"required": ["path"],
	"additionalProperties": false,
	"$defs": {"opts": {"type": "object", "properties": {"recursive": {"type": "boolean"}}, "required": ["recursive"]}}
}`

const draft07Schema = `{
	"$schema": "http://json-schema.org/draft-07/schema#",
	"type": "object",
	"properties": {"user": {"$ref": "#/definitions/user"}},
	"required": ["user"],
	"definitions": {"user": {"type": "object", "properties": {"age": {"type": "integer", "exclusiveMinimum": 0}}, "required": ["age"]}}
}`

const draft04Schema = `{
	"$schema": "http://json-schema.org/draft-04/schema#",
	"type": "object",
	"properties": {"n": {"type": "number", "maximum": 10, "exclusiveMaximum": true}}
}`

const draft2019Schema = `{
	"$schema": "https://json-schema.org/draft/2019-09/schema",
	"type": "object",
	"properties": {"a": {"$ref": "#/$defs/s"}},
	"$defs": {"s": {"type": "string", "minLength": 2}}
}`

func TestCheck(t *testing.T) {
	v := New(Options{})
	tests := []struct {
		name, schema, args string
		want               string // substring of the denial; "" means accepted
	}{
		{"valid", fileSchema, `{"path":"a/b.txt","mode":"read","count":3,"tags":["x"],"opts":{"recursive":true}}`, ""},
		{"omitted args are {}", `{"type":"object"}`, ``, ""},
		{"null args are {}", `{"type":"object"}`, `null`, ""},
		{"missing required", fileSchema, `{"mode":"read"}`, "missing property 'path'"},
		{"wrong type", fileSchema, `{"path":"a","count":"3"}`, "at '/count': got string, want integer"},
		{"not an integer", fileSchema, `{"path":"a","count":2.5}`, "at '/count': got number, want integer"},
		{"enum", fileSchema, `{"path":"a","mode":"delete"}`, "at '/mode': value must be one of 'read', 'write', 'append'"},
		{"pattern", fileSchema, `{"path":"../../etc/passwd;rm"}`, "at '/path': '../../etc/passwd;rm' does not match pattern"},
		{"additionalProperties", fileSchema, `{"path":"a","extra":1}`, "additional properties 'extra' not allowed"},
		{"maximum", fileSchema, `{"path":"a","count":101}`, "at '/count': maximum"},
		{"array items", fileSchema, `{"path":"a","tags":["ok","much-too-long"]}`, "at '/tags/1': maxLength"},
		{"internal $defs $ref", fileSchema, `{"path":"a","opts":{}}`, "at '/opts': missing property 'recursive'"},
		{"draft-07 definitions ok", draft07Schema, `{"user":{"age":3}}`, ""},
		{"draft-07 definitions bad", draft07Schema, `{"user":{"age":0}}`, "at '/user/age'"},
		{"draft-04 exclusiveMaximum", draft04Schema, `{"n":10}`, "at '/n'"},
		{"draft-04 ok", draft04Schema, `{"n":9.5}`, ""},
		{"2019-09 ok", draft2019Schema, `{"a":"xy"}`, ""},
		{"2019-09 bad", draft2019Schema, `{"a":"x"}`, "at '/a': minLength"},
		{"array args", `{"type":"object"}`, `[1,2]`, "must be a JSON object"},
		{"string args", `{"type":"object"}`, `"x"`, "must be a JSON object"},
		{"trailing data", `{"type":"object"}`, `{} {}`, "after the top-level"},
		{"duplicate key", fileSchema, `{"path":"a","path":"../x"}`, `duplicate key "path"`},
		{"duplicate key by escape", fileSchema, `{"path":"a","p\u0061th":"../x"}`, `duplicate key "path"`},
		{"nested duplicate key", `{"type":"object"}`, `{"a":[{"b":1,"b":2}]}`, `duplicate key "b"`},
		{"keys equal but for case", `{"type":"object"}`, `{"path":"a","PATH":"b"}`, "differ only in case"},
		{"case variant of declared property", fileSchema, `{"path":"ok","Mode":"delete"}`, `key "Mode" differs only in case from the declared property "mode"`},
		{"nested case variant", fileSchema, `{"path":"ok","opts":{"recursive":true,"Recursive":1}}`, "differ only in case"},
		// Properties declared the way pydantic and zod emit them.
		{"case variant through $ref", `{"$ref":"#/$defs/Args","$defs":{"Args":{"type":"object","properties":{"path":{"type":"string"}}}}}`,
			`{"Path":"/etc/shadow"}`, `key "Path" differs only in case from the declared property "path"`},
		{"case variant through definitions", `{"type":"object","properties":{"a":{"$ref":"#/definitions/A"}},"definitions":{"A":{"type":"object","properties":{"path":{}}}}}`,
			`{"a":{"PATH":"x"}}`, `at "/a": key "PATH" differs only in case`},
		{"case variant through allOf", `{"allOf":[{"type":"object","properties":{"path":{"type":"string"}}},{"properties":{"mode":{}}}]}`,
			`{"paTh":"/etc/shadow"}`, `key "paTh" differs only in case from the declared property "path"`},
		{"case variant through anyOf in items", `{"type":"object","properties":{"files":{"type":"array","items":{"anyOf":[{"properties":{"path":{}}}]}}}}`,
			`{"files":[{"path":"a"},{"Path":"b"}]}`, `at "/files/1": key "Path"`},
		{"exact name through $ref ok", `{"$ref":"#/$defs/Args","$defs":{"Args":{"type":"object","properties":{"path":{"type":"string"}}}}}`,
			`{"path":"/tmp/x"}`, ""},
		{"recursive $ref ends", `{"$ref":"#/$defs/N","$defs":{"N":{"type":"object","properties":{"next":{"$ref":"#/$defs/N"},"v":{}}}}}`,
			`{"next":{"next":{"v":1}},"V":2}`, `key "V" differs only in case`},
		{"invalid UTF-8", `{"type":"object"}`, "{\"a\":\"\xff\"}", "not valid UTF-8"},
		{"lone surrogate", `{"type":"object"}`, `{"a":"\ud800x"}`, "unpaired UTF-16 surrogate"},
		{"lone low surrogate", `{"type":"object"}`, `{"a":"\udc00"}`, "unpaired UTF-16 surrogate"},
		{"surrogate pair ok", `{"type":"object"}`, `{"a":"\ud83d\ude00"}`, ""},
		{"huge exponent", `{"type":"object"}`, `{"a":1e999999999}`, "exponent"},
		{"long number", `{"type":"object"}`, `{"a":` + strings.Repeat("9", 300) + `}`, "longer than 256"},
		{"bad JSON", `{"type":"object"}`, `{"a":}`, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Check(tool(t, "files_read", tt.schema), json.RawMessage(tt.args))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var d *guard.Denial
			if !errors.As(err, &d) {
				t.Fatalf("Check = %v, want a *guard.Denial", err)
			}
			if d.Layer != "validate" || !strings.Contains(d.Error(), tt.want) {
				t.Errorf("Check = %q, want it to contain %q", d.Error(), tt.want)
			}
			if !strings.Contains(d.Reason, "files_read") {
				t.Errorf("denial %q does not name the tool", d.Reason)
			}
		})
	}
}

func TestSchemaDenialText(t *testing.T) {
	v := New(Options{})
	err := v.Check(tool(t, "files_read", fileSchema), json.RawMessage(`{"path":"../x;rm","count":"3"}`))
	var d *guard.Denial
	if !errors.As(err, &d) {
		t.Fatalf("Check = %v, want a denial", err)
	}
	if d.Rule != "input-schema" {
		t.Errorf("Rule = %q, want input-schema", d.Rule)
	}
	for _, want := range []string{"arguments do not match the input schema of files_read: ", "at '/count': got string, want integer", "at '/path': '../x;rm' does not match", "; fix the arguments and call again"} {
		if !strings.Contains(d.Reason, want) {
			t.Errorf("Reason %q lacks %q", d.Reason, want)
		}
	}
	if strings.Contains(d.Reason, "moat:///") {
		t.Errorf("Reason %q leaks the internal schema URL", d.Reason)
	}
}

func TestLongValuesNotEchoed(t *testing.T) {
	v := New(Options{})
	secret := "AKIA" + strings.Repeat("Z", 80)
	err := v.Check(tool(t, "t", `{"properties":{"k":{"type":"string","pattern":"^[a-z]+$"},"e":{"enum":["a","b"]}}}`),
		json.RawMessage(`{"k":"`+secret+`","e":"`+secret+`"}`))
	if err == nil {
		t.Fatal("Check accepted a value that breaks the pattern")
	}
	if strings.Contains(err.Error(), secret[:65]) {
		t.Errorf("denial echoes a long argument value: %q", err)
	}
	if !strings.Contains(err.Error(), "<a value of 84 characters>") {
		t.Errorf("denial %q does not say what it elided", err)
	}
}

func TestMessagesBounded(t *testing.T) {
	v := New(Options{})
	var props, args []string
	for i := range 15 {
		props = append(props, fmt.Sprintf(`"p%d":{"type":"integer"}`, i))
		args = append(args, fmt.Sprintf(`"p%d":"x"`, i))
	}
	err := v.Check(tool(t, "t", `{"properties":{`+strings.Join(props, ",")+`}}`), json.RawMessage(`{`+strings.Join(args, ",")+`}`))
	if err == nil {
		t.Fatal("Check accepted 15 wrong types")
	}
	if n := strings.Count(err.Error(), "at '/p"); n != maxMessages {
		t.Errorf("denial lists %d messages, want %d: %q", n, maxMessages, err)
	}
	if !strings.Contains(err.Error(), "and 5 more") {
		t.Errorf("denial %q does not count the rest", err)
	}
}

// The validator sees numbers as written, so a big integer is not rounded to
// its neighbour.
func TestBigIntegersExact(t *testing.T) {
	v := New(Options{})
	tl := &mcp.Tool{Name: "t", InputSchema: json.RawMessage(`{"properties":{"n":{"const":9007199254740993}}}`)}
	if err := v.Check(tl, json.RawMessage(`{"n":9007199254740993}`)); err != nil {
		t.Errorf("exact value refused: %v", err)
	}
	if err := v.Check(tl, json.RawMessage(`{"n":9007199254740992}`)); err == nil {
		t.Error("a neighbouring big integer was accepted (float rounding)")
	}
}

func TestArgsLimits(t *testing.T) {
	v := New(Options{MaxArgsBytes: 100})
	tl := tool(t, "t", `{"type":"object"}`)
	nest := func(n int) string { return strings.Repeat(`{"a":`, n-1) + `{}` + strings.Repeat(`}`, n-1) }
	if err := v.Check(tl, json.RawMessage(`{"a":"`+strings.Repeat("x", 100)+`"}`)); err == nil || !strings.Contains(err.Error(), "over the limit of 100") {
		t.Errorf("Check(101+ bytes) = %v, want a size denial", err)
	}
	v = New(Options{})
	if err := v.Check(tl, json.RawMessage(nest(64))); err != nil {
		t.Errorf("Check(depth 64) = %v, want nil", err)
	}
	if err := v.Check(tl, json.RawMessage(nest(65))); err == nil || !strings.Contains(err.Error(), "more than 64 levels") {
		t.Errorf("Check(depth 65) = %v, want a depth denial", err)
	}
	arr := `{"a":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`
	if err := v.Check(tl, json.RawMessage(arr)); err == nil {
		t.Error("Check accepted arrays nested 65 deep")
	}
}

func TestSchemaLimits(t *testing.T) {
	v := New(Options{MaxSchemaBytes: 200, MaxSchemaDepth: 5})
	big := tool(t, "big", `{"description":"`+strings.Repeat("x", 200)+`"}`)
	deep := tool(t, "deep", `{"properties":{"a":{"properties":{"b":{"items":{}}}}}}`)
	longPattern := tool(t, "pat", `{"properties":{"a":{"pattern":"`+strings.Repeat("a", maxPatternBytes+1)+`"}}}`)
	errs := New(Options{}).Prepare([]*mcp.Tool{longPattern})
	if errs["pat"] == nil || !strings.Contains(errs["pat"].Error(), "at '/properties/a/pattern': <a value of 4097 characters> is not valid regex: a pattern is longer than 4096 bytes") {
		t.Errorf("Prepare(long pattern) = %v, want a pattern-length error", errs["pat"])
	}
	errs = v.Prepare([]*mcp.Tool{big, deep, {Name: "none"}})
	for name, want := range map[string]string{"big": "over the limit of 200", "deep": "more than 5 levels", "none": "no inputSchema"} {
		if errs[name] == nil || !strings.Contains(errs[name].Error(), want) {
			t.Errorf("Prepare error for %s = %v, want it to contain %q", name, errs[name], want)
		}
	}
}

// External references must be refused without any file being read. A
// schema file that would compile is put where the $ref points: if Moat read
// it, the tool would compile and validate.
func TestExternalRefsRefused(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "s.json")
	if err := os.WriteFile(good, []byte(`{"type":"string"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	schemas := map[string]string{
		"passwd":     `{"$ref":"file:///etc/passwd"}`,
		"https":      `{"$ref":"https://example.com/x"}`,
		"http":       `{"properties":{"a":{"$ref":"http://127.0.0.1:1/s.json"}}}`,
		"file":       `{"properties":{"a":{"$ref":"file://` + good + `"}}}`,
		"via $id":    `{"$id":"file://` + dir + `/","properties":{"a":{"$ref":"s.json"}}}`,
		"relative":   `{"properties":{"a":{"$ref":"s.json"}}}`,
		"fifo":       `{"$ref":"file://` + fifo + `"}`, // opening it would block forever
		"$schema":    `{"$schema":"file://` + good + `"}`,
		"urn no ref": `{"$ref":"urn:x:y"}`,
	}
	var tools []*mcp.Tool
	for name, s := range schemas {
		tools = append(tools, tool(t, name, s))
	}
	v := New(Options{})
	errs := v.Prepare(tools)
	for _, tl := range tools {
		err := errs[tl.Name]
		if err == nil {
			t.Errorf("%s: schema with an external reference compiled", tl.Name)
			continue
		}
		if !strings.Contains(err.Error(), "refused: Moat never loads schemas from files or the network") {
			t.Errorf("%s: error %q does not say the reference was refused", tl.Name, err)
		}
		d := v.Check(tl, json.RawMessage(`{"a":"x"}`))
		if d == nil || !strings.Contains(d.Error(), "rule invalid-schema") {
			t.Errorf("%s: Check = %v, want an invalid-schema denial", tl.Name, d)
		}
	}
}

func TestInvalidSchemaPolicy(t *testing.T) {
	const lookahead = `{"properties":{"a":{"type":"string","pattern":"^(?!x).*$"}}}`
	reject := New(Options{})
	tl := tool(t, "look", lookahead)
	if errs := reject.Prepare([]*mcp.Tool{tl}); errs["look"] == nil {
		t.Fatal("a lookahead pattern compiled")
	}
	err := reject.Check(tl, json.RawMessage(`{"a":"y"}`))
	var d *guard.Denial
	if !errors.As(err, &d) || d.Rule != "invalid-schema" || !strings.Contains(d.Reason, "look") || !strings.Contains(d.Reason, "on_invalid_schema: passthrough") {
		t.Errorf("reject: Check = %v, want an invalid-schema denial naming the tool and the way out", err)
	}
	if reject.Unvalidated(tl) {
		t.Error("reject: Unvalidated = true for a refused tool")
	}

	pass := New(Options{OnInvalidSchema: Passthrough})
	if err := pass.Check(tl, json.RawMessage(`{"a":"xyz"}`)); err != nil {
		t.Errorf("passthrough: Check = %v, want nil", err)
	}
	if !pass.Unvalidated(tl) {
		t.Error("passthrough: Unvalidated = false for a tool forwarded unchecked")
	}
	if err := pass.Check(tl, json.RawMessage(`{"a":1,"a":2}`)); err == nil {
		t.Error("passthrough: duplicate keys accepted; argument checks must still apply")
	}
	if pass.Unvalidated(tool(t, "ok", `{"type":"object"}`)) {
		t.Error("Unvalidated = true for a tool with a good schema")
	}
}

func TestCompileOnce(t *testing.T) {
	var n atomic.Int64
	compileHook = func() { n.Add(1) }
	t.Cleanup(func() { compileHook = nil })

	v := New(Options{})
	list := func() []*mcp.Tool { // a fresh tools/list: new pointers, equal schemas
		return []*mcp.Tool{tool(t, "a", fileSchema), tool(t, "b", fileSchema), tool(t, "c", draft07Schema)}
	}
	first := list()
	v.Prepare(first)
	v.Prepare(list())
	for range 100 {
		if err := v.Check(first[0], json.RawMessage(`{"path":"x"}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Same schema with keys in another order is the same canonical schema.
	v.Check(tool(t, "d", `{"required":["user"],"type":"object","definitions":{"user":{"required":["age"],"type":"object","properties":{"age":{"exclusiveMinimum":0,"type":"integer"}}}},"properties":{"user":{"$ref":"#/definitions/user"}},"$schema":"http://json-schema.org/draft-07/schema#"}`), nil)
	if got := n.Load(); got != 2 {
		t.Errorf("compiled %d times, want 2 (one per distinct schema)", got)
	}
}

func TestConcurrent(t *testing.T) {
	var n atomic.Int64
	compileHook = func() { n.Add(1) }
	t.Cleanup(func() { compileHook = nil })
	v := New(Options{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				tl := tool(t, "t", fileSchema)
				if j%10 == 0 {
					v.Prepare([]*mcp.Tool{tl})
				}
				args := `{"path":"ok"}`
				if (i+j)%2 == 1 {
					args = `{"path":"bad;rm"}`
				}
				err := v.Check(tl, json.RawMessage(args))
				if (err == nil) != ((i+j)%2 == 0) {
					t.Errorf("Check(%s) = %v", args, err)
				}
			}
		})
	}
	wg.Wait()
	if got := n.Load(); got != 1 {
		t.Errorf("compiled %d times under concurrency, want 1", got)
	}
}

func TestLayer(t *testing.T) {
	v := New(Options{})
	var reached []string
	h := guard.Chain(func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
		reached = append(reached, c.Kind.String()+":"+string(c.Args))
		return &guard.Result{}, nil
	}, v.Layer())
	tl := tool(t, "files_read", fileSchema)
	ctx := context.Background()
	if _, err := h(ctx, &guard.Call{Kind: guard.KindTool, Tool: tl, Args: json.RawMessage(`{"path":"x y"}`)}); err == nil {
		t.Error("a bad call passed the layer")
	}
	if _, err := h(ctx, &guard.Call{Kind: guard.KindTool, Args: json.RawMessage(`{}`)}); err == nil {
		t.Error("a call without a tool definition passed the layer")
	}
	if _, err := h(ctx, &guard.Call{Kind: guard.KindTool, Tool: tl, Args: json.RawMessage(`{"path":"x"}`)}); err != nil {
		t.Errorf("a good call was refused: %v", err)
	}
	if _, err := h(ctx, &guard.Call{Kind: guard.KindResource, URI: "file:///x"}); err != nil {
		t.Errorf("a resource read was refused: %v", err)
	}
	want := []string{`tool:{"path":"x"}`, "resource:"}
	if fmt.Sprint(reached) != fmt.Sprint(want) {
		t.Errorf("upstream received %q, want %q", reached, want)
	}
}

func BenchmarkCheck(b *testing.B) {
	v := New(Options{})
	tl := tool(b, "files_read", `{
		"type": "object",
		"properties": {
			"path": {"type": "string", "pattern": "^[a-zA-Z0-9_./-]{1,256}$"},
			"mode": {"enum": ["read", "write", "append"]},
			"count": {"type": "integer", "minimum": 1, "maximum": 100},
			"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
			"follow": {"type": "boolean"}
		},
		"required": ["path"],
		"additionalProperties": false
	}`)
	v.Prepare([]*mcp.Tool{tl})
	args := json.RawMessage(`{"path":"src/main.go","mode":"read","count":10,"tags":["a","b"],"follow":true}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Check(tl, args); err != nil {
			b.Fatal(err)
		}
	}
}
