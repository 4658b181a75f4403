package frame

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

func TestScanner(t *testing.T) {
	long := `"` + strings.Repeat("a", maxIDLen) + `"`
	for _, tt := range []struct {
		name, in string
		id       string // "" for none
		method   bool
	}{
		{"request with its method", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, `1`, true},
		{"id first", `{"jsonrpc":"2.0","id":7,"result":{"content":[]}}`, `7`, false},
		{"id after result (TypeScript SDK order)", `{"result":{"content":[{"type":"text","text":"}\"{,\\\"id\\\":9"}]},"jsonrpc":"2.0","id":12}`, `12`, false},
		{"string id", `{"id":"a\"b\\u00e9","result":1}`, `"a\"b\\u00e9"`, false},
		{"spaces everywhere", " \n{ \"id\" :\t-3.5e2 , \"result\" : [ ] } ", `-3.5e2`, false},
		{"escaped key", `{"\u0069d":5,"result":null}`, `5`, false},
		{"escaped quote in a key", `{"i\"d":5}`, ``, false},
		{"case-variant key", `{"ID":5,"Id":6}`, ``, false},
		{"nested id is not the id", `{"result":{"id":1,"x":[{"id":2}]},"error":{"id":3}}`, ``, false},
		{"last duplicate wins", `{"id":1,"result":{},"id":2}`, `2`, false},
		{"a later invalid id clears an earlier one", `{"id":1,"id":null}`, ``, false},
		{"null id", `{"id":null,"result":{}}`, ``, false},
		{"object id", `{"id":{"a":1},"result":{}}`, ``, false},
		{"array id", `{"id":[1],"result":{}}`, ``, false},
		{"bool id", `{"id":true}`, ``, false},
		{"id too long", `{"id":` + long + `}`, ``, false},
		{"request", `{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{}}`, `3`, true},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/progress","params":{"id":4}}`, ``, true},
		{"method null still counts", `{"method":null,"id":1}`, `1`, true},
		{"batch", `[{"id":1,"result":{}}]`, ``, false},
		{"not JSON", `id:1`, ``, false},
		{"empty object", `{}`, ``, false},
		{"cut short after the id", `{"id":8,"result":{"content":[{"text":"xxx`, `8`, false},
		{"id is the last member", `{"result":{},"id":"z"}`, `"z"`, false},
		{"number ended by the closing brace", `{"result":0,"id":42}`, `42`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{1, 2, 3, 7, len(tt.in) + 1} {
				var s Scanner
				feedChunks(&s, []byte(tt.in), size)
				if got := string(s.ID()); got != tt.id {
					t.Errorf("fed %d bytes at a time: ID() = %q, want %q", size, got, tt.id)
				}
				if s.HasMethod() != tt.method {
					t.Errorf("fed %d bytes at a time: HasMethod() = %v, want %v", size, s.HasMethod(), tt.method)
				}
			}
		})
	}
}

func feedChunks(s *Scanner, data []byte, size int) {
	for len(data) > 0 {
		n := min(size, len(data))
		s.Feed(data[:n])
		data = data[n:]
	}
}

// FuzzIDScan checks the streaming scanner against encoding/json: on every
// valid JSON text it finds the same top-level "id" (a string or a number of
// at most maxIDLen bytes, raw; the last of duplicates), "method" (its name
// when a short string) and nesting depth as decoding does, however the text
// is cut into pieces. On any input it never panics and keeps within its
// bounds.
// Seeds: testdata/fuzz/FuzzIDScan.
func FuzzIDScan(f *testing.F) {
	for _, data := range testutil.FuzzSeeds(f, "FuzzIDScan") {
		f.Add(data, uint8(0))
		f.Add(data, uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		var whole Scanner
		whole.Feed(data)
		if len(whole.key) > maxKeyLen || len(whole.val) > maxIDLen || len(whole.ID()) > maxIDLen {
			t.Fatalf("kept more than its bounds: key %d, val %d, id %d bytes", len(whole.key), len(whole.val), len(whole.ID()))
		}
		if id := whole.ID(); id != nil && !json.Valid(id) {
			t.Fatalf("ID() %q is not valid JSON", id)
		}
		var pieces Scanner
		feedChunks(&pieces, data, int(cut%17)+1)
		if !bytes.Equal(pieces.ID(), whole.ID()) || pieces.HasMethod() != whole.HasMethod() || pieces.Method() != whole.Method() || pieces.MaxDepth() != whole.MaxDepth() {
			t.Fatalf("in pieces of %d: id %q method %v %q depth %d; whole: id %q method %v %q depth %d", cut%17+1,
				pieces.ID(), pieces.HasMethod(), pieces.Method(), pieces.MaxDepth(), whole.ID(), whole.HasMethod(), whole.Method(), whole.MaxDepth())
		}
		if !json.Valid(data) {
			return
		}
		if want := depthOf(data); whole.MaxDepth() != want {
			t.Fatalf("MaxDepth() = %d, want %d\ninput: %q", whole.MaxDepth(), want, data)
		}
		var wantID []byte
		var wantMethod bool
		var wantName string
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) == nil {
			var method json.RawMessage
			method, wantMethod = m["method"]
			if len(method) <= maxIDLen {
				json.Unmarshal(method, &wantName)
			}
			if id, ok := m["id"]; ok && len(id) <= maxIDLen && (id[0] == '"' || id[0] == '-' || id[0] >= '0' && id[0] <= '9') {
				wantID = id
			}
		}
		if !bytes.Equal(whole.ID(), wantID) || whole.HasMethod() != wantMethod || whole.Method() != wantName {
			t.Fatalf("id %q method %v %q; encoding/json: id %q method %v %q\ninput: %q", whole.ID(), whole.HasMethod(), whole.Method(), wantID, wantMethod, wantName, data)
		}
	})
}

// depthOf is the nesting depth of a valid JSON text, by encoding/json's
// tokenizer.
func depthOf(data []byte) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			deepest = max(deepest, depth)
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

func TestScannerMethodAndDepth(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		method   string
		hasID    bool
		depth    int
	}{
		{"request", `{"id":1,"method":"tools/call","params":{"arguments":{"a":[1]}}}`, "tools/call", true, 4},
		{"escaped method", `{"method":"notifications\/cancelled","params":{}}`, "notifications/cancelled", false, 2},
		{"null id still named", `{"id":null,"method":"x"}`, "x", true, 1},
		{"object id still named", `{"id":{},"method":"x"}`, "x", true, 2},
		{"method not a string", `{"method":7}`, "", false, 1},
		{"batch depth", `[[[[{"a":[]}]]]]`, "", false, 6},
		{"brackets in strings do not count", `{"method":"[[[","x":"{{{{"}`, "[[[", false, 1},
		{"depth after the object closed", `{"id":1}[[[`, "", true, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, size := range []int{1, 3, len(tt.in) + 1} {
				var s Scanner
				feedChunks(&s, []byte(tt.in), size)
				if s.Method() != tt.method || s.HasID() != tt.hasID || s.MaxDepth() != tt.depth {
					t.Errorf("fed %d bytes at a time: Method %q HasID %v MaxDepth %d, want %q %v %d", size, s.Method(), s.HasID(), s.MaxDepth(), tt.method, tt.hasID, tt.depth)
				}
			}
		})
	}
}
