package config

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unitSeeds are shared by both targets: the documented forms, their edge
// cases, and the parser-differential payloads (case variants, Unicode that
// folds to ASCII letters, invalid UTF-8, huge and signed numbers).
var unitSeeds = []string{
	"", " ", "0", "1", "30", "500ms", "30s", "1min", "2m", "1h", "1H", "1MIN", "1Min", "30S", " 30s\t", "\v5s",
	"1m30s", "1.5s", "-1", "+1", "1e3", "0x10", "1_000", "٣s", "1ſ", "1K", "1ｓ", "1\u212amin",
	"9223372036854775807", "9223372036854775807ms", "9223372036854775808", "9223372036854775807h",
	"2562047h", "2562048h", "153722867min", "18446744073709551616", strings.Repeat("9", 400),
	"100B", "64KiB", "512MiB", "1GiB", "1gib", "1GIB", "1KB", "1MB", "1G", "1k", "1 KiB", "KiB", "b", "0B",
	"8589934591GiB", "8589934592GiB", "9007199254740993", "1e400", "\xff", "1\xffs", "1\x00s", "00000000000000000000001s",
}

// FuzzParseDuration checks that an accepted duration is positive (or the
// default, for a blank string), that its canonical forms in every unit that
// divides it read back to the same value, that case does not matter, that
// a JSON number means the same as the same digits in a string, and that a
// refusal is one line that names the valid forms.
func FuzzParseDuration(f *testing.F) {
	for _, s := range unitSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		checkRefusal(t, "duration", s, err, durationForms)
		if err != nil {
			return
		}
		if strings.Trim(s, durationSpace) == "" {
			if d != 0 {
				t.Fatalf("ParseDuration(%q) = %v, want 0 (the default)", s, d)
			}
			return
		}
		if d <= 0 {
			t.Fatalf("ParseDuration(%q) accepted %v, not positive", s, d)
		}
		for _, u := range []struct {
			unit time.Duration
			text string
		}{{time.Millisecond, "ms"}, {time.Second, "s"}, {time.Second, ""}, {time.Minute, "min"}, {time.Minute, "m"}, {time.Hour, "h"}} {
			if d%u.unit != 0 {
				continue
			}
			canon := strconv.FormatInt(int64(d/u.unit), 10) + u.text
			if back, err := ParseDuration(canon); err != nil || back != d {
				t.Fatalf("ParseDuration(%q) = %v, but its canonical form %q reads back as %v, %v", s, d, canon, back, err)
			}
		}
		if back, err := ParseDuration(asciiUpper(s)); err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %v, but upper case %q gives %v, %v", s, d, asciiUpper(s), back, err)
		}
		// A JSON number is seconds, exactly as the same digits in a string.
		if n, err := ParseDuration(json.Number(s)); err == nil && n != d {
			t.Fatalf("json.Number %q = %v, string %q = %v", s, n, s, d)
		}
		if d%time.Second == 0 {
			secs := int64(d / time.Second)
			for _, v := range []any{json.Number(strconv.FormatInt(secs, 10)), secs} {
				if back, err := ParseDuration(v); err != nil || back != d {
					t.Fatalf("%v seconds (%T) reads back as %v, %v, want %v", v, v, back, err, d)
				}
			}
			if secs <= 1<<53 {
				if back, err := ParseDuration(float64(secs)); err != nil || back != d {
					t.Fatalf("%d seconds as float64 reads back as %v, %v, want %v", secs, back, err, d)
				}
			}
		}
	})
}

// FuzzParseSize checks that an accepted size is at most math.MaxInt64 (so it
// converts to int64), that its canonical forms in bytes and in every unit
// that divides it read back to the same value, that case does not matter,
// that a JSON number means the same as the digits in a string, and that a
// refusal is one line with a fix.
func FuzzParseSize(f *testing.F) {
	for _, s := range unitSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), ": ") {
				t.Fatalf("ParseSize(%q) refusal is not one line with a fix: %q", s, err)
			}
			return
		}
		if n > math.MaxInt64 {
			t.Fatalf("ParseSize(%q) = %d, beyond int64", s, n)
		}
		for _, u := range []struct {
			unit uint64
			text string
		}{{1, ""}, {1, "B"}, {1 << 10, "KiB"}, {1 << 20, "MiB"}, {1 << 30, "GiB"}} {
			if n%u.unit != 0 {
				continue
			}
			canon := strconv.FormatUint(n/u.unit, 10) + u.text
			if back, err := ParseSize(canon); err != nil || back != n {
				t.Fatalf("ParseSize(%q) = %d, but its canonical form %q reads back as %d, %v", s, n, canon, back, err)
			}
		}
		if back, err := ParseSize(asciiUpper(s)); err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, but upper case %q gives %d, %v", s, n, asciiUpper(s), back, err)
		}
		if m, err := ParseSize(json.Number(s)); err == nil && m != n {
			t.Fatalf("json.Number %q = %d, string %q = %d", s, m, s, n)
		}
		for _, v := range []any{json.Number(strconv.FormatUint(n, 10)), n, int64(n)} {
			if back, err := ParseSize(v); err != nil || back != n {
				t.Fatalf("%v bytes (%T) reads back as %d, %v, want %d", v, v, back, err, n)
			}
		}
	})
}

// checkRefusal fails t unless err is nil or one line ending in the fix.
func checkRefusal(t *testing.T, what, s string, err error, fix string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.HasSuffix(msg, ": "+fix) {
		t.Fatalf("refusal of %s %q is not one line ending in the valid forms: %q", what, s, msg)
	}
}

// asciiUpper is the inverse of asciiLower: ASCII letters only, so no Unicode
// case mapping can make a unit out of another character.
func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
