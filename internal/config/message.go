package config

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Message size limits (key "max_message_bytes").
const (
	// DefaultMaxMessageBytes is the smallest max_message_bytes a server gets
	// when it does not set one: an upstream's tools/list or resources/read
	// is not bounded by max_result_bytes, and 32 MiB is what Moat always
	// accepted.
	DefaultMaxMessageBytes = 32 << 20
	// MaxMessageBytesCeiling bounds max_message_bytes. Moat holds a whole
	// message in memory, more than once while go-sdk decodes it, so a
	// larger value would let one upstream answer take gigabytes.
	MaxMessageBytesCeiling = 1 << 30
	// DefaultMaxResultBytes mirrors policy.DefaultMaxResultBytes (a test
	// keeps the two equal). The policy package owns max_result_bytes; the
	// loader only reads it to size the transport.
	DefaultMaxResultBytes = 16 << 20
)

// resultBound is the largest result a server's policy can let through and
// where that value is written (JSON pointer tokens; nil for the built-in
// default).
type resultBound struct {
	bytes uint64
	at    []string
}

func (b resultBound) describe() string {
	if b.at == nil {
		return fmt.Sprintf("max_result_bytes (%s, the default)", formatSize(b.bytes))
	}
	return fmt.Sprintf("%s (%s)", pointer(b.at...), formatSize(b.bytes))
}

// messageLimit fills in s.MaxMessageBytes and reports a limit that results
// the policy allows could never fit. explicit is the server's own
// "max_message_bytes" (0 when absent or invalid, already reported).
//
// Without the key the limit is twice the largest result the policy allows,
// at least DefaultMaxMessageBytes and at most MaxMessageBytesCeiling: a
// result's bytes as max_result_bytes counts them (text, base64 data,
// structuredContent) grow on the wire by JSON escaping and, for tools that
// return structuredContent, by its text copy in content, so twice leaves
// room for both.
func (c *checker) messageLimit(root *node, s *Server, explicit uint64, defaultsPolicy json.RawMessage) {
	bound := maxResultBound(s.Name, s.Policy, defaultsPolicy)
	if explicit > 0 {
		s.MaxMessageBytes = explicit
		if explicit < bound.bytes {
			at := []string{"mcpServers", s.Name, "max_message_bytes"}
			c.ps.add(pointer(at...), root.lookup(at),
				fmt.Sprintf("max_message_bytes (%s) is smaller than the largest result the policy of %q allows, %s, so such results could never arrive", formatSize(explicit), s.Name, bound.describe()),
				fmt.Sprintf("raise max_message_bytes to at least %s, or lower max_result_bytes in the server's policy (or in defaults.policy) to at most %s", formatSize(bound.bytes), formatSize(explicit)))
		}
		return
	}
	s.MaxMessageBytes = min(max(2*bound.bytes, DefaultMaxMessageBytes), MaxMessageBytesCeiling)
	if bound.bytes > s.MaxMessageBytes {
		c.ps.add(pointer(bound.at...), root.lookup(bound.at),
			fmt.Sprintf("%s is larger than the largest message Moat reads from an upstream (%s), so results that large could never arrive", bound.describe(), formatSize(MaxMessageBytesCeiling)),
			fmt.Sprintf("lower it to at most %s", formatSize(MaxMessageBytesCeiling)))
	}
}

// maxResultBound is the largest max_result_bytes any tool of server can
// get from the user's side of the policy, combined the way the policy
// package combines them: the server's group value, else defaults.policy's;
// a "tools" entry (the server's replacing the default's of the same key)
// can only lower a group value that is set, but where none is set a tool's
// own value replaces the built-in default. A managed policy can only lower
// these values, so the bound holds under one too. Values the policy package
// will refuse are skipped here; it reports them.
func maxResultBound(server string, serverPolicy, defaultsPolicy json.RawMessage) resultBound {
	sp, dp := policyObject(serverPolicy), policyObject(defaultsPolicy)
	serverAt := []string{"mcpServers", server, "policy"}
	defaultsAt := []string{"defaults", "policy"}
	if n, ok := resultBytes(sp); ok {
		return resultBound{n, append(serverAt, "max_result_bytes")}
	}
	if n, ok := resultBytes(dp); ok {
		return resultBound{n, append(defaultsAt, "max_result_bytes")}
	}
	bound := resultBound{bytes: DefaultMaxResultBytes}
	tools := map[string]resultBound{}
	for _, p := range []struct {
		obj map[string]any
		at  []string
	}{{dp, defaultsAt}, {sp, serverAt}} {
		entries, _ := p.obj["tools"].(map[string]any)
		for pat, e := range entries {
			delete(tools, pat) // the server's entry replaces the default's whole
			if n, ok := resultBytes(e); ok {
				tools[pat] = resultBound{n, append(append([]string(nil), p.at...), "tools", pat, "max_result_bytes")}
			}
		}
	}
	for _, t := range tools {
		if t.bytes > bound.bytes || t.bytes == bound.bytes && bound.at != nil && pointer(t.at...) < pointer(bound.at...) {
			bound = t
		}
	}
	return bound
}

// policyObject decodes a raw policy, or returns nil when it is not an
// object.
func policyObject(raw json.RawMessage) map[string]any {
	if raw == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if dec.Decode(&obj) != nil {
		return nil
	}
	return obj
}

// resultBytes reads "max_result_bytes" of a policy or tools entry.
func resultBytes(v any) (uint64, bool) {
	obj, _ := v.(map[string]any)
	raw, ok := obj["max_result_bytes"]
	if !ok {
		return 0, false
	}
	n, err := ParseSize(raw)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

// formatSize writes n in the largest 1024-based unit that divides it.
func formatSize(n uint64) string {
	for _, u := range []struct {
		unit uint64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.unit && n%u.unit == 0 {
			return fmt.Sprintf("%d%s", n/u.unit, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}
