package validate

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/testutil"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// FuzzValidate checks that Check never panics and that whatever it accepts
// really is one JSON object (or absent arguments), valid UTF-8, within the
// size and depth limits and free of duplicate keys, judged by encoding/json
// rather than by the validator's own parser.
func FuzzValidate(f *testing.F) {
	for i, data := range testutil.FuzzSeeds(f, "FuzzValidate") {
		f.Add(uint8(i), data)
	}
	const maxBytes, maxDepth = 4096, guard.MaxArgsDepth
	v := New(Options{OnInvalidSchema: Passthrough, MaxArgsBytes: maxBytes})
	tools := []*mcp.Tool{
		tool(f, "files", fileSchema),
		tool(f, "draft07", draft07Schema),
		tool(f, "any", `{"type":"object"}`),
		tool(f, "look", `{"properties":{"path":{"type":"string","pattern":"^(?!x).*$"}}}`),
	}
	v.Prepare(tools)
	f.Fuzz(func(t *testing.T, which uint8, args []byte) {
		if v.Check(tools[int(which)%len(tools)], args) != nil {
			return
		}
		trimmed := bytes.TrimSpace(args)
		if len(trimmed) == 0 || string(trimmed) == "null" {
			return
		}
		if len(args) > maxBytes || !utf8.Valid(args) || !json.Valid(args) || trimmed[0] != '{' {
			t.Fatalf("accepted arguments that are not one JSON object within %d bytes: %q", maxBytes, args)
		}
		if d, err := depthAndDuplicates(args); err != "" || d > maxDepth {
			t.Fatalf("accepted %q: depth %d (max %d), %s", args, d, maxDepth, err)
		}
	})
}

// depthAndDuplicates walks data with encoding/json and reports its nesting
// depth and the first duplicate key.
func depthAndDuplicates(data []byte) (int, string) {
	d := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		obj     bool
		keys    map[string]bool
		wantKey bool
	}
	var stack []*frame
	deepest := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return deepest, ""
		}
		if err != nil {
			return deepest, "decode error " + err.Error()
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.wantKey {
			if k, ok := tok.(string); ok {
				if top.keys[k] {
					return deepest, "duplicate key " + k
				}
				top.keys[k] = true
				top.wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if top != nil && top.obj {
				top.wantKey = true
			}
			stack = append(stack, &frame{obj: tok == json.Delim('{'), keys: map[string]bool{}, wantKey: true})
			deepest = max(deepest, len(stack))
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		default:
			if top != nil && top.obj {
				top.wantKey = true
			}
		}
	}
}
