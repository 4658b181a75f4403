package redact

import (
	"bytes"
	"encoding/json"
)

// Message returns one encoded JSON-RPC message on its way to the client
// with every known secret removed from every string in it, object keys
// included: a result, an error's message and data, a notification's or a
// request's params. It is the client boundary's last step, so it also
// covers what no guard layer sees: an upstream's log messages and progress
// relayed, sampling and elicitation requests, listings, group states and
// reasons, Moat's own texts.
//
// Known secrets are registered with their JSON-escaped form, so one scan of
// the encoded bytes decides; only a message that holds one is decoded,
// rewritten and encoded again. Credential patterns are left to the guard's
// layer, which applies each group's mode. A message that is not JSON (never
// written by go-sdk) is redacted as bytes. The trailing newline of a line
// is kept.
func (r *Redactor) Message(msg []byte) []byte {
	a := r.auto.Load()
	if len(find(a, msg)) == 0 {
		return msg
	}
	body, nl := bytes.CutSuffix(msg, []byte("\n"))
	w := walker{r: r, mode: ModeOff}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return w.bytes(msg)
	}
	var out bytes.Buffer
	e := json.NewEncoder(&out)
	e.SetEscapeHTML(false)
	if err := e.Encode(w.anyValue(v)); err != nil {
		return w.bytes(msg)
	}
	if !nl {
		return bytes.TrimSuffix(out.Bytes(), []byte("\n"))
	}
	return out.Bytes()
}
