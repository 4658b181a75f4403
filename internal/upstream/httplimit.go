package upstream

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"

	"github.com/moatmcp/moat/internal/frame"
	"github.com/moatmcp/moat/internal/netguard"
)

// limitTransport bounds what a remote upstream can make go-sdk read, per
// message, and turns a message over the limit into an error for the one
// call it answers. go-sdk itself ends the whole session when a response
// body or an event is over its cap (streamableClientConn.fail), so the
// bound has to act before go-sdk reads: on every text/event-stream body
// (POST responses, the standalone GET stream and its resumptions) each
// event goes through an eventFraming, and an application/json body over
// the limit becomes the error response for the request's id.
//
// It wraps the netguard client's transport and changes nothing else: every
// request, reconnections included, still goes through netguard's origin,
// address, TLS and redirect checks.
type limitTransport struct {
	base  http.RoundTripper
	limit int
	group string
	drop  func(oversize) []byte
	order *notificationOrder // counts the progress and log messages in event streams
}

// limitClient returns a copy of hc whose responses are bounded as above.
func (g *Group) limitClient(hc *http.Client, limit int, order *notificationOrder) *http.Client {
	c := *hc
	base := c.Transport
	if base == nil { // netguard always sets one; never fall back to a default
		base = noTransport{}
	}
	c.Transport = &limitTransport{base: base, limit: limit, group: g.name, drop: g.dropped, order: order}
	return &c
}

// noTransport fails every request: Moat never sends one without netguard.
type noTransport struct{}

func (noTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no guarded HTTP transport (a Moat wiring bug)")
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp == nil || resp.Body == nil {
		return resp, err
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch mt {
	case "text/event-stream":
		l := newLimitReader(resp.Body, t.limit, &eventFraming{drop: t.drop})
		l.capped = netguardLimit
		l.seen = func(event []byte) {
			if mayHoldOrdered(event) {
				if ev, ok := parseEvent(event); ok {
					t.order.seen(ev.data)
				}
			}
		}
		resp.Body = l
	case "application/json":
		switch {
		case req.Method == http.MethodPost && (resp.ContentLength < 0 || resp.ContentLength > int64(t.limit)):
			resp.Body = &jsonLimitBody{rc: resp.Body, length: resp.ContentLength, req: req, t: t}
		case resp.ContentLength <= maxTaskReply:
			resp.Body = &taskCheckBody{rc: resp.Body}
		}
	}
	return resp, nil
}

// netguardLimit recognises netguard's error for an event over its own
// bound, which has closed the stream by then. cmd/moat should set that
// bound above max_message_bytes; this is the fallback when it is lower.
func netguardLimit(err error) (int, bool) {
	var lerr *netguard.LimitError
	if errors.As(err, &lerr) {
		return int(min(lerr.Limit, int64(^uint(0)>>1))), true
	}
	return 0, false
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// guarded transport.
func (t *limitTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// jsonLimitBody is a JSON response body of unknown or too great a length.
// On the first Read it reads up to limit bytes; a longer body is closed
// unread and replaced by the error response for the request's id (a
// JSON-mode server answers each POSTed call in its own response). A body
// whose Content-Length is over the limit is not read at all.
type jsonLimitBody struct {
	rc     io.ReadCloser
	length int64 // Content-Length, -1 when unknown
	req    *http.Request
	t      *limitTransport
	r      io.Reader
}

func (b *jsonLimitBody) Read(p []byte) (int, error) {
	if b.r == nil {
		b.r = b.load()
	}
	return b.r.Read(p)
}

func (b *jsonLimitBody) Close() error { return b.rc.Close() }

func (b *jsonLimitBody) load() io.Reader {
	limit := b.t.limit
	if b.length < 0 {
		data, err := io.ReadAll(io.LimitReader(b.rc, int64(limit)+1))
		var lerr *netguard.LimitError
		switch {
		case errors.As(err, &lerr):
			// netguard's own bound came first: the same case, with a
			// smaller limit (cmd/moat should keep netguard's above ours).
			limit = int(min(lerr.Limit, int64(limit)))
		case err != nil:
			return io.MultiReader(bytes.NewReader(data), errReader{err})
		case len(data) <= limit:
			if out := taskResponse(data); out != nil {
				return bytes.NewReader(out)
			}
			return bytes.NewReader(data)
		}
	}
	b.rc.Close() // unread data remains, so the connection is dropped, not reused
	var sc frame.Scanner
	if b.req.GetBody != nil {
		if body, err := b.req.GetBody(); err == nil {
			_, _ = io.Copy(scanWriter{&sc}, body)
			body.Close()
		}
	}
	o := oversize{what: "HTTP response body", size: -1, limit: limit}
	if sc.HasMethod() {
		o.id = sc.ID() // the request was a call: this body was its answer
	}
	if out := b.t.drop(o); out != nil {
		return bytes.NewReader(out)
	}
	return errReader{errors.New(tooLargeMessage(b.t.group, -1, limit))}
}

// scanWriter feeds what is written to a frame.Scanner.
type scanWriter struct{ sc *frame.Scanner }

func (w scanWriter) Write(p []byte) (int, error) {
	w.sc.Feed(p)
	return len(p), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
