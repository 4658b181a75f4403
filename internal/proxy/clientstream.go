package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/moatmcp/moat/internal/frame"
)

// clientStream is what Moat keeps of one client connection's frames
// around go-sdk, for the two things go-sdk gets wrong there:
//
//   - go-sdk ends the whole session at the first frame it cannot decode as
//     JSON-RPC (a bare number, a message without "jsonrpc":"2.0", a batch
//     once 2025-06-18 is negotiated), so check refuses those frames first,
//     each answered on its own;
//   - MCP says "the receiver SHOULD NOT send a response for the cancelled
//     request"; go-sdk ends the handler but still writes what it returns,
//     and clients such as the TypeScript SDK report an answer to a request
//     they forgot as an error. So the client's requests are in flight until
//     answered, its notifications/cancelled mark one, and drop withholds
//     the answer to a marked one.
//
// Only requests in flight are kept, so memory follows go-sdk's own bound on
// concurrent requests.
type clientStream struct {
	mu       sync.Mutex
	inFlight map[string]bool // request id → cancelled
}

func newClientStream() *clientStream {
	return &clientStream{inFlight: map[string]bool{}}
}

// errBatch refuses JSON-RPC batches. MCP 2025-03-26 had them, later
// versions removed them and go-sdk ends the session on one; no client
// Moat knows sends them, and one message per line means the same.
var errBatch = errors.New("JSON-RPC batches are not supported (MCP removed them in 2025-06-18); send each message on its own line")

// check refuses a frame go-sdk could not decode, which would end the
// session: it decodes the frame as go-sdk will.
func (c *clientStream) check(line []byte, _ *frame.Scanner) error {
	if len(line) > 0 && line[0] == '[' {
		return errBatch
	}
	if _, err := jsonrpc.DecodeMessage(line); err != nil {
		return fmt.Errorf("not a JSON-RPC 2.0 message: %v", err)
	}
	return nil
}

// read is told of every frame the client sent that passed the frame bounds.
func (c *clientStream) read(line []byte, sc *frame.Scanner) {
	switch {
	case sc.HasMethod() && sc.ID() != nil:
		c.mu.Lock()
		c.inFlight[idKey(sc.ID())] = false
		c.mu.Unlock()
	case sc.Method() == "notifications/cancelled" && !sc.HasID():
		var n struct {
			Params struct {
				RequestID json.RawMessage `json:"requestId"`
			} `json:"params"`
		}
		if json.Unmarshal(line, &n) != nil || n.Params.RequestID == nil {
			return // go-sdk answers nothing to a notification either way
		}
		key := idKey(n.Params.RequestID)
		c.mu.Lock()
		if _, ok := c.inFlight[key]; ok {
			c.inFlight[key] = true
		}
		c.mu.Unlock()
	}
}

// drop reports whether an outgoing frame answers a cancelled request, and
// forgets the request once it is answered.
func (c *clientStream) drop(line []byte) bool {
	var sc frame.Scanner
	sc.Feed(line)
	if sc.HasMethod() || sc.ID() == nil {
		return false
	}
	key := idKey(sc.ID())
	c.mu.Lock()
	defer c.mu.Unlock()
	cancelled := c.inFlight[key]
	delete(c.inFlight, key)
	return cancelled
}

// idKey is one spelling per id: go-sdk writes back 7 for a request id of
// 7.0, and a client may cancel either way.
func idKey(raw []byte) string {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return "s" + s
		}
	}
	if f, err := strconv.ParseFloat(string(raw), 64); err == nil {
		return "n" + strconv.FormatFloat(f, 'g', -1, 64)
	}
	return "r" + string(raw)
}
