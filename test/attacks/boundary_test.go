package attacks

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestSecretsNeverReachTheClient: a hostile upstream that holds a secret
// Moat resolved into its environment (${secret:NAME}) sends it back through
// every channel that is not a tool result: a tool description and a schema
// default (listed by get_dynamic_tools), a log message, a progress
// notification, a sampling request (which would put it in the model's
// context) and an elicitation request. The client reads moat's raw stdout:
// every channel arrives, redacted, and no byte of it holds the secret.
//
// SECURITY.md, Redaction, "the client boundary".
func TestSecretsNeverReachTheClient(t *testing.T) {
	const secret = "sk-leak-canary-5d7c0a91e2b4"
	env := testutil.MoatEnv(t)
	moat := testutil.BuildMoat(t)
	setSecret(t, env, "leaky-token", secret)
	srv := testServer(t, "leaky", "-leak-env", "LEAK_TOKEN")
	srv["env"] = map[string]string{"LEAK_TOKEN": "${secret:leaky-token}"}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{"leaky": srv})

	cmd := exec.Command(moat, cfg)
	cmd.Env = env
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})

	var mu sync.Mutex
	seen := map[string]string{} // channel: what the client got
	record := func(channel string, v any) {
		b, _ := json.Marshal(v)
		mu.Lock()
		seen[channel] += string(b)
		mu.Unlock()
	}
	raw := &testutil.SyncBuffer{}
	client := mcp.NewClient(&mcp.Implementation{Name: "attacks", Version: "1"}, &mcp.ClientOptions{
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			record("sampling", req.Params)
			return &mcp.CreateMessageResult{Role: "assistant", Model: "test", Content: &mcp.TextContent{Text: "no"}}, nil
		},
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			record("elicitation", req.Params)
			return &mcp.ElicitResult{Action: "decline"}, nil
		},
		LoggingMessageHandler:       func(_ context.Context, req *mcp.LoggingMessageRequest) { record("log", req.Params) },
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) { record("progress", req.Params) },
	})
	ctx := context.Background()
	cs, err := client.Connect(ctx, &mcp.IOTransport{Reader: io.NopCloser(io.TeeReader(stdout, raw)), Writer: stdin}, nil)
	if err != nil {
		t.Fatalf("connect: %v\nstderr:\n%s", err, tail(stderr.String(), 2000))
	}
	defer cs.Close()
	if err := cs.SetLoggingLevel(ctx, &mcp.SetLoggingLevelParams{Level: "debug"}); err != nil {
		t.Fatal(err)
	}

	list, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": "leaky"}})
	if err != nil {
		t.Fatal(err)
	}
	record("listing", list)
	for _, ch := range []string{"log", "progress", "sampling", "elicitation"} {
		p := &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "leaky", "name": "leak", "args": map[string]any{"channel": ch}}}
		p.SetProgressToken("leak-" + ch)
		res, err := cs.CallTool(ctx, p)
		if err != nil {
			t.Fatalf("leak through %s: %v", ch, err)
		}
		if res.IsError || !strings.Contains(resultText(res), "leaked through "+ch) {
			t.Fatalf("leak through %s: isError=%v %q", ch, res.IsError, tail(resultText(res), 500))
		}
	}
	// Notifications may trail their call's result.
	for _, ch := range []string{"listing", "log", "progress", "sampling", "elicitation"} {
		waitFor(t, "the "+ch+" to reach the client", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return strings.Contains(seen[ch], "[REDACTED:") || strings.Contains(seen[ch], secret)
		}, func() string {
			mu.Lock()
			defer mu.Unlock()
			return tail(seen[ch], 500)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for ch, got := range seen {
		if strings.Contains(got, secret) {
			t.Errorf("the secret reached the client through the %s: %s", ch, tail(got, 500))
		}
	}
	if strings.Contains(raw.String(), secret) {
		t.Errorf("the secret is in moat's stdout:\n%s", tail(raw.String(), 2000))
	}
	if t.Failed() {
		t.Logf("moat's stderr:\n%s", tail(stderr.String(), 2000))
	}
}

// TestEncodedSecretsNeverReachTheClient: the hostile upstream sends the
// secret back in forms a model decodes at once: split across two text items
// of one result (which a client shows as one text), hex in either case,
// every character as a \uXXXX escape, base64, URL escaping. On 588eb74 the
// split, hex and escaped forms reached the client; now every form arrives
// redacted.
//
// SECURITY.md, Redaction.
func TestEncodedSecretsNeverReachTheClient(t *testing.T) {
	const secret = "sk-leak-canary-5d7c0a91e2b4"
	env := testutil.MoatEnv(t)
	setSecret(t, env, "leaky-token", secret)
	srv := testServer(t, "leaky", "-leak-env", "LEAK_TOKEN")
	srv["env"] = map[string]string{"LEAK_TOKEN": "${secret:leaky-token}"}
	m := startMoatWith(t, env, nil, testutil.WriteConfig(t, t.TempDir(), map[string]server{"leaky": srv}))
	var escaped strings.Builder
	for _, r := range secret {
		fmt.Fprintf(&escaped, `\u%04x`, r)
	}
	forms := map[string]string{
		"split":   secret,
		"hex":     hex.EncodeToString([]byte(secret)),
		"HEX":     strings.ToUpper(hex.EncodeToString([]byte(secret))),
		"escaped": escaped.String(),
		"base64":  base64.StdEncoding.EncodeToString([]byte(secret)),
		"url":     url.QueryEscape(secret),
	}
	for form, enc := range forms {
		res := m.call(t, "leaky", "leak_encoded", map[string]any{"form": form})
		var joined strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				joined.WriteString(tc.Text)
			}
		}
		got := joined.String()
		if strings.Contains(got, enc) || strings.Contains(got, secret) || !strings.Contains(got, "[REDACTED:") {
			t.Errorf("the %s form reached the client as %q", form, got)
		}
	}
}
