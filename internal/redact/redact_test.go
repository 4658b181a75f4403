package redact

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
)

const canary = "canary-7f3a9c1e-secret"

func TestKnownSecrets(t *testing.T) {
	r := New()
	r.Add("api-key", canary)
	r.Add("token", "tok_abcdef123456")
	jsonForm, _ := json.Marshal("a\"b<c>" + canary)
	r.Add("quoted", "a\"b<c>"+canary)
	tests := []struct{ in, want string }{
		{"key=" + canary + ".", "key=[REDACTED:api-key]."},
		{canary + canary, "[REDACTED:api-key][REDACTED:api-key]"},
		{"b64 " + base64.StdEncoding.EncodeToString([]byte(canary)), "b64 [REDACTED:api-key]"},
		{"b64url " + base64.RawURLEncoding.EncodeToString([]byte(canary)), "b64url [REDACTED:api-key]"},
		{"q=" + url.QueryEscape("a\"b<c>"+canary), "q=[REDACTED:quoted]"},
		{string(jsonForm), `"[REDACTED:quoted]"`},
		{"hex " + hex.EncodeToString([]byte(canary)), "hex [REDACTED:api-key]"},
		{"HEX " + strings.ToUpper(hex.EncodeToString([]byte(canary))), "HEX [REDACTED:api-key]"},
		{"escaped " + escapedEach(canary, `\u%04x`), "escaped [REDACTED:api-key]"},
		{"ESCAPED " + escapedEach(canary, `\u%04X`), "ESCAPED [REDACTED:api-key]"},
		// Overlapping secrets are covered by one marker.
		{"tok_abcdef123456" + "x", "[REDACTED:token]x"},
		{"nothing here", "nothing here"},
	}
	for _, tt := range tests {
		if got := r.String(tt.in); !strings.Contains(got, tt.want) || r.Contains(got) {
			t.Errorf("String(%q) = %q, want it to contain %q and no secret", tt.in, got, tt.want)
		}
	}
	if !r.Contains("x"+canary) || r.Contains("canary") {
		t.Error("Contains is wrong")
	}
}

// escapedEach writes every character of s in format, as a server that
// escapes a secret by hand would.
func escapedEach(s, format string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, format, r)
	}
	return b.String()
}

// TestSecretSplitAcrossTextItems: a client shows adjacent text items of a
// result as one text, so a secret split between them (or over three) is
// redacted as if it were whole; items of other kinds break adjacency.
func TestSecretSplitAcrossTextItems(t *testing.T) {
	r := New()
	r.Add("api-key", canary)
	text := func(s string) mcp.Content { return &mcp.TextContent{Text: s} }
	for _, tc := range []struct {
		name  string
		items []mcp.Content
		want  []string
	}{
		{"two items", []mcp.Content{text("key=" + canary[:7]), text(canary[7:] + " ok")}, []string{"key=[REDACTED:api-key]", " ok"}},
		{"three items", []mcp.Content{text("a" + canary[:3]), text(canary[3:6]), text(canary[6:] + "z")}, []string{"a[REDACTED:api-key]", "", "z"}},
		{"whole in one, split in two", []mcp.Content{text(canary + " " + canary[:5]), text(canary[5:])}, []string{"[REDACTED:api-key] [REDACTED:api-key]", ""}},
	} {
		h := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) {
			return &guard.Result{Tool: &mcp.CallToolResult{Content: tc.items}}, nil
		}, r.Layer(nil))
		res, err := h(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "g"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range res.Tool.Content {
			got = append(got, c.(*mcp.TextContent).Text)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	// An image between the parts: they are not one text.
	img := &mcp.ImageContent{Data: []byte("png"), MIMEType: "image/png"}
	h := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) {
		return &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{text(canary[:7]), img, text(canary[7:])}}}, nil
	}, r.Layer(nil))
	res, _ := h(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "g"})
	if got := res.Tool.Content[0].(*mcp.TextContent).Text; got != canary[:7] {
		t.Errorf("a text before an image was cut: %q", got)
	}
}

