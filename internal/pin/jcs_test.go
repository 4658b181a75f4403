package pin

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// The number vectors of RFC 8785 appendix B.
func TestFormatDoubleRFC8785(t *testing.T) {
	for _, tt := range []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"}, {0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"}, {0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"}, {0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"}, {0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"}, {0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"}, {0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"}, {0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"}, {0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"}, {0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	} {
		if got := formatDouble(math.Float64frombits(tt.bits)); got != tt.want {
			t.Errorf("formatDouble(%#016x) = %s, want %s", tt.bits, got, tt.want)
		}
	}
}

func TestCanonicalRFC8785Examples(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{ // section 3.2.2
			`{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`,
			`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
		},
		{ // section 3.2.3: sorting by UTF-16 code units
			`{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",
			  "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}`,
			"{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"דּ\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
		{`[1.0, -0, 1e0, "\u2028<>&"]`, "[1,0,1,\"\u2028<>&\"]"},
		{` { "b" : [ ] , "a" : { } } `, `{"a":{},"b":[]}`},
	} {
		got, err := Canonical([]byte(tt.in))
		if err != nil {
			t.Errorf("Canonical(%s): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("Canonical(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `1e400`, `[1,]`, `{} x`, "\"\xff\"", ``} {
		if got, err := Canonical([]byte(bad)); err == nil {
			t.Errorf("Canonical(%q) = %s, want an error", bad, got)
		}
	}
}

// FuzzCanonical: the output is valid JSON, canonicalizing it again changes
// nothing, and re-encoding the same value with other key order and spacing
// gives the same canonical form.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1.5,"x",null]}`, `333333333.33333329`, `{"\u20ac":1,"\r":2}`, `[1E30, 4.50, 2e-3]`, `"\u0000\u001f"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Canonical(data)
		if err != nil {
			return
		}
		if !json.Valid(c) {
			t.Fatalf("Canonical(%q) = %q, not valid JSON", data, c)
		}
		c2, err := Canonical(c)
		if err != nil || string(c2) != string(c) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", data, c, c2, err)
		}
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("Canonical accepted %q, which encoding/json refuses: %v", data, err)
		}
		other, _ := json.MarshalIndent(v, " ", "\t") // different spacing, Go's key order
		c3, err := Canonical(other)
		if err != nil {
			if strings.Contains(err.Error(), "range") {
				return
			}
			t.Fatalf("Canonical of the re-encoded %q: %v", other, err)
		}
		if string(c3) != string(c) {
			t.Fatalf("canonical form depends on layout: %q vs %q", c, c3)
		}
	})
}
