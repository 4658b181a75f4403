package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/frame"
	"github.com/moatmcp/moat/internal/guard"
)

// DefaultSessionTimeout ends an HTTP session of a gateway that has had no
// request for this long (HTTPOptions.SessionTimeout when zero): an HTTP
// client may go away without a DELETE.
const DefaultSessionTimeout = 30 * time.Minute

// HTTPOptions configure Gateway.HTTP.
type HTTPOptions struct {
	// Identity is who an authenticated request acts for, as the caller's
	// authentication (in front of the handler, from the request's
	// Authorization: Bearer header) found it; a request it returns nil
	// for, or without a bearer token, is refused with 401.
	Identity func(r *http.Request) *guard.Identity
	// Session says what a new session of id is shown (Visible, Narrow,
	// Permit); the gateway sets its ID and Identity.
	Session func(id *guard.Identity) SessionOptions
	// Started and Ended learn of each session, for the audit log: Started
	// once the client has initialized it, Ended when it is over (DELETE,
	// idle for SessionTimeout, or the gateway's end).
	Started func(so SessionOptions, r *http.Request)
	Ended   func(so SessionOptions, d time.Duration)
	// Refused learns of a request refused because the session it names
	// belongs to another identity.
	Refused func(r *http.Request, id *guard.Identity, reason string)
	// SessionTimeout ends a session with no request for this long; zero
	// selects DefaultSessionTimeout.
	SessionTimeout time.Duration
	// MaxBodyBytes bounds a request's body; zero selects
	// frame.DefaultMaxBytes, the bound of a frame on the other transports.
	MaxBodyBytes int64
}

// HTTP returns the gateway's Streamable HTTP handler (go-sdk's), serving
// each session as a gateway session like a socket connection's: its own
// Server, shown what its identity may see. Every message to the client
// passes Options.Outbound (httpOutbound); a session serves only the
// identity that opened it. Sessions end when ctx does.
func (g *Gateway) HTTP(ctx context.Context, o HTTPOptions) *HTTPSessions {
	if o.SessionTimeout == 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = frame.DefaultMaxBytes
	}
	h := &HTTPSessions{g: g, ctx: ctx, o: o, owner: map[string]string{}, stop: map[string]context.CancelFunc{},
		versions: mcp.NewServer(&mcp.Implementation{Name: "moat"}, &mcp.ServerOptions{SupportedProtocolVersions: protocolVersions})}
	h.over = sync.NewCond(&h.mu)
	sdk := mcp.NewStreamableHTTPHandler(h.server, &mcp.StreamableHTTPOptions{
		Logger:              g.log,
		SessionTimeout:      o.SessionTimeout,
		MaxRequestBodyBytes: o.MaxBodyBytes,
	})
	// go-sdk binds a session to the user that opened it, and answers 403
	// to another: the identity, from the caller's authentication.
	h.sdk = auth.RequireBearerToken(func(_ context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
		id := o.Identity(r)
		if id == nil {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: id.Name}, nil
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(sdk)
	return h
}

// HTTPSessions is the handler Gateway.HTTP returns.
type HTTPSessions struct {
	g   *Gateway
	ctx context.Context
	o   HTTPOptions
	sdk http.Handler
	// versions is what go-sdk is given for a request of a session that
	// exists: it asks only for the protocol versions served.
	versions *mcp.Server

	mu    sync.Mutex
	owner map[string]string // session ID -> the principal it serves (ownerOf)
	// live counts the sessions whose HTTPOptions.Ended has not returned;
	// over is signalled when it falls to zero.
	live int
	over *sync.Cond
	// stop ends a session going on, by ID (End).
	stop map[string]context.CancelFunc
}

// End ends session id, if it is going on, as the gateway's end would: its
// event stream closes, its calls are cancelled, HTTPOptions.Ended follows.
// For a session whose credentials are no longer good (a revoked token).
func (h *HTTPSessions) End(id string) {
	h.mu.Lock()
	stop := h.stop[id]
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Wait returns once no session is left and HTTPOptions.Ended has returned
// for each: called once the ctx given to Gateway.HTTP is done (which ends
// every session), so that the last session_end records are written
// before the audit log closes.
func (h *HTTPSessions) Wait() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.live > 0 {
		h.over.Wait()
	}
}

// opening is in the context of a request that may open a session (a POST
// without a session ID): go-sdk asks for its server through it, more than
// once, and gets the one session begun for the request.
type opening struct {
	id  *guard.Identity
	so  SessionOptions
	s   *Server
	ctx context.Context
	end func()
}

type openingKey struct{}

// ownerOf is who a session of id serves: its identity and, within it, the
// principal (an OIDC subject), so that another subject of the same
// identity cannot use it.
func ownerOf(id *guard.Identity) string { return id.Name + "\x00" + id.Principal }

const sessionHeader = "Mcp-Session-Id"

func (h *HTTPSessions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := h.o.Identity(r)
	if id == nil {
		http.Error(w, "moat: unauthenticated", http.StatusUnauthorized)
		return
	}
	if sid := r.Header.Get(sessionHeader); sid != "" {
		h.mu.Lock()
		owner, ok := h.owner[sid]
		h.mu.Unlock()
		if ok && owner != ownerOf(id) {
			if h.o.Refused != nil {
				h.o.Refused(r, id, "the session belongs to another identity or subject")
			}
			http.Error(w, "moat: this session belongs to another identity or subject", http.StatusForbidden)
			return
		}
	}
	if r.Method == http.MethodPost && r.Body != nil {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBodyBytes))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, fmt.Sprintf("moat: the request body is over %d bytes", tooLarge.Limit), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "moat: reading the request failed", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(groupParamsInBody(body)))
	}
	if r.Method == http.MethodPost && r.Header.Get(sessionHeader) == "" {
		op := &opening{id: id}
		r = r.WithContext(context.WithValue(r.Context(), openingKey{}, op))
		// Deferred: a session begun is followed (or ended) whatever
		// go-sdk's handler did, a panic included.
		defer func() {
			if op.s != nil {
				h.opened(op, r)
			}
		}()
	}
	ow := &outboundWriter{ResponseWriter: w, outbound: h.g.outbound}
	h.sdk.ServeHTTP(ow, r)
	ow.finish()
}