func TestEveryByteValue(t *testing.T) {
	r := New()
	var all []byte
	for i := range 256 {
		all = append(all, byte(i))
	}
	r.Add("all", string(all))
	r.Add("other", "\xff\x00\x01zzz")
	if got := r.String("<" + string(all) + ">"); got != "<[REDACTED:all]>" {
		t.Errorf("String(all bytes) = %q", got)
	}
	if got := r.String("a\xff\x00\x01zzzb"); got != "a[REDACTED:other]b" {
		t.Errorf("String = %q", got)
	}
}

func TestOverlappingSecrets(t *testing.T) {
	r := New()
	r.Add("a", "abcdefgh")
	r.Add("b", "efghijkl")
	for _, in := range []string{"abcdefghijkl", "xxabcdefghijklxx", "efghijklabcdefgh", "abcdabcdefgh"} {
		got := r.String(in)
		if r.Contains(got) {
			t.Errorf("String(%q) = %q still holds a secret", in, got)
		}
	}
	if got := r.String("abcdefghijkl"); got != "[REDACTED:a]" {
		t.Errorf("String(overlap) = %q, want one marker", got)
	}
}

func TestAddRefuses(t *testing.T) {
	r := New()
	r.Add("short", "12345")
	r.Add("marker", "REDACTED")
	r.Add("p", "aws-access-key")
	if got := r.String("x12345 REDACTED aws-access-key"); got != "x12345 REDACTED aws-access-key" {
		t.Errorf("refused values were redacted: %q", got)
	}
	// A refreshed token keeps its older values redacted, up to a bound.
	for i := range maxValuesPerName + 2 {
		r.Add("oauth", fmt.Sprintf("access-token-%04d", i))
	}
	if got := r.String("access-token-0000 access-token-0009"); got != "access-token-0000 [REDACTED:oauth]" {
		t.Errorf("String = %q, want the oldest value dropped and the newest redacted", got)
	}
}

// TestForget: the values of a forgotten name are no longer redacted; the
// others are.
func TestForget(t *testing.T) {
	r := New()
	r.Add("oauth-gh-exchanged-1", "exchanged-token-one")
	r.Add("oauth-gh-exchanged-2", "exchanged-token-two")
	r.Forget("oauth-gh-exchanged-1")
	r.Forget("never-added")
	if got := r.String("exchanged-token-one exchanged-token-two"); got != "exchanged-token-one [REDACTED:oauth-gh-exchanged-2]" {
		t.Errorf("String = %q", got)
	}
}

