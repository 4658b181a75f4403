package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/frame"
	"github.com/moatmcp/moat/internal/guard"
)

// IncidentKind names what went wrong with a message, for the audit log.
type IncidentKind string

const (
	// IncidentPanic: handling a message panicked; it was answered with an
	// internal error and everything else went on.
	IncidentPanic IncidentKind = "internal_error"
	// IncidentRefusedMessage: a message broke a frame bound (size, depth,
	// not JSON) and was answered without reaching go-sdk.
	IncidentRefusedMessage IncidentKind = "message_refused"
)

// An Incident is reported through Options.Incident.
type Incident struct {
	Kind IncidentKind
	// Group is the group whose upstream sent the message; empty for a
	// message from the client, or work of Moat's own.
	Group  string
	Method string
	Err    error
	// Identity is who the client's session acts for on a gateway; nil on
	// stdio and for an upstream's message.
	Identity *guard.Identity
}

// ErrInternal is wrapped by the error a client gets when Moat failed on its
// request: it says nothing of Moat's internals, the log has the stack.
var ErrInternal = errors.New("moat: internal error while handling this request; the request was not completed, other requests are unaffected (moat's log has the details)")

// recoverPanics is the outermost middleware on both sides: a panic while
// handling one message (a bug of Moat's or go-sdk's, reached by whatever a
// client or upstream sent) fails that message alone. Without it, go-sdk's
// handler goroutine would take the whole process, and every group, down.
// group is "" on the client's side.
func (p *shared) recoverPanics(group string) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (res mcp.Result, err error) {
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				p.panicked(ctx, group, method, v)
				res, err = nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: ErrInternal.Error()}
			}()
			return next(ctx, method, req)
		}
	}
}

// recovered, deferred in a goroutine of Moat's own, keeps a panic there
// from ending the process.
func (p *shared) recovered(ctx context.Context, what string) {
	if v := recover(); v != nil {
		p.panicked(ctx, "", what, v)
	}
}

// panicked logs a recovered panic with its stack and audits it.
func (p *shared) panicked(ctx context.Context, group, what string, v any) {
	p.log.Error("recovered from a panic; that one message failed, everything else goes on", "group", group, "in", what, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	p.incident(ctx, Incident{Kind: IncidentPanic, Group: group, Method: what, Err: fmt.Errorf("panic: %v", v)})
}

func (p *shared) incident(ctx context.Context, in Incident) {
	if p.onIncident != nil {
		p.onIncident(ctx, in)
	}
}

// Stdio is the transport of a client on in and out. Every frame the client
// sends passes a frame.Reader first: one over Moat's bounds, or one go-sdk
// could not decode (which would end its session), is answered with an
// error for its id, and the session goes on. No answer follows a request
// the client cancelled (clientStream). Every line to the client passes
// Options.Outbound, the client boundary, last.
func (p *Server) Stdio(in io.Reader, out io.Writer) mcp.Transport {
	return p.transport(in, out, nil)
}

// transport is the client boundary on one client's stream (see Stdio); id
// is who the stream's session acts for on a gateway.
func (p *shared) transport(in io.Reader, out io.Writer, id *guard.Identity) mcp.Transport {
	cs := newClientStream()
	w := &lineWriter{w: out, drop: cs.drop, outbound: p.outbound}
	r := frame.NewReader(in, frame.Options{
		MaxBytes: p.maxClientFrame,
		Check:    cs.check,
		Passed:   cs.read,
		Refuse: func(ref frame.Refusal) []byte {
			p.log.Warn("refused a message from the client", "method", ref.Method, "err", ref.Err)
			p.incident(context.Background(), Incident{Kind: IncidentRefusedMessage, Method: ref.Method, Err: ref.Err, Identity: id})
			// A notification gets no answer; anything else does, with a
			// null id when its own could not be read (JSON-RPC's rule).
			if ref.HasID || ref.Method == "" {
				msg := fmt.Sprintf("moat refused this message: %v; nothing was sent to any server", ref.Err)
				if _, err := w.Write(frame.ErrorResponse(ref, msg)); err != nil {
					p.log.Debug("answering a refused message failed", "err", err)
				}
			}
			return nil
		},
	})
	return &mcp.IOTransport{Reader: io.NopCloser(r), Writer: w}
}

// lineWriter serializes whole-line writes: go-sdk and the frame reader's
// refusals share the client's stdout, and each writes one line per call.
// A line drop reports true for is not written (an answer to a cancelled
// request); every other line passes outbound (when set) on its way out.
type lineWriter struct {
	mu       sync.Mutex
	w        io.Writer
	drop     func([]byte) bool
	outbound func([]byte) []byte
}

func (l *lineWriter) Write(b []byte) (int, error) {
	if l.drop != nil && l.drop(b) {
		return len(b), nil
	}
	out := b
	if l.outbound != nil {
		out = l.outbound(b)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(out); err != nil {
		return 0, err
	}
	// The caller wrote b: report its length, whatever the boundary made of it.
	return len(b), nil
}

func (l *lineWriter) Close() error { return nil }

// Refuse answers every request read from in with a JSON-RPC error saying
// msg, until in ends: what a client that will not be served sees (a
// gateway's peer that matches no identity, `moat connect` with no gateway
// running), so its user reads why in the client rather than a closed
// connection. A client may ask more than once (go-sdk tries
// server/discover, then initialize); notifications get no answer. Bound it
// with a deadline on in.
func Refuse(in io.Reader, out io.Writer, msg string) error {
	br := bufio.NewReaderSize(in, 64<<10)
	for {
		line, err := readLine(br, refusedMaxBytes)
		if err != nil {
			return err
		}
		var head struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		var answer []byte
		switch {
		case json.Unmarshal(line, &head) != nil:
			answer = frame.ErrorResponse(frame.Refusal{Code: jsonrpc.CodeParseError}, msg)
		case head.ID != nil && head.Method != "":
			answer = frame.ErrorResponse(frame.Refusal{ID: head.ID, HasID: true, Method: head.Method, Code: codeRefused}, msg)
		default:
			continue
		}
		if _, err := out.Write(answer); err != nil {
			return err
		}
	}
}

// refusedMaxBytes bounds a message Refuse reads: a client that will not be
// served gets no more of Moat's memory than its first request needs.
const refusedMaxBytes = 1 << 20

// codeRefused is the JSON-RPC error code of a session Moat will not serve
// (the implementation-defined server error range).
const codeRefused = -32000

// readLine reads one newline-ended line of at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max {
			return nil, fmt.Errorf("a message over %d bytes: %w", max, frame.ErrTooLarge)
		}
		if err == nil {
			return line, nil
		}
		if err != bufio.ErrBufferFull {
			return nil, err
		}
	}
}