// server is go-sdk's getServer: for a request that opens a session, the
// new session's server, begun on the first ask.
func (h *HTTPSessions) server(r *http.Request) *mcp.Server {
	op, _ := r.Context().Value(openingKey{}).(*opening)
	if op == nil {
		return h.versions
	}
	if op.s == nil {
		so := h.o.Session(op.id)
		so.ID, so.Identity = NewSessionID(), op.id
		op.so = so
		s, ctx, end := h.g.begin(h.ctx, so)
		// The session is the identity's from its first request on: the
		// client may use its ID before this request's handler returns.
		// It counts as live from now, so that Wait outlasts a session
		// still being opened when the gateway stops.
		h.mu.Lock()
		h.owner[so.ID] = ownerOf(op.id)
		h.live++
		h.mu.Unlock()
		op.s, op.ctx, op.end = s, ctx, func() {
			h.mu.Lock()
			delete(h.owner, so.ID)
			h.mu.Unlock()
			end()
		}
	}
	return op.s.srv
}

// left counts session id out of the live ones, once it is over.
func (h *HTTPSessions) left(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.stop, id)
	if h.live--; h.live == 0 {
		h.over.Broadcast()
	}
}

// opened follows a session that op's request began: go-sdk connected it
// (and keeps it until DELETE or SessionTimeout), or it did not (the
// request was refused, or was no initialize), and it ends now.
func (h *HTTPSessions) opened(op *opening, r *http.Request) {
	var ss *mcp.ServerSession
	for x := range op.s.srv.Sessions() {
		ss = x
	}
	if ss == nil {
		op.end()
		h.left(op.so.ID)
		return
	}
	op.s.session.CompareAndSwap(nil, ss)
	// End can end the session from before Started learns of it.
	ctx, stop := context.WithCancel(op.ctx)
	h.mu.Lock()
	h.stop[op.so.ID] = stop
	h.mu.Unlock()
	if h.o.Started != nil {
		h.o.Started(op.so, r)
	}
	start := time.Now()
	go func() {
		defer h.left(op.so.ID)
		defer stop()
		done := make(chan struct{})
		go func() {
			_ = ss.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done(): // the gateway's end, or End
			_ = ss.Close()
			<-done
		}
		op.end()
		if h.o.Ended != nil {
			h.o.Ended(op.so, time.Since(start))
		}
	}()
}

