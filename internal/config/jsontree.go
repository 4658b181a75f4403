package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// encoding/json cannot be used to read the config directly: it matches keys
// case-insensitively, lets the last of two duplicate keys win silently and
// forgets where each value was. This small parser keeps every value's byte
// offset and reports duplicate keys, so every problem can name its line.

// maxDepth bounds nesting; a real config is 4 levels deep.
const maxDepth = 100

type nodeKind uint8

const (
	kindNull nodeKind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func (k nodeKind) String() string {
	return [...]string{"null", "a boolean", "a number", "a string", "an array", "an object"}[k]
}

// node is one JSON value and where it starts in the file.
type node struct {
	kind    nodeKind
	off     int
	str     string // decoded string, or the number's literal text
	b       bool
	items   []*node
	members []member // in file order; a duplicate key keeps only its first value
}

type member struct {
	key    string
	keyOff int
	val    *node
}

// get returns the member named key, matched exactly (case-sensitive).
func (n *node) get(key string) *member {
	for i := range n.members {
		if n.members[i].key == key {
			return &n.members[i]
		}
	}
	return nil
}

// toAny converts the tree to the form the JSON Schema validator takes.
func (n *node) toAny() any {
	switch n.kind {
	case kindBool:
		return n.b
	case kindNumber:
		return json.Number(n.str)
	case kindString:
		return n.str
	case kindArray:
		a := make([]any, len(n.items))
		for i, it := range n.items {
			a[i] = it.toAny()
		}
		return a
	case kindObject:
		m := make(map[string]any, len(n.members))
		for _, mb := range n.members {
			m[mb.key] = mb.val.toAny()
		}
		return m
	}
	return nil
}

// lookup follows JSON pointer tokens from n and returns the value's offset,
// or the offset of the deepest value found on the way.
func (n *node) lookup(tokens []string) int {
	cur := n
	for _, tok := range tokens {
		var next *node
		switch cur.kind {
		case kindObject:
			if m := cur.get(tok); m != nil {
				next = m.val
			}
		case kindArray:
			var i int
			if _, err := fmt.Sscanf(tok, "%d", &i); err == nil && i >= 0 && i < len(cur.items) {
				next = cur.items[i]
			}
		}
		if next == nil {
			break
		}
		cur = next
	}
	return cur.off
}

// duplicate is a key that appears twice in one object.
type duplicate struct {
	path          string // JSON pointer of the key
	off, firstOff int
	key           string
}

type syntaxError struct {
	off       int
	msg, hint string
}

type parser struct {
	data  []byte
	pos   int
	depth int
	path  []string
	dups  []duplicate
}

// parseTree parses data as exactly one JSON value. On a syntax error it
// returns the error and no tree: the rest of the file cannot be trusted.
func parseTree(data []byte) (*node, []duplicate, *syntaxError) {
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			off += size
		}
		return nil, nil, &syntaxError{off, "the file is not valid UTF-8", "save the file as UTF-8"}
	}
	if strings.HasPrefix(string(data), "\uFEFF") {
		return nil, nil, &syntaxError{0, "the file starts with a byte order mark", "save the file as UTF-8 without a BOM"}
	}
	p := &parser{data: data}
	p.skipSpace()
	if p.pos == len(data) {
		return nil, nil, &syntaxError{0, "the file is empty", `write at least {"mcpServers": {}}`}
	}
	n, err := p.value()
	if err != nil {
		return nil, nil, err
	}
	p.skipSpace()
	if p.pos != len(data) {
		return nil, nil, &syntaxError{p.pos, "unexpected text after the end of the JSON document", "remove it; a config is exactly one JSON object"}
	}
	return n, p.dups, nil
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) errorf(hint, format string, args ...any) *syntaxError {
	return &syntaxError{p.pos, fmt.Sprintf(format, args...), hint}
}

func (p *parser) unexpected(want string) *syntaxError {
	if p.pos >= len(p.data) {
		return p.errorf("the file may be cut short", "unexpected end of file, expected %s", want)
	}
	r, _ := utf8.DecodeRune(p.data[p.pos:])
	hint := ""
	switch {
	case r == '/':
		hint = "JSON has no comments; remove them"
	case r == '}' || r == ']':
		hint = "JSON allows no trailing comma; remove the comma before it"
	case r == '\'':
		hint = "JSON strings use double quotes"
	}
	return p.errorf(hint, "unexpected %q, expected %s", r, want)
}

func (p *parser) value() (*node, *syntaxError) {
	if p.pos >= len(p.data) {
		return nil, p.unexpected("a value")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		off := p.pos
		s, err := p.string()
		if err != nil {
			return nil, err
		}
		return &node{kind: kindString, off: off, str: s}, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return p.literal("true", &node{kind: kindBool, b: true})
	case c == 'f':
		return p.literal("false", &node{kind: kindBool})
	case c == 'n':
		return p.literal("null", &node{kind: kindNull})
	}
	return nil, p.unexpected("a value")
}

func (p *parser) literal(word string, n *node) (*node, *syntaxError) {
	if !strings.HasPrefix(string(p.data[p.pos:]), word) {
		return nil, p.unexpected("a value")
	}
	n.off = p.pos
	p.pos += len(word)
	return n, nil
}

