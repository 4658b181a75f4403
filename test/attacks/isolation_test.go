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
// audit log, secret and pin stores, the runtime directory and the victim's
// working directory by path; every attempt fails, it sees only its own processes, and the secret
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
	// A runtime directory as a desktop session has one: its bus socket
	// would reach the keychain.
	runtime := t.TempDir()
	if err := os.WriteFile(filepath.Join(runtime, "bus"), []byte("a session bus"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(testutil.MoatEnv(t), "XDG_RUNTIME_DIR="+runtime)
	testutil.SetSecret(t, env, "victim_token", canary)
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
		"files":  {"description": "server-filesystem rooted at /", "command": testutil.NodeBin(t, "mcp-server-filesystem"), "args": []string{"/"}},
	})
	m := startMoatWith(t, env, nil, cfgPath)
	m.echoWorks(t, "victim")
	pid := canaryPid(t, m, canary)

	data := filepath.Join(testutil.EnvValue(env, "XDG_DATA_HOME"), "moat")
	paths := []string{cfgPath, auditPath(env), filepath.Dir(auditPath(env)), data, filepath.Join(data, "pins", "pins.json"),
		victimDir, filepath.Join(victimDir, "notes.txt"), filepath.Join(runtime, "bus")}
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

// TestServersRunAsTheirOwnUsers: moat as root (a host-wide gateway), each
// server with its own run_as, and sandbox.namespaces false, so that only
// the uids keep them apart. The spy still cannot read the victim's
// environment, file descriptors or working directory, its memory, or signal
// it; child_start says which user each runs as.
//
// SECURITY.md, Child processes, "Isolation between servers" (run_as).
func TestServersRunAsTheirOwnUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: run_as needs moat to run as root")
	}
	const canary = "victim-uid-secret-81b2"
	// The servers' users must be able to run their programs.
	bin, err := os.MkdirTemp("", "moat-runas-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	copyExec := func(from string) string {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(bin, filepath.Base(from))
		if err := os.WriteFile(to, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return to
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	shared := map[string]any{"namespaces": false}
	victim := server{"description": "victim", "command": copyExec(testutil.BuildTestServer(t)), "args": []string{"-name", "victim"},
		"env": map[string]string{"CANARY": canary}, "run_as": "64001:64001", "sandbox": shared}
	spy := server{"description": "spy", "command": copyExec(hostileBin(t)), "args": []string{"-mode", "stdio"},
		"run_as": "64002:64002", "sandbox": shared}
	env := testutil.MoatEnv(t)
	m := startMoatWith(t, env, nil, testutil.WriteConfig(t, t.TempDir(), map[string]server{"victim": victim, "spy": spy}))
	m.echoWorks(t, "victim")
	pid := canaryPid(t, m, canary)
	res := m.call(t, "spy", "spy", map[string]any{"pid": pid})
	var got map[string]string
	if err := json.Unmarshal([]byte(resultText(res)), &got); err != nil {
		t.Fatalf("spy's report: %v: %s", err, tail(resultText(res), 2048))
	}
	for _, what := range []string{"environ", "fd", "cwd", "signal", "ptrace", "process_vm_readv"} {
		if !strings.HasPrefix(got[what], "error: ") {
			t.Errorf("the spy (another uid) reached the victim's %s: %.200s", what, got[what])
		}
	}
	if strings.Contains(resultText(res), canary) {
		t.Errorf("the victim's secret is in the spy's report")
	}
	recs := m.auditLog(t)
	for group, uid := range map[string]string{"victim": "64001", "spy": "64002"} {
		if cs := childStart(t, recs, group); !strings.Contains(","+cs.Detail["enforced"]+",", ",run_as,") {
			t.Errorf("child_start of %s: enforced=%q; want run_as (uid %s)", group, cs.Detail["enforced"], uid)
		}
	}
}

// TestWithoutNamespacesStrictRefusesAndBestEffortSaysSo: on a machine that
// allows no user namespaces (here: moat in a user namespace whose
// user.max_user_namespaces is 0, as a sysctl or a container would have it),
// a best-effort server still starts and works, and the audit log says once,
// with the reason and the setting to change, that servers are not isolated;
// its child_start lists namespaces as not enforced. A strict server is
// refused, with the same reason in its status.
//
// SECURITY.md, Child processes, "Isolation between servers".
func TestWithoutNamespacesStrictRefusesAndBestEffortSaysSo(t *testing.T) {
	wrapper := []string{"unshare", "--user", "--map-root-user", "--", "sh", "-c", `echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"`, "sh"}
	if out, err := exec.Command(wrapper[0], append(wrapper[1:], "true")...).CombinedOutput(); err != nil {
		t.Skipf("SKIPPED LOUDLY: cannot make a user namespace without nested ones here: %v %s", err, out)
	}
	strict := testServer(t, "strict")
	strict["sandbox"] = map[string]any{"mode": "strict"}
	env := testutil.MoatEnv(t)
	m := startMoatWith(t, env, wrapper, testutil.WriteConfig(t, t.TempDir(), map[string]server{"lax": testServer(t, "lax"), "strict": strict}))
	m.echoWorks(t, "lax")
	status := m.waitStatus(t, "strict", "unavailable")
	if !strings.Contains(status, "strict sandbox: no namespaces of its own here") || !strings.Contains(status, "user.max_user_namespaces") {
		t.Errorf("the strict server's status %q does not say why and what to change", status)
	}
	recs := m.auditLog(t)
	var said []string
	for _, r := range recs {
		if r.Event == "opt_out" && r.Detail["setting"] == "sandbox.namespaces" {
			said = append(said, r.Detail["unavailable"])
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], "user.max_user_namespaces") {
		t.Errorf("opt_out records of sandbox.namespaces: %q; want one, naming the setting", said)
	}
	if cs := childStart(t, recs, "lax"); !strings.Contains(","+cs.Detail["not_enforced"]+",", ",namespaces,") {
		t.Errorf("child_start of lax: not_enforced=%q; want namespaces", cs.Detail["not_enforced"])
	}
}
