package redact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
)

// Layer returns the guard layer that redacts what comes back from below it:
// tool results (text, structuredContent, _meta, resource links, embedded
// resources, and image, audio and blob bytes), resource contents, prompt
// messages, and the text of denials and errors. mode gives each group's
// Mode for credential patterns ("" means ModeRedact); under ModeBlock a
// result holding a pattern becomes a *guard.Denial.
//
// The layer rewrites the result it is handed in place: the handler below
// must return a result nobody else holds (the upstream client decodes a new
// one for every call).
func (r *Redactor) Layer(mode func(group string) Mode) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			res, err := next(ctx, c)
			m := ModeRedact
			if mode != nil {
				if g := mode(c.Group); g != "" {
					m = g
				}
			}
			w := walker{r: r, mode: m}
			if err != nil {
				if m == ModeBlock { // an error cannot be blocked; redact it
					w.mode = ModeRedact
				}
				return res, w.err(err)
			}
			if res != nil {
				w.result(res)
			}
			if w.hit != "" && m == ModeBlock {
				return nil, &guard.Denial{Layer: guard.LayerRedact, Rule: "credential-pattern:" + w.hit,
					Reason: fmt.Sprintf("the %s from group %s contains what looks like a credential (%s), and this group's policy blocks such results (redact: block); ask the user, or change the policy to \"redact\"",
						c.Kind, c.Group, w.hit)}
			}
			return res, nil
		}
	}
}

// Value redacts decoded JSON v (strings, and the keys and values of objects
// and arrays) with mode for credential patterns, for what an upstream sends
// the client outside a call's result: log messages, progress, sampling and
// elicitation requests. hit names the first credential pattern found; under
// ModeBlock patterns are found but left, and the caller keeps the message
// from the client.
func (r *Redactor) Value(v any, mode Mode) (out any, hit string) {
	w := walker{r: r, mode: mode}
	out = w.anyValue(v)
	return out, w.hit
}

// walker applies one call's redaction to every string of a result and
// remembers the first credential pattern it met.
type walker struct {
	r    *Redactor
	mode Mode
	hit  string
}

func (w *walker) str(s string) string {
	out, hit := w.r.redact(s, w.mode)
	if w.hit == "" {
		w.hit = hit
	}
	return out
}

// bytes redacts binary data byte-wise: a secret inside an image or blob is
// as readable to whoever decodes it. Changed data is no longer a valid
// image, which is the lesser harm.
func (w *walker) bytes(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	s := string(b)
	if out := w.str(s); out != s {
		return []byte(out)
	}
	return b
}

func (w *walker) result(res *guard.Result) {
	if t := res.Tool; t != nil {
		for _, c := range t.Content {
			w.content(c)
		}
		w.acrossItems(t.Content)
		t.StructuredContent = w.anyValue(t.StructuredContent)
		w.meta(t.Meta)
	}
	if rr := res.Resource; rr != nil {
		for _, rc := range rr.Contents {
			w.resource(rc)
		}
		w.meta(rr.Meta)
	}
	if p := res.Prompt; p != nil {
		p.Description = w.str(p.Description)
		for _, m := range p.Messages {
			if m != nil {
				w.content(m.Content)
			}
		}
		w.meta(p.Meta)
	}
	if c := res.Complete; c != nil {
		for i, v := range c.Completion.Values {
			c.Completion.Values[i] = w.str(v)
		}
		w.meta(c.Meta)
	}
}

// acrossItems redacts a known secret split across adjacent text items of
// one result, which a client shows, and a model reads, as one text. Each
// item was redacted alone first; what a match across items covers is cut
// from them, and its marker stands where the secret began.
func (w *walker) acrossItems(items []mcp.Content) {
	a := w.r.auto.Load()
	if len(a.names) == 0 {
		return
	}
	var run []*mcp.TextContent
	for i := 0; i <= len(items); i++ {
		if i < len(items) {
			if t, ok := items[i].(*mcp.TextContent); ok {
				run = append(run, t)
				continue
			}
		}
		// Each cut leaves one boundary fewer to cross; the bound only
		// guards against markers recombining with the text beside them.
		for range 2 * len(run) {
			if len(run) < 2 || !cutSpanning(a, run) {
				break
			}
		}
		run = run[:0]
	}
}

