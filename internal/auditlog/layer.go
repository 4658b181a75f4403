package auditlog

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/guard"
)

// Layer records every call with its decision and outcome. It is the
// outermost layer, so refusals by any layer below are recorded too, and a
// result reaches the client only after its record is written: durable for a
// refusal, in the file (durable within audit.BehindDelay) for a call that
// went through Intent, whose outcome names its intent record
// (Detail["intent"]).
func (l *Log) Layer() guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			if _, err := l.wait(ctx); err != nil && l.onFailure != audit.FailContinue {
				return nil, unavailable(err)
			}
			sent := new(intent)
			start := time.Now()
			res, err := next(context.WithValue(ctx, intentKey{}, sent), c)
			r := callRecord(c, sent, res, err, time.Since(start))
			write := l.Write
			if sent.seq != 0 {
				r.Detail = map[string]string{audit.DetailIntent: strconv.FormatUint(sent.seq, 10)}
				// The intent is durable: the outcome need only be in
				// the file before the result goes back; its sync
				// follows (a power cut leaves an incomplete call).
				write = l.WriteBehind
			}
			// The call happened (it may have reached the upstream) even when
			// the client cancelled it, so its record is written regardless.
			if werr := write(context.WithoutCancel(ctx), r); werr != nil {
				return nil, unavailable(werr)
			}
			return res, err
		}
	}
}

// intentKey carries, from Layer to Intent, the *intent that Intent fills.
type intentKey struct{}

// intent is what Intent recorded of a call: the seq of its record, and the
// arguments' shape and hash (computed once for both records; the arguments
// do not change after Intent, the last layer that reads them).
type intent struct {
	seq   uint64
	shape map[string]string
	sha   string
}

// Intent is the write-ahead half of the audit log: placed after the last
// layer that may refuse a call and before the forward, it makes the call's
// intent record durable before the call can leave for its upstream. If that
// record cannot be written the call is refused there, so no upstream ever
// sees a call the log does not show. Layer then writes the outcome, and a
// crash between the two leaves an intent that `moat audit verify` lists as
// an incomplete call.
func (l *Log) Intent() guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			r := &audit.Record{Event: audit.EventIntent, Group: c.Group, Tool: c.Name, Session: c.Session, Identity: identity(c.Identity),
				BytesIn: int64(len(c.Args)), Detail: map[string]string{"call": eventOf[c.Kind]}}
			if c.Name == "" {
				r.Tool = c.URI
			}
			if len(c.Args) > 0 {
				r.ArgsShape, r.ArgsSHA256 = audit.ArgsShape(c.Args)
			}
			if err := l.Write(ctx, r); err != nil {
				return nil, unavailable(err)
			}
			if sent, ok := ctx.Value(intentKey{}).(*intent); ok {
				*sent = intent{seq: r.Seq, shape: r.ArgsShape, sha: r.ArgsSHA256}
			}
			return next(ctx, c)
		}
	}
}

// Refused records a call_dynamic_tool request the proxy refused before the
// chain (proxy.Options.Refused): as its denial says when err is a
// *guard.Denial, else with rule and outcome, which the caller read from err
// (the proxy's own causes: a malformed request, a group unavailable). Only
// the arguments' shape and hash go in: they may be what was malformed. The
// refusal is recorded even when the client cancelled the request.
func (l *Log) Refused(ctx context.Context, c *guard.Call, err error, rule string, outcome audit.Outcome) error {
	r := callRecord(c, &intent{}, nil, err, 0)
	r.Args = nil
	if r.Decision != "deny" {
		r.Decision, r.Rule, r.Outcome = "deny", rule, outcome
	}
	r.Reason = err.Error()
	return l.Write(context.WithoutCancel(ctx), r)
}

// unavailable is the refusal when a call cannot be recorded. The user reads
// it in the chat, so it names the real cause and its fix (a chmod, free
// space, a passphrase), bounded; it never suggests switching the log off.
func unavailable(err error) *guard.Denial {
	cause := err.Error()
	var h interface{ Hints() []string }
	if errors.As(err, &h) && len(h.Hints()) > 0 {
		cause += "; to fix it: " + strings.Join(h.Hints(), "; ")
	}
	if len(cause) > maxCause {
		cause = strings.ToValidUTF8(cause[:maxCause], "") + "…"
	}
	reason := "the audit log cannot be written, so Moat runs no call it cannot record: " + cause + " (`moat doctor` checks the whole setup)"
	return &guard.Denial{Layer: guard.LayerAudit, Rule: "unavailable", Reason: reason, Cause: err}
}

