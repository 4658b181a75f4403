// Package hygiene cleans text that upstream servers write and the model
// reads (tool names, titles, descriptions, error texts) and spots the marks
// of hidden instructions in it.
//
// Clean removes what a person reviewing the text cannot see but a model
// still reads: control characters and terminal escape sequences, bidi
// overrides, zero-width characters, Unicode tag characters (which can spell
// out a whole hidden ASCII message) and every other format character, and it
// cuts long text with a visible marker. Suspicious reports phrases and tags
// typical of tool-poisoning, for `moat doctor` and the audit log; it does not
// change anything.
package hygiene

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean returns s without control characters (newline and tab kept, CR and
// CRLF and Unicode line separators turned into newlines), terminal escape
// sequences, bidi controls, zero-width and other invisible characters, tag
// characters and other format (Cf) characters, and without invalid UTF-8.
// When max > 0 and more than max runes remain, the text is cut so that the
// result, marker " […cut: N chars]" included, has at most max runes (or, for
// a max too small for the marker, is cut at max runes with no marker).
// Clean(Clean(s, m), m) == Clean(s, m).
func Clean(s string, max int) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			i += n
			continue
		case r == 0x1b:
			i += escapeLen(s[i:])
			continue
		case r == '\r':
			b.WriteByte('\n')
			i += n
			if i < len(s) && s[i] == '\n' {
				i++
			}
			continue
		case r == '\u2028' || r == '\u2029':
			b.WriteByte('\n')
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case invisible(r):
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return cut(b.String(), max)
}

// Value returns decoded JSON v with every string and object key cleaned
// (Clean, no cut): for what an upstream sends the client outside a listing
// or a result, such as the text of a sampling request, which goes straight
// into the model's context. v itself is never modified.
func Value(v any) any { return cleanValue(v, 0) }

// Line is Clean for text shown on one line (a failure reason, an error
// message, a server's stderr line): every run of white space, line breaks
// included, becomes one space, and the result is cut as Clean cuts.
func Line(s string, max int) string {
	return cut(strings.Join(strings.Fields(Clean(s, 0)), " "), max)
}

// invisible reports whether r is dropped by Clean: controls, format
// characters (bidi, zero-width, tags, soft hyphen...), variation selectors
// of the supplement plane (used to smuggle bytes after a visible
// character), and blank "filler" letters that render as nothing.
func invisible(r rune) bool {
	switch {
	case unicode.Is(unicode.Cc, r), unicode.Is(unicode.Cf, r):
		return true
	case r >= 0xE0000 && r <= 0xE007F: // tags, assigned or not
		return true
	case r >= 0xE0100 && r <= 0xE01EF: // variation selectors supplement
		return true
	case r == '\u115F', r == '\u1160', r == '\u3164', r == '\uFFA0', r == '\u034F':
		return true
	case unicode.Is(unicode.Co, r) || unicode.Is(unicode.Cs, r) || r == utf8.RuneError:
		return true
	}
	return false
}

// escapeLen is the length of the terminal escape sequence at the start of
// s (which begins with ESC): CSI (ESC [ ... final), OSC and other string
// sequences (up to BEL or ESC \), or ESC and one more character.
func escapeLen(s string) int {
	if len(s) < 2 {
		return len(s)
	}
	switch s[1] {
	case '[':
		for i := 2; i < len(s); i++ {
			switch c := s[i]; {
			case c >= 0x40 && c <= 0x7e:
				return i + 1
			case c < 0x20 || c > 0x7e:
				return i // not a CSI byte: the sequence ends here
			}
		}
		return len(s)
	case ']', 'P', '_', '^', 'X':
		for i := 2; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
		return len(s)
	}
	_, n := utf8.DecodeRuneInString(s[1:])
	return 1 + n
}

// cut shortens s to at most max runes, marker included.
func cut(s string, max int) string {
	if max <= 0 {
		return s
	}
	total := utf8.RuneCountInString(s)
	if total <= max {
		return s
	}
	keep, marker := max, ""
	for d := 1; d < 20; d++ { // d: digits reserved for the count
		keep = max - utf8.RuneCountInString(" […cut:  chars]") - d
		if keep < 1 {
			keep, marker = max, ""
			break
		}
		if n := total - keep; len(fmt.Sprint(n)) <= d {
			marker = fmt.Sprintf(" […cut: %d chars]", n)
			break
		}
	}
	i := 0
	for range keep {
		_, n := utf8.DecodeRuneInString(s[i:])
		i += n
	}
	return s[:i] + marker
}
