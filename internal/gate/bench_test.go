package gate

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/limits"
	"github.com/moatmcp/moat/internal/redact"
)

// BenchmarkGuardChain measures what the call chain adds to one call:
// size limits, policy (with an argument constraint), concurrency cap,
// schema validation, rate limiter and redaction of a 2 KiB result with ten
// known secrets, side by side with the bare forward, in one run. (The pin
// layer needs the secret store and the audit layer its file; both have
// benchmarks of their own.) chain_added_µs is the difference.
func BenchmarkGuardChain(b *testing.B) {
	cfg := &config.Config{Defaults: config.Defaults{Policy: json.RawMessage(`{"global":{"rate":"1000000/s","burst":1000000}}`)}, Servers: map[string]*config.Server{"files": {
		Name: "files", Enabled: true,
		Policy: json.RawMessage(`{"allow":["read_*"],"rate":"1000000/s","burst":1000000,"args":{"read_file":{"path":{"prefix":["/home/me/project"]}}}}`),
	}}}
	gs := New(slog.New(slog.NewTextHandler(io.Discard, nil)), redact.New())
	if err := gs.Apply(cfg, nil); err != nil {
		b.Fatal(err)
	}
	for i := range 10 {
		gs.Redactor.Add("secret"+string(rune('a'+i)), "s3cr3t-value-"+strings.Repeat("x", i+8))
	}
	tool := &mcp.Tool{Name: "read_file", InputSchema: map[string]any{
		"type": "object", "required": []any{"path"},
		"properties": map[string]any{
			"path":   map[string]any{"type": "string", "maxLength": 4096},
			"offset": map[string]any{"type": "integer", "minimum": 0},
			"limit":  map[string]any{"type": "integer", "minimum": 1},
			"mode":   map[string]any{"enum": []any{"text", "binary"}},
			"follow": map[string]any{"type": "boolean"},
		},
		"additionalProperties": false,
	}}
	gs.validator("files").Prepare([]*mcp.Tool{tool})
	payload := strings.Repeat("the quick brown fox jumps over the lazy dog; ", 46)[:2048]
	forward := func(context.Context, *guard.Call) (*guard.Result, error) {
		return &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: payload}}}}, nil
	}
	chain := guard.Chain(forward,
		limits.Size(gs.Policy),
		limits.Policy(gs.Policy, gs.identityRules),
		limits.Concurrency(gs.limits),
		gs.validateLayer(),
		limits.Rate(gs.limits),
		gs.Redactor.Layer(func(string) redact.Mode { return redact.ModeRedact }),
	)
	call := func() *guard.Call {
		return &guard.Call{Kind: guard.KindTool, Group: "files", Name: "read_file", Tool: tool,
			Args: json.RawMessage(`{"path":"/home/me/project/notes.txt","offset":0,"limit":100,"mode":"text","follow":false}`)}
	}
	ctx := context.Background()
	var bare, chained time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := forward(ctx, call()); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := chain(ctx, call()); err != nil {
			b.Fatal(err)
		}
		bare += t1.Sub(t0)
		chained += time.Since(t1)
	}
	b.ReportMetric(float64(bare.Nanoseconds())/float64(b.N)/1000, "bare_µs")
	b.ReportMetric(float64(chained.Nanoseconds())/float64(b.N)/1000, "chain_µs")
	b.ReportMetric(float64((chained-bare).Nanoseconds())/float64(b.N)/1000, "chain_added_µs")
}