func (p *parser) enter() *syntaxError {
	p.depth++
	if p.depth > maxDepth {
		return p.errorf("", "nested deeper than %d levels", maxDepth)
	}
	return nil
}

func (p *parser) object() (*node, *syntaxError) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	n := &node{kind: kindObject, off: p.pos}
	p.pos++ // {
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		p.depth--
		return n, nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.unexpected("a quoted key")
		}
		keyOff := p.pos
		key, err := p.string()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.unexpected(`":" after the key`)
		}
		p.pos++
		p.skipSpace()
		p.path = append(p.path, key)
		val, err := p.value()
		if err != nil {
			return nil, err
		}
		if first := n.get(key); first != nil {
			p.dups = append(p.dups, duplicate{path: pointer(p.path...), off: keyOff, firstOff: first.keyOff, key: key})
		} else {
			n.members = append(n.members, member{key: key, keyOff: keyOff, val: val})
		}
		p.path = p.path[:len(p.path)-1]
		p.skipSpace()
		if p.pos < len(p.data) && p.data[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.pos < len(p.data) && p.data[p.pos] == '}' {
			p.pos++
			p.depth--
			return n, nil
		}
		return nil, p.unexpected(`"," or "}"`)
	}
}

func (p *parser) array() (*node, *syntaxError) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	n := &node{kind: kindArray, off: p.pos}
	p.pos++ // [
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		p.depth--
		return n, nil
	}
	for {
		p.skipSpace()
		p.path = append(p.path, fmt.Sprint(len(n.items)))
		val, err := p.value()
		if err != nil {
			return nil, err
		}
		p.path = p.path[:len(p.path)-1]
		n.items = append(n.items, val)
		p.skipSpace()
		if p.pos < len(p.data) && p.data[p.pos] == ',' {
			p.pos++
			continue
		}
		if p.pos < len(p.data) && p.data[p.pos] == ']' {
			p.pos++
			p.depth--
			return n, nil
		}
		return nil, p.unexpected(`"," or "]"`)
	}
}

// string reads a quoted string at p.pos and returns it decoded.
func (p *parser) string() (string, *syntaxError) {
	start := p.pos
	p.pos++ // opening quote
	for p.pos < len(p.data) {
		switch c := p.data[p.pos]; {
		case c == '"':
			p.pos++
			var s string
			// The grammar was checked above, so this cannot fail.
			if err := json.Unmarshal(p.data[start:p.pos], &s); err != nil {
				return "", &syntaxError{start, "invalid string: " + err.Error(), ""}
			}
			return s, nil
		case c == '\\':
			if p.pos+1 >= len(p.data) {
				p.pos++
				return "", p.unexpected("an escape sequence")
			}
			switch e := p.data[p.pos+1]; e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.pos += 2
			case 'u':
				for i := 2; i < 6; i++ {
					if p.pos+i >= len(p.data) || !isHex(p.data[p.pos+i]) {
						return "", p.errorf(`write \u followed by 4 hex digits`, "invalid \\u escape")
					}
				}
				p.pos += 6
			default:
				const valid = `valid escapes are \" \\ \/ \b \f \n \r \t \uXXXX`
				if e < 0x20 || e >= 0x7f {
					// Quoted: a raw newline or byte would break the
					// one-line message.
					return "", p.errorf(valid, "invalid escape: a backslash followed by %q", string([]byte{e}))
				}
				return "", p.errorf(valid, "invalid escape \\%c", e)
			}
		case c < 0x20:
			return "", p.errorf(`write it as an escape such as \n or \t`, "control character %q inside a string", c)
		default:
			p.pos++
		}
	}
	p.pos = start
	return "", p.errorf("add the closing quote", "unterminated string")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (p *parser) number() (*node, *syntaxError) {
	start := p.pos
	digits := func() bool {
		s := p.pos
		for p.pos < len(p.data) && isDigit(p.data[p.pos]) {
			p.pos++
		}
		return p.pos > s
	}
	if p.data[p.pos] == '-' {
		p.pos++
	}
	if p.pos < len(p.data) && p.data[p.pos] == '0' {
		p.pos++
		if p.pos < len(p.data) && isDigit(p.data[p.pos]) {
			return nil, p.errorf("remove the leading zero", "invalid number: leading zero")
		}
	} else if !digits() {
		return nil, p.unexpected("a digit")
	}
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		p.pos++
		if !digits() {
			return nil, p.unexpected("a digit after the decimal point")
		}
	}
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		if !digits() {
			return nil, p.unexpected("a digit in the exponent")
		}
	}
	return &node{kind: kindNumber, off: start, str: string(p.data[start:p.pos])}, nil
}

// pointer builds an RFC 6901 JSON pointer from path tokens.
func pointer(tokens ...string) string {
	var sb strings.Builder
	for _, t := range tokens {
		sb.WriteByte('/')
		sb.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return sb.String()
}

// position turns a byte offset into a 1-based line and column (in characters).
func position(data []byte, off int) (line, col int) {
	off = min(max(off, 0), len(data))
	line, col = 1, 1
	for _, r := range string(data[:off]) {
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return line, col
}
