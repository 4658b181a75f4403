package frame

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// read runs in through a Reader and returns what it passed on and what it
// refused.
func read(t *testing.T, in string, o Options) (string, []Refusal) {
	t.Helper()
	var refused []Refusal
	o.Refuse = func(r Refusal) []byte { refused = append(refused, r); return nil }
	out, err := io.ReadAll(NewReader(strings.NewReader(in), o))
	if err != nil {
		t.Fatal(err)
	}
	return string(out), refused
}

func TestReaderPassesGoodFrames(t *testing.T) {
	in := `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n\n  \n" + `{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\r\n" + `{"jsonrpc":"2.0","id":"x","result":{}}`
	out, refused := read(t, in, Options{})
	want := `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n" + `{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n" + `{"jsonrpc":"2.0","id":"x","result":{}}` + "\n"
	if out != want || len(refused) != 0 {
		t.Fatalf("got %q, refused %v; want %q and nothing refused", out, refused, want)
	}
}

func TestReaderRefusesWithTheFramesID(t *testing.T) {
	deep := strings.Repeat("[", 200) + strings.Repeat("]", 200)
	big := strings.Repeat("x", 2000)
	tests := []struct {
		name, in string
		id       string // "" for none
		hasID    bool
		method   string
		code     int64
		err      error
	}{
		{"too deep", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":` + deep + `}}`, "7", true, "tools/call", -32600, ErrTooDeep},
		{"too deep, id last", `{"jsonrpc":"2.0","method":"tools/call","params":` + deep + `,"id":"abc"}`, `"abc"`, true, "tools/call", -32600, ErrTooDeep},
		{"too large, id after the payload", `{"jsonrpc":"2.0","result":{"text":"` + big + `"},"id":42}`, "42", true, "", -32600, ErrTooLarge},
		{"too large notification", `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"` + big + `"}}`, "", false, "notifications/message", -32600, ErrTooLarge},
		{"not JSON", `{"jsonrpc":"2.0","id":3,"method":`, "3", true, "", -32700, ErrNotJSON},
		{"escaped quotes before the id", `{"a":"\"id\":9","id":5,`, "5", true, "", -32700, ErrNotJSON},
		{"an id that is an object", `{"id":{"x":1},"method":"m",`, "", true, "m", -32700, ErrNotJSON},
		{"a batch", `[{"id":1,"method":"a"},` + deep + `]`, "", false, "", -32600, ErrTooDeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, refused := read(t, tt.in+"\n"+`{"id":99,"method":"ping"}`+"\n", Options{MaxBytes: 1024})
			if out != `{"id":99,"method":"ping"}`+"\n" {
				t.Errorf("the next frame did not pass: got %q", out)
			}
			if len(refused) != 1 {
				t.Fatalf("refused %d frames, want 1", len(refused))
			}
			r := refused[0]
			if string(r.ID) != tt.id || r.HasID != tt.hasID || r.Method != tt.method || r.Code != tt.code || !errors.Is(r.Err, tt.err) {
				t.Errorf("refusal = {id %q hasID %v method %q code %d err %v}, want {%q %v %q %d %v}", r.ID, r.HasID, r.Method, r.Code, r.Err, tt.id, tt.hasID, tt.method, tt.code, tt.err)
			}
		})
	}
}

func TestReaderSubstitutesTheRefusal(t *testing.T) {
	in := `{"jsonrpc":"2.0","id":1,"result":"` + strings.Repeat("y", 100) + `"}` + "\n"
	r := NewReader(strings.NewReader(in), Options{MaxBytes: 50, Refuse: func(ref Refusal) []byte {
		return ErrorResponse(ref, "result too large")
	}})
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		ID    int `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || resp.ID != 1 || resp.Error.Code != -32600 || resp.Error.Message != "result too large" {
		t.Fatalf("got %s (%v), want an error response for id 1", out, err)
	}
}

// endless yields one frame of n bytes whose id comes last, then a newline,
// without ever holding it.
type endless struct {
	head, tail []byte
	n, sent    int
}

func (e *endless) Read(p []byte) (int, error) {
	total := len(e.head) + e.n + len(e.tail)
	if e.sent >= total {
		return 0, io.EOF
	}
	i := 0
	for i < len(p) && e.sent < total {
		switch {
		case e.sent < len(e.head):
			p[i] = e.head[e.sent]
		case e.sent < len(e.head)+e.n:
			p[i] = 'z'
		default:
			p[i] = e.tail[e.sent-len(e.head)-e.n]
		}
		i++
		e.sent++
	}
	return i, nil
}

// A peer can send any amount: the Reader holds at most its limit.
func TestReaderMemoryIsBoundedByTheLimit(t *testing.T) {
	src := &endless{head: []byte(`{"jsonrpc":"2.0","result":{"t":"`), tail: []byte(`"},"id":12}` + "\n"), n: 200 << 20}
	var got Refusal
	r := NewReader(src, Options{MaxBytes: 1 << 20, Refuse: func(ref Refusal) []byte { got = ref; return nil }})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if string(got.ID) != "12" || !errors.Is(got.Err, ErrTooLarge) {
		t.Fatalf("refusal = %+v, want id 12, too large", got)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("reading a 200 MiB frame allocated %d MiB; want it bounded by the 1 MiB limit", alloc>>20)
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	f.Add([]byte(`{"id":"a\"b","method":"x","params":[[[[]]]]}`))
	f.Add([]byte(`[{"id":1}]`))
	f.Add([]byte(`{"method":"m","id":-1.5e3 }`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if bytes.ContainsAny(b, "\r\n") {
			return
		}
		var refused []Refusal
		r := NewReader(bytes.NewReader(append(b, '\n')), Options{MaxBytes: 4096, MaxDepth: 16, Refuse: func(ref Refusal) []byte {
			refused = append(refused, ref)
			return ErrorResponse(ref, "refused")
		}})
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(out)) > 0 && !json.Valid(out) {
			t.Fatalf("passed on invalid JSON %q", out)
		}
		// A frame within its bounds is passed on as it came (FuzzIDScan
		// checks what the Scanner reads of it).
		if len(refused) == 0 && !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace(b)) && len(bytes.TrimSpace(b)) > 0 {
			t.Fatalf("passed on %q, not the frame %q", out, b)
		}
	})
}
