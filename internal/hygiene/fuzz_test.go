package hygiene

import (
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/moatmcp/moat/internal/testutil"
)

// FuzzClean checks that Clean's output is valid UTF-8 without control
// (other than newline and tab), format, bidi or tag characters, within max
// runes, and that Clean is idempotent. Seed files hold the text; max comes
// from the fuzzer.
func FuzzClean(f *testing.F) {
	for _, data := range testutil.FuzzSeeds(f, "FuzzClean") {
		f.Add(string(data), 40)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		max %= 1000
		out := Clean(s, max)
		if !utf8.ValidString(out) {
			t.Fatalf("Clean(%q, %d) = %q is not valid UTF-8", s, max, out)
		}
		for _, r := range out {
			if r != '\n' && r != '\t' && (unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) || r >= 0xE0000 && r <= 0xE007F || r == '\r') {
				t.Fatalf("Clean(%q, %d) = %q keeps %U", s, max, out, r)
			}
		}
		if max > 0 && utf8.RuneCountInString(out) > max {
			t.Fatalf("Clean(%q, %d) = %q has %d runes", s, max, out, utf8.RuneCountInString(out))
		}
		if again := Clean(out, max); again != out {
			t.Fatalf("Clean not idempotent: %q -> %q -> %q", s, out, again)
		}
	})
}