func TestPatterns(t *testing.T) {
	pem := "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\nabc+/=\n-----END RSA PRIVATE KEY-----"
	tests := []struct {
		name, in, want string
	}{
		{"pem", "key:\n" + pem + "\nafter", "key:\n[REDACTED:private-key]\nafter"},
		{"pem openssh", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----", "[REDACTED:private-key]"},
		{"pem json-escaped truncated", `"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg`, `"[REDACTED:private-key]`},
		{"public key untouched", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----"},
		{"aws", "id AKIAIOSFODNN7EXAMPLE.", "id [REDACTED:aws-access-key]."},
		{"aws sts", "ASIAY34FZKBOKMUTVV7A", "[REDACTED:aws-access-key]"},
		{"aws too short", "AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPL"},
		{"aws inside word", "XAKIAIOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE"},
		{"github classic", "ghp_" + strings.Repeat("a1B2", 9), "[REDACTED:github-token]"},
		{"github server", "token ghs_" + strings.Repeat("Z9", 18) + " ok", "token [REDACTED:github-token] ok"},
		{"github pat", "github_pat_11ABCDEFG0" + strings.Repeat("x", 20) + "_" + strings.Repeat("y", 59), "[REDACTED:github-token]"},
		{"github short", "ghp_abc", "ghp_abc"},
		{"gitlab", "token glpat-" + strings.Repeat("Ab1_", 5) + " ok", "token [REDACTED:gitlab-token] ok"},
		{"gitlab routable", "glpat-" + strings.Repeat("aB3", 12) + ".01.1a2b3c4d5", "[REDACTED:gitlab-token]"},
		{"gitlab short", "glpat-abc", "glpat-abc"},
		{"stripe live", "key=sk_live_" + strings.Repeat("4eC39Hq", 4), "key=[REDACTED:stripe-key]"},
		{"stripe restricted test", "rk_test_" + strings.Repeat("51H", 9), "[REDACTED:stripe-key]"},
		{"stripe short", "sk_live_abc123", "sk_live_abc123"},
		{"stripe publishable", "pk_live_" + strings.Repeat("4eC39Hq", 4), "pk_live_" + strings.Repeat("4eC39Hq", 4)},
		{"slack", "xoxb-123456789012-abcdefABCDEF", "[REDACTED:slack-token]"},
		{"slack wrong letter", "xoxz-123456789012-abcdef", "xoxz-123456789012-abcdef"},
		{"openai classic", "sk-" + strings.Repeat("A1b2", 12), "[REDACTED:openai-key]"},
		{"openai project", "sk-proj-" + strings.Repeat("Ab_-9", 16), "[REDACTED:openai-key]"},
		{"anthropic", "sk-ant-api03-" + strings.Repeat("Ab_-9", 16), "[REDACTED:openai-key]"},
		{"sk- words", "use sk-learn-pipeline-helpers-and-more-words here", "use sk-learn-pipeline-helpers-and-more-words here"},
		{"sk- short", "sk-1234567890", "sk-1234567890"},
		{"google", "AIzaSyA-1234567890abcdefghijklmnopqrstu", "[REDACTED:google-api-key]"},
		{"google short", "AIzaSyA-123", "AIzaSyA-123"},
		{"jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "Bearer [REDACTED:jwt]"},
		{"not jwt", "eyJhbGciOiJIUzI1NiJ9 alone", "eyJhbGciOiJIUzI1NiJ9 alone"},
		{"plain text", "the quick brown fox; sk-; AKIA; eyJ.eyJ.", "the quick brown fox; sk-; AKIA; eyJ.eyJ."},
	}
	r := New()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.String(tt.in); got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// upstream returns a handler that answers every call with text holding
// payload in every place a result can carry text.
func upstream(payload string) guard.Handler {
	return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
		switch c.Kind {
		case guard.KindResource:
			return &guard.Result{Resource: &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{
				{URI: "file:///a", Text: "text " + payload},
				{URI: "file:///b", Blob: []byte("blob " + payload)},
			}}}, nil
		case guard.KindPrompt:
			return &guard.Result{Prompt: &mcp.GetPromptResult{Description: payload, Messages: []*mcp.PromptMessage{
				{Role: "user", Content: &mcp.TextContent{Text: "say " + payload}},
				{Role: "assistant", Content: &mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: "x:" + payload, Text: payload}}},
			}}}, nil
		}
		return &guard.Result{Tool: &mcp.CallToolResult{
			Content: []mcp.Content{
				&mcp.TextContent{Text: "result: " + payload},
				&mcp.ImageContent{Data: []byte("PNG" + payload), MIMEType: "image/png"},
				&mcp.ResourceLink{URI: "file:///" + payload, Name: payload},
				&mcp.EmbeddedResource{Resource: &mcp.ResourceContents{URI: "file:///c", Text: payload, Blob: []byte(payload)}},
			},
			StructuredContent: map[string]any{"out": []any{payload, map[string]any{payload: 1.0}}},
			Meta:              mcp.Meta{"note": payload},
		}}, nil
	}
}

