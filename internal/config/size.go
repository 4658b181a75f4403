package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeForms is the fix shown with every rejected size.
const sizeForms = `use a whole number of bytes, or a string such as "100B", "64KiB", "512MiB", "1GiB"`

// sizeUnits are the accepted suffixes, lowercase. Only 1024-based units
// exist: "MB" means 10^6 to some tools and 2^20 to others, so it is refused
// rather than guessed.
var sizeUnits = []struct {
	suffix string
	unit   uint64
}{ // "b" last: it is the tail of every other suffix
	{"kib", 1 << 10},
	{"mib", 1 << 20},
	{"gib", 1 << 30},
	{"b", 1},
}

// decimalUnits are refused with a hint to use the 1024-based unit.
var decimalUnits = map[string]string{
	"k": "KiB", "kb": "KiB", "m": "MiB", "mb": "MiB", "g": "GiB", "gb": "GiB",
}

// ParseSize reads a size in bytes: a JSON integer (json.Number, an integral
// float64, an int, int64 or uint64), or a string of ASCII digits with an
// optional case-insensitive unit B, KiB, MiB or GiB ("100B", "64KiB",
// "512MiB", "1GiB"; "1024" is bytes). No spaces, fractions or exponents.
// KB/MB/GB (and K/M/G) are rejected with a hint to write KiB/MiB/GiB.
// Zero is a valid size; values above math.MaxInt64 are rejected, so every
// result converts to int64 safely.
func ParseSize(v any) (uint64, error) {
	n, msg, hint := parseSize(v)
	if msg != "" {
		return 0, errors.New(msg + ": " + hint)
	}
	return n, nil
}

// parseSize returns the size, or a message and its fix.
func parseSize(v any) (uint64, string, string) {
	switch x := v.(type) {
	case string:
		return parseSizeString(x)
	case json.Number:
		return bytesFromText(string(x), string(x))
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) || math.IsNaN(x) {
			return 0, fmt.Sprintf("invalid size %v: bytes must be a whole number", x), sizeForms
		}
		return bytesFromText(strconv.FormatFloat(x, 'f', -1, 64), fmt.Sprint(x))
	case int:
		return bytesFromText(strconv.Itoa(x), fmt.Sprint(x))
	case int64:
		return bytesFromText(strconv.FormatInt(x, 10), fmt.Sprint(x))
	case uint64:
		return bytesFromText(strconv.FormatUint(x, 10), fmt.Sprint(x))
	case nil:
		return 0, "no size given", sizeForms
	}
	return 0, fmt.Sprintf("invalid size of type %T", v), sizeForms
}

func bytesFromText(text, shown string) (uint64, string, string) {
	if strings.HasPrefix(text, "-") {
		return 0, fmt.Sprintf("invalid size %s: a size cannot be negative", shown), sizeForms
	}
	if !allDigits(text) {
		return 0, fmt.Sprintf("invalid size %s: bytes must be a whole number", shown), sizeForms
	}
	return scaleSize(text, 1, shown)
}

func parseSizeString(s string) (uint64, string, string) {
	lower := asciiLower(s)
	end := 0
	for end < len(lower) && isDigit(lower[end]) {
		end++
	}
	num, suffix := lower[:end], lower[end:]
	if num == "" {
		return 0, fmt.Sprintf("invalid size %q", s), sizeForms
	}
	if suffix == "" {
		return scaleSize(num, 1, strconv.Quote(s))
	}
	for _, u := range sizeUnits {
		if suffix == u.suffix {
			return scaleSize(num, u.unit, strconv.Quote(s))
		}
	}
	if iu, ok := decimalUnits[suffix]; ok {
		return 0, fmt.Sprintf("invalid size %q: the unit %q is not accepted", s, s[end:]),
			fmt.Sprintf("write %s%s: units are B, KiB, MiB and GiB (1024-based)", s[:end], iu)
	}
	return 0, fmt.Sprintf("invalid size %q", s), sizeForms
}

// scaleSize multiplies a string of decimal digits by unit with checked arithmetic.
func scaleSize(digits string, unit uint64, shown string) (uint64, string, string) {
	n, err := strconv.ParseUint(digits, 10, 63)
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Sprintf("invalid size %s: too large", shown), sizeForms
	}
	return n * unit, "", ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
