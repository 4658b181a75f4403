package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// policy reads a "policy" object and returns it re-encoded with ${VAR}
// expanded in every string value (never in keys, which name tools and
// settings). Its meaning is the policy package's business; here it only has
// to be an object. It returns nil when m is nil or unusable.
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
	return json.RawMessage(b.Bytes())
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
		v, ok := c.expand(n.str, expansion{path, n.off, where, nil})
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
