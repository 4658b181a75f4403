package strictjson

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestEncodeGivesTheValueBack: what the upstream receives (Encode of the
// decoded value) decodes to the value Moat judged, numbers exact, escapes
// resolved, keys sorted.
func TestEncodeGivesTheValueBack(t *testing.T) {
	for _, in := range []string{
		`{"b":1,"a":[true,null,"x"]}`,
		`{ "\u006dessage" : "x\u0041<&>\/\t\u2028" }`,
		`{"big":123456789012345678901234567890,"f":1.50e2,"neg":-0}`,
		`{"nested":{"k":{"l":[{"m":"\ud83d\ude00"}]}}}`,
		``,
		`null`,
	} {
		v, err := DecodeObject([]byte(in), 64)
		if err != nil {
			t.Fatalf("DecodeObject(%s): %v", in, err)
		}
		b, err := Encode(v)
		if err != nil {
			t.Fatalf("Encode(%v): %v", v, err)
		}
		back, err := DecodeObject(b, 64)
		if err != nil {
			t.Fatalf("DecodeObject(Encode(%s)) = %v (%s)", in, err, b)
		}
		if diff := cmp.Diff(v, back); diff != "" {
			t.Errorf("%s: the encoding %s decodes to another value (-judged +sent):\n%s", in, b, diff)
		}
		if strings.Contains(string(b), `\u006d`) || strings.Contains(string(b), " :") {
			t.Errorf("%s: the encoding %s keeps the client's spelling", in, b)
		}
	}
}

func TestDecodeObjectRefuses(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`[1]`, "JSON object"},
		{`{"a":1,"a":2}`, "duplicate key"},
		{`{"x":{"k":1,"K":2}}`, "differ only in case"},
		{`{"s":"\ud800"}`, "surrogate"},
		{"{\"s\":\"\xff\"}", "UTF-8"},
		{`{"n":1e99999}`, "exponent"},
		{`{"a":1} {}`, "after the top-level"},
		{strings.Repeat(`{"a":`, 65) + `1` + strings.Repeat(`}`, 65), "nested more than 64"},
	} {
		if _, err := DecodeObject([]byte(tt.in), 64); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DecodeObject(%.40q) = %v, want an error saying %q", tt.in, err, tt.want)
		}
	}
}
