// Package frame reads newline-delimited JSON-RPC from a peer with bounds on
// each message's size and nesting. go-sdk ends a session at the first frame
// it cannot decode (too large, too deep, not JSON), so one bad message from a
// client or an upstream would cost every call on that connection. A Reader
// stands in front of go-sdk's decoder: a frame that breaks a bound never
// reaches it, and is answered as one failed request instead.
//
// An over-long frame is never held whole: it is scanned as it streams past,
// keeping only its top-level "id", so memory stays bounded by the limit
// whatever the peer sends.
package frame

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Defaults for Options left at zero.
const (
	// DefaultMaxBytes bounds one frame. go-sdk's own default line limit is
	// 16 MiB; results of a few tens of MiB are real (files, screenshots).
	DefaultMaxBytes = 32 << 20
	// DefaultMaxDepth bounds nesting. It sits above the argument depth the
	// validator accepts (64) plus the JSON-RPC envelope, so that a deep but
	// legal call still gets the validator's precise message, and far below
	// the 1000 levels at which Go's decoders give up on the whole stream.
	DefaultMaxDepth = 128
)

// Refusal describes a frame the Reader did not pass on.
type Refusal struct {
	// ID is the frame's top-level "id" as raw JSON, or nil when it had none
	// (a notification) or it could not be read.
	ID json.RawMessage
	// HasID reports whether the frame named an id at all: a frame without
	// one is a notification and gets no answer.
	HasID bool
	// Method is the frame's top-level "method" when short enough to keep.
	Method string
	// Code is the JSON-RPC error code that fits: -32700 for text that is
	// not JSON, -32600 for a frame over a bound.
	Code int64
	// Err says what was wrong, naming the bound.
	Err error
}

// ErrTooLarge and ErrTooDeep are wrapped by a Refusal's Err.
var (
	ErrTooLarge = errors.New("message too large")
	ErrTooDeep  = errors.New("message nested too deeply")
	ErrNotJSON  = errors.New("message is not valid JSON")
)

// Options configure a Reader.
type Options struct {
	MaxBytes int // default DefaultMaxBytes
	MaxDepth int // default DefaultMaxDepth
	// Refuse is told of every refused frame and returns what to put in the
	// stream in its place (a complete line, or nil for nothing): a server
	// answers the peer itself and passes nothing on; a client passes on an
	// error response so the waiting call ends.
	Refuse func(Refusal) []byte
	// Check, if set, sees every frame within the bounds that is valid JSON;
	// a frame it returns an error for is refused as an invalid request
	// (-32600), with that error.
	Check func(line []byte, sc *Scanner) error
	// Passed, if set, is told of every frame passed on, with what a
	// Scanner read of it, before the frame is returned from Read.
	Passed func(line []byte, sc *Scanner)
}

// Reader passes on only frames within its bounds, each ending in '\n'.
type Reader struct {
	br      *bufio.Reader
	o       Options
	pending []byte
}

// NewReader returns a Reader of r.
func NewReader(r io.Reader, o Options) *Reader {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = DefaultMaxDepth
	}
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), o: o}
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		line, err := r.next()
		if err != nil {
			return 0, err
		}
		r.pending = line
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// next returns the next line to pass on.
func (r *Reader) next() ([]byte, error) {
	for {
		var (
			buf  []byte
			sc   Scanner
			over bool
		)
		for {
			chunk, err := r.br.ReadSlice('\n')
			sc.Feed(chunk)
			if !over {
				if len(buf)+len(chunk) > r.o.MaxBytes+1 { // +1: the newline is not the message's
					over, buf = true, nil
				} else {
					buf = append(buf, chunk...)
				}
			}
			if err == nil {
				break
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err == io.EOF && len(buf) > 0 && !over {
				// The peer's last message has no newline: still a message.
				buf = append(buf, '\n')
				break
			}
			return nil, err
		}
		line := bytes.TrimSpace(buf)
		if !over && len(line) == 0 {
			continue // blank lines are not messages
		}
		var why error
		code := int64(-32600)
		switch {
		case over:
			why = fmt.Errorf("%w: over %d bytes", ErrTooLarge, r.o.MaxBytes)
		case sc.MaxDepth() > r.o.MaxDepth:
			why = fmt.Errorf("%w: more than %d levels", ErrTooDeep, r.o.MaxDepth)
		case !json.Valid(line):
			why, code = ErrNotJSON, -32700
		case r.o.Check != nil:
			why = r.o.Check(line, &sc)
		}
		if why == nil {
			if r.o.Passed != nil {
				r.o.Passed(line, &sc)
			}
			return append(line, '\n'), nil
		}
		ref := Refusal{Code: code, Err: why, HasID: sc.HasID(), Method: sc.Method()}
		if id := sc.ID(); id != nil {
			ref.ID = json.RawMessage(id)
		}
		if r.o.Refuse != nil {
			if out := r.o.Refuse(ref); len(out) > 0 {
				return out, nil
			}
		}
	}
}

// ErrorResponse is a JSON-RPC error response line for a refused frame. A
// frame whose id could not be read is answered with a null id, as JSON-RPC
// asks for a parse error.
func ErrorResponse(ref Refusal, message string) []byte {
	id := ref.ID
	if id == nil {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(errorResponse{JSONRPC: "2.0", ID: id, Error: wireError{ref.Code, message}})
	return append(b, '\n')
}

type errorResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   wireError       `json:"error"`
}

type wireError struct {
	Code    int64  `json:"code"`
	Message string `json:"message"`
}