func TestLayerRedactsEverywhere(t *testing.T) {
	r := New()
	r.Add("files-api-key", canary)
	h := guard.Chain(upstream(canary+" AKIAIOSFODNN7EXAMPLE"), r.Layer(nil))
	for _, k := range []guard.Kind{guard.KindTool, guard.KindResource, guard.KindPrompt} {
		res, err := h(context.Background(), &guard.Call{Kind: k, Group: "files"})
		if err != nil {
			t.Fatalf("%v: %v", k, err)
		}
		out, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		wire := string(out)
		if strings.Contains(wire, canary) || strings.Contains(wire, base64.StdEncoding.EncodeToString([]byte("blob " + canary))[:20]) || strings.Contains(wire, "AKIAIOSFODNN7EXAMPLE") {
			t.Errorf("%v result still holds a secret: %s", k, wire)
		}
		if !strings.Contains(wire, "[REDACTED:files-api-key]") || !strings.Contains(wire, "[REDACTED:aws-access-key]") {
			t.Errorf("%v result lacks the markers: %s", k, wire)
		}
		// Binary data was redacted byte-wise: decode it to see.
		var back struct{ Contents []struct{ Blob []byte } }
		if k == guard.KindResource {
			if err := json.Unmarshal(mustJSON(t, res.Resource), &back); err != nil {
				t.Fatal(err)
			}
			if got := string(back.Contents[1].Blob); got != "blob [REDACTED:files-api-key] [REDACTED:aws-access-key]" {
				t.Errorf("blob = %q", got)
			}
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLayerErrors(t *testing.T) {
	r := New()
	r.Add("k", canary)
	errTimeout := errors.New("timed out")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"json-rpc", &jsonrpc.Error{Code: -32000, Message: "bad key " + canary}, "bad key [REDACTED:k]"},
		{"wrapped", fmt.Errorf("upstream said %s: %w", canary, errTimeout), "upstream said [REDACTED:k]: timed out"},
		{"denial", &guard.Denial{Layer: "x", Reason: "saw " + canary}, "x: refused: saw [REDACTED:k]"},
	}
	for _, tt := range tests {
		h := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) { return nil, tt.err }, r.Layer(nil))
		_, err := h(context.Background(), &guard.Call{Group: "g"})
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: error = %v, want %q", tt.name, err, tt.want)
		}
		var we *jsonrpc.Error
		if errors.As(err, &we) && strings.Contains(we.Message, canary) {
			t.Errorf("%s: errors.As reaches the unredacted JSON-RPC message", tt.name)
		}
	}
	h := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) {
		return nil, fmt.Errorf("x %s: %w", canary, errTimeout)
	}, r.Layer(nil))
	if _, err := h(context.Background(), &guard.Call{}); !errors.Is(err, errTimeout) {
		t.Error("redacted error no longer matches errors.Is")
	}
}

func TestLayerModes(t *testing.T) {
	r := New()
	r.Add("k", canary)
	modes := map[string]Mode{"strict": ModeBlock, "loose": ModeOff}
	h := guard.Chain(upstream(canary+" ghp_"+strings.Repeat("a1B2", 9)), r.Layer(func(g string) Mode { return modes[g] }))

	_, err := h(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "strict"})
	var d *guard.Denial
	if !errors.As(err, &d) || d.Layer != "redact" || d.Rule != "credential-pattern:github-token" {
		t.Fatalf("block mode: error = %v, want a credential-pattern:github-token denial", err)
	}
	if strings.Contains(d.Error(), "ghp_") || strings.Contains(d.Error(), canary) {
		t.Errorf("the denial quotes the secret: %q", d.Error())
	}

	res, err := h(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "loose"})
	if err != nil {
		t.Fatal(err)
	}
	text := res.Tool.Content[0].(*mcp.TextContent).Text
	if want := "result: [REDACTED:k] ghp_" + strings.Repeat("a1B2", 9); text != want {
		t.Errorf("off mode: text = %q, want %q (known secrets still redacted, patterns kept)", text, want)
	}

	// Known secrets alone never block.
	h = guard.Chain(upstream(canary), r.Layer(func(string) Mode { return ModeBlock }))
	if _, err := h(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "strict"}); err != nil {
		t.Errorf("block mode refused a result with only a known secret: %v", err)
	}
}

