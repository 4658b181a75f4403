package frame

import (
	"bytes"
	"encoding/json"
)

// Bounds of what a Scanner keeps. Request ids in practice are small
// integers or short strings, so an id longer than maxIDLen is treated as
// none; keys longer than maxKeyLen cannot be "id" or "method", even with
// every character written as a \u escape.
const (
	maxIDLen  = 256
	maxKeyLen = 64
)

// scanPhase is where a Scanner is in the top-level object.
type scanPhase uint8

const (
	phStart  scanPhase = iota // before the first byte that is not space
	phKey                     // expecting a key or '}'
	phColon                   // after a key, expecting ':'
	phValue                   // expecting a value
	phScalar                  // inside a number or literal at the top level
	phNested                  // inside an object or array below the top level
	phAfter                   // after a value, expecting ',' or '}'
	phDone                    // the object closed, or the text is not an object
)

// member is which top-level member's value is being read.
type member uint8

const (
	memberOther member = iota
	memberID
	memberMethod
)

// A Scanner reads one JSON text fed in pieces, as it streams past, and
// keeps only what is needed to handle a message without decoding it whole:
// the raw value of the top-level "id", the top-level "method", and the
// deepest nesting. The id may come anywhere in the object (the TypeScript
// SDK writes it after "result"), so everything else is skipped, tracking
// only strings, escapes and nesting depth: memory stays at a few hundred
// bytes whatever the text holds.
//
// A key or id is matched as encoding/json would match it into a map: keys
// are compared exactly after unescaping, and the last of duplicate keys
// wins. go-sdk matches case-sensitively too.
//
// The zero Scanner is ready for one text.
type Scanner struct {
	phase scanPhase
	depth int  // open objects and arrays; 1 inside the top-level object
	str   bool // inside a string
	esc   bool // inside a string, after a backslash
	// keyEsc records a backslash in the current key, which then has to be
	// unescaped before it is compared.
	keyEsc  bool
	key     []byte // the current top-level key, without quotes, up to maxKeyLen
	keyLong bool
	field   member // whose value is being read
	val     []byte // the id or method value being read, raw, up to maxIDLen
	valLong bool

	maxDepth   int
	sawID      bool   // a top-level "id" member, whatever its value
	id         []byte // the last complete top-level "id" that is a string or number
	method     bool   // a top-level "method" was seen
	methodName string // its value, when a short string
}

// ID returns the raw JSON of the top-level "id" (a string or a number), or
// nil when there is none, it is null, an object, an array or too long, or
// the text is not an object.
func (s *Scanner) ID() []byte { return s.id }

// HasID reports whether the object has a top-level "id" member at all,
// whatever its value: such a message expects an answer.
func (s *Scanner) HasID() bool { return s.sawID }

// HasMethod reports whether the object has a top-level "method": it is a
// request or notification, not a response.
func (s *Scanner) HasMethod() bool { return s.method }

// Method returns the top-level "method" when it is a string of at most
// maxIDLen bytes, unescaped; otherwise "".
func (s *Scanner) Method() string { return s.methodName }

// MaxDepth returns the deepest nesting of objects and arrays seen so far;
// the top-level object or array is depth 1.
func (s *Scanner) MaxDepth() int { return s.maxDepth }

