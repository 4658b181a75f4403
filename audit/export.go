package audit

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"
)

// OCSFVersion is the version of the Open Cybersecurity Schema Framework
// (https://schema.ocsf.io) that [OCSF] writes.
const OCSFVersion = "1.5.0"

// Export formats: what `moat audit export --format` and audit.syslog_format
// accept.
const (
	FormatOCSF = "ocsf"
	FormatCEF  = "cef"
)

// callEvents are the records of calls, exported as OCSF API Activity; the
// value is the activity: 2 Read for reads and prompt gets, 99 Other (named)
// for the rest.
var callEvents = map[string]struct {
	id   int
	name string
}{
	"tool_call":          {99, "Call"},
	"resource_read":      {2, "Read"},
	"prompt_get":         {2, "Read"},
	"resource_subscribe": {99, "Subscribe"},
	"completion":         {99, "Complete"},
	EventIntent:          {99, "Intent"},
}

// OCSF returns r as one OCSF event (JSON, no newline). A call (tool call,
// resource read, subscription, prompt get, completion, and a write-ahead
// intent) is an API Activity (class_uid 6003): the actor is Moat's process
// and OS user, or, for a call made for a gateway identity, that identity
// (actor.user: its name and uid; the whole identity under
// "unmapped.identity") with Moat's process and OS user (actor.process),
// the API's service is the group and its operation the tool,
// URI or prompt, the source endpoint the client's session, and the decision,
// rule and argument digest are kept under "unmapped". Every other record is
// a Base Event (class_uid 0) with its event name as message and its details
// under "unmapped". product is the version of Moat that exports.
func OCSF(r *Record, product string) ([]byte, error) {
	t, err := time.Parse(time.RFC3339Nano, r.Time)
	if err != nil {
		return nil, fmt.Errorf("audit: record seq %d: time %q: %w", r.Seq, r.Time, err)
	}
	status, statusID, severity := "Success", 1, 1
	switch r.Outcome {
	case "", OutcomeOK:
	case OutcomeDenied:
		status, statusID, severity = "Failure", 2, 3
	default:
		status, statusID, severity = "Failure", 2, 2
	}
	unmapped := map[string]any{"event": r.Event, "seq": r.Seq, "hash": r.Hash}
	for k, v := range map[string]string{"decision": r.Decision, "rule": r.Rule, "args_sha256": r.ArgsSHA256, "pin": r.Pin, "outcome": string(r.Outcome)} {
		if v != "" {
			unmapped[k] = v
		}
	}
	if len(r.ArgsShape) > 0 {
		unmapped["args_shape"] = r.ArgsShape
	}
	if len(r.Args) > 0 {
		unmapped["args"] = r.Args
	}
	if len(r.Detail) > 0 {
		unmapped["detail"] = maps.Clone(r.Detail)
	}
	for k, v := range map[string]int64{"bytes_in": r.BytesIn, "bytes_out": r.BytesOut} {
		if v != 0 {
			unmapped[k] = v
		}
	}
	ev := map[string]any{
		"time":        t.UnixMilli(),
		"severity_id": severity,
		"metadata": map[string]any{
			"version":  OCSFVersion,
			"uid":      strconv.FormatUint(r.Seq, 10),
			"log_name": "moat-audit",
			"product":  map[string]any{"name": "Moat", "vendor_name": "Moat", "version": product},
		},
		"unmapped": unmapped,
	}
	actor := map[string]any{}
	var proc map[string]any
	if r.PID != 0 {
		proc = map[string]any{"pid": r.PID, "name": "moat"}
		actor["process"] = proc
	}
	if id := r.Identity; id != nil {
		// The call was made for a gateway identity: it is the actor's
		// user, and Moat's own OS user is its process's.
		u := map[string]any{"name": id.Name}
		if id.UID != nil {
			u["uid"] = strconv.Itoa(*id.UID)
		}
		actor["user"] = u
		unmapped["identity"] = id
		if r.User != "" && proc != nil {
			proc["user"] = map[string]any{"name": r.User}
		} else if r.User != "" {
			unmapped["user"] = r.User
		}
	} else if r.User != "" {
		actor["user"] = map[string]any{"name": r.User}
	}
	call, isCall := callEvents[r.Event]
	if !isCall {
		ev["class_uid"], ev["category_uid"], ev["activity_id"] = 0, 0, 0
		ev["type_uid"] = 0
		ev["message"] = strings.TrimSpace(r.Event + " " + r.Group + " " + r.Reason)
		if r.Outcome != "" {
			ev["status"], ev["status_id"] = status, statusID
		}
		if len(actor) > 0 {
			unmapped["actor"] = actor
		}
		return json.Marshal(ev)
	}
	if r.Event == EventIntent {
		status, statusID = "Unknown", 0 // sent; its outcome is its own record
	}
	if len(actor) == 0 {
		actor["app_name"] = "moat"
	}
	if r.Session != "" {
		actor["session"] = map[string]any{"uid": r.Session}
	}
	src := map[string]any{"name": "mcp-client"}
	if r.Session != "" {
		src["uid"] = r.Session
	}
	ev["class_uid"], ev["category_uid"] = 6003, 6
	ev["activity_id"], ev["activity_name"] = call.id, call.name
	ev["type_uid"] = 6003*100 + call.id
	ev["actor"] = actor
	ev["api"] = map[string]any{"operation": r.Tool, "service": map[string]any{"name": r.Group}}
	ev["src_endpoint"] = src
	ev["dst_endpoint"] = map[string]any{"name": r.Group}
	ev["status"], ev["status_id"] = status, statusID
	if r.Reason != "" {
		ev["status_detail"] = r.Reason
	}
	if r.DurationMS != 0 {
		ev["duration"] = r.DurationMS
	}
	ev["message"] = strings.TrimSpace(fmt.Sprintf("%s %s/%s %s %s", r.Event, r.Group, r.Tool, r.Decision, r.Outcome))
	return json.Marshal(ev)
}

