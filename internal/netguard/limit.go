package netguard

import (
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
)

// A LimitError reports a response that went over a size limit. The
// connection it came on has been closed.
type LimitError struct {
	What  string // "response" or "SSE event"
	Limit int64
	From  string // origin
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("netguard: %s from %s exceeds %d bytes; the connection was closed "+
		"(raise the limit for this server if the upstream legitimately sends more)", e.What, e.From, e.Limit)
}

// limit wraps resp.Body. An event stream may run for hours and carry any
// total amount, so it is bounded per event; any other body as a whole.
func (g *guard) limit(resp *http.Response) (*http.Response, error) {
	from := resp.Request.URL.Scheme + "://" + resp.Request.URL.Host
	if isEventStream(resp.Header.Get("Content-Type")) {
		resp.Body = &eventLimitBody{rc: resp.Body, log: g.o.Logger, err: &LimitError{What: "SSE event", Limit: g.o.MaxEventBytes, From: from}}
		return resp, nil
	}
	lerr := &LimitError{What: "response", Limit: g.o.MaxResponseBytes, From: from}
	if resp.ContentLength > g.o.MaxResponseBytes {
		resp.Body.Close()
		g.o.Logger.Warn(lerr.Error())
		return nil, lerr
	}
	resp.Body = &limitBody{rc: resp.Body, log: g.o.Logger, left: g.o.MaxResponseBytes, err: lerr}
	return resp, nil
}

func isEventStream(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "text/event-stream"
}

// limitBody fails once more than left bytes arrive. It reads one byte past
// the limit to tell "exactly at the limit" from "over it".
type limitBody struct {
	rc   io.ReadCloser
	log  *slog.Logger
	left int64
	err  *LimitError
	over bool
}

func (b *limitBody) Read(p []byte) (int, error) {
	if b.over {
		return 0, b.err
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > b.left {
		b.over = true
		b.log.Warn(b.err.Error())
		b.rc.Close() // unread data remains, so the transport drops the connection
		return int(b.left), b.err
	}
	b.left -= int64(n)
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }

// eventLimitBody fails once one server-sent event exceeds the limit. Events
// end at a blank line; lines end in CRLF, LF or CR (the SSE grammar).
type eventLimitBody struct {
	rc     io.ReadCloser
	log    *slog.Logger // go-sdk may swallow the read error, so it is logged too
	err    *LimitError
	event  int64 // bytes of the current event so far
	line   int64 // bytes of the current line, terminator excluded
	lastCR bool  // previous byte was CR, so a following LF ends nothing new
	over   bool
}

func (b *eventLimitBody) Read(p []byte) (int, error) {
	if b.over {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	for i, c := range p[:n] {
		switch {
		case c == '\n' && b.lastCR:
			b.lastCR = false
		case c == '\n' || c == '\r':
			b.lastCR = c == '\r'
			if b.line == 0 {
				b.event = 0 // blank line: the event is complete
				continue
			}
			b.line = 0
		default:
			b.lastCR = false
			b.line++
		}
		b.event++
		if b.event > b.err.Limit {
			b.over = true
			b.log.Warn(b.err.Error())
			b.rc.Close()
			return i, b.err
		}
	}
	return n, err
}

func (b *eventLimitBody) Close() error { return b.rc.Close() }
