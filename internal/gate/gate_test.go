package gate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/pin"
	"github.com/moatmcp/moat/internal/redact"
)

// memAnchor is a pin.Anchor in memory.
type memAnchor struct{ created bool }

func (a *memAnchor) Created() (bool, error) { return a.created, nil }
func (a *memAnchor) SetCreated() error      { a.created = true; return nil }
func (a *memAnchor) Clear() error           { a.created = false; return nil }

// TestLayerOrder traces calls through the chain serve builds. An allowed
// call passes every layer in layerOrder; a call that two layers would
// refuse is refused by the outer one, and the layers inside it never run
// (so, for one, a refused call spends no rate tokens).
func TestLayerOrder(t *testing.T) {
	cfg := &config.Config{Servers: map[string]*config.Server{"g": {
		Name: "g", Enabled: true,
		Policy: json.RawMessage(`{"max_args_bytes": "64B", "deny": ["denied"], "pin": "off"}`),
	}}}
	gs := New(slog.New(slog.NewTextHandler(io.Discard, nil)), redact.New())
	if err := gs.Apply(cfg, nil); err != nil {
		t.Fatal(err)
	}
	const forward guard.LayerName = "forward"
	var trace []guard.LayerName
	gs.Wrap = func(name guard.LayerName, l guard.Layer) guard.Layer {
		return func(next guard.Handler) guard.Handler {
			h := l(next)
			return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
				trace = append(trace, name)
				return h(ctx, c)
			}
		}
	}
	passThrough := func(next guard.Handler) guard.Handler { return next }
	// The pin mode is off and the store is not what this test is about:
	// a store in a temp dir will do.
	dir := t.TempDir()
	gs.Pins = sync.OnceValues(func() (*pin.Store, error) {
		return pin.Open(filepath.Join(dir, "pins", "pins.json"), bytes.Repeat([]byte{7}, 32), &memAnchor{})
	})
	chain := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) {
		trace = append(trace, forward)
		return &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}}, nil
	}, gs.Layers(passThrough, passThrough)...)
	tool := func(name string) *mcp.Tool {
		return &mcp.Tool{Name: name, InputSchema: map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}}}
	}
	store, err := gs.pinStore()
	if err != nil {
		t.Fatal(err)
	}
	store.Check("g", "", []*mcp.Tool{tool("t"), tool("denied")}, "off")
	gs.validator("g").Prepare([]*mcp.Tool{tool("t"), tool("denied")})

	for _, tt := range []struct {
		name, tool, args string
		want             []guard.LayerName
		refusedBy        guard.LayerName
	}{
		{"allowed", "t", `{"n": 1}`, []guard.LayerName{guard.LayerAudit, guard.LayerSize, guard.LayerPolicy, guard.LayerConcurrency, guard.LayerPin, guard.LayerValidate, guard.LayerRate, guard.LayerIntent, guard.LayerTimeout, guard.LayerRedact, forward}, ""},
		{"too big and denied: size refuses first", "denied", `{"n": 1, "pad": "` + strings.Repeat("x", 80) + `"}`, []guard.LayerName{guard.LayerAudit, guard.LayerSize}, guard.LayerSize},
		{"denied and invalid: policy refuses first", "denied", `{"n": "x"}`, []guard.LayerName{guard.LayerAudit, guard.LayerSize, guard.LayerPolicy}, guard.LayerPolicy},
		{"invalid: validate refuses before rate", "t", `{"n": "x"}`, []guard.LayerName{guard.LayerAudit, guard.LayerSize, guard.LayerPolicy, guard.LayerConcurrency, guard.LayerPin, guard.LayerValidate}, guard.LayerValidate},
	} {
		t.Run(tt.name, func(t *testing.T) {
			trace = nil
			c := &guard.Call{Kind: guard.KindTool, Group: "g", Name: tt.tool, Tool: tool(tt.tool), Args: json.RawMessage(tt.args)}
			_, err := chain(context.Background(), c)
			var d *guard.Denial
			switch {
			case tt.refusedBy == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.refusedBy != "" && (!errors.As(err, &d) || d.Layer != tt.refusedBy):
				t.Fatalf("got %v, want a refusal by %s", err, tt.refusedBy)
			}
			if !slices.Equal(trace, tt.want) {
				t.Errorf("the call went through %v, want %v", trace, tt.want)
			}
		})
	}
}

// TestRelayFollowsTheRedactMode: what an upstream sends toward the client
// outside a result gets its group's credential-pattern mode: redacted by
// default, kept from the client under block (the reason names the pattern,
// never the value), left under off; hidden characters go in every mode;
// and it is kept back over the group's max_result_bytes.
func TestRelayFollowsTheRedactMode(t *testing.T) {
	const token = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
	cfg := &config.Config{Servers: map[string]*config.Server{}}
	for _, mode := range []string{"redact", "block", "off"} {
		cfg.Servers[mode] = &config.Server{Name: mode, Enabled: true, Policy: json.RawMessage(`{"redact": "` + mode + `"}`)}
	}
	gs := New(slog.New(slog.NewTextHandler(io.Discard, nil)), redact.New())
	if err := gs.Apply(cfg, nil); err != nil {
		t.Fatal(err)
	}
	msg := func() any { return map[string]any{"data": "token " + token + "\u202e", "n": json.Number("1")} }
	got, err := gs.Relay("redact", msg(), 100)
	if err != nil || got.(map[string]any)["data"] != "token [REDACTED:github-token]" {
		t.Errorf("redact: %v, %v", got, err)
	}
	got, err = gs.Relay("block", msg(), 100)
	if err == nil || got != nil || !strings.Contains(err.Error(), "github-token") || strings.Contains(err.Error(), token) {
		t.Errorf("block: %v, %v; want the message kept back, naming the pattern", got, err)
	}
	got, err = gs.Relay("off", msg(), 100)
	if err != nil || got.(map[string]any)["data"] != "token "+token {
		t.Errorf("off: %v, %v", got, err)
	}
	// Size: a message over the group's max_result_bytes is kept back.
	if _, err := gs.Relay("redact", msg(), 17<<20); err == nil || !strings.Contains(err.Error(), "max_result_bytes") {
		t.Errorf("a 17 MiB message passed the relay (max_result_bytes 16 MiB): %v", err)
	}
}

// A load reads the managed policy once: what it applies and the hash its
// policy_load record names come from the same bytes, however the file
// changes after the reading.
func TestALoadAppliesThePolicyItRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	first := []byte(`{"defaults": {"deny": ["rm"]}}`)
	if err := os.WriteFile(path, first, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MOAT_MANAGED_POLICY", path)
	m, err := ReadManaged()
	if err != nil {
		t.Fatal(err)
	}
	// The administrator edits the file while the load goes on.
	if err := os.WriteFile(path, []byte(`{"defaults": {"deny": ["ls"]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(first); m.Hash != hex.EncodeToString(sum[:]) {
		t.Errorf("the reading's hash %s is not that of the bytes it parsed", m.Hash)
	}
	cfg := &config.Config{Servers: map[string]*config.Server{"files": {Command: "x", Enabled: true}}}
	gs := New(slog.New(slog.DiscardHandler), redact.New())
	if err := gs.Apply(cfg, m); err != nil {
		t.Fatal(err)
	}
	p := gs.Policy("files")
	if rm, ls := p.Decide("rm", nil, nil), p.Decide("ls", nil, nil); rm.Allow || !ls.Allow {
		t.Errorf("the applied policy is not the one read: rm %+v, ls %+v", rm, ls)
	}
}
