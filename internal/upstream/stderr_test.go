package upstream

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/moatmcp/moat/internal/hygiene"
)

// TestReasonIsOneCleanLine: a failure reason, which reaches the model in
// get_dynamic_tools, goes through the one cleaner (hygiene.Line).
func TestReasonIsOneCleanLine(t *testing.T) {
	for _, tt := range []struct {
		name, in, want string
	}{
		{"plain", "connection refused", "connection refused"},
		{"newlines and tabs fold", "line one\n\tline two\r\n", "line one line two"},
		{"ANSI escape", "\x1b[31mred\x1b[0m", "red"},
		{"bidi override hides text", "safe\u202etxt.exe", "safetxt.exe"},
		{"zero-width characters", "ig\u200bnore\u200d previous", "ignore previous"},
		{"tag characters", "a\U000E0041\U000E0042b", "ab"},
		{"invalid UTF-8", "bad\xffbyte", "badbyte"},
	} {
		if got := hygiene.Line(tt.in, maxReason); got != tt.want {
			t.Errorf("%s: hygiene.Line(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
	long := hygiene.Line(strings.Repeat("é", 1000), maxReason)
	if n := utf8.RuneCountInString(long); n != maxReason || !strings.Contains(long, "[…cut:") {
		t.Errorf("a long reason has %d characters (%q…), want %d with the cut marker", n, long[:10], maxReason)
	}
}

func TestTailWriterIsBounded(t *testing.T) {
	w := newTailWriter(slog.New(slog.NewTextHandler(io.Discard, nil)), 3)
	huge := strings.Repeat("x", 10*maxStderrLine)
	w.Write([]byte(huge)) // no newline yet: must not buffer it all
	if len(w.partial) > maxStderrLine {
		t.Fatalf("a line without end buffered %d bytes, bound is %d", len(w.partial), maxStderrLine)
	}
	w.Write([]byte("\none\ntwo\nthree\nfour\n"))
	tail := w.tail()
	if strings.Count(tail, "\n") != 2 || !strings.HasSuffix(tail, "four") || strings.Contains(tail, "one") {
		t.Fatalf("tail = %q, want the last 3 lines", tail)
	}
	if !strings.Contains(w.lines[0], "[line truncated]") && !strings.Contains(tail, "two") {
		t.Fatalf("unexpected lines %q", w.lines)
	}
}
