package proxy

import (
	"encoding/json"
	"strconv"
	"sync"

	"github.com/moatmcp/moat/internal/frame"
)

// cancellations keeps a cancelled request from being answered. MCP: "the
// receiver SHOULD NOT send a response for the cancelled request"; go-sdk
// ends the handler but still writes what it returns, and clients such as
// the TypeScript SDK report an answer to a request they forgot as an error.
//
// It watches one connection's frames: the client's requests (in flight
// until answered), its notifications/cancelled (which mark one in flight),
// and Moat's answers (dropped when marked). Only requests in flight are
// kept, so memory follows go-sdk's own bound on concurrent requests.
type cancellations struct {
	mu       sync.Mutex
	inFlight map[string]bool // request id → cancelled
}

func newCancellations() *cancellations {
	return &cancellations{inFlight: map[string]bool{}}
}

// read is told of every frame the client sent that passed the frame bounds.
func (c *cancellations) read(line []byte, sc *frame.Scanner) {
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
func (c *cancellations) drop(line []byte) bool {
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
