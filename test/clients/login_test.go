package clients

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestTypeScriptClientLogsInThroughTheGateway: the official TypeScript
// SDK client, through `moat connect`, declaring that it shows login links,
// calls a per-user OAuth server that waits for its user's login: it gets
// the link as a URLElicitationRequired error (-32042), and once the link
// is opened (the authorization server approves at once) it is told the
// login completed, calls again, and its call carries the token of that
// login. No one ran `moat auth login`.
func TestTypeScriptClientLogsInThroughTheGateway(t *testing.T) {
	requireSDK(t)
	moat := testutil.BuildMoat(t)
	dir := t.TempDir()
	record := filepath.Join(dir, "oauthserver.jsonl")
	mcpURL := testutil.StartListening(t, exec.Command(testutil.BuildTestdataCommand(t, "oauthserver"), "-record", record))
	cfg := testutil.WriteConfig(t, dir, map[string]server{
		"protected": {"description": "OAuth-protected test server", "url": mcpURL, "per_user": true},
	}, map[string]any{"gateway": map[string]any{"identities": map[string]any{"me": map[string]any{"uids": []int{os.Getuid()}}}}})
	env := testutil.MoatEnv(t)
	sock := startSocketGateway(t, moat, cfg, env)

	// The copy says it waits for a login once it has tried to connect; the
	// driver then reports the link.
	type line struct {
		URL, ID, Message, Completed, Error string
		Result                             *struct {
			Content []struct{ Text string } `json:"content"`
			IsError bool                    `json:"isError"`
		}
	}
	var lines chan line
	var first line
	testutil.Eventually(t, "the client to be offered a login link", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), driverTimeout)
		script := filepath.Join(testutil.RepoRoot(t), "testdata", "clients", "tslogin.mjs")
		cmd := exec.CommandContext(ctx, "node", script, moat, sock, "protected", "whoami")
		cmd.Env = env
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines = make(chan line, 4)
		go func() {
			defer cancel()
			defer cmd.Wait()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var l line
				json.Unmarshal(sc.Bytes(), &l)
				lines <- l
			}
			close(lines)
		}()
		first = <-lines
		if first.URL == "" {
			for range lines {
			}
			return false
		}
		return true
	})
	if !strings.Contains(first.URL, "/authorize?") || first.ID == "" || !strings.Contains(first.Message, `as identity "me"`) {
		t.Fatalf("the login link: %+v", first)
	}
	if status, page := testutil.Browse(t, first.URL); status != 200 || !strings.Contains(page, "Logged in") {
		t.Fatalf("browser: the callback page is %d %q", status, page)
	}
	var completed, result line
	select {
	case completed = <-lines:
	case <-time.After(90 * time.Second):
		t.Fatal("the driver reported nothing after the login")
	}
	result = <-lines
	if completed.Completed != first.ID {
		t.Errorf("the client was told %+v, want the completion of %q", completed, first.ID)
	}
	if result.Result == nil || result.Result.IsError || len(result.Result.Content) == 0 || result.Result.Content[0].Text != "alice" {
		t.Fatalf("the call after the login: %+v", result)
	}
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	var issued string
	for l := range strings.Lines(string(b)) {
		var r map[string]string
		if json.Unmarshal([]byte(l), &r) == nil && r["event"] == "issued" {
			issued = r["access_token"]
		}
	}
	if issued == "" || !strings.Contains(string(b), `"authorization":"Bearer `+issued+`"`) {
		t.Error("the MCP server never received the token of the login")
	}
}