// CEF returns r as one ArcSight Common Event Format line (no newline):
// "CEF:0|Moat|Moat|<product>|<event>|<name>|<severity>|<extension>". The
// extension uses the standard keys (rt, suser, spid, act, outcome, reason,
// msg; for a call made for a gateway identity, suser, suid and spid are
// that identity's name, uid and peer pid, dvcpid is Moat's pid,
// flexString1 "moat_user" Moat's OS user and flexString2 "identity_gid"
// the peer's gid) and labelled custom strings (cs1 group, cs2 tool, cs3 rule, cs4
// session, cs5 args_sha256, cs6 detail as JSON) and numbers (cn1 seq, cn2
// duration in ms, cn3 bytes out).
func CEF(r *Record, product string) (string, error) {
	t, err := time.Parse(time.RFC3339Nano, r.Time)
	if err != nil {
		return "", fmt.Errorf("audit: record seq %d: time %q: %w", r.Seq, r.Time, err)
	}
	severity := 3
	switch r.Outcome {
	case "", OutcomeOK:
	case OutcomeDenied:
		severity = 6
	default:
		severity = 5
	}
	name := strings.TrimSpace(r.Event + " " + r.Group + "/" + r.Tool)
	if r.Group == "" && r.Tool == "" {
		name = r.Event
	}
	var b strings.Builder
	fmt.Fprintf(&b, "CEF:0|Moat|Moat|%s|%s|%s|%d|", cefHeader(product), cefHeader(r.Event), cefHeader(name), severity)
	first := true
	ext := func(k, v string) {
		if v == "" {
			return
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(cefValue(v))
	}
	ext("rt", strconv.FormatInt(t.UnixMilli(), 10))
	if id := r.Identity; id != nil {
		// The source is the gateway's peer; Moat is the device.
		ext("suser", id.Name)
		if id.UID != nil {
			ext("suid", strconv.Itoa(*id.UID))
		}
		if id.PID != nil {
			ext("spid", strconv.Itoa(*id.PID))
		}
		if r.PID != 0 {
			ext("dvcpid", strconv.Itoa(r.PID))
		}
		if r.User != "" {
			ext("flexString1Label", "moat_user")
			ext("flexString1", r.User)
		}
		if id.GID != nil {
			ext("flexString2Label", "identity_gid")
			ext("flexString2", strconv.Itoa(*id.GID))
		}
	} else {
		ext("suser", r.User)
		if r.PID != 0 {
			ext("spid", strconv.Itoa(r.PID))
		}
	}
	ext("act", r.Decision)
	ext("outcome", string(r.Outcome))
	ext("reason", r.Reason)
	for i, kv := range [][2]string{{"group", r.Group}, {"tool", r.Tool}, {"rule", r.Rule}, {"session", r.Session}, {"args_sha256", r.ArgsSHA256}} {
		if kv[1] != "" {
			n := strconv.Itoa(i + 1)
			ext("cs"+n+"Label", kv[0])
			ext("cs"+n, kv[1])
		}
	}
	if len(r.Detail) > 0 {
		d, _ := json.Marshal(r.Detail)
		ext("cs6Label", "detail")
		ext("cs6", string(d))
	}
	for i, kv := range []struct {
		label string
		v     int64
	}{{"seq", int64(r.Seq)}, {"duration_ms", r.DurationMS}, {"bytes_out", r.BytesOut}} {
		if kv.v != 0 {
			n := strconv.Itoa(i + 1)
			ext("cn"+n+"Label", kv.label)
			ext("cn"+n, strconv.FormatInt(kv.v, 10))
		}
	}
	return b.String(), nil
}

// cefHeader escapes a CEF header field: backslash and pipe; a newline,
// which no header may hold, becomes a space.
func cefHeader(s string) string {
	return strings.NewReplacer(`\`, `\\`, `|`, `\|`, "\r", " ", "\n", " ").Replace(s)
}

// cefValue escapes a CEF extension value: backslash, equals sign, and line
// breaks as \n and \r.
func cefValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `=`, `\=`, "\r", `\r`, "\n", `\n`).Replace(s)
}
