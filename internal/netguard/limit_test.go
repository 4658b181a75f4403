package netguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// flood writes chunks until limit bytes are written or the client goes away,
// and reports the total on done.
func flood(w io.Writer, prefix string, chunk []byte, limit int64, written *atomic.Int64) {
	n, _ := io.WriteString(w, prefix)
	written.Add(int64(n))
	for written.Load() < limit {
		n, err := w.Write(chunk)
		written.Add(int64(n))
		if err != nil {
			return
		}
	}
}

func TestEndlessBody(t *testing.T) {
	const limit = 1 << 20
	var written atomic.Int64
	done := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		flood(w, "", bytes.Repeat([]byte("x"), 32<<10), 1<<40, &written)
	}))
	defer s.Close()
	c, err := NewClient(s.URL, &Options{MaxResponseBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	var le *LimitError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), fmt.Sprintf("exceeds %d bytes", limit)) {
		t.Fatalf("reading an endless body: err = %v, want a LimitError saying it exceeds %d bytes", err, limit)
	}
	if len(got) != limit {
		t.Errorf("read %d bytes before the error, want exactly the limit %d", len(got), limit)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the server kept writing 30 s after the limit: the connection was not closed")
	}
	if n := written.Load(); n > 64<<20 {
		t.Errorf("the server wrote %d bytes before the connection closed, want it cut soon after %d", n, limit)
	}
}

func TestDeclaredLengthOverLimit(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2000")
		w.Write(make([]byte, 2000))
	}))
	defer s.Close()
	for _, tt := range []struct {
		limit   int64
		wantErr bool
	}{{1999, true}, {2000, false}} {
		c, err := NewClient(s.URL, &Options{MaxResponseBytes: tt.limit})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Get(s.URL)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if (err != nil) != tt.wantErr {
			t.Errorf("2000-byte response with limit %d: err = %v, want error %v", tt.limit, err, tt.wantErr)
		}
	}
}

func TestHeaderLimit(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("a", 128<<10))
	}))
	defer s.Close()
	c, err := NewClient(s.URL, &Options{MaxHeaderBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Get(s.URL); err == nil {
		resp.Body.Close()
		t.Error("a 128 KiB response header passed a 64 KiB limit")
	} else if !strings.Contains(err.Error(), "headers exceeded") {
		t.Errorf("oversized header: err = %v, want the transport's header limit error", err)
	}
}

// TestEventStreamLimitIsPerEvent: a long-lived stream may carry far more
// than MaxResponseBytes in total, as long as each event fits.
func TestEventStreamLimitIsPerEvent(t *testing.T) {
	event := "event: message\r\ndata: " + strings.Repeat("y", 1000) + "\r\n\r\n"
	for _, tt := range []struct {
		name    string
		body    string
		wantErr bool
	}{
		{"4 MiB of small CRLF events", strings.Repeat(event, 4<<10), false},
		{"4 MiB of small LF events", strings.Repeat(strings.ReplaceAll(event, "\r\n", "\n"), 4<<10), false},
		{"4 MiB of small CR events", strings.Repeat(strings.ReplaceAll(event, "\r\n", "\r"), 4<<10), false},
		{"one event over 64 KiB", "data: " + strings.Repeat("z", 70<<10) + "\n\n", true},
		{"over 64 KiB of lines without a blank one", strings.Repeat("data: "+strings.Repeat("w", 1000)+"\n", 70), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
				io.WriteString(w, tt.body)
			}))
			defer s.Close()
			c, err := NewClient(s.URL, &Options{MaxResponseBytes: 1 << 20, MaxEventBytes: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Get(s.URL)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "SSE event") {
					t.Errorf("err = %v, want an SSE event limit error", err)
				}
				return
			}
			if err != nil || len(got) != len(tt.body) {
				t.Errorf("read %d of %d bytes, err = %v; want the whole stream", len(got), len(tt.body), err)
			}
		})
	}
}

// TestStreamableHugeEvent: a streamable server answers initialize with a
// 100 MiB SSE event. Whichever limit is lower (go-sdk's MaxEventSize or
// netguard's MaxEventBytes) stops it, and the server cannot push the rest.
func TestStreamableHugeEvent(t *testing.T) {
	const huge = 100 << 20
	for _, tt := range []struct {
		name         string
		maxEventSize int   // go-sdk transport; -1 disables its cap
		maxEvent     int64 // netguard
	}{
		{"go-sdk MaxEventSize", 1 << 20, 0},
		{"netguard MaxEventBytes with go-sdk's cap off", -1, 1 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var written atomic.Int64
			done := make(chan struct{}, 1)
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					http.Error(w, "", http.StatusMethodNotAllowed)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				flood(w, "event: message\ndata: ", bytes.Repeat([]byte("a"), 32<<10), huge, &written)
				done <- struct{}{}
			}))
			defer s.Close()
			var logs syncBuilder
			c, err := NewClient(s.URL, &Options{MaxEventBytes: tt.maxEvent, Logger: slogTo(&logs)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tr := &mcp.StreamableClientTransport{Endpoint: s.URL, HTTPClient: c, MaxEventSize: tt.maxEventSize, MaxRetries: -1}
			sess, err := mcp.NewClient(&mcp.Implementation{Name: "moat-test", Version: "v0"}, nil).Connect(ctx, tr, nil)
			if err == nil {
				sess.Close()
				t.Fatal("connected although initialize was answered with a 100 MiB event")
			}
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("the server was still writing 30 s later: the connection was not closed")
			}
			if n := written.Load(); n > 64<<20 {
				t.Errorf("the server wrote %d bytes, want the client to stop reading soon after 1 MiB (err %v)", n, err)
			}
			if tt.maxEvent > 0 && !strings.Contains(logs.String(), "SSE event from "+s.URL+" exceeds 1048576 bytes") {
				t.Errorf("log = %q, want a warning naming the SSE event limit", logs.String())
			}
		})
	}
}
