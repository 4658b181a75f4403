package clients

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// notification is one notification a client received, as tstwo.mjs keeps it.
type notification struct {
	Method string `json:"method"`
	Params struct {
		ProgressToken any    `json:"progressToken"`
		URI           string `json:"uri"`
		Data          any    `json:"data"`
	} `json:"params"`
}

func (n notification) String() string {
	return fmt.Sprintf("%s token=%v uri=%q data=%v", n.Method, n.Params.ProgressToken, n.Params.URI, n.Params.Data)
}

// twoSessions runs tstwo.mjs with args and returns the notifications each
// of its two sessions received.
func twoSessions(t *testing.T, env []string, args ...string) (a, b []notification) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), driverTimeout)
	defer cancel()
	script := filepath.Join(testutil.RepoRoot(t), "testdata", "clients", "tstwo.mjs")
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var seen struct {
		A, B  []notification
		Error string
	}
	if jerr := json.Unmarshal(out, &seen); jerr != nil || seen.Error != "" {
		t.Fatalf("driver: %v %s: %s\n%s", err, seen.Error, clip(string(out)), tail(stderr.String()))
	}
	return seen.A, seen.B
}

// checkOnlyTheirOwn fails unless session a received its progress, log
// message and resource update, and session b none of them: b, which
// subscribed to nothing and sent no progress token, sees only its own log
// message (and list changes, which are everyone's).
func checkOnlyTheirOwn(t *testing.T, a, b []notification, uri string) {
	t.Helper()
	count := func(ns []notification, keep func(notification) bool) int {
		n := 0
		for _, x := range ns {
			if keep(x) {
				n++
			}
		}
		return n
	}
	progress := func(n notification) bool { return n.Method == "notifications/progress" }
	updated := func(n notification) bool { return n.Method == "notifications/resources/updated" && n.Params.URI == uri }
	logged := func(data string) func(notification) bool {
		return func(n notification) bool { return n.Method == "notifications/message" && n.Params.Data == data }
	}
	if count(a, progress) != 3 || count(a, updated) == 0 || count(a, logged("for a")) != 1 {
		t.Errorf("session a did not receive its own notifications (3 progress, a resource update, its log message): %v", a)
	}
	for _, n := range b {
		if strings.HasSuffix(n.Method, "/list_changed") || logged("for b")(n) {
			continue
		}
		t.Errorf("session b received a notification that was a's: %v", n)
	}
	if count(b, logged("for b")) != 1 {
		t.Errorf("session b did not receive its own log message once: %v", b)
	}
}

// TestNotificationsReachOnlyTheirSession: two sessions of one person on
// one gateway share the upstream server, and what it sends for one of
// them (progress of its call, its log messages, updates of the resource it
// subscribed to) reaches that session alone. Over Streamable HTTP with two
// tokens, and through `moat connect`, with the official TypeScript SDK
// client.
func TestNotificationsReachOnlyTheirSession(t *testing.T) {
	requireSDK(t)
	const uri = "test://static/hello"
	test := entry("Go test server", command{Command: testutil.BuildTestServer(t), Args: []string{"-name", "test"}})

	t.Run("http", func(t *testing.T) {
		env := testutil.MoatEnv(t)
		cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{"test": test}, map[string]any{"gateway": map[string]any{
			"identities": map[string]any{"alice": map[string]any{"tokens": []string{"laptop", "desktop"}}},
		}})
		laptop := moatCmd(t, env, cfg, "token", "create", "laptop")
		desktop := moatCmd(t, env, cfg, "token", "create", "desktop")
		g := startHTTPGateway(t, cfg, env)
		a, b := twoSessions(t, env, "http", g.url, laptop, desktop, "test", uri)
		checkOnlyTheirOwn(t, a, b, uri)
	})

	t.Run("connect", func(t *testing.T) {
		env := testutil.MoatEnv(t)
		moat := testutil.BuildMoat(t)
		cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{"test": test})
		sock := startSocketGateway(t, moat, cfg, env)
		a, b := twoSessions(t, env, "connect", moat, sock, "test", uri)
		checkOnlyTheirOwn(t, a, b, uri)
	})
}