func TestSlogHandler(t *testing.T) {
	r := New()
	r.Add("db-password", canary)
	var buf bytes.Buffer
	log := slog.New(r.SlogHandler(slog.NewJSONHandler(&buf, nil)))
	log = log.With("conn", "postgres://u:"+canary+"@db")
	log.WithGroup("g").Info("connecting with "+canary,
		"plain", canary,
		slog.Group("nested", "deep", "x"+canary),
		"err", fmt.Errorf("auth failed for %s", canary),
		"bytes", []byte(canary),
		"aws", "AKIAIOSFODNN7EXAMPLE",
		"n", 42)
	out := buf.String()
	if strings.Contains(out, canary) || strings.Contains(out, "AKIAIOSFODNN7EXAMPLE") {
		t.Fatalf("log line holds a secret: %s", out)
	}
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"msg":  "connecting with [REDACTED:db-password]",
		"conn": "postgres://u:[REDACTED:db-password]@db",
		"g": map[string]any{
			"plain": "[REDACTED:db-password]", "nested": map[string]any{"deep": "x[REDACTED:db-password]"},
			"err": "auth failed for [REDACTED:db-password]", "bytes": "[REDACTED:db-password]",
			"aws": "[REDACTED:aws-access-key]", "n": 42.0,
		},
	}
	delete(rec, "time")
	delete(rec, "level")
	if diff := cmp.Diff(want, rec); diff != "" {
		t.Errorf("log record (-want +got):\n%s", diff)
	}
}

func TestConcurrentAdd(t *testing.T) {
	r := New()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				r.Add(fmt.Sprintf("s%d", i), fmt.Sprintf("secret-%d-%04d", i, j))
			}
		})
		wg.Go(func() {
			for j := range 200 {
				s := fmt.Sprintf("x secret-%d-%04d y", i, j%50)
				if got := r.String(s); got != s && got != fmt.Sprintf("x [REDACTED:s%d] y", i) {
					t.Errorf("String(%q) = %q", s, got)
				}
			}
		})
	}
	wg.Wait()
	if got := r.String("secret-3-0049"); got != "[REDACTED:s3]" {
		t.Errorf("after all adds: %q", got)
	}
}

func BenchmarkLayer(b *testing.B) {
	r := New()
	var secrets []string
	for i := range 10 {
		s := fmt.Sprintf("secret-value-%02d-%s", i, strings.Repeat("q", 20))
		secrets = append(secrets, s)
		r.Add(fmt.Sprintf("s%d", i), s)
	}
	// 2 KiB of ordinary text with one secret and one token in it.
	text := strings.Repeat("The tool listed 12 files under /home/me/project; sizes in bytes follow. ", 30)[:2000] +
		secrets[3] + " ghp_" + strings.Repeat("a1B2", 9)
	h := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) {
		return &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}}, nil
	}, r.Layer(nil))
	c := &guard.Call{Kind: guard.KindTool, Group: "g"}
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMessageRedactsEveryString(t *testing.T) {
	r := New()
	const secret = `tok"en-5e1f\value`
	r.Add("api", secret)
	esc, _ := json.Marshal(secret)
	in := `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":{"note":` + string(esc) +
		`,` + string(esc) + `:1,"n":12345678901234567890},"level":"error"}}` + "\n"
	out := string(r.Message([]byte(in)))
	if strings.Contains(out, `5e1f`) {
		t.Errorf("Message left the secret in:\n%s", out)
	}
	if !strings.HasSuffix(out, "}\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("Message lost the line's one newline: %q", out)
	}
	var v struct{ Params struct{ Data map[string]any } }
	d := json.NewDecoder(strings.NewReader(out))
	d.UseNumber()
	if err := d.Decode(&v); err != nil || v.Params.Data["n"] != json.Number("12345678901234567890") || v.Params.Data["note"] != "[REDACTED:api]" {
		t.Errorf("Message changed a value or broke the JSON (%v):\n%s", err, out)
	}
	if _, ok := v.Params.Data["[REDACTED:api]"]; !ok {
		t.Errorf("the key holding the secret was not redacted:\n%s", out)
	}

	clean := []byte(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n")
	if got := r.Message(clean); &got[0] != &clean[0] {
		t.Error("a message without a secret was copied: the common case must cost one scan")
	}
	if got := string(r.Message([]byte("not json " + secret))); strings.Contains(got, "5e1f") {
		t.Errorf("a line that is not JSON kept the secret: %q", got)
	}
}
