package hygiene

import (
	"os"
	"path/filepath"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzClean checks that Clean's output is valid UTF-8 without control
// (other than newline and tab), format, bidi or tag characters, within max
// runes, and that Clean is idempotent. Seed files hold the text; max comes
// from the fuzzer.
func FuzzClean(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "fuzz", "FuzzClean", "*"))
	if len(seeds) == 0 {
		f.Fatal("no seeds in testdata/fuzz/FuzzClean")
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
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
