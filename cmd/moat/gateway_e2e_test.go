package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/testutil"
)

// Users of the gateway tests: two identities, and a user who is neither.
// They share the group the socket belongs to, so the socket's mode lets
// them all connect: who is served is the gateway's decision.
const (
	uidAlice    = 4201
	uidBob      = 4202
	uidStranger = 4203
	gidGateway  = 4300
)

// gatewayProc is a running `moat serve --listen`.
type gatewayProc struct {
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	env    []string
	sock   string
	bin    string // a moat that the test users can run
}

// startGateway runs moat as a gateway for cfgPath on a socket in a
// directory every test user can reach, and on the --listen values of
// extra.
func startGateway(t *testing.T, cfgPath string, extra ...string) *gatewayProc {
	t.Helper()
	dir, err := os.MkdirTemp("", "moat-gw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "moat")
	data, err := os.ReadFile(testutil.BuildMoat(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{stderr: &testutil.SyncBuffer{}, env: testutil.MoatEnv(t), sock: filepath.Join(dir, "run", "gateway.sock"), bin: bin}
	args := []string{"serve", "--listen", "unix:" + g.sock}
	for _, l := range extra {
		args = append(args, "--listen", l)
	}
	g.cmd = exec.Command(testutil.BuildMoat(t), append(args, cfgPath)...)
	g.cmd.Env, g.cmd.Stderr = g.env, g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() {
			t.Logf("gateway stderr:\n%s", testutil.Tail(g.stderr.String(), 8192))
		}
	})
	testutil.Eventually(t, "the gateway's socket", func() bool {
		_, err := os.Stat(g.sock)
		return err == nil
	})
	return g
}

// stop ends the gateway as systemd would, and waits for it.
func (g *gatewayProc) stop(t *testing.T) {
	if g.cmd.ProcessState != nil {
		return
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	if err := g.cmd.Wait(); err != nil {
		t.Errorf("the gateway exited with %v after SIGTERM", err)
	}
}

// connectAs runs `moat connect` as uid and connects a go-sdk client through it.
func (g *gatewayProc) connectAs(t *testing.T, uid int, opts *mcp.ClientOptions) (*mcp.ClientSession, error) {
	t.Helper()
	cmd := exec.Command(g.bin, "connect", g.sock)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: gidGateway}}
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e-connect", Version: "1"}, opts).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { cs.Close() })
	return cs, nil
}

func gatewayConfig(t *testing.T) string {
	return testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"alpha": testServer(t, "alpha"),
		"beta":  testServer(t, "beta"),
		// Its sandbox has no mount namespace, so the socket is not hidden
		// from it.
		"gamma": withSandbox(testServer(t, "gamma"), map[string]any{"namespaces": false}),
	}, map[string]any{"gateway": map[string]any{
		"socket_mode":  "0660",
		"socket_group": "4300",
		"identities": map[string]any{
			"alice": map[string]any{"uids": []int{uidAlice}, "policy": map[string]any{"deny": []string{"fail"}}},
			"bob":   map[string]any{"uids": []int{uidBob}, "servers": []string{"beta"}},
			// The gateway's own user (root here), whose servers run as it too.
			"ops": map[string]any{"uids": []int{0}},
		},
	}})
}

