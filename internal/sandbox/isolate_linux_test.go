package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spyScript runs as a second server beside a victim. Each line it prints
// that starts with LEAK is something one server reached of another, of the
// launcher, or of what Moat hides; it ends with DONE.
const spyScript = `
VICTIM=$1 HID_DIR=$2 HID_FILE=$3 PRIV=$4
leak() { echo "LEAK: $*"; }
cat /proc/$VICTIM/environ 2>/dev/null | tr '\0' '\n' | grep -q CANARY && leak "the other server's environment"
cat /proc/$VICTIM/cmdline >/dev/null 2>&1 && leak "the other server's command line"
ls /proc/$VICTIM/fd >/dev/null 2>&1 && leak "the other server's file descriptors"
ls /proc/$VICTIM/cwd/ >/dev/null 2>&1 && leak "the other server's working directory"
kill -0 $VICTIM 2>/dev/null && leak "a signal to the other server"
n=$(ls /proc | grep -c '^[0-9]'); [ "$n" -gt 6 ] && leak "$n processes in /proc"
[ -n "$(ls -A "$HID_DIR" 2>/dev/null)" ] && leak "the hidden directory lists $(ls -A "$HID_DIR")"
[ -s "$HID_FILE" ] && leak "the hidden file has content"
cat /proc/1/environ >/dev/null 2>&1 && leak "the launcher's environment"
readlink /proc/1/fd/0 >/dev/null 2>&1 && leak "the launcher's file descriptors"
(exec 9</proc/1/mem) 2>/dev/null && leak "the launcher's memory"
grep -q '^CapEff:[[:space:]]*0*$' /proc/self/status || leak "capabilities: $(grep Cap /proc/self/status | tr '\n' ' ')"
umount "$HID_DIR" 2>/dev/null && leak "umount uncovered the hidden directory"
others=$(ls -A "$PRIV" | grep -vx "$(basename "$PWD")")
[ -n "$others" ] && leak "other servers' private directories: $others"
echo mine > ./mine || leak "cannot write its own working directory"
echo DONE
`

// isolation starts a victim (a long sleep with a canary in its environment)
// and a spy running spyScript, and returns the victim's target pid and the
// spy's output.
func isolation() (victimPid int, out string, err error) {
	base, err := os.MkdirTemp("", "moat-hide-")
	if err != nil {
		return 0, "", err
	}
	defer os.RemoveAll(base)
	hidDir, hidFile := filepath.Join(base, "dir"), filepath.Join(base, "file")
	if err := os.Mkdir(hidDir, 0o700); err != nil {
		return 0, "", err
	}
	for _, f := range []string{filepath.Join(hidDir, "secret"), hidFile} {
		if err := os.WriteFile(f, []byte("s3cret"), 0o600); err != nil {
			return 0, "", err
		}
	}
	hide := []string{hidDir, hidFile}
	ctx := context.Background()
	victim, err := Start(ctx, &Spec{Name: "victim", Command: "/bin/sh", Args: []string{"-c", "exec sleep 60"},
		Env: map[string]string{"CANARY": "canary-7f3a"}, Stderr: io.Discard, Hide: hide})
	if err != nil {
		return 0, "", err
	}
	defer victim.Stop(time.Second)
	// The paths go in argv: a path the server's environment names is
	// left visible to it.
	spy, err := Start(ctx, &Spec{Name: "spy", Command: "/bin/sh", Stderr: io.Discard, Hide: hide,
		Args: []string{"-c", spyScript, "spy", strconv.Itoa(victim.TargetPid()), hidDir, hidFile, privateRoot()}})
	if err != nil {
		return 0, "", err
	}
	defer spy.Stop(time.Second)
	b, err := io.ReadAll(spy.Stdout())
	return victim.TargetPid(), string(b), err
}

// helperIsolation runs isolation as an unprivileged user and prints the
// spy's output.
func helperIsolation() int {
	_, out, err := isolation()
	if err != nil {
		fmt.Println("isolation:", err)
		return 1
	}
	fmt.Print(out)
	return 0
}

// checkSpy fails t for every LEAK line, or if the spy did not finish.
func checkSpy(t *testing.T, out string) {
	t.Helper()
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, "LEAK") {
			t.Errorf("a server reached %s", strings.TrimSpace(strings.TrimPrefix(line, "LEAK: ")))
		}
	}
	if !strings.Contains(out, "DONE") {
		t.Errorf("the spy did not finish; its output:\n%s", tail(out, 4096))
	}
}

// TestServersSeeOnlyTheirOwnWorld: two servers started by the sandbox, each
// in its own user, PID, mount and IPC namespaces. The spy cannot read the
// victim's environment, command line, file descriptors or working
// directory, cannot signal it, sees only its own processes, sees the hidden
// paths empty, cannot read its launcher, has no capability to uncover what
// is hidden, sees no other private directory, and can still write its own.
// TargetPid is the victim's pid as Moat sees it.
//
// SECURITY.md, Child processes, "Isolation between servers".
func TestServersSeeOnlyTheirOwnWorld(t *testing.T) {
	if ok, why := Namespaces(); !ok {
		t.Skipf("SKIPPED LOUDLY: this machine gives servers no namespaces of their own: %s", why)
	}
	victim, out, err := isolation()
	if err != nil {
		t.Fatal(err)
	}
	checkSpy(t, out)
	if victim <= 0 {
		t.Errorf("TargetPid of the victim is %d; want its pid as Moat sees it", victim)
	}
}

