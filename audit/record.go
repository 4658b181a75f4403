package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// Version is the schema version written in every record's "v" field.
const Version = 1

// Event names written by the Writer itself. Callers choose their own names
// for everything else ("tool_call", "server_start", "config_reload", ...).
const (
	EventCheckpoint   = "checkpoint"    // signed seal over the records since the previous one
	EventContinued    = "continued"     // first record of a file created by rotation
	EventRecovered    = "recovered"     // a torn tail was cut off on Open after a crash
	EventAuditFailure = "audit_failure" // records were lost while the log was unwritable
	EventRotateFailed = "rotate_failed" // rotation was due but failed; records go on in the current file
)

// Write-ahead records of calls. A caller that records calls write-ahead
// writes an [EventIntent] record, durable, before the call leaves for its
// upstream, and then the call's own record (its outcome) with
// Detail[[DetailIntent]] set to the intent's seq. [Verify] lists the intents
// that no outcome names as [Report.Incomplete]: calls that were sent while
// the writing process stopped (a crash, kill -9, a power cut) before their
// outcome was written. They are not tampering.
const (
	EventIntent  = "call_intent"
	DetailIntent = "intent"
)

// An Outcome says how a call or an event ended ([Record.Outcome]).
type Outcome string

// The outcomes.
const (
	OutcomeOK      Outcome = "ok"
	OutcomeError   Outcome = "error"
	OutcomeTimeout Outcome = "timeout"
	OutcomeLimited Outcome = "limited"
	OutcomeDenied  Outcome = "denied"
	// OutcomeCancelled: the client cancelled the call (notifications/cancelled
	// or its connection ended) before the upstream answered.
	OutcomeCancelled Outcome = "cancelled"
)

// A Record is one line of the audit log. The field order below is the order
// of the canonical bytes (see the package documentation) and must never change
// within one schema version. Empty fields are omitted.
//
// V, Seq, Time, Count, Digest, Prev, Sig and Hash are set by the [Writer];
// values the caller puts there are ignored. PID and User default to the
// writing process and its OS user.
type Record struct {
	V          int               `json:"v"`
	Seq        uint64            `json:"seq"`
	Time       string            `json:"time"` // RFC 3339, UTC, nanoseconds
	Event      string            `json:"event"`
	Group      string            `json:"group,omitempty"`
	Tool       string            `json:"tool,omitempty"`
	Decision   string            `json:"decision,omitempty"` // allow | deny
	Rule       string            `json:"rule,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	ArgsSHA256 string            `json:"args_sha256,omitempty"`
	ArgsShape  map[string]string `json:"args_shape,omitempty"` // key -> JSON type, never values
	Args       json.RawMessage   `json:"args,omitempty"`       // only with Options.RecordArgs, redacted
	BytesIn    int64             `json:"bytes_in,omitempty"`
	BytesOut   int64             `json:"bytes_out,omitempty"`
	DurationMS int64             `json:"duration_ms,omitempty"`
	Outcome    Outcome           `json:"outcome,omitempty"`
	Pin        string            `json:"pin,omitempty"`
	Session    string            `json:"session,omitempty"`
	Identity   *Identity         `json:"identity,omitempty"` // the gateway identity the call was made for
	PID        int               `json:"pid,omitempty"`
	User       string            `json:"user,omitempty"`
	Detail     map[string]string `json:"detail,omitempty"`
	Count      uint64            `json:"count,omitempty"`  // checkpoint: records sealed by it
	Digest     string            `json:"digest,omitempty"` // checkpoint: SHA-256 of those lines
	Prev       string            `json:"prev,omitempty"`   // hex Hash of the previous record; empty only for seq 1
	Sig        string            `json:"sig,omitempty"`    // checkpoint: base64 Ed25519 signature
	Hash       string            `json:"hash,omitempty"`   // hex HMAC-SHA256, see package doc

	mid []byte // encoded members from event to digest, prepared by Write
}

// An Identity is the principal a gateway session acts for ([Record.Identity]):
// a name from the config's gateway.identities and what the kernel said of
// the peer when it connected. A nil pointer means the value is not known
// (a peer that is not on a Unix socket); 0 is root's uid and is written.
type Identity struct {
	Name string `json:"name"`
	UID  *int   `json:"uid,omitempty"`
	GID  *int   `json:"gid,omitempty"`
	PID  *int   `json:"pid,omitempty"`
}

// marshalCanonical returns the canonical JSON of r: encoding/json with the
// struct's field order, no HTML escaping, no trailing newline.
func marshalCanonical(r *Record) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// appendMember turns `{...}` into `{...,"name":"value"}`. value must need no
// JSON escaping (hex or base64).
func appendMember(obj []byte, name, value string) []byte {
	out := make([]byte, 0, len(obj)+len(name)+len(value)+6)
	out = append(out, obj[:len(obj)-1]...)
	out = append(out, `,"`...)
	out = append(out, name...)
	out = append(out, `":"`...)
	out = append(out, value...)
	return append(out, `"}`...)
}

