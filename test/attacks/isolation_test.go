package attacks

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/testutil"
)

// canaryPid finds, among moat's descendants, the process whose environment
// holds canary.
func canaryPid(t *testing.T, m *moatProc, canary string) int {
	t.Helper()
	for _, pid := range testutil.Descendants(m.cmd.Process.Pid) {
		if env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ"); err == nil && strings.Contains(string(env), canary) {
			return pid
		}
	}
	t.Fatalf("no process under moat has %s in its environment", canary)
	return 0
}

// TestServersCannotReachEachOther: two stdio servers in one config, a victim
// whose environment holds a secret (${secret:NAME}) and whose working
// directory holds a file, and a hostile spy. The spy tries to read the
// victim's environ, cmdline, fds, working directory and memory
// (process_vm_readv, ptrace), to signal it, and to read Moat's config,
// audit log, secret and pin stores and the victim's working directory by
// path; every attempt fails, it sees only its own processes, and the secret
// appears nowhere in what it got. The real server-filesystem rooted at / (as
// in the report) cannot read the victim's environ either.
//
// SECURITY.md, Child processes, "Isolation between servers".
func TestServersCannotReachEachOther(t *testing.T) {
	sandbox.LauncherPath = testutil.BuildMoat(t) // the probe runs the real launcher
	if ok, why := sandbox.Namespaces(); !ok {
		if os.Getenv("CI") != "" {
			t.Fatalf("this machine gives servers no namespaces of their own: %s", why)
		}
		t.Skipf("SKIPPED LOUDLY: this machine gives servers no namespaces of their own: %s", why)
	}
	const canary = "victim-secret-5c1e"
	env := testutil.MoatEnv(t)
	set := exec.Command(testutil.BuildMoat(t), "secret", "set", "victim_token")
	set.Env, set.Stdin = env, strings.NewReader(canary)
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("moat secret set: %v\n%s", err, out)
	}
	victimDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(victimDir, "notes.txt"), []byte("victim's private notes"), 0o600); err != nil {
		t.Fatal(err)
	}
	victim := testServer(t, "victim")
	victim["env"] = map[string]string{"VICTIM_TOKEN": "${secret:victim_token}"}
	victim["cwd"] = victimDir
	dir := t.TempDir()
	cfgPath := testutil.WriteConfig(t, dir, map[string]server{
		"victim": victim,
		"spy":    hostileStdio(t, "stdio"),
		"files": {"description": "server-filesystem rooted at /", "command": testutil.NodeBin(t, "mcp-server-filesystem"), "args": []string{"/"}},
	})
	m := startMoatWith(t, env, nil, cfgPath)
	m.echoWorks(t, "victim")
	pid := canaryPid(t, m, canary)

	data := filepath.Join(testutil.EnvValue(env, "XDG_DATA_HOME"), "moat")
	paths := []string{cfgPath, auditPath(env), filepath.Dir(auditPath(env)), data, filepath.Join(data, "pins", "pins.json"), victimDir, filepath.Join(victimDir, "notes.txt")}
	res := m.call(t, "spy", "spy", map[string]any{"pid": pid, "paths": paths})
	var got map[string]string
	if err := json.Unmarshal([]byte(resultText(res)), &got); err != nil {
		t.Fatalf("spy's report: %v: %s", err, tail(resultText(res), 2048))
	}
	for _, what := range []string{"environ", "cmdline", "fd", "cwd", "signal", "ptrace", "process_vm_readv"} {
		if !strings.HasPrefix(got[what], "error: ") {
			t.Errorf("the spy reached the victim's %s: %.200s", what, got[what])
		}
	}
	if v, ok := got["exe"]; ok {
		t.Errorf("the spy read the victim's executable link: %s", v)
	}
	if n, _ := strconv.Atoi(got["processes"]); n > 8 {
		t.Errorf("the spy sees %d processes in /proc; want only its own few", n)
	}
	for _, p := range paths {
		if v := got[p]; v != "got: " && !strings.HasPrefix(v, "error: ") {
			t.Errorf("the spy read %s: %.200s", p, v)
		}
	}
	if s := resultText(res); strings.Contains(s, canary) || strings.Contains(s, "private notes") {
		t.Errorf("the victim's secret or notes are in the spy's report: %.500s", s)
	}

	r := m.call(t, "files", "read_text_file", map[string]any{"path": "/proc/" + strconv.Itoa(pid) + "/environ"})
	if s := resultText(r); !r.IsError || strings.Contains(s, canary) {
		t.Errorf("server-filesystem read the victim's environ: %.300s", s)
	}
	r = m.call(t, "files", "read_text_file", map[string]any{"path": cfgPath})
	if s := resultText(r); strings.Contains(s, "victim_token") {
		t.Errorf("server-filesystem read Moat's config: %.300s", s)
	}
	m.echoWorks(t, "victim")
}
