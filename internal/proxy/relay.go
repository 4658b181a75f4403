package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// relayParams returns what an upstream sends toward the client outside a
// call's result (a log message, progress, a sampling or elicitation
// request) as Options.Relay leaves it: params go through JSON, Relay
// judges their encoded size and rewrites the decoded value (redaction with the group's credential
// patterns, hidden characters removed), and the result is decoded back
// into a new T. An error (Relay refuses the message, or it cannot be
// re-read) means the message is not passed on.
func relayParams[T any](p *shared, group string, params *T) (*T, error) {
	if p.relay == nil || params == nil {
		return params, nil
	}
	b, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("re-encoding a message from group %s: %w", group, err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("re-reading a message from group %s: %w", group, err)
	}
	if v, err = p.relay(group, v, len(b)); err != nil {
		return nil, err
	}
	if b, err = json.Marshal(v); err != nil {
		return nil, fmt.Errorf("re-encoding a message from group %s: %w", group, err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("re-reading a message from group %s: %w", group, err)
	}
	return out, nil
}
