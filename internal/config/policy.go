package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/moatmcp/moat/policy"
)

// policy reads a "policy" object and returns it re-encoded with ${VAR}
// expanded in every string value (never in keys, which name tools and
// settings). Its meaning is the policy package's business: the expanded
// object is parsed by it here, so a typo fails `moat config validate` with
// its line, and serve never meets a policy the loader let through. It
// returns nil when m is nil or unusable.
func (c *checker) policy(m *member, path, where string) json.RawMessage {
	if m == nil {
		return nil
	}
	if m.val.kind != kindObject {
		c.ps.add(path, m.val.off, fmt.Sprintf(`%s is %s, not an object`, where, m.val.kind), `write "policy": {"deny": ["write_*"]}`)
		return nil
	}
	var b bytes.Buffer
	if !c.encodeExpanded(&b, m.val, path, where) {
		return nil
	}
	parse := policy.ParseServer
	switch {
	case path == "/defaults/policy":
		parse = policy.Parse
	case strings.HasPrefix(path, "/gateway/"):
		parse = policy.ParseIdentity
	}
	c.policyProblems(m.val, b.Bytes(), path, parse)
	return json.RawMessage(b.Bytes())
}

// policyProblems parses the expanded policy with the policy package and
// places each of its problems in the file: at the key when the key is
// wrong, else at the value. A problem about a value that came from ${VAR}
// does not quote it: error text never holds the environment's values.
func (c *checker) policyProblems(n *node, expanded []byte, path string, parse func([]byte) (*policy.Policy, error)) {
	_, err := parse(expanded)
	var pe *policy.Error
	if !errors.As(err, &pe) {
		return
	}
	for _, p := range pe.Problems {
		at, keyOff := locate(n, splitPointer(p.Path))
		off := at.off
		if p.Key && keyOff >= 0 {
			off = keyOff
		}
		msg, hint := p.Msg, p.Hint
		if !p.Key && hasExpansion(at) {
			msg, hint = "not valid once ${...} is expanded (the value is not shown here)", "check the variable's value against `moat config schema`"
		}
		if hint == "" {
			hint = "see the policy keys in `moat config schema`"
		}
		c.ps.add(path+p.Path, off, msg, hint)
	}
}

// locate follows JSON pointer tokens from n. It returns the deepest node
// found and, when the last token is a member of an object, its key's
// offset (else -1).
func locate(n *node, tokens []string) (*node, int) {
	keyOff := -1
	for _, tok := range tokens {
		keyOff = -1
		var next *node
		switch n.kind {
		case kindObject:
			if m := n.get(tok); m != nil {
				next, keyOff = m.val, m.keyOff
			}
		case kindArray:
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(n.items) {
				next = n.items[i]
			}
		}
		if next == nil {
			return n, -1
		}
		n = next
	}
	return n, keyOff
}

// splitPointer splits an RFC 6901 JSON pointer into its tokens.
func splitPointer(p string) []string {
	if p == "" {
		return nil
	}
	tokens := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, t := range tokens {
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return tokens
}

// hasExpansion reports whether any string in n holds a ${...} reference.
func hasExpansion(n *node) bool {
	switch n.kind {
	case kindString:
		return strings.Contains(n.str, "${")
	case kindArray:
		return slices.ContainsFunc(n.items, hasExpansion)
	case kindObject:
		return slices.ContainsFunc(n.members, func(m member) bool { return hasExpansion(m.val) })
	}
	return false
}

// encodeExpanded writes n as compact JSON, members in file order and
// numbers as written, expanding string values; it reports every failed
// expansion and returns false if there was one.
func (c *checker) encodeExpanded(b *bytes.Buffer, n *node, path, where string) bool {
	switch n.kind {
	case kindNull:
		b.WriteString("null")
	case kindBool:
		b.WriteString(strconv.FormatBool(n.b))
	case kindNumber:
		b.WriteString(n.str)
	case kindString:
		v, ok := c.expand(n.str, expansion{path, n.off, where, nil, false, false})
		writeJSONString(b, v)
		return ok
	case kindArray:
		ok := true
		b.WriteByte('[')
		for i, it := range n.items {
			if i > 0 {
				b.WriteByte(',')
			}
			ok = c.encodeExpanded(b, it, path+"/"+strconv.Itoa(i), where) && ok
		}
		b.WriteByte(']')
		return ok
	case kindObject:
		ok := true
		b.WriteByte('{')
		for i, mb := range n.members {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, mb.key)
			b.WriteByte(':')
			ok = c.encodeExpanded(b, mb.val, path+pointer(mb.key), where) && ok
		}
		b.WriteByte('}')
		return ok
	}
	return true
}

// writeJSONString writes s as a JSON string without HTML escaping, so
// `moat policy check` shows "<" as "<".
func writeJSONString(b *bytes.Buffer, s string) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Truncate(b.Len() - 1)
}