// TestServersSeeOnlyTheirOwnWorldAsAUser: the same as an unprivileged user,
// who needs unprivileged user namespaces.
func TestServersSeeOnlyTheirOwnWorldAsAUser(t *testing.T) {
	if ok, why := Namespaces(); !ok {
		t.Skipf("SKIPPED LOUDLY: this machine gives servers no namespaces of their own: %s", why)
	}
	checkSpy(t, asNobody(t, "helper-isolation"))
}

// TestTargetPidIsTheHostPid: with namespaces, TargetPid is the pid in
// Moat's view, whose /proc entry holds the target's environment.
func TestTargetPidIsTheHostPid(t *testing.T) {
	if ok, why := Namespaces(); !ok {
		t.Skipf("SKIPPED LOUDLY: this machine gives servers no namespaces of their own: %s", why)
	}
	// The target is sleep itself: a shell exec'ing it would leave a window
	// in which /proc/PID/environ reads empty (the kernel sets a new
	// program's environment late in execve), and the test would race it.
	p := start(t, &Spec{Command: "sleep", Args: []string{"60"}, Env: map[string]string{"CANARY": "canary-pid"}})
	env, err := os.ReadFile("/proc/" + strconv.Itoa(p.TargetPid()) + "/environ")
	if err != nil || !strings.Contains(string(env), "CANARY=canary-pid") {
		t.Errorf("/proc/%d/environ: %v; want the target's environment", p.TargetPid(), err)
	}
	if pr, _ := p.Enforced().Get(PNamespaces); !pr.Enforced {
		t.Errorf("report: namespaces not enforced (%s)", pr.Detail)
	}
}

// TestNamespacesOptOut: sandbox.namespaces false starts the server in
// Moat's namespaces and says so in the report.
func TestNamespacesOptOut(t *testing.T) {
	off := false
	p := start(t, &Spec{Command: "/bin/sh", Args: []string{"-c", "ls /proc | grep -c '^[0-9]'"}, Limits: Limits{Namespaces: &off}})
	out, _ := io.ReadAll(p.Stdout())
	if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); n < 5 {
		t.Errorf("with namespaces off the server sees %d processes; want the host's", n)
	}
	if pr, _ := p.Enforced().Get(PNamespaces); pr.Enforced || !strings.Contains(pr.Detail, "not asked") {
		t.Errorf("report: %+v; want not enforced, not asked", pr)
	}
}

func TestHideList(t *testing.T) {
	hide := []string{"/home/u/.config/moat/", "/home/u/.config/moat/moat.json", "/run/user/1", "/srv/work", "relative", "/home/u/.local/state/moat"}
	need := []string{"/srv/work/project", "/run/user/1/keyring/ssh"}
	out, kept := hideList(hide, need)
	if got, want := strings.Join(out, " "), "/home/u/.config/moat /home/u/.local/state/moat"; got != want {
		t.Errorf("hidden %q; want %q", got, want)
	}
	if got, want := strings.Join(kept, " "), "/run/user/1 /srv/work"; got != want {
		t.Errorf("kept %q; want %q", got, want)
	}
}

// TestRunAs: as root, a server with RunAs runs as that user with no
// supplementary groups, that user's HOME and USER, a private directory it
// owns, and no access to root's files; with and without namespaces.
//
// SECURITY.md, Child processes, "Isolation between servers" (run_as).
func TestRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: run_as needs root")
	}
	secret := filepath.Join(t.TempDir(), "root-only")
	if err := os.WriteFile(secret, []byte("root's"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `id -u; id -G; echo "$HOME $USER"; echo x > ./mine && echo wrote; cat "$1" 2>/dev/null || echo denied`
	for _, ns := range namespaceModes() {
		t.Run(ns.name, func(t *testing.T) {
			p := start(t, &Spec{Command: "/bin/sh", Args: []string{"-c", script, "sh", secret}, RunAs: "nobody",
				Limits: Limits{Namespaces: &ns.on}})
			out, _ := io.ReadAll(p.Stdout())
			if want := "65534\n65534\n/nonexistent nobody\nwrote\ndenied\n"; string(out) != want {
				t.Errorf("as nobody:\n got %q\nwant %q", out, want)
			}
			if pr, _ := p.Enforced().Get(PRunAs); !pr.Enforced {
				t.Errorf("report: %+v; want run_as enforced", pr)
			}
		})
	}
	if _, err := Start(context.Background(), &Spec{Command: "/bin/true", RunAs: "no-such-user-moat", Stderr: io.Discard}); err == nil || !strings.Contains(err.Error(), `no user "no-such-user-moat" on this machine`) {
		t.Errorf("unknown user: %v", err)
	}
}

// TestRunAsNeedsRoot: RunAs from an unprivileged moat is refused with the
// fix in the error.
func TestRunAsNeedsRoot(t *testing.T) {
	if out := asNobody(t, "helper-runas"); !strings.Contains(out, `run_as "1234" needs moat to run as root`) {
		t.Errorf("run_as as nobody: %s", out)
	}
}

func helperRunAs() int {
	_, err := Start(context.Background(), &Spec{Command: "/bin/true", RunAs: "1234", Stderr: io.Discard})
	fmt.Println(err)
	return 0
}
