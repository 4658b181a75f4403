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
	"time"

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
	sock := filepath.Join(dir, "run", "gateway.sock")
	env := testutil.MoatEnv(t)
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway's socket did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}

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
