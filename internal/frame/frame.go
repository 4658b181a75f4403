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
			sc   scanner
			over bool
		)
		for {
			chunk, err := r.br.ReadSlice('\n')
			sc.feed(chunk)
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
		case sc.maxDepth > r.o.MaxDepth:
			why = fmt.Errorf("%w: more than %d levels", ErrTooDeep, r.o.MaxDepth)
		case !json.Valid(line):
			why, code = ErrNotJSON, -32700
		}
		if why == nil {
			return append(line, '\n'), nil
		}
		ref := Refusal{Code: code, Err: why, HasID: sc.sawID, Method: sc.method}
		if sc.idDone && json.Valid(sc.id) {
			ref.ID = json.RawMessage(sc.id)
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

// scanner follows a JSON text byte by byte, as it streams, for what a
// refusal needs: the deepest nesting, and the top-level "id" and "method".
// It keeps at most maxKept bytes of either, so an id or method meant to
// exhaust memory is simply not kept.
type scanner struct {
	depth, maxDepth int
	inString, esc   bool
	object          bool // the top-level value is an object: keys at depth 1

	keyPos bool   // at depth 1, the next string is a key
	key    []byte // the top-level key being read
	inKey  bool
	want   int // 1: the value after this key is the id, 2: the method

	valStart bool // the wanted value starts at the next non-space byte
	capture  int  // the wanted value is being captured (1 id, 2 method)
	capDepth int
	val      []byte

	sawID, idDone bool
	id            []byte
	method        string
}

const maxKept = 256

func (s *scanner) feed(b []byte) {
	for _, c := range b {
		s.step(c)
	}
}

func (s *scanner) step(c byte) {
	if s.capture != 0 {
		s.val = append(s.val, c)
		if len(s.val) > maxKept {
			s.capture, s.val = 0, nil // too long to be a real id: drop it
		}
	}
	if s.inString {
		switch {
		case s.esc:
			s.esc = false
		case c == '\\':
			s.esc = true
		case c == '"':
			s.inString = false
			if s.inKey {
				s.inKey = false
				switch string(s.key) {
				case "id":
					s.want, s.sawID = 1, true
				case "method":
					s.want = 2
				default:
					s.want = 0
				}
			} else if s.capture != 0 && s.depth == s.capDepth {
				s.finish()
			}
			return
		}
		if s.inKey && len(s.key) <= 8 {
			s.key = append(s.key, c)
		}
		return
	}
	switch c {
	case ' ', '\t', '\r', '\n':
		return
	case '"':
		s.inString = true
		if s.depth == 1 && s.object && s.keyPos {
			s.inKey, s.keyPos, s.key = true, false, s.key[:0]
			return
		}
		s.startValue(c)
		return
	case ':':
		if s.depth == 1 && s.object && s.want != 0 {
			s.valStart = true
		}
		return
	case ',':
		if s.capture != 0 && s.depth == s.capDepth {
			s.val = s.val[:len(s.val)-1]
			s.finish()
		}
		if s.depth == 1 {
			s.keyPos = true
		}
		return
	case '{', '[':
		s.startValue(c)
		s.depth++
		s.maxDepth = max(s.maxDepth, s.depth)
		if s.depth == 1 {
			s.object = c == '{'
			s.keyPos = s.object
		}
		return
	case '}', ']':
		if s.capture != 0 && s.depth == s.capDepth {
			s.val = s.val[:len(s.val)-1]
			s.finish()
		}
		s.depth--
		if s.capture != 0 && s.depth == s.capDepth && s.val != nil {
			s.finish() // a captured object or array closed
		}
		return
	}
	s.startValue(c)
}

// startValue begins capturing when c opens the wanted value.
func (s *scanner) startValue(c byte) {
	if !s.valStart {
		return
	}
	s.valStart = false
	s.capture, s.capDepth, s.val = s.want, s.depth, []byte{c}
	s.want = 0
}

func (s *scanner) finish() {
	v := bytes.TrimSpace(s.val)
	switch s.capture {
	case 1:
		if len(v) > 0 && v[0] != '{' && v[0] != '[' { // an id is a string, number or null
			s.id, s.idDone = append([]byte(nil), v...), true
		}
	case 2:
		var m string
		if json.Unmarshal(v, &m) == nil {
			s.method = m
		}
	}
	s.capture, s.val = 0, nil
}
