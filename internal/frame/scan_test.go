package upstream

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

func TestIDScanner(t *testing.T) {
	long := `"` + strings.Repeat("a", maxIDLen) + `"`
	for _, tt := range []struct {
		name, in string
		id       string // "" for none
		method   bool
	}{
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
				var s idScanner
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

func feedChunks(s *idScanner, data []byte, size int) {
	for len(data) > 0 {
		n := min(size, len(data))
		s.Feed(data[:n])
		data = data[n:]
	}
}

// FuzzIDScan checks the streaming id scanner against encoding/json: on
// every valid JSON text it finds the same top-level "id" (a string or a
// number of at most maxIDLen bytes, raw; the last of duplicates) and
// "method" as decoding into a map does, however the text is cut into
// pieces. On any input it never panics and keeps within its bounds.
// Seeds: testdata/fuzz/FuzzIDScan.
func FuzzIDScan(f *testing.F) {
	for _, data := range testutil.FuzzSeeds(f, "FuzzIDScan") {
		f.Add(data, uint8(0))
		f.Add(data, uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		var whole idScanner
		whole.Feed(data)
		if len(whole.key) > maxKeyLen || len(whole.val) > maxIDLen || len(whole.ID()) > maxIDLen {
			t.Fatalf("kept more than its bounds: key %d, val %d, id %d bytes", len(whole.key), len(whole.val), len(whole.ID()))
		}
		if id := whole.ID(); id != nil && !json.Valid(id) {
			t.Fatalf("ID() %q is not valid JSON", id)
		}
		var pieces idScanner
		feedChunks(&pieces, data, int(cut%17)+1)
		if !bytes.Equal(pieces.ID(), whole.ID()) || pieces.HasMethod() != whole.HasMethod() {
			t.Fatalf("in pieces of %d: id %q method %v; whole: id %q method %v", cut%17+1, pieces.ID(), pieces.HasMethod(), whole.ID(), whole.HasMethod())
		}
		if !json.Valid(data) {
			return
		}
		var wantID []byte
		var wantMethod bool
		var m map[string]json.RawMessage
		if json.Unmarshal(data, &m) == nil {
			_, wantMethod = m["method"]
			if id, ok := m["id"]; ok && len(id) <= maxIDLen && (id[0] == '"' || id[0] == '-' || id[0] >= '0' && id[0] <= '9') {
				wantID = id
			}
		}
		if !bytes.Equal(whole.ID(), wantID) || whole.HasMethod() != wantMethod {
			t.Fatalf("id %q method %v; encoding/json: id %q method %v\ninput: %q", whole.ID(), whole.HasMethod(), wantID, wantMethod, data)
		}
	})
}