// TestGatewayServesEachIdentityItsOwnView: two users on one gateway see
// the groups and tools their identities allow, are refused what they do
// not, and the audit log names who did what; a user who is no identity
// is told so through the client.
func TestGatewayServesEachIdentityItsOwnView(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: runs clients as other users, which needs root")
	}
	g := startGateway(t, gatewayConfig(t))

	fi, err := os.Stat(g.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || st.Gid != gidGateway {
		t.Errorf("socket mode %v group %d, want 0660 group %d", fi.Mode().Perm(), st.Gid, gidGateway)
	}

	alice, err := g.connectAs(t, uidAlice, nil)
	if err != nil {
		t.Fatalf("alice: %v", err)
	}
	bob, err := g.connectAs(t, uidBob, nil)
	if err != nil {
		t.Fatalf("bob: %v", err)
	}
	if diff := cmp.Diff([]any{"alpha", "beta", "gamma"}, groupEnum(t, alice)); diff != "" {
		t.Errorf("alice's groups (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{"beta"}, groupEnum(t, bob)); diff != "" {
		t.Errorf("bob's groups (-want +got):\n%s", diff)
	}

	callWith := func(cs *mcp.ClientSession, group, tool string, args map[string]any) (*mcp.CallToolResult, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": group, "name": tool, "args": args}})
	}
	call := func(cs *mcp.ClientSession, group, tool string) (*mcp.CallToolResult, error) {
		return callWith(cs, group, tool, map[string]any{"message": "hi"})
	}
	listed := func(cs *mcp.ClientSession, group string) string {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": group}})
		if err != nil {
			t.Fatal(err)
		}
		return resultText(res)
	}
	if strings.Contains(listed(alice, "beta"), `"name":"fail"`) || !strings.Contains(listed(bob, "beta"), `"name":"fail"`) {
		t.Errorf("fail should be listed for bob and not for alice:\nalice: %.300s\nbob: %.300s", listed(alice, "beta"), listed(bob, "beta"))
	}
	if res, err := call(alice, "beta", "echo"); err != nil || res.IsError || !strings.Contains(resultText(res), "hi") {
		t.Errorf("alice echo: %v %v", err, res)
	}
	res, err := call(alice, "beta", "fail")
	if err != nil || !res.IsError || !strings.Contains(resultText(res), "alice") {
		t.Errorf("alice's fail should be refused naming her identity: %v %q", err, resultText(res))
	}
	res, err = call(bob, "beta", "fail")
	if err != nil || !res.IsError || !strings.Contains(resultText(res), "Always") && !strings.Contains(resultText(res), "fail") {
		t.Errorf("bob's fail should reach the server: %v %q", err, resultText(res))
	}
	if _, err := call(bob, "alpha", "echo"); err == nil || !strings.Contains(err.Error(), `unknown group "alpha"`) {
		t.Errorf("bob calling alpha: %v, want unknown group", err)
	}

	// A server the gateway started cannot reach the gateway: it would call
	// other servers' tools as whoever the gateway takes it for.
	if res, err := callWith(alice, "beta", "dial_unix", map[string]any{"path": g.sock}); err != nil || !strings.Contains(resultText(res), "cannot connect") {
		t.Errorf("a sandboxed server dialing the gateway's socket: %v %q, want cannot connect", err, resultText(res))
	}
	// Where the sandbox cannot hide it, the gateway refuses its own
	// servers, whatever identity their user is.
	if res, err := callWith(alice, "gamma", "dial_unix", map[string]any{"path": g.sock}); err != nil || !strings.Contains(resultText(res), "started by this gateway may not connect") {
		t.Errorf("a server without namespaces dialing the gateway: %v %q, want refused as the gateway's own server", err, resultText(res))
	}

	// A user who is no identity reads why in the client.
	_, err = g.connectAs(t, uidStranger, nil)
	if err == nil || !strings.Contains(err.Error(), "4203") || !strings.Contains(err.Error(), "gateway.identities") {
		t.Errorf("a stranger's connect: %v, want a refusal naming uid 4203 and gateway.identities", err)
	}

	alice.Close()
	bob.Close()
	g.stop(t)
	records := testutil.ReadAudit(t, filepath.Join(testutil.EnvValue(g.env, "XDG_STATE_HOME"), "moat", "audit.jsonl"))
	who := func(event, tool, name string) bool {
		return slices.ContainsFunc(records, func(r map[string]any) bool {
			id, _ := r["identity"].(map[string]any)
			return r["event"] == event && (tool == "" || r["tool"] == tool) && id != nil && id["name"] == name
		})
	}
	for _, c := range []struct{ event, tool, name string }{
		{"session_start", "", "alice"}, {"session_start", "", "bob"},
		{"tool_call", "echo", "alice"}, {"tool_call", "fail", "alice"}, {"tool_call", "fail", "bob"},
		{"session_end", "", "alice"},
	} {
		if !who(c.event, c.tool, c.name) {
			t.Errorf("no %s record of %s by %s in the audit log", c.event, c.tool, c.name)
		}
	}
	if !slices.ContainsFunc(records, func(r map[string]any) bool {
		id, _ := r["identity"].(map[string]any)
		return r["event"] == "session_refused" && id != nil && id["uid"] == float64(uidStranger)
	}) {
		t.Errorf("no session_refused record naming uid %d", uidStranger)
	}
}

// TestConnectWithoutAGatewaySaysHowToStartOne: the client that started
// moat connect shows its user what to do.
func TestConnectWithoutAGatewaySaysHowToStartOne(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "gateway.sock")
	cmd := exec.Command(testutil.BuildMoat(t), "connect", sock)
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	want := "moat serve --listen unix:" + sock
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("the client's error: %v, want it to say %q", err, want)
	}
	testutil.Eventually(t, "moat connect's stderr", func() bool { return strings.Contains(stderr.String(), want) })
}

func withSandbox(server map[string]any, sandbox map[string]any) map[string]any {
	server["sandbox"] = sandbox
	return server
}

// TestGatewayUnderSocketActivation: systemd's socket activation, by
// systemd's own systemd-socket-activate (what a .socket unit does: it
// listens, and on the first connection starts the service with the socket
// as fd 3, LISTEN_PID and LISTEN_FDS): the gateway serves the socket it is
// given and leaves its file to its owner when it stops.
func TestGatewayUnderSocketActivation(t *testing.T) {
	activate := testutil.SystemdTool(t, "systemd-socket-activate")
	dir := t.TempDir()
	cfg := testutil.WriteConfig(t, dir, map[string]any{"test": testServer(t, "test")})
	sock := filepath.Join(dir, "gateway.sock")
	// systemd-socket-activate gives the service only the variables it is
	// told to, as a unit's Environment= does.
	args := []string{"--listen", sock}
	for _, kv := range testutil.MoatEnv(t) {
		args = append(args, "--setenv", kv)
	}
	gw := exec.Command(activate, append(args, testutil.BuildMoat(t), "serve", "--listen", "systemd", cfg)...)
	stderr := &testutil.SyncBuffer{}
	gw.Stderr = stderr
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			gw.Process.Kill()
			gw.Wait()
		}
		if t.Failed() {
			t.Logf("systemd-socket-activate and gateway stderr:\n%s", testutil.Tail(stderr.String(), 8192))
		}
	}()
	testutil.Eventually(t, "systemd-socket-activate's socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})

	cmd := exec.Command(testutil.BuildMoat(t), "connect", sock)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connecting through the activated socket: %v", err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "activated"}}})
	if err != nil || !strings.Contains(resultText(res), "activated") {
		t.Fatalf("echo: %v %v", err, res)
	}
	cs.Close()
	if !strings.Contains(stderr.String(), "gateway listening") {
		t.Errorf("the gateway did not say it was listening")
	}

	// systemd-socket-activate became the gateway (exec): the signal is the
	// one systemctl stop sends it.
	gw.Process.Signal(syscall.SIGTERM)
	stopped = true
	if err := gw.Wait(); err != nil {
		t.Errorf("the gateway exited with %v after SIGTERM", err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("the gateway removed the socket systemd owns: %v", err)
	}
}