// splitMember is the inverse of appendMember: it reports whether obj ends with
// a `"name":"value"` member and returns obj without it, and the value.
func splitMember(obj []byte, name string) (rest []byte, value string, ok bool) {
	if !bytes.HasSuffix(obj, []byte(`"}`)) {
		return nil, "", false
	}
	body := obj[:len(obj)-2]
	marker := []byte(`,"` + name + `":"`)
	i := bytes.LastIndex(body, marker)
	if i < 0 {
		return nil, "", false
	}
	value = string(body[i+len(marker):])
	if strings.ContainsAny(value, `"\`) {
		return nil, "", false
	}
	rest = append(append([]byte{}, body[:i]...), '}')
	return rest, value, true
}

// ArgsShape describes tool arguments without their values: each top-level key
// mapped to its JSON type (string, number, boolean, null, object, array), and
// the hex SHA-256 of the raw bytes. Arguments that are not a JSON object get
// the shape {"": type}; invalid JSON gets {"": "invalid"}.
//
// The hash lets an auditor match a record to the arguments a client logged;
// note that it also lets anyone holding the log test a guess of the full
// argument bytes.
func ArgsShape(args json.RawMessage) (shape map[string]string, sha string) {
	sum := sha256.Sum256(args)
	sha = hex.EncodeToString(sum[:])
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(args, &obj); err == nil && obj != nil {
		shape = make(map[string]string, len(obj))
		for k, v := range obj {
			shape[k] = jsonType(v)
		}
		return shape, sha
	}
	return map[string]string{"": jsonType(args)}, sha
}

func jsonType(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if !json.Valid(v) || len(v) == 0 {
		return "invalid"
	}
	switch v[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// clean applies redact to s and replaces invalid UTF-8, so that the
// canonical bytes survive a decode/encode round trip unchanged.
func clean(s string, redact func(string) string) string {
	if redact != nil && s != "" {
		s = redact(s)
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// sanitize returns a copy of r with every string redacted and made valid
// UTF-8, and Args dropped unless recordArgs.
func sanitize(r *Record, redact func(string) string, recordArgs bool) (*Record, error) {
	c := *r
	for _, p := range []*string{&c.Event, &c.Group, &c.Tool, &c.Decision, &c.Rule, &c.Reason,
		&c.ArgsSHA256, &c.Pin, &c.Session, &c.User} {
		*p = clean(*p, redact)
	}
	c.Outcome = Outcome(clean(string(c.Outcome), redact))
	if r.Identity != nil {
		id := *r.Identity
		id.Name = clean(id.Name, redact)
		c.Identity = &id
	}
	c.ArgsShape = cleanMap(r.ArgsShape, redact)
	c.Detail = cleanMap(r.Detail, redact)
	c.Args = nil
	if recordArgs && len(r.Args) > 0 {
		a, err := redactJSON(r.Args, redact)
		if err != nil {
			return nil, err
		}
		c.Args = a
	}
	return &c, nil
}

func cleanMap(m map[string]string, redact func(string) string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[clean(k, redact)] = clean(v, redact)
	}
	return out
}

// redactJSON rewrites every string (keys included) in a JSON document.
// Numbers keep their exact text.
func redactJSON(raw json.RawMessage, redact func(string) string) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var walk func(any) any
	walk = func(v any) any {
		switch t := v.(type) {
		case string:
			return clean(t, redact)
		case map[string]any:
			m := make(map[string]any, len(t))
			for k, x := range t {
				m[clean(k, redact)] = walk(x)
			}
			return m
		case []any:
			for i := range t {
				t[i] = walk(t[i])
			}
			return t
		}
		return v
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(walk(v)); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
