package pin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Canonical returns the RFC 8785 (JSON Canonicalization Scheme) form of the
// JSON text data: no insignificant whitespace, object members sorted by the
// UTF-16 code units of their names, strings with only the escapes JCS
// requires, and numbers as ECMAScript writes an IEEE 754 double.
//
// It refuses invalid JSON, invalid UTF-8, duplicate member names and numbers
// out of double range. (encoding/json turns a lone surrogate escape into
// U+FFFD rather than failing; a tool definition cannot carry one anyway,
// since the SDK decoded it with encoding/json first.)
func Canonical(data []byte) ([]byte, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("jcs: input is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var b bytes.Buffer
	if err := canonValue(dec, &b, 0); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("jcs: unexpected data after the JSON value")
	}
	return b.Bytes(), nil
}

const maxDepth = 1000

type member struct {
	key   string
	units []uint16
	value []byte
}

func canonValue(dec *json.Decoder, b *bytes.Buffer, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("jcs: nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("jcs: invalid JSON: %w", err)
	}
	switch t := tok.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(t))
	case string:
		writeString(b, t)
	case json.Number:
		s, err := formatNumber(string(t))
		if err != nil {
			return err
		}
		b.WriteString(s)
	case json.Delim:
		switch t {
		case '[':
			b.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				if err := canonValue(dec, b, depth+1); err != nil {
					return err
				}
			}
			b.WriteByte(']')
		case '{':
			var members []member
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return fmt.Errorf("jcs: invalid JSON: %w", err)
				}
				k := kt.(string)
				var vb bytes.Buffer
				if err := canonValue(dec, &vb, depth+1); err != nil {
					return err
				}
				members = append(members, member{key: k, units: utf16.Encode([]rune(k)), value: vb.Bytes()})
			}
			slices.SortFunc(members, func(x, y member) int { return slices.Compare(x.units, y.units) })
			b.WriteByte('{')
			for i, m := range members {
				if i > 0 {
					if members[i-1].key == m.key {
						return fmt.Errorf("jcs: duplicate member name %q", m.key)
					}
					b.WriteByte(',')
				}
				writeString(b, m.key)
				b.WriteByte(':')
				b.Write(m.value)
			}
			b.WriteByte('}')
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return fmt.Errorf("jcs: invalid JSON: %w", err)
		}
	}
	return nil
}

// writeString writes s as JCS requires: the two-character escapes for
// \b \t \n \f \r " and \, \u00xx (lowercase hex) for other control
// characters, everything else as UTF-8.
func writeString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		default:
			if c < 0x20 {
				fmt.Fprintf(b, `\u%04x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}

// formatNumber writes a JSON number as ECMAScript's Number.prototype.toString
// writes the nearest double (RFC 8785 section 3.2.2.3).
func formatNumber(text string) (string, error) {
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", fmt.Errorf("jcs: number %s is out of IEEE 754 double range", text)
	}
	return formatDouble(f), nil
}

func formatDouble(f float64) string {
	if f == 0 {
		return "0" // also -0
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	// Shortest digits that round-trip, as ECMAScript requires.
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expText, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(expText)
	k, n := len(digits), exp+1 // value = 0.digits × 10^n
	var s string
	switch {
	case k <= n && n <= 21:
		s = digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		s = digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		s = "0." + strings.Repeat("0", -n) + digits
	default:
		es := "+"
		if n-1 < 0 {
			es = "-"
		}
		ev := strconv.Itoa(abs(n - 1))
		if k == 1 {
			s = digits + "e" + es + ev
		} else {
			s = digits[:1] + "." + digits[1:] + "e" + es + ev
		}
	}
	return sign + s
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
