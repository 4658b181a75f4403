package fuzz

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/upstream"
)

// replyTimeout is the hostile group's tools timeout; a call through Moat
// must end (with a result or an error) well within callBound.
const (
	replyTimeout = 2 * time.Second
	callBound    = replyTimeout + 8*time.Second
)

// FuzzUpstreamReply runs a real proxy.Server in this process with two
// groups, each a real stdio child started through the real sandbox
// launcher: "hostile" (testdata/hostile-fuzz, which answers each tools/call
// with the fuzzed bytes) and "echo" (the Go test server). For every input it
// calls hostile's tool through call_dynamic_tool, then echo's. Whatever the
// reply, Moat must not crash (a panic ends this process), the hostile call
// must return a result or an error within callBound, and the echo group must
// still answer correctly.
//
// The proxy and children start once per fuzz worker, not per input, and the
// hostile child re-reads its reply file for each call; an execution costs
// two round trips through Moat (about 1-5 ms), plus a restart of the hostile
// child (some 10-50 ms) when a reply made Moat drop it.
func FuzzUpstreamReply(f *testing.F) {
	for _, data := range testutil.FuzzSeeds(f, "FuzzUpstreamReply") {
		f.Add(data)
	}
	replyFile := filepath.Join(f.TempDir(), "reply")
	cs, p := startProxy(f, replyFile)
	f.Fuzz(func(t *testing.T, reply []byte) {
		// The fuzzing engine never times an input out, so a hang would
		// only stall it: the watchdog turns one into a failure with the
		// goroutines of the stuck proxy.
		failed := make(chan string, 1)
		go func() { failed <- exchange(cs, p, replyFile, reply) }()
		select {
		case msg := <-failed:
			if msg != "" {
				t.Fatalf("%s; reply %q", msg, reply)
			}
		case <-time.After(3 * callBound):
			buf := make([]byte, 1<<20)
			t.Fatalf("Moat hangs: no answer to the client after %v; reply %q\n%s", 3*callBound, reply, buf[:runtime.Stack(buf, true)])
		}
	})
}

// exchange lets the hostile child answer with reply and returns what went
// wrong, or "".
func exchange(cs *mcp.ClientSession, p *proxy.Server, replyFile string, reply []byte) string {
	// A reply that made Moat drop the child leaves the group reconnecting;
	// wait, so that every input meets a live child.
	if msg := waitReady(p, "hostile"); msg != "" {
		return msg
	}
	if err := os.WriteFile(replyFile, reply, 0o600); err != nil {
		return err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), callBound)
	defer cancel()
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{
		Name:      "call_dynamic_tool",
		Arguments: map[string]any{"group": "hostile", "name": "reply", "args": map[string]any{}},
	})
	if ctx.Err() != nil {
		return fmt.Sprintf("the call to the hostile group did not return within %v (err %v)", callBound, err)
	}
	if err != nil && strings.Contains(err.Error(), "connection closed") {
		return fmt.Sprintf("the hostile reply closed the client's session with Moat: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), callBound)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{
		Name:      "call_dynamic_tool",
		Arguments: map[string]any{"group": "echo", "name": "echo", "args": map[string]any{"message": "still here"}},
	})
	if err != nil || res.IsError || textOf(res) != "still here" {
		return fmt.Sprintf("afterwards the echo group answers %v, %v", res, err)
	}
	return ""
}

// waitReady waits until group is connected, and says so if Moat does not
// bring it back within callBound: a hostile reply must not leave a group
// down for good.
func waitReady(p *proxy.Server, group string) string {
	g, ok := p.Manager().Group(group)
	if !ok {
		return fmt.Sprintf("group %q is gone", group)
	}
	deadline := time.Now().Add(callBound)
	for g.Status().State != upstream.Ready {
		if time.Now().After(deadline) {
			return fmt.Sprintf("group %q is not reconnected after %v: %+v", group, callBound, g.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ""
}

// startProxy builds the children, runs the proxy over in-memory transports
// and returns a connected client session and the proxy; f's cleanup stops
// everything.
func startProxy(f *testing.F, replyFile string) (*mcp.ClientSession, *proxy.Server) {
	sandbox.LauncherPath = testutil.BuildMoat(f)
	hostile := filepath.Join(f.TempDir(), "hostile-fuzz")
	build := exec.Command("go", "build", "-o", hostile, "./testdata/hostile-fuzz")
	build.Dir = testutil.RepoRoot(f)
	if out, err := build.CombinedOutput(); err != nil {
		f.Fatalf("building testdata/hostile-fuzz: %v\n%s", err, out)
	}
	server := func(name, command string, args ...string) *config.Server {
		return &config.Server{
			Name: name, Description: "fuzz " + name, Type: config.Stdio, Command: command, Args: args, Enabled: true,
			Features: config.Features{Tools: true},
			Timeout:  config.Timeouts{Tools: replyTimeout, Resources: replyTimeout, Prompts: replyTimeout},
		}
	}
	cfg := &config.Config{Servers: map[string]*config.Server{
		"hostile": server("hostile", hostile, "-reply", replyFile),
		"echo":    server("echo", testutil.BuildTestServer(f), "-name", "echo"),
	}}
	p := proxy.New(proxy.Options{Upstream: upstream.Options{
		ConnectTimeout: 10 * time.Second,
		GracePeriod:    time.Second,
		Backoff:        []time.Duration{20 * time.Millisecond},
		RetryEvery:     20 * time.Millisecond,
	}})
	p.Apply(cfg)
	ct, st := mcp.NewInMemoryTransports()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx, st)
	}()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "fuzz-client", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		cancel()
		<-done
		f.Fatalf("connecting to the proxy: %v", err)
	}
	f.Cleanup(func() {
		cs.Close()
		cancel()
		<-done
	})
	return cs, p
}

func textOf(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}
