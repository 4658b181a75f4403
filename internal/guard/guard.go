// Package guard is the spine every proxied call goes through: the Call type,
// the Handler that serves it, and the Layers that wrap that Handler.
//
// A Layer is middleware in the net/http sense: it receives the next Handler
// and returns a Handler that may refuse, change or observe the call. Chain
// stacks them in one place, so the order is data and a test can lock it.
package guard

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/strictjson"
)

// Kind says what a Call asks of an upstream.
type Kind int

const (
	KindTool      Kind = iota // tools/call, through call_dynamic_tool
	KindResource              // resources/read
	KindPrompt                // prompts/get
	KindSubscribe             // resources/subscribe (or a 2026-07-28 listen stream's)
	KindComplete              // completion/complete
)

func (k Kind) String() string {
	switch k {
	case KindTool:
		return "tool"
	case KindResource:
		return "resource"
	case KindPrompt:
		return "prompt"
	case KindSubscribe:
		return "subscribe"
	case KindComplete:
		return "complete"
	}
	return "unknown"
}

// A Call is one request on its way to an upstream group, decoded once at the
// edge so no layer re-parses the wire message.
type Call struct {
	Kind  Kind
	Group string
	Name  string // tool or prompt name (a completion's ref/prompt)
	URI   string // resource URI (a completion's ref/resource template)
	// Args are the tool arguments (a JSON object): as received until
	// Value decodes them, then the encoding of the decoded value, which is
	// what the upstream receives.
	Args    json.RawMessage
	Strings map[string]string // prompt arguments
	Session string            // downstream session ID, for audit
	// Identity is who the session belongs to when Moat serves as a
	// gateway (moat serve --listen); nil for the one client of a stdio
	// moat, whose user is the process's own.
	Identity *Identity

	// Tool is the definition the client was shown for this tool (nil for
	// other kinds): validation and pinning check against it.
	Tool *mcp.Tool

	// Progress is the downstream progress token, if the client sent one.
	Progress any

	// Complete is a completion request as the client sent it.
	Complete *mcp.CompleteParams

	// value and valueErr are Value's result, once decoded is set.
	decoded  bool
	value    map[string]any
	valueErr error
}

// An Identity is the principal a gateway session acts for: a name from the
// config's gateway.identities (or the gateway user's own login name when
// none is configured) and, for a Unix-socket peer, what the kernel said of
// it (SO_PEERCRED) when it connected. The policy layer judges the
// identity's own rules beside the group's, and every audit record of the
// call names it.
type Identity struct {
	Name string
	// Principal names who within the identity: "oidc ISSUER SUBJECT" for
	// an OIDC token, "uid N" for a Unix socket peer, "token NAME" for a
	// moat token; "" on stdio. A gateway session serves one Name and
	// Principal, and a per-user server runs once per Name and Principal.
	Principal string
	// UID, GID and PID of the peer process; -1 when not known (a TCP peer).
	UID, GID, PID int
}

// MaxArgsDepth bounds the nesting of tool arguments.
const MaxArgsDepth = 64

// Value returns the tool arguments decoded by strictjson, once for every
// layer: the policy's argument rules and the schema validation judge this
// one value, and once it is decoded Args holds its encoding, so the
// upstream receives exactly the value that was judged, never bytes that
// another JSON reader could read differently. The first call decodes; a
// call's layers run one after another, so no lock is needed.
func (c *Call) Value() (map[string]any, error) {
	if !c.decoded {
		c.decoded = true
		c.value, c.valueErr = strictjson.DecodeObject(c.Args, MaxArgsDepth)
		if c.valueErr == nil {
			var b []byte
			if b, c.valueErr = strictjson.Encode(c.value); c.valueErr == nil {
				c.Args = b
			}
		}
	}
	return c.value, c.valueErr
}

// Result is what a Call produced; the field matching Kind is set (none for
// a subscription).
type Result struct {
	Tool     *mcp.CallToolResult
	Resource *mcp.ReadResourceResult
	Prompt   *mcp.GetPromptResult
	Complete *mcp.CompleteResult
}

// Handler serves a Call. A refusal is a *Denial error; the proxy turns it
// into a tool result with IsError set. Any other error is a failure to reach
// or hear from the upstream.
type Handler func(ctx context.Context, c *Call) (*Result, error)

// Layer wraps a Handler with one concern.
type Layer func(next Handler) Handler

// Chain wraps h so that layers[0] sees each call first and its result last.
func Chain(h Handler, layers ...Layer) Handler {
	for _, l := range slices.Backward(layers) {
		h = l(h)
	}
	return h
}

// ErrTimeout is wrapped by the error of every call that ran out of time,
// whichever bound ended it: the server's timeout in the config (the
// upstream's) or the policy's (the timeout layer's). Both are one kind of
// outcome in the audit log and to the model; the message names the key.
var ErrTimeout = errors.New("timed out")

// A LayerName names a layer of the chain: in its denials, in the audit
// log's rules ("layer:rule") and in the chain's order.
type LayerName string

// The layers, and LayerProxy for refusals before the chain.
const (
	LayerAudit       LayerName = "audit"
	LayerSize        LayerName = "size"
	LayerPolicy      LayerName = "policy"
	LayerConcurrency LayerName = "concurrency"
	LayerPin         LayerName = "pin"
	LayerValidate    LayerName = "validate"
	LayerRate        LayerName = "rate"
	LayerIntent      LayerName = "intent" // the audit log's write-ahead record; its refusals name LayerAudit
	LayerTimeout     LayerName = "timeout"
	LayerRedact      LayerName = "redact"
	LayerProxy       LayerName = "proxy"
	// LayerMetrics counts calls for Prometheus; it refuses nothing and
	// sits outside the audit layer, so it sees every refusal.
	LayerMetrics LayerName = "metrics"
)

// A Denial is a call refused by a layer. Its Error text reaches the client
// and the model, so it names the layer, the rule and what to do, never
// argument values or secrets. Cause is for the audit log only.
type Denial struct {
	Layer  LayerName
	Rule   string // which rule refused
	Reason string // safe to show: why, and what to do
	Cause  error  // internal detail, never sent to the client
}

func (d *Denial) Error() string {
	msg := string(d.Layer) + ": refused"
	if d.Rule != "" {
		msg += " by rule " + d.Rule
	}
	if d.Reason != "" {
		msg += ": " + d.Reason
	}
	return msg
}

func (d *Denial) Unwrap() error { return d.Cause }
