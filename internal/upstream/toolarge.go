package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// CodeMessageTooLarge is the JSON-RPC error code of the response Moat puts
// in place of an upstream's answer over max_message_bytes. It is in the
// range JSON-RPC leaves to implementations (-32000 to -32099), away from
// the codes MCP and go-sdk define.
const CodeMessageTooLarge = -32090

// ErrMessageTooLarge is matched (errors.Is) by the error of a call whose
// answer was over the server's max_message_bytes. The upstream session
// and the server are unaffected: the next call goes to the same server.
var ErrMessageTooLarge = errors.New("upstream answer over max_message_bytes")

// tooLargeError is the error a caller sees; its text is the response's
// message, which names the limit and the key to raise.
type tooLargeError struct{ msg string }

func (e *tooLargeError) Error() string        { return e.msg }
func (e *tooLargeError) Is(target error) bool { return target == ErrMessageTooLarge }

// asTooLarge turns the error response Moat put in place of an oversized
// answer into a tooLargeError, and leaves other errors alone. An upstream
// could send the same code itself; it would only change how its own
// error is classified, not what it says.
func asTooLarge(err error) error {
	var we *jsonrpc.Error
	if errors.As(err, &we) && we.Code == CodeMessageTooLarge {
		return &tooLargeError{msg: we.Message}
	}
	return err
}

// oversize is one message Moat did not read because it was over the limit.
type oversize struct {
	what    string // "stdio line", "SSE event" or "HTTP response body"
	size    int64  // its length in bytes, or -1 when only "over the limit" is known
	limit   int
	id      []byte // its top-level id as raw JSON, or nil
	request bool   // it has a "method": the server's request or notification
}

// dropped logs and audits an oversized message and returns the JSON-RPC
// error response that stands in for it, or nil when there is nothing to
// answer: a notification, a message without a readable id, or a request
// of the server's (which goes unanswered; the server's own timeout ends
// it).
func (g *Group) dropped(o oversize) []byte {
	size := "more than " + strconv.Itoa(o.limit)
	if o.size >= 0 {
		size = strconv.FormatInt(o.size, 10)
	}
	kind := "response"
	switch {
	case o.request:
		kind = "request or notification"
	case o.id == nil:
		kind = "message without a readable id"
	}
	g.log.Warn("dropped a message from the upstream that is over max_message_bytes; the session goes on",
		"kind", kind, "transport", o.what, "bytes", size, "limit", o.limit, "id", string(o.id))
	g.m.event(g.name, "message_too_large", map[string]string{
		"kind": kind, "transport": o.what, "bytes": size, "limit": strconv.Itoa(o.limit), "id": string(o.id),
	})
	if o.id == nil || o.request {
		return nil
	}
	return tooLargeResponse(o.id, tooLargeMessage(g.name, o.size, o.limit), o.size, o.limit)
}

// tooLargeMessage says what happened and what to do.
func tooLargeMessage(group string, size int64, limit int) string {
	was := "more than " + humanBytes(int64(limit))
	if size >= 0 {
		was = humanBytes(size)
	}
	return fmt.Sprintf("the answer of %q was %s, over its max_message_bytes limit of %s, so Moat dropped it (the server keeps running); "+
		"ask for less (a page, a range, a narrower query), or raise \"max_message_bytes\" for %q in Moat's config "+
		"(without it the limit is twice the policy's max_result_bytes, at least 32 MiB)",
		group, was, humanBytes(int64(limit)), group)
}

// tooLargeResponse is a JSON-RPC error response for id, one line without
// the newline.
func tooLargeResponse(id []byte, msg string, size int64, limit int) []byte {
	type data struct {
		Limit int   `json:"limit"`
		Size  int64 `json:"size,omitempty"`
	}
	d := data{Limit: limit}
	if size >= 0 {
		d.Size = size
	}
	b, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   any             `json:"error"`
	}{"2.0", id, struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    data   `json:"data"`
	}{CodeMessageTooLarge, msg, d}})
	if err != nil { // unreachable: the scanner only keeps an id that json.Valid accepts
		return nil
	}
	return b
}

// humanBytes writes n as bytes and, from a KiB up, in the largest unit.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%d bytes (%.1f GiB)", n, float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d bytes (%.1f KiB)", n, float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