// maxCause bounds the cause shown in a refusal.
const maxCause = 1000

var eventOf = map[guard.Kind]string{
	guard.KindTool:      "tool_call",
	guard.KindResource:  "resource_read",
	guard.KindPrompt:    "prompt_get",
	guard.KindSubscribe: "resource_subscribe",
	guard.KindComplete:  "completion",
}

// callRecord describes one call, sent by Intent (in) or refused before it
// (by a layer, or by the proxy: Refused).
// Argument values never go in (only their hash and shape) unless the writer
// is configured to record them.
func callRecord(c *guard.Call, in *intent, res *guard.Result, err error, d time.Duration) *audit.Record {
	r := &audit.Record{
		Event:      eventOf[c.Kind],
		Group:      c.Group,
		Tool:       c.Name,
		Session:    c.Session,
		Identity:   identity(c.Identity),
		DurationMS: d.Milliseconds(),
		BytesIn:    int64(len(c.Args)),
		Decision:   "allow",
		Outcome:    audit.OutcomeOK,
	}
	if c.Name == "" {
		r.Tool = c.URI // a resource read or subscription, a template's completion
	}
	switch {
	case in.seq != 0:
		r.ArgsShape, r.ArgsSHA256 = in.shape, in.sha
		r.Args = c.Args
	case len(c.Args) > 0:
		r.ArgsShape, r.ArgsSHA256 = audit.ArgsShape(c.Args)
		r.Args = c.Args
	}
	var denial *guard.Denial
	r.Outcome, denial = Outcome(res, err)
	switch {
	case denial != nil:
		r.Decision, r.Rule, r.Reason = "deny", string(denial.Layer)+":"+denial.Rule, denial.Reason
	case err != nil:
		r.Reason = err.Error()
	}
	r.BytesOut = resultSize(res)
	return r
}

// Outcome classifies how a call ended, as its audit record says, and
// returns its refusal when a layer refused it. It is the one
// classification: the metrics count calls by it too.
func Outcome(res *guard.Result, err error) (audit.Outcome, *guard.Denial) {
	if err == nil { // first, so that a call that went through costs no allocation
		if res != nil && res.Tool != nil && res.Tool.IsError {
			return audit.OutcomeError, nil
		}
		return audit.OutcomeOK, nil
	}
	var denial *guard.Denial
	switch {
	case errors.As(err, &denial):
		if denial.Layer == guard.LayerRate || denial.Layer == guard.LayerConcurrency {
			return audit.OutcomeLimited, denial
		}
		return audit.OutcomeDenied, denial
	case errors.Is(err, guard.ErrTimeout):
		return audit.OutcomeTimeout, nil
	case errors.Is(err, context.Canceled):
		return audit.OutcomeCancelled, nil
	}
	return audit.OutcomeError, nil
}

// identity is the audit form of a gateway identity: nil for none (the
// stdio client), and only the peer's known values (the guard's -1 is
// "unknown").
func identity(id *guard.Identity) *audit.Identity {
	if id == nil {
		return nil
	}
	known := func(n int) *int {
		if n < 0 {
			return nil
		}
		return &n
	}
	return &audit.Identity{Name: id.Name, UID: known(id.UID), GID: known(id.GID), PID: known(id.PID)}
}

// resultSize approximates the bytes a result carries to the client without
// encoding it again.
func resultSize(res *guard.Result) int64 {
	if res == nil {
		return 0
	}
	var n int64
	content := func(cs []mcp.Content) {
		for _, c := range cs {
			switch c := c.(type) {
			case *mcp.TextContent:
				n += int64(len(c.Text))
			case *mcp.ImageContent:
				n += int64(len(c.Data))
			case *mcp.AudioContent:
				n += int64(len(c.Data))
			case *mcp.EmbeddedResource:
				if c.Resource != nil {
					n += int64(len(c.Resource.Text) + len(c.Resource.Blob))
				}
			}
		}
	}
	switch {
	case res.Tool != nil:
		content(res.Tool.Content)
		if res.Tool.StructuredContent != nil {
			if b, err := json.Marshal(res.Tool.StructuredContent); err == nil {
				n += int64(len(b))
			}
		}
	case res.Resource != nil:
		for _, c := range res.Resource.Contents {
			n += int64(len(c.Text) + len(c.Blob))
		}
	case res.Prompt != nil:
		for _, m := range res.Prompt.Messages {
			content([]mcp.Content{m.Content})
		}
	case res.Complete != nil:
		for _, v := range res.Complete.Completion.Values {
			n += int64(len(v))
		}
	}
	return n
}