// cutSpanning replaces the first match in the joined texts of run that
// crosses from one item into another, and reports whether there was one.
func cutSpanning(a *automaton, run []*mcp.TextContent) bool {
	var b strings.Builder
	starts := make([]int, len(run))
	for i, t := range run {
		starts[i] = b.Len()
		b.WriteString(t.Text)
	}
	item := func(off int) int { // the item holding byte off of the joined text
		i := len(starts) - 1
		for starts[i] > off {
			i--
		}
		return i
	}
	for _, sp := range find(a, b.String()) {
		first, last := item(sp.start), item(sp.end-1)
		if first == last {
			continue
		}
		run[first].Text = run[first].Text[:sp.start-starts[first]] + "[REDACTED:" + a.names[sp.label] + "]"
		for k := first + 1; k < last; k++ {
			run[k].Text = ""
		}
		run[last].Text = run[last].Text[sp.end-starts[last]:]
		return true
	}
	return false
}

func (w *walker) content(c mcp.Content) {
	switch c := c.(type) {
	case *mcp.TextContent:
		c.Text = w.str(c.Text)
		w.meta(c.Meta)
	case *mcp.ImageContent:
		c.Data = w.bytes(c.Data)
		w.meta(c.Meta)
	case *mcp.AudioContent:
		c.Data = w.bytes(c.Data)
		w.meta(c.Meta)
	case *mcp.ResourceLink:
		c.URI, c.Name, c.Title, c.Description = w.str(c.URI), w.str(c.Name), w.str(c.Title), w.str(c.Description)
		w.meta(c.Meta)
	case *mcp.EmbeddedResource:
		w.resource(c.Resource)
		w.meta(c.Meta)
	}
}

func (w *walker) resource(rc *mcp.ResourceContents) {
	if rc == nil {
		return
	}
	rc.URI = w.str(rc.URI)
	rc.Text = w.str(rc.Text)
	rc.Blob = w.bytes(rc.Blob)
	w.meta(rc.Meta)
}

func (w *walker) meta(m mcp.Meta) {
	for k, v := range m {
		m[k] = w.anyValue(v)
	}
}

// anyValue redacts decoded JSON: strings, and the keys and values of
// objects and arrays.
func (w *walker) anyValue(v any) any {
	switch v := v.(type) {
	case string:
		return w.str(v)
	case []any:
		for i := range v {
			v[i] = w.anyValue(v[i])
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, val := range v {
			out[w.str(k)] = w.anyValue(val)
		}
		return out
	case json.RawMessage:
		var d any
		if json.Unmarshal(v, &d) != nil {
			return json.RawMessage(w.bytes(v))
		}
		b, err := json.Marshal(w.anyValue(d))
		if err != nil {
			return json.RawMessage(w.bytes(v))
		}
		return json.RawMessage(b)
	}
	return v
}

// err redacts the text of an error from below. Denials and JSON-RPC errors
// keep their type (the proxy reads their fields); other errors get a
// redacted message and still unwrap to the original for errors.Is.
func (w *walker) err(err error) error {
	var d *guard.Denial
	if errors.As(err, &d) {
		cp := *d
		cp.Reason = w.str(d.Reason)
		return &cp
	}
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		data := we.Data
		if len(data) > 0 {
			data = w.anyValue(we.Data).(json.RawMessage)
		}
		return &jsonrpc.Error{Code: we.Code, Message: w.str(we.Message), Data: data}
	}
	msg := err.Error()
	if out := w.str(msg); out != msg {
		return &redactedError{msg: out, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
