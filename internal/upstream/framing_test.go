package upstream

import (
	"bytes"
	"encoding/json"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// dropRecorder stands in for Group.dropped: it records what was dropped
// and answers a response with the same error response the group builds.
type dropRecorder struct{ got []oversize }

func (d *dropRecorder) drop(o oversize) []byte {
	o.id = bytes.Clone(o.id)
	d.got = append(d.got, o)
	if o.id == nil || o.request {
		return nil
	}
	return tooLargeResponse(o.id, tooLargeMessage("g", o.size, o.limit), o.size, o.limit)
}

// source gives in whole to the first read, or 7 bytes per read, so that
// over-long messages are met both complete and while they stream, with
// the next message's start in the read that ends one.
func source(in string, small bool) io.Reader {
	if small {
		return &chunkReader{r: strings.NewReader(in), n: 7}
	}
	return strings.NewReader(in)
}

type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

func readAllVia(t *testing.T, r io.Reader, oneByte bool) string {
	t.Helper()
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(out)
}

// TestLineFraming: lines within the limit pass byte for byte; an over-long
// response becomes the error response for its id, wherever the id is; an
// over-long notification or server request disappears.
func TestLineFraming(t *testing.T) {
	const limit = 100
	big := strings.Repeat("x", 300)
	small1 := `{"jsonrpc":"2.0","id":1,"result":{}}` + "\n"
	exact := `{"jsonrpc":"2.0","id":2,"result":{"t":"` + strings.Repeat("y", limit-42) + `"}}` + "\n"
	if len(exact) != limit+1 {
		t.Fatalf("exact line is %d bytes, want the limit plus its newline", len(exact))
	}
	overResponse := `{"result":{"content":[{"type":"text","text":"` + big + `"}]},"jsonrpc":"2.0","id":3}` + "\n"
	overNote := `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"` + big + `"}}` + "\n"
	overRequest := `{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage","params":{"x":"` + big + `"}}` + "\n"
	overJunk := big + "\n"
	tail := `{"jsonrpc":"2.0","id":4,"result":{}}` // no final newline
	in := small1 + exact + overResponse + "\n" + overNote + overRequest + overJunk + small1 + tail

	for _, oneByte := range []bool{false, true} {
		var d dropRecorder
		r := newLimitReader(io.NopCloser(source(in, oneByte)), limit, &lineFraming{what: "stdio line", drop: d.drop})
		got := readAllVia(t, r, oneByte)
		resp3 := string(tooLargeResponse([]byte("3"), tooLargeMessage("g", int64(len(overResponse)-1), limit), int64(len(overResponse)-1), limit)) + "\n"
		want := small1 + exact + resp3 + "\n" + small1 + tail
		if got != want {
			t.Fatalf("a byte per read %v:\n got %q\nwant %q", oneByte, got, want)
		}
		if len(d.got) != 4 {
			t.Fatalf("dropped %d messages, want 4: %+v", len(d.got), d.got)
		}
		if o := d.got[0]; string(o.id) != "3" || o.request || o.size != int64(len(overResponse)-1) || o.limit != limit {
			t.Errorf("the response was recorded as %+v", o)
		}
		if o := d.got[1]; o.id != nil || !o.request {
			t.Errorf("the notification was recorded as %+v", o)
		}
		if o := d.got[2]; string(o.id) != "9" || !o.request {
			t.Errorf("the server's request was recorded as %+v", o)
		}
		if o := d.got[3]; o.id != nil || o.request {
			t.Errorf("the junk line was recorded as %+v", o)
		}
	}
}

// TestTooLargeResponseIsAnErrorForTheCall: the replacement is a JSON-RPC
// error response go-sdk reads as the answer to the call, naming the limit
// and the key to raise.
func TestTooLargeResponseIsAnErrorForTheCall(t *testing.T) {
	b := tooLargeResponse([]byte(`"abc"`), tooLargeMessage("files", 40<<20, 32<<20), 40<<20, 32<<20)
	var resp struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct{ Limit, Size int64 }
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.JSONRPC != "2.0" || string(resp.ID) != `"abc"` || resp.Error.Code != CodeMessageTooLarge || resp.Error.Data.Limit != 32<<20 || resp.Error.Data.Size != 40<<20 {
		t.Fatalf("response %s", b)
	}
	for _, want := range []string{`"files"`, "41943040 bytes (40.0 MiB)", "33554432 bytes (32.0 MiB)", `raise "max_message_bytes" for "files"`, "server keeps running"} {
		if !strings.Contains(resp.Error.Message, want) {
			t.Errorf("message %q lacks %q", resp.Error.Message, want)
		}
	}
}

// generator yields head, then n bytes of 'x', then tail, without holding
// the n bytes anywhere.
type generator struct {
	head, tail []byte
	n          int64
}

func (g *generator) Read(p []byte) (int, error) {
	switch {
	case len(g.head) > 0:
		n := copy(p, g.head)
		g.head = g.head[n:]
		return n, nil
	case g.n > 0:
		k := int(min(int64(len(p)), g.n))
		for i := range p[:k] {
			p[i] = 'x'
		}
		g.n -= int64(k)
		return k, nil
	case len(g.tail) > 0:
		n := copy(p, g.tail)
		g.tail = g.tail[n:]
		return n, nil
	}
	return 0, io.EOF
}

// TestOverLongLineMemoryIsBounded: 200 MiB on one line, with the id after
// the text, go through a 1 MiB limit; the reader allocates a few MiB in
// all (the limit's worth of buffer and one read at a time), not the line,
// and the next line passes.
func TestOverLongLineMemoryIsBounded(t *testing.T) {
	const limit = 1 << 20
	const lineBytes = 200 << 20
	next := `{"jsonrpc":"2.0","id":8,"result":{}}` + "\n"
	gen := &generator{
		head: []byte(`{"result":{"content":[{"type":"text","text":"`),
		n:    lineBytes,
		tail: []byte(`"}]},"jsonrpc":"2.0","id":7}` + "\n" + next),
	}
	var d dropRecorder
	r := newLimitReader(io.NopCloser(gen), limit, &lineFraming{what: "stdio line", drop: d.drop})
	var out bytes.Buffer
	buf := make([]byte, 32<<10)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d KiB to pass a %d MiB line through a %d KiB limit", alloc>>10, lineBytes>>20, limit>>10)
	if alloc > 8<<20 {
		t.Errorf("allocated %d MiB while discarding a %d MiB line; the bound is 8 MiB", alloc>>20, lineBytes>>20)
	}
	lines := strings.SplitAfter(out.String(), "\n")
	if len(lines) != 3 || lines[2] != "" || lines[1] != next {
		t.Fatalf("output %q", out.String())
	}
	var resp struct {
		ID    int `json:"id"`
		Error struct{ Code int }
	}
	if err := json.Unmarshal([]byte(lines[0]), &resp); err != nil || resp.ID != 7 || resp.Error.Code != CodeMessageTooLarge {
		t.Fatalf("replacement %q (%v)", lines[0], err)
	}
	if len(d.got) != 1 || d.got[0].size != int64(len(`{"result":{"content":[{"type":"text","text":"`)+lineBytes+len(`"}]},"jsonrpc":"2.0","id":7}`)) {
		t.Fatalf("dropped %+v", d.got)
	}
}

// TestEventFraming: events within the limit pass byte for byte; an
// over-long message event keeps its id and retry fields (so the stream's
// Last-Event-ID still advances) and carries the error response for the
// call it answered; an over-long event of another name keeps only its id.
func TestEventFraming(t *testing.T) {
	const limit = 200
	big := strings.Repeat("z", 400)
	small := "id: 1\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n"
	priming := "id: 2\nretry: 500\ndata: \n\n"
	comment := ": keepalive\n\n"
	over := "event: message\nid: 3\nretry: 250\ndata: {\"result\":{\"content\":[{\"text\":\"" + big + "\"}]},\ndata: \"jsonrpc\":\"2.0\",\"id\":42}\n\n"
	overOther := "event: endpoint\nid: 4\ndata: " + big + "\n\n"
	overNoID := "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"d\":\"" + big + "\"}}\n\n"
	last := "id: 5\ndata: {\"jsonrpc\":\"2.0\",\"id\":43,\"result\":{}}\n\n"
	in := small + priming + comment + over + overOther + overNoID + last

	for _, oneByte := range []bool{false, true} {
		var d dropRecorder
		r := newLimitReader(io.NopCloser(source(in, oneByte)), limit, &eventFraming{drop: d.drop})
		got := readAllVia(t, r, oneByte)
		overSize := int64(len(over) - 1)
		resp := tooLargeResponse([]byte("42"), tooLargeMessage("g", overSize, limit), overSize, limit)
		want := small + priming + comment + "id: 3\nretry: 250\ndata: " + string(resp) + "\n\n" + "id: 4\n\n" + last
		if got != want {
			t.Fatalf("a byte per read %v:\n got %q\nwant %q", oneByte, got, want)
		}
		if len(d.got) != 3 || string(d.got[0].id) != "42" || d.got[0].size != overSize || d.got[1].id != nil || !d.got[2].request {
			t.Fatalf("dropped %+v", d.got)
		}
	}
}