// Feed reads the next piece of the text.
func (s *Scanner) Feed(p []byte) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if s.str {
			if s.esc {
				s.esc = false
				s.keep(c)
				continue
			}
			if !s.keeping() {
				// Fast path: long strings (the text of a result) are
				// skipped up to the next quote or backslash.
				j := bytes.IndexAny(p[i:], `"\`)
				if j < 0 {
					return
				}
				i += j
				c = p[i]
			}
			switch c {
			case '\\':
				s.esc = true
				if s.phase == phKey {
					s.keyEsc = true
				}
				s.keep(c)
			case '"':
				s.str = false
				s.endString()
			default:
				s.keep(c)
			}
			continue
		}
		if s.phase == phDone {
			s.nest(c)
			continue
		}
		s.step(c)
	}
}

// nest follows only strings and nesting, once nothing more is to be kept
// (the object closed, or the text is a batch or not JSON), so that MaxDepth
// still counts the whole text.
func (s *Scanner) nest(c byte) {
	switch c {
	case '"':
		s.str = true
	case '{', '[':
		s.deeper()
	case '}', ']':
		s.depth--
	}
}

func (s *Scanner) deeper() {
	s.depth++
	s.maxDepth = max(s.maxDepth, s.depth)
}

// keeping reports whether the bytes of the current string are still kept
// (a key or an id within its bound).
func (s *Scanner) keeping() bool {
	return s.phase == phKey && !s.keyLong || s.phase == phValue && s.field != memberOther && !s.valLong
}

// keep appends c to the key, id or method being read, within their bounds.
func (s *Scanner) keep(c byte) {
	switch {
	case s.phase == phKey:
		if len(s.key) < maxKeyLen {
			s.key = append(s.key, c)
		} else {
			s.keyLong = true
		}
	case s.phase == phValue && s.field != memberOther:
		s.keepVal(c)
	}
}

func (s *Scanner) keepVal(c byte) {
	if len(s.val) < maxIDLen {
		s.val = append(s.val, c)
	} else {
		s.valLong = true
	}
}

// endString handles the closing quote of a string outside nested values.
func (s *Scanner) endString() {
	switch s.phase {
	case phKey:
		s.field = s.member()
		s.phase = phColon
	case phValue: // a string value at the top level
		if s.field != memberOther {
			s.keepVal('"')
		}
		s.endValue()
	}
}

// member classifies the key just read.
func (s *Scanner) member() member {
	if s.keyLong {
		return memberOther
	}
	name := string(s.key)
	if s.keyEsc {
		if json.Unmarshal(append(append([]byte{'"'}, s.key...), '"'), &name) != nil {
			return memberOther
		}
	}
	switch name {
	case "id":
		s.sawID = true
		return memberID
	case "method":
		return memberMethod
	}
	return memberOther
}

// endValue records the value of the member just read and waits for ','.
func (s *Scanner) endValue() {
	switch s.field {
	case memberID:
		s.id = nil
		if !s.valLong && len(s.val) > 0 && (s.val[0] == '"' || s.val[0] == '-' || s.val[0] >= '0' && s.val[0] <= '9') && json.Valid(s.val) {
			s.id = bytes.Clone(s.val)
		}
	case memberMethod:
		s.method, s.methodName = true, ""
		if !s.valLong && len(s.val) > 0 && s.val[0] == '"' {
			json.Unmarshal(s.val, &s.methodName) //nolint:errcheck // not a valid string: no name
		}
	}
	s.phase = phAfter
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// step handles one byte outside strings.
func (s *Scanner) step(c byte) {
	switch s.phase {
	case phStart:
		switch {
		case isSpace(c):
		case c == '{':
			s.deeper()
			s.phase = phKey
		default:
			s.phase = phDone // an array (a batch), a scalar or not JSON
			s.nest(c)
		}
	case phKey:
		switch {
		case isSpace(c):
		case c == '"':
			s.str, s.key, s.keyLong, s.keyEsc = true, s.key[:0], false, false
		case c == '}':
			s.close()
		default:
			s.phase = phDone
		}
	case phColon:
		switch {
		case isSpace(c):
		case c == ':':
			s.phase = phValue
			s.val, s.valLong = s.val[:0], false
		default:
			s.phase = phDone
		}
	case phValue:
		switch {
		case isSpace(c):
		case c == '"':
			s.str = true
			if s.field != memberOther {
				s.keepVal(c)
			}
		case c == '{' || c == '[':
			s.deeper()
			s.phase = phNested
		case c == '}' || c == ']' || c == ',' || c == ':':
			s.phase = phDone
		default:
			s.phase = phScalar
			if s.field == memberID {
				s.keepVal(c)
			}
		}
	case phScalar:
		switch {
		case isSpace(c) || c == ',' || c == '}':
			s.endValue()
			s.step(c) // now in phAfter
		case c == '"' || c == '{' || c == '[' || c == ']' || c == ':':
			s.phase = phDone
		default:
			if s.field == memberID {
				s.keepVal(c)
			}
		}
	case phNested:
		s.nest(c)
		if (c == '}' || c == ']') && s.depth == 1 {
			// An object or array: never an id, but it may replace an
			// earlier one, and it is a method all the same.
			s.val, s.valLong = s.val[:0], true
			s.endValue()
		}
	case phAfter:
		switch {
		case isSpace(c):
		case c == ',':
			s.phase = phKey
		case c == '}':
			s.close()
		default:
			s.phase = phDone
		}
	}
}

func (s *Scanner) close() {
	s.depth--
	s.phase = phDone
}
