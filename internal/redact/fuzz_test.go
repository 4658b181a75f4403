package redact

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// FuzzRedact registers two secrets and redacts a text in which "$A" and
// "$B" stand for them: no registered form may remain (adjacent and
// overlapping occurrences included), and String must be idempotent.
// Seeds are files of three lines: secret A, secret B, text.
func FuzzRedact(f *testing.F) {
	for _, data := range testutil.FuzzSeeds(f, "FuzzRedact") {
		parts := strings.SplitN(string(data), "\n", 3)
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		f.Add(parts[0], parts[1], parts[2])
	}
	// Add logs refused values; a fuzz worker must not fill its output pipe.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, a, b, text string) {
		r := New()
		r.Add("a", a)
		r.Add("b", b)
		in := strings.ReplaceAll(strings.ReplaceAll(text, "$A", a), "$B", b)
		out := r.String(in)
		if r.Contains(out) {
			t.Fatalf("String(%q) = %q still holds a registered secret (a=%q b=%q)", in, out, a, b)
		}
		if again := r.String(out); again != out {
			t.Fatalf("String is not idempotent: %q -> %q -> %q", in, out, again)
		}
	})
}
