package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// durationForms is the fix shown with every rejected duration.
const durationForms = "use an integer number of seconds or one of 500ms, 30s, 1min, 2m, 1h"

// durationSpace is what a duration string may be padded with; the schema's
// pattern uses the same set, so the two cannot disagree.
const durationSpace = " \t\n\v\f\r"

var durationUnits = []struct {
	suffix string
	unit   time.Duration
}{ // longest suffix first: "min" before "m", "ms" before "m" and "s"
	{"min", time.Minute},
	{"ms", time.Millisecond},
	{"s", time.Second},
	{"m", time.Minute},
	{"h", time.Hour},
}

// ParseDuration reads a timeout in dynamic-mcp's forms: a JSON integer of
// seconds (json.Number, an integral float64 or an int), or a string, trimmed
// and case-insensitive: "30", "500ms", "30s", "1min", "2m", "1h".
// nil and "" mean "use the default" and return 0 and no error; every other
// accepted value is positive. Zero, negative numbers, fractions, compound
// forms ("1m30s"), inner spaces and values beyond time.Duration's range are
// rejected with an error that lists the valid forms.
func ParseDuration(v any) (time.Duration, error) {
	d, msg := parseDuration(v)
	if msg != "" {
		return 0, errors.New(msg + ": " + durationForms)
	}
	return d, nil
}

// parseDuration returns the duration, or a message without the fix.
func parseDuration(v any) (time.Duration, string) {
	switch x := v.(type) {
	case nil:
		return 0, ""
	case string:
		return parseDurationString(x)
	case json.Number:
		return secondsFromText(string(x), x)
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			return 0, fmt.Sprintf("invalid duration %v: seconds must be a whole number", x)
		}
		return secondsFromText(strconv.FormatFloat(x, 'f', -1, 64), x)
	case int:
		return secondsFromText(strconv.Itoa(x), x)
	case int64:
		return secondsFromText(strconv.FormatInt(x, 10), x)
	}
	return 0, fmt.Sprintf("invalid duration of type %T", v)
}

func secondsFromText(text string, shown any) (time.Duration, string) {
	if strings.HasPrefix(text, "-") {
		return 0, fmt.Sprintf("invalid duration %v: a duration must be greater than zero", shown)
	}
	for _, c := range text {
		if !isDigit(byte(c)) || c > 0x7f {
			return 0, fmt.Sprintf("invalid duration %v: seconds must be a whole number", shown)
		}
	}
	return scale(text, time.Second, fmt.Sprint(shown))
}

func parseDurationString(s string) (time.Duration, string) {
	t := strings.Trim(s, durationSpace)
	if t == "" {
		return 0, ""
	}
	lower := asciiLower(t)
	num, unit := lower, time.Second
	for _, u := range durationUnits {
		if strings.HasSuffix(lower, u.suffix) {
			num, unit = lower[:len(lower)-len(u.suffix)], u.unit
			break
		}
	}
	if num == "" {
		return 0, fmt.Sprintf("invalid duration %q", s)
	}
	for i := 0; i < len(num); i++ {
		if !isDigit(num[i]) {
			return 0, fmt.Sprintf("invalid duration %q", s)
		}
	}
	return scale(num, unit, strconv.Quote(s))
}

// scale multiplies a string of decimal digits by unit with checked arithmetic.
func scale(digits string, unit time.Duration, shown string) (time.Duration, string) {
	n, err := strconv.ParseUint(digits, 10, 63)
	if err != nil || n > uint64(math.MaxInt64/int64(unit)) {
		return 0, fmt.Sprintf("invalid duration %s: too large", shown)
	}
	if n == 0 {
		return 0, fmt.Sprintf("invalid duration %s: a duration must be greater than zero", shown)
	}
	return time.Duration(n) * unit, ""
}

// asciiLower lowercases ASCII letters only, so no Unicode case folding can
// turn some other character into a unit letter.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
