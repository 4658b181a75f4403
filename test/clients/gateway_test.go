package clients

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestTypeScriptClientThroughMoatConnect: the official TypeScript SDK
// client, configured with "moat connect" as desktop clients are, reaches
// a gateway that several such clients share. With no identities in the
// config the gateway serves its own user alone, which is this one.
func TestTypeScriptClientThroughMoatConnect(t *testing.T) {
	requireSDK(t)
	moat := testutil.BuildMoat(t)
	dir := t.TempDir()
	cfg := testutil.WriteConfig(t, dir, map[string]server{
		"test": entry("Go test server", command{Command: testutil.BuildTestServer(t), Args: []string{"-name", "test"}}),
	})
	env := testutil.MoatEnv(t)
	sock := startSocketGateway(t, moat, cfg, env)

	// Two clients at once, as two desktop apps of one user.
	type seen struct {
		Groups []string `json:"groups"`
		Result struct {
			Content []struct{ Text string } `json:"content"`
			IsError bool                    `json:"isError"`
		} `json:"result"`
		Error string `json:"error"`
	}
	results := make(chan seen, 2)
	for _, who := range []string{"first", "second"} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), driverTimeout)
			defer cancel()
			script := filepath.Join(testutil.RepoRoot(t), "testdata", "clients", "tsconnect.mjs")
			cmd := exec.CommandContext(ctx, "node", script, moat, sock, "test", "echo", `{"message":"from the `+who+` client"}`)
			cmd.Env = env
			out, err := cmd.Output()
			var s seen
			if jerr := json.Unmarshal(out, &s); jerr != nil {
				s.Error = "driver: " + err.Error() + ": " + string(out)
			}
			results <- s
		}()
	}
	for range 2 {
		s := <-results
		if s.Error != "" {
			t.Errorf("TypeScript client: %s", clip(s.Error))
			continue
		}
		if len(s.Groups) != 1 || s.Groups[0] != "test" {
			t.Errorf("groups %v, want [test]", s.Groups)
		}
		if s.Result.IsError || len(s.Result.Content) != 1 || !strings.Contains(s.Result.Content[0].Text, "client") {
			t.Errorf("echo through the gateway: %+v", s.Result)
		}
	}
}

// startSocketGateway runs moat serve --listen unix:... for cfg with env,
// stopped (SIGTERM) when the test ends, and returns its socket once it is
// there.
func startSocketGateway(t *testing.T, moat, cfg string, env []string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "gateway.sock")
	gw := exec.Command(moat, "serve", "--listen", "unix:"+sock, cfg)
	stderr := &testutil.SyncBuffer{}
	gw.Env, gw.Stderr = env, stderr
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		gw.Process.Signal(syscall.SIGTERM)
		gw.Wait()
		if t.Failed() {
			t.Logf("gateway stderr (tail):\n%s", tail(stderr.String()))
		}
	})
	testutil.Eventually(t, "the gateway's socket", func() bool { _, err := os.Stat(sock); return err == nil })
	return sock
}
