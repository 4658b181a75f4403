// Package strictjson is Moat's one decoder of JSON that an upstream will
// read after Moat has judged it: tool arguments, and the input schemas they
// are checked against. It refuses what two JSON readers may read
// differently (duplicate keys, keys equal but for case, unpaired surrogate
// escapes, invalid UTF-8, trailing data) and what costs out of proportion
// (deep nesting, huge numbers), so that the value Moat judges is the value
// the upstream acts on.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Numbers longer than this, or with a larger exponent, are refused: the
// validator turns every number into a big.Rat, and "1e999999999" or a
// megabyte of digits would cost seconds and gigabytes to convert.
const (
	maxNumberLen = 256
	maxExponent  = 1000
)

// Decode parses data as one JSON value the strict way: valid UTF-8 with no
// lone surrogate escapes, no duplicate keys (nor keys equal but for case) in
// any object, at most maxDepth nested objects and arrays, bounded numbers,
// and nothing after the value. Numbers stay json.Number, so big integers are
// not rounded. The strictness is a defence against parser differentials:
// when two readers of the same bytes disagree (which duplicate wins, how a
// bad byte is replaced), the upstream could act on a value Moat never saw.
func Decode(data []byte, maxDepth int) (any, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("the JSON text is not valid UTF-8")
	}
	if err := checkSurrogates(data); err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := readValue(d, 1, maxDepth)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the top-level JSON value")
	}
	return v, nil
}

// DecodeObject decodes the arguments of a call: a JSON object, decoded as
// Decode does; absent arguments (nothing, or null) are an empty object, as
// MCP allows.
func DecodeObject(data []byte, maxDepth int) (map[string]any, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return map[string]any{}, nil
	}
	if trimmed[0] != '{' {
		return nil, errors.New("they must be a JSON object")
	}
	v, err := Decode(trimmed, maxDepth)
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

// Encode returns the JSON encoding of a value Decode returned: keys sorted,
// numbers as they were written, no HTML escaping. Decoding it gives the
// same value back.
func Encode(v any) ([]byte, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func readValue(d *json.Decoder, depth, maxDepth int) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, syntaxErr(err)
	}
	return fromToken(d, tok, depth, maxDepth)
}

func fromToken(d *json.Decoder, tok json.Token, depth, maxDepth int) (any, error) {
	switch t := tok.(type) {
	case json.Delim:
		if depth > maxDepth {
			return nil, fmt.Errorf("nested more than %d levels deep", maxDepth)
		}
		if t == '[' {
			return readArray(d, depth, maxDepth)
		}
		if t == '{' {
			return readObject(d, depth, maxDepth)
		}
		return nil, fmt.Errorf("unexpected %q", rune(t))
	case json.Number:
		if err := checkNumber(t); err != nil {
			return nil, err
		}
		return t, nil
	default: // string, bool, nil
		return t, nil
	}
}

func readArray(d *json.Decoder, depth, maxDepth int) (any, error) {
	arr := []any{}
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, syntaxErr(err)
		}
		if tok == json.Delim(']') {
			return arr, nil
		}
		v, err := fromToken(d, tok, depth+1, maxDepth)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
	}
}

func readObject(d *json.Decoder, depth, maxDepth int) (any, error) {
	obj := map[string]any{}
	var folded map[string]string // only built once an object has 2+ keys
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, syntaxErr(err)
		}
		if tok == json.Delim('}') {
			return obj, nil
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("object key is not a string")
		}
		if _, dup := obj[key]; dup {
			return nil, fmt.Errorf("duplicate key %s (servers disagree on which one counts)", QuoteKey(key))
		}
		if len(obj) > 0 {
			if folded == nil {
				folded = make(map[string]string, 8)
				for k := range obj {
					folded[Fold(k)] = k
				}
			}
			if other, dup := folded[Fold(key)]; dup {
				return nil, fmt.Errorf("keys %s and %s differ only in case (servers that match keys case-insensitively may read either)", QuoteKey(other), QuoteKey(key))
			}
			folded[Fold(key)] = key
		}
		v, err := readValue(d, depth+1, maxDepth)
		if err != nil {
			return nil, err
		}
		obj[key] = v
	}
}

// Fold maps keys that Go's encoding/json (and similar case-insensitive
// decoders) would treat as the same field to one string.
func Fold(s string) string {
	return strings.ToLower(strings.ToUpper(s))
}

func checkNumber(n json.Number) error {
	s := string(n)
	if len(s) > maxNumberLen {
		return fmt.Errorf("a number is longer than %d characters; send such values as strings", maxNumberLen)
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp := strings.TrimLeft(s[i+1:], "+-")
		e, err := strconv.Atoi(exp)
		if err != nil || e > maxExponent {
			return fmt.Errorf("a number has an exponent beyond ±%d; send such values as strings", maxExponent)
		}
	}
	return nil
}

// checkSurrogates refuses \uD800-\uDFFF escapes that do not form a pair:
// encoding/json turns them into U+FFFD while other parsers keep, drop or
// reject them.
func checkSurrogates(b []byte) error {
	in := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !in {
			in = c == '"'
			continue
		}
		switch c {
		case '"':
			in = false
		case '\\':
			if i+5 >= len(b) || b[i+1] != 'u' {
				i++ // skip the escaped byte; the decoder checks the rest
				continue
			}
			r, ok := hex4(b[i+2 : i+6])
			switch {
			case !ok || r < 0xD800 || r > 0xDFFF:
				i += 5
			case r <= 0xDBFF && i+11 < len(b) && b[i+6] == '\\' && b[i+7] == 'u':
				lo, ok := hex4(b[i+8 : i+12])
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return errors.New("a string holds an unpaired UTF-16 surrogate escape")
				}
				i += 11
			default:
				return errors.New("a string holds an unpaired UTF-16 surrogate escape")
			}
		}
	}
	return nil
}

func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

func syntaxErr(err error) error {
	if err == io.EOF {
		return errors.New("unexpected end of JSON input")
	}
	return fmt.Errorf("invalid JSON: %v", err)
}

// QuoteKey quotes s (a key, for a message), cutting it so that no long
// argument text is echoed back.
func QuoteKey(s string) string {
	const max = 64
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max]) + "…"
	}
	return strconv.Quote(s)
}