// groupParamsInBody is groupParamTransport for an HTTP body: a JSON-RPC
// message or batch whose resource and prompt requests may name their group
// as params.group. A body it cannot read is returned as it is.
func groupParamsInBody(body []byte) []byte {
	if !bytes.Contains(body, []byte(`"group"`)) {
		return body
	}
	rewrite := func(m map[string]json.RawMessage) bool {
		var method string
		if json.Unmarshal(m["method"], &method) != nil || !groupMethods[method] || m["params"] == nil {
			return false
		}
		m["params"] = moveGroupToMeta(m["params"])
		return true
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		var batch []map[string]json.RawMessage
		if json.Unmarshal(body, &batch) != nil {
			return body
		}
		changed := false
		for _, m := range batch {
			changed = rewrite(m) || changed
		}
		if out, err := json.Marshal(batch); err == nil && changed {
			return out
		}
		return body
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil || !rewrite(m) {
		return body
	}
	if out, err := json.Marshal(m); err == nil {
		return out
	}
	return body
}

// outboundWriter is the client boundary over HTTP: every JSON-RPC message
// go-sdk writes passes outbound, as a line to a stream client does. An
// event stream is rewritten one event at a time (go-sdk writes each whole,
// and flushes it); any other body (a JSON answer, a go-sdk error text) is
// held until the handler returns and passed whole.
type outboundWriter struct {
	http.ResponseWriter
	outbound func([]byte) []byte

	decided bool
	stream  bool
	pending []byte // an event stream's incomplete event, or a whole body
}

func (w *outboundWriter) decide() {
	if w.decided {
		return
	}
	w.decided = true
	w.stream = strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream")
	if w.outbound != nil {
		// What outbound makes of the body has a length of its own.
		w.Header().Del("Content-Length")
	}
}

func (w *outboundWriter) WriteHeader(code int) {
	w.decide()
	w.ResponseWriter.WriteHeader(code)
}

func (w *outboundWriter) Write(b []byte) (int, error) {
	w.decide()
	if w.outbound == nil {
		return w.ResponseWriter.Write(b)
	}
	w.pending = append(w.pending, b...)
	if !w.stream {
		return len(b), nil
	}
	for {
		i := bytes.Index(w.pending, []byte("\n\n"))
		if i < 0 {
			return len(b), nil
		}
		event := w.event(w.pending[:i+2])
		w.pending = w.pending[i+2:]
		if _, err := w.ResponseWriter.Write(event); err != nil {
			return 0, err
		}
	}
}

// event passes each data line of one server-sent event through outbound.
func (w *outboundWriter) event(e []byte) []byte {
	lines := bytes.Split(e, []byte("\n"))
	for i, l := range lines {
		if data, ok := bytes.CutPrefix(l, []byte("data: ")); ok && len(data) > 0 {
			out := w.outbound(data)
			// A line break would end the data line: JSON has none, but
			// what outbound returns is not trusted to keep it so.
			out = bytes.ReplaceAll(out, []byte("\n"), []byte(" "))
			lines[i] = append([]byte("data: "), out...)
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

func (w *outboundWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// finish writes a held body once the handler is done with it.
func (w *outboundWriter) finish() {
	if w.outbound == nil || len(w.pending) == 0 {
		return
	}
	if w.stream {
		// An event stream's incomplete last event: go-sdk never leaves one.
		_, _ = w.ResponseWriter.Write(w.event(w.pending))
		return
	}
	_, _ = w.ResponseWriter.Write(w.outbound(w.pending))
}
