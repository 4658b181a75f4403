package redact

import (
	"encoding/json"
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

// FuzzMessage sends a JSON-RPC-like message, in which "$A" stands for a
// registered secret, through the client boundary: when the input is JSON,
// the output is JSON too and holds no registered form of the secret.
func FuzzMessage(f *testing.F) {
	f.Add("tok-4e1d9a", `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"token=$A"}}`)
	f.Add("sk-\"quoted\"", `{"id":1,"result":{"content":[{"type":"text","text":"$A"}],"$A":[1,2.50,null]}}`)
	f.Add("<b>&x</b>", `{"id":"$A","error":{"code":-32603,"message":"a $A b"}}`)
	slog.SetDefault(slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, secret, msg string) {
		r := New()
		r.Add("a", secret)
		enc, _ := json.Marshal(secret)
		in := strings.ReplaceAll(msg, "$A", string(enc[1:len(enc)-1]))
		if !json.Valid([]byte(in)) {
			return
		}
		out := r.Message([]byte(in + "\n"))
		if !json.Valid(out) || !strings.HasSuffix(string(out), "\n") {
			t.Fatalf("Message(%q) = %q: not one JSON line", in, out)
		}
		if r.Contains(string(out)) {
			t.Fatalf("Message(%q) = %q still holds the secret %q", in, out, secret)
		}
	})
}
