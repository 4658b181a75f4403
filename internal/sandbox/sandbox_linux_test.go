package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestMain lets the test binary act as the launcher and as helper parents
// (a Moat stand-in that gets kill -9, one that runs as another user).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case LauncherArg:
			MaybeRunLauncher()
		case "helper-parent":
			LauncherPath = os.Args[3]
			os.Exit(helperParent(os.Args[2]))
		case "helper-nproc":
			LauncherPath = os.Args[2]
			os.Exit(helperNProc())
		case "helper-isolation":
			LauncherPath = os.Args[2]
			os.Exit(helperIsolation())
		case "helper-as":
			LauncherPath = os.Args[2]
			os.Exit(helperAddressSpace())
		case "helper-runas":
			LauncherPath = os.Args[2]
			os.Exit(helperRunAs())
		}
	}
	LauncherPath = os.Args[0]
	if raceEnabled {
		// ThreadSanitizer needs terabytes of address space and cannot run
		// under the launcher's RLIMIT_AS: use a plain build of the launcher.
		dir, err := os.MkdirTemp("", "moat-launcher-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		LauncherPath = filepath.Join(dir, "launcher")
		build := exec.Command("go", "build", "-o", LauncherPath, "./testdata/launcher")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building the test launcher:", err)
			os.Exit(1)
		}
		_ = os.Chmod(dir, 0o755)
		code := m.Run()
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// syncBuffer is a goroutine-safe stderr sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t testing.TB, s *Spec) *Process {
	t.Helper()
	if s.Name == "" {
		s.Name = "test"
	}
	if s.Stderr == nil {
		s.Stderr = &syncBuffer{}
	}
	p, err := Start(context.Background(), s)
	if err != nil {
		t.Fatalf("Start(%s %q): %v", s.Command, s.Args, err)
	}
	t.Cleanup(func() { _ = p.Stop(time.Second) })
	return p
}

// run starts s, closes stdin, and returns stdout and the exit status.
func run(t *testing.T, s *Spec) (string, string) {
	t.Helper()
	p := start(t, s)
	_ = p.Stdin().Close()
	out, _ := io.ReadAll(p.Stdout())
	<-p.Done()
	exit, _ := p.ExitStatus()
	return string(out), exit
}

func TestEnvironmentIsClean(t *testing.T) {
	const canary = "canary-7f3a9b"
	t.Setenv("MOAT_PASSPHRASE", canary)
	t.Setenv("AWS_SECRET_ACCESS_KEY", canary)
	t.Setenv("FOO_TOKEN", "inherited")
	t.Setenv("FOOBAR", canary) // "FOO_*" must not match FOOBAR
	t.Setenv("EXACT", "inherited")
	t.Setenv("HOME", "/home/test")
	t.Setenv("LC_ALL", "C")
	t.Setenv("TERM", "xterm")
	t.Setenv("PATH", "/evil:"+os.Getenv("PATH"))

	out, exit := run(t, &Spec{
		Command:    "env",
		InheritEnv: []string{"FOO_*", "EXACT"},
		Env:        map[string]string{"SERVER_VAR": "configured", "HOME": "/srv/home"},
	})
	if exit != "exit status 0" {
		t.Fatalf("env: %s", exit)
	}
	if strings.Contains(out, canary) {
		t.Errorf("the canary secret reached the child:\n%s", out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	want := map[string]string{
		"PATH": CleanPath, "HOME": "/srv/home", "LC_ALL": "C",
		"FOO_TOKEN": "inherited", "EXACT": "inherited", "SERVER_VAR": "configured",
	}
	for _, n := range []string{"USER", "LOGNAME", "LANG", "TMPDIR"} {
		if v, ok := os.LookupEnv(n); ok {
			want[n] = v
		}
	}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "LC_") {
			want[k] = v
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("child environment (-want +got):\n%s", diff)
	}
}

func TestNoNewPrivsAndRlimitsReadBack(t *testing.T) {
	p := start(t, &Spec{
		Command: "/bin/sh",
		Args:    []string{"-c", "grep NoNewPrivs /proc/$$/status; cat /proc/$$/limits"},
		Limits: Limits{
			Memory: 300 << 20, CPU: 7 * time.Second, MaxFiles: 64, MaxFileSize: 5 << 20,
		},
	})
	out, _ := io.ReadAll(p.Stdout())
	<-p.Done()
	if p.TargetPid() == p.Pid() || p.TargetPid() == 0 {
		t.Errorf("TargetPid %d, launcher pid %d: want a distinct target", p.TargetPid(), p.Pid())
	}
	// A cgroup bounds the memory; RLIMIT_AS then only stops runaway
	// address space, with room for runtimes' reservations.
	as := uint64(300 << 20)
	if pr, _ := p.Enforced().Get(PCgroup); pr.Enforced {
		as = MinAddressSpace
	}
	for _, want := range []string{
		"NoNewPrivs:\t1",
		fmt.Sprintf("Max address space         %-21d%-21dbytes", as, as),
		"Max cpu time              7                    7                    seconds",
		"Max open files            64                   64                   files",
		fmt.Sprintf("Max file size             %-21d%-21dbytes", 5<<20, 5<<20),
		"Max core file size        0                    0                    bytes",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child's /proc status/limits lack %q:\n%s", want, out)
		}
	}
	for _, name := range []string{PRlimits, PNoNewPrivs, PTreeTeardown, PCleanEnv, PNoInheritedFD} {
		if pr, _ := p.Enforced().Get(name); !pr.Enforced {
			t.Errorf("Report says %s not enforced: %+v", name, pr)
		}
	}
}

func TestResourceLimitsStopRunawayChildren(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		spec      Spec
		wantExit  []string
		wantOut   string
		notOut    string
		wantError string // in stderr
	}{
		{
			// RLIMIT_AS refuses the allocation (MemoryError) where no
			// cgroup can be made; the cgroup's OOM killer stops it where
			// one bounds the memory.
			name: "memory hog is stopped at the memory limit",
			spec: Spec{Command: "python3", Args: []string{"-c", "b = bytearray(512 << 20); print('allocated')"},
				Limits: Limits{Memory: 256 << 20}},
			wantExit: []string{"exit status 1", "signal: killed"},
			notOut:   "allocated",
		},
		{
			name: "launcher and child survive a small memory limit",
			spec: Spec{Command: "/bin/sh", Args: []string{"-c", "echo fine"},
				Limits: Limits{Memory: 64 << 20}},
			wantExit: []string{"exit status 0"},
			wantOut:  "fine\n",
		},
		{
			name: "CPU spinner is killed at RLIMIT_CPU",
			spec: Spec{Command: "/bin/sh", Args: []string{"-c", "while :; do :; done"},
				Limits: Limits{CPU: time.Second}},
			wantExit: []string{"signal: CPU time limit exceeded", "signal: CPU time limit exceeded (core dumped)", "signal: killed"},
		},
		{
			name: "file writer stops at RLIMIT_FSIZE with EFBIG",
			spec: Spec{Command: "/bin/sh", Dir: dir,
				Args:   []string{"-c", "trap '' XFSZ; head -c 3000000 /dev/zero > big; echo rc=$?; wc -c < big"},
				Limits: Limits{MaxFileSize: 1 << 20}},
			wantExit:  []string{"exit status 0"},
			wantOut:   "rc=1\n1048576\n",
			wantError: "File too large",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stderr := &syncBuffer{}
			tc.spec.Stderr = stderr
			out, exit := run(t, &tc.spec)
			if !slices.Contains(tc.wantExit, exit) {
				t.Errorf("exit = %q, want one of %q (stderr %q)", exit, tc.wantExit, stderr)
			}
			if tc.wantOut != "" && out != tc.wantOut {
				t.Errorf("stdout = %q, want %q", out, tc.wantOut)
			}
			if tc.notOut != "" && strings.Contains(out, tc.notOut) {
				t.Errorf("stdout = %q: the limit did not hold", out)
			}
			if !strings.Contains(stderr.String(), tc.wantError) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.wantError)
			}
		})
	}
}

func listen(t *testing.T) (*net.TCPListener, uint16) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, uint16(l.Addr().(*net.TCPAddr).Port)
}

const connectScript = `
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", int(port)))
        print(port, "ok")
    except OSError as e:
        print(port, "errno", e.errno)
`

// TestLandlock: the fs and net allow-lists hold, with and without
// namespaces of the server's own (where /proc no longer shows Moat at all).
func TestLandlock(t *testing.T) {
	if landlockABI() < 4 {
		t.Skip("SKIPPED LOUDLY: this kernel's Landlock ABI is < 4; filesystem and network allow-lists cannot be tested here")
	}
	for _, ns := range namespaceModes() {
		t.Run(ns.name, func(t *testing.T) {
			outside := t.TempDir()
			secret := filepath.Join(outside, "secret")
			allowedDir := t.TempDir()
			allowed := filepath.Join(allowedDir, "allowed")
			for _, f := range []string{secret, allowed} {
				if err := os.WriteFile(f, []byte("content of "+filepath.Base(f)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, okPort := listen(t)
			_, deniedPort := listen(t)

			stderr := &syncBuffer{}
			script := fmt.Sprintf("cat %s; cat %s; cat /proc/%d/environ; echo x > %s/new; python3 -c '%s' %d %d",
				allowed, secret, os.Getpid(), outside, connectScript, okPort, deniedPort)
			p := start(t, &Spec{
				Command: "/bin/sh", Args: []string{"-c", script}, Stderr: stderr,
				Limits: Limits{Namespaces: &ns.on, FSRead: []string{allowedDir}, FSWrite: []string{}, NetConnect: []uint16{okPort}},
			})
			out, _ := io.ReadAll(p.Stdout())
			<-p.Done()

			wantOut := fmt.Sprintf("content of allowed\n%d ok\n%d errno %d\n", okPort, deniedPort, syscall.EACCES)
			if string(out) != wantOut {
				t.Errorf("stdout = %q, want %q (stderr %q)", out, wantOut, stderr)
			}
			moat := fmt.Sprintf("/proc/%d/environ: Permission denied", os.Getpid())
			if ns.on {
				moat = fmt.Sprintf("/proc/%d/environ: No such file or directory", os.Getpid())
			}
			for _, want := range []string{secret + ": Permission denied", moat, outside + "/new: Permission denied"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
			for _, name := range []string{PLandlockFS, PLandlockNet} {
				if pr, _ := p.Enforced().Get(name); !pr.Enforced {
					t.Errorf("Report: %s not enforced: %+v", name, pr)
				}
			}
		})
	}
}

func TestNetworkNamespaceHasOnlyLoopback(t *testing.T) {
	if pr, _ := Probe().Get(PNetNS); !pr.Enforced {
		t.Skipf("SKIPPED LOUDLY: %s", pr.Detail)
	}
	_, hostPort := listen(t)
	off := false
	stderr := &syncBuffer{}
	p := start(t, &Spec{
		Command: "/bin/sh", Stderr: stderr,
		Args:   []string{"-c", fmt.Sprintf("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; python3 -c '%s' %d", connectScript, hostPort)},
		Limits: Limits{Network: &off},
	})
	out, _ := io.ReadAll(p.Stdout())
	<-p.Done()
	want := fmt.Sprintf("lo\n%d errno %d\n", hostPort, syscall.ECONNREFUSED)
	if string(out) != want {
		t.Errorf("stdout = %q, want %q (stderr %q)", out, want, stderr)
	}
	if pr, _ := p.Enforced().Get(PNetNS); !pr.Enforced {
		t.Errorf("Report: network namespace not enforced: %+v", pr)
	}
}

func TestNoExtraFileDescriptorsInherited(t *testing.T) {
	// An fd without O_CLOEXEC in Moat must not reach the child.
	fd, err := syscall.Open("/etc/hostname", syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	out, _ := run(t, &Spec{Command: "/bin/sh", Args: []string{"-c", `ls /proc/$$/fd`}})
	if out != "0\n1\n2\n" {
		t.Errorf("child's fds = %q, want 0 1 2 only", out)
	}
}

// treeScript starts a tree that ignores SIGTERM: a background subshell with
// a sleeper, a sleeper that left the process group with setsid, and one more.
func treeScript(marker int) string {
	return fmt.Sprintf(`trap '' TERM; (sleep %d & setsid sleep %d & wait) & sleep %d & sleep 0.2; echo ready; wait`,
		marker, marker+1, marker+2)
}

// markedProcs lists pids whose command line is "sleep <marker..marker+2>".
func markedProcs(marker int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for i := range 3 {
			if string(b) == fmt.Sprintf("sleep\x00%d\x00", marker+i) {
				out = append(out, pid)
			}
		}
	}
	return out
}

func waitReady(t *testing.T, r io.Reader) {
	t.Helper()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child did not get ready: %q, %v", line, err)
	}
}

func TestStopKillsWholeTreeIgnoringSIGTERM(t *testing.T) {
	marker := 900000 + os.Getpid()%10000*3
	p := start(t, &Spec{Command: "/bin/sh", Args: []string{"-c", treeScript(marker)}})
	waitReady(t, p.Stdout())
	testutil.Eventually(t, "the 3 marked processes", func() bool { return len(markedProcs(marker)) == 3 })
	var wg sync.WaitGroup
	for range 3 { // concurrent, idempotent
		wg.Go(func() { _ = p.Stop(100 * time.Millisecond) })
	}
	wg.Wait()
	if got := markedProcs(marker); len(got) != 0 {
		t.Errorf("after Stop, processes of the tree remain: %v", got)
	}
	if exit, ru := p.ExitStatus(); exit != "signal: killed" || ru == nil {
		t.Errorf("ExitStatus = %q, %v; want signal: killed with rusage", exit, ru)
	}
}

// helperParent plays Moat: it starts the tree, says "ready" and waits to be
// killed with SIGKILL.
func helperParent(markerArg string) int {
	marker, _ := strconv.Atoi(markerArg)
	p, err := Start(context.Background(), &Spec{Name: "orphan-test", Command: "/bin/sh",
		Args: []string{"-c", treeScript(marker)}, Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	line, _ := bufio.NewReader(p.Stdout()).ReadString('\n')
	fmt.Print(line)
	<-p.Done()
	return 0
}

func TestKill9OfMoatLeavesNoProcess(t *testing.T) {
	marker := 800000 + os.Getpid()%10000*3
	// Also prepares this process's cgroup v2 layout, which the helper, its
	// child, then shares.
	withCgroup, _ := cgroupStatus()
	cmd := exec.Command(os.Args[0], "helper-parent", strconv.Itoa(marker), LauncherPath)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, stdout)
	// "ready" may come before every sleep of the tree runs (a busy VM).
	testutil.Eventually(t, "the 3 marked processes before kill -9", func() bool { return len(markedProcs(marker)) == 3 })
	if withCgroup && len(leftCgroups(t, cmd.Process.Pid)) == 0 {
		t.Errorf("before kill -9: the child has no cgroup, though this machine can make one")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	// The launcher notices at once (EOF on its control pipe); poll until it
	// has finished, bounded so that a leak fails instead of hanging.
	deadline := time.Now().Add(10 * time.Second)
	for len(markedProcs(marker)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := markedProcs(marker); len(got) != 0 {
		t.Errorf("after kill -9 of the parent, processes of the tree remain: %v", got)
	}
	// The launcher also removes the child's cgroup (if it had one).
	for len(leftCgroups(t, cmd.Process.Pid)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := leftCgroups(t, cmd.Process.Pid); len(got) != 0 {
		t.Errorf("after kill -9 of the parent, its child's cgroups remain: %v", got)
	}
}

// helperNProc runs as an unprivileged user: it starts a bounded fork bomb
// with MaxProcs and prints what happened.
func helperNProc() int {
	stderr := &syncBuffer{}
	p, err := Start(context.Background(), &Spec{Name: "forkbomb", Command: "/bin/sh", Stderr: stderr,
		Args:   []string{"-c", "i=0; while [ $i -lt 300 ]; do sleep 30 & i=$((i+1)); done; echo all-forked"},
		Limits: Limits{MaxProcs: 60}})
	if err != nil {
		fmt.Println("start:", err)
		return 1
	}
	out, _ := io.ReadAll(p.Stdout())
	_ = p.Stop(time.Second)
	exit, _ := p.ExitStatus()
	pr, _ := p.Enforced().Get(PNProc)
	fmt.Printf("stdout=%q exit=%q nproc_enforced=%v stderr_has_cannot_fork=%v\n",
		out, exit, pr.Enforced, strings.Contains(stderr.String(), "Cannot fork"))
	return 0
}

// helperAddressSpace prints the RLIMIT_AS of a child with a memory limit
// set in the config and of one with the default, and whether a cgroup
// holds them.
func helperAddressSpace() int {
	for _, mem := range []uint64{300 << 20, 0} {
		p, err := Start(context.Background(), &Spec{Name: "as", Command: "/bin/sh", Stderr: &syncBuffer{},
			Args: []string{"-c", "grep 'Max address space' /proc/$$/limits"}, Limits: Limits{Memory: mem}})
		if err != nil {
			fmt.Println("start:", err)
			return 1
		}
		out, _ := io.ReadAll(p.Stdout())
		<-p.Done()
		cg, _ := p.Enforced().Get(PCgroup)
		fmt.Printf("memory=%d cgroup=%v %s", mem, cg.Enforced, strings.Join(strings.Fields(string(out)), " "))
		fmt.Println()
	}
	return 0
}

// TestAddressSpaceWithoutACgroup: where no cgroup can be made (here as
// nobody), a memory limit set in the config is the RLIMIT_AS itself, and
// the default leaves MinAddressSpace.
func TestAddressSpaceWithoutACgroup(t *testing.T) {
	out := asNobody(t, "helper-as")
	want := fmt.Sprintf("memory=%d cgroup=false Max address space %d %d bytes\nmemory=0 cgroup=false Max address space %d %d bytes\n",
		300<<20, 300<<20, 300<<20, MinAddressSpace, MinAddressSpace)
	if out != want {
		t.Errorf("RLIMIT_AS without a cgroup:\n got %s\nwant %s", out, want)
	}
}

func TestForkBombContainedByNProc(t *testing.T) {
	// root is exempt from RLIMIT_NPROC, so the bomb runs as nobody.
	out := asNobody(t, "helper-nproc")
	want := "stdout=\"\" exit=\"exit status 2\" nproc_enforced=true stderr_has_cannot_fork=true\n"
	if out != want {
		t.Errorf("fork bomb as nobody:\n got %s\nwant %s", out, want)
	}
	// Moat (this process) still works after the bomb.
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Errorf("the test process cannot start a process after the bomb: %v", err)
	}
}

// asNobody runs this test binary as user nobody in helper mode, from a copy
// that nobody can execute, with its launcher, and returns its stdout. It
// skips the test unless this process is root (which can switch users).
func asNobody(t *testing.T, mode string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: runs as user nobody, which needs root to switch users")
	}
	dir, err := os.MkdirTemp("", "moat-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	copyExec := func(from, name string) string {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dir, name)
		if err := os.WriteFile(to, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return to
	}
	bin := copyExec(os.Args[0], "sandbox.test")
	launcher := bin
	if LauncherPath != os.Args[0] {
		launcher = copyExec(LauncherPath, "launcher")
	}
	cmd := exec.Command(bin, mode, launcher)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + CleanPath, "TMPDIR=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := os.Chmod(dir, 0o1777); err != nil { // nobody creates its private dirs here
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s as nobody: %v\n%s%s", mode, err, out, tail(stderr.String(), 4096))
	}
	return string(out)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func TestResolve(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // the caller's PATH must not matter
	goodDir := t.TempDir()
	good := filepath.Join(goodDir, "tool")
	wwDir := filepath.Join(t.TempDir(), "ww")
	for _, d := range []string{wwDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	ww := filepath.Join(wwDir, "tool")
	for _, f := range []string{good, ww} {
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inTmp, err := os.CreateTemp("", "moat-resolve-")
	if err != nil {
		t.Fatal(err)
	}
	inTmp.Close()
	defer os.Remove(inTmp.Name())
	_ = os.Chmod(inTmp.Name(), 0o755)

	tests := []struct {
		command string
		env     map[string]string
		want    string
		wantErr string
	}{
		{command: "env", want: "/usr/bin/env"},
		{command: "tool", env: map[string]string{"PATH": "relative:" + goodDir}, want: good},
		{command: good, want: good},
		{command: "tool", env: map[string]string{"PATH": wwDir}, wantErr: wwDir + " is world-writable"},
		{command: ww, wantErr: "is world-writable"},
		{command: inTmp.Name(), wantErr: "/tmp is world-writable"},
		{command: "no-such-tool-xyz", wantErr: "not found in PATH"},
	}
	for _, tc := range tests {
		got, err := Resolve(tc.command, tc.env)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Resolve(%q, %v) = %q, %v; want error containing %q", tc.command, tc.env, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q, %v) = %q, %v; want %q", tc.command, tc.env, got, err, tc.want)
		}
	}
}

func TestStartNeedsStderr(t *testing.T) {
	_, err := Start(context.Background(), &Spec{Name: "x", Command: "/bin/true"})
	if err == nil || !strings.Contains(err.Error(), "Stderr is nil") {
		t.Errorf("Start without Stderr: %v", err)
	}
}

func TestPrivateWorkingDirIsRemoved(t *testing.T) {
	p := start(t, &Spec{Command: "/bin/sh", Args: []string{"-c", "pwd; ls -A; stat -c %a ."}})
	out, _ := io.ReadAll(p.Stdout())
	_ = p.Stop(time.Second)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[1] != "700" {
		t.Fatalf("private dir listing = %q, want an empty 0700 dir", out)
	}
	if _, err := os.Stat(lines[0]); !os.IsNotExist(err) {
		t.Errorf("private dir %s still exists after Stop: %v", lines[0], err)
	}
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// idleLauncher waits for the prestarted launcher and returns its pid.
func idleLauncher(t testing.TB) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		warm.waitFilled()
		warm.mu.Lock()
		idle := warm.idle
		warm.mu.Unlock()
		if idle != nil {
			return idle.cmd.Process.Pid
		}
	}
	t.Fatal("no prestarted launcher 10s after KeepWarm")
	return 0
}

func TestPrestartedLauncher(t *testing.T) {
	KeepWarm()
	t.Cleanup(CloseIdle)
	warm.mu.Lock()
	none := warm.idle == nil && !warm.filling
	warm.mu.Unlock()
	if !none {
		t.Fatal("KeepWarm prestarted a launcher before any server started")
	}
	first := start(t, &Spec{Command: "/bin/true"})
	<-first.Done()

	// A prestarted launcher serves a child with the same protections as a
	// fresh one: it learns the server's configuration only when taken.
	idle := idleLauncher(t)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "canary-4410")
	p := start(t, &Spec{
		Command: "/bin/sh",
		Args:    []string{"-c", "env; grep NoNewPrivs /proc/$$/status; cat /proc/$$/limits"},
		Env:     map[string]string{"SERVER_VAR": "configured"},
		Limits:  Limits{Memory: 300 << 20, MaxFiles: 64},
	})
	out, _ := io.ReadAll(p.Stdout())
	<-p.Done()
	if p.Pid() != idle {
		t.Errorf("the child's launcher is %d, want the prestarted %d", p.Pid(), idle)
	}
	as := uint64(300 << 20)
	if pr, _ := p.Enforced().Get(PCgroup); pr.Enforced {
		as = MinAddressSpace // the cgroup bounds the memory
	}
	for _, want := range []string{
		"SERVER_VAR=configured", "NoNewPrivs:\t1",
		fmt.Sprintf("Max address space         %-21d%-21dbytes", as, as),
		"Max open files            64                   64                   files",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "canary-4410") {
		t.Errorf("the canary secret reached the child:\n%s", out)
	}
	if exit, _ := p.ExitStatus(); exit != "exit status 0" {
		t.Errorf("ExitStatus = %q", exit)
	}

	// The pool refills; a launcher that died while idle is replaced by a
	// fresh one, and the start still succeeds.
	next := idleLauncher(t)
	if next == idle {
		t.Fatalf("the pool did not start a new launcher (still %d)", idle)
	}
	if err := syscall.Kill(next, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out2, exit := run(t, &Spec{Command: "/bin/echo", Args: []string{"after the idle launcher died"}})
	if out2 != "after the idle launcher died\n" || exit != "exit status 0" {
		t.Errorf("start after the idle launcher died: %q, %s", out2, exit)
	}

	// CloseIdle ends the idle launcher.
	last := idleLauncher(t)
	CloseIdle()
	if procAlive(last) {
		t.Errorf("idle launcher %d still alive after CloseIdle", last)
	}
}

// BenchmarkStart measures a child's start-up: from the start until the
// target's first line of output, against exec.Cmd doing the same, so the
// difference is what the sandbox adds to every start. Tearing the child
// down is not timed.
func BenchmarkStart(b *testing.B) {
	// The real moat binary, not this test binary, is the launcher: its
	// package init is part of what a cold start costs.
	LauncherPath = testutil.BuildMoat(b)
	b.Cleanup(func() { LauncherPath = os.Args[0] })
	// Start warns about each protection it cannot enforce, every time.
	logger := slog.Default()
	slog.SetDefault(slog.New(slog.DiscardHandler))
	b.Cleanup(func() { slog.SetDefault(logger) })
	firstLine := func(b *testing.B, r io.Reader) {
		if line, err := bufio.NewReader(r).ReadString('\n'); line != "up\n" {
			b.Fatalf("first line %q, %v", line, err)
		}
	}
	b.Run("exec.Cmd", func(b *testing.B) {
		for range b.N {
			cmd := exec.Command("/bin/echo", "up")
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			firstLine(b, out)
			b.StopTimer()
			_ = cmd.Wait()
			b.StartTimer()
		}
	})
	cgroups := []string{"no-cgroup"}
	if ok, _ := cgroupStatus(); ok {
		cgroups = append(cgroups, "cgroup")
	}
	for _, cg := range cgroups {
		for _, prestarted := range []bool{false, true} {
			for _, ns := range namespaceModes() {
				// cold: a server's first start, or several at once, each with a
				// new launcher. prestarted: serve mode, a restart or a reload,
				// with a launcher ready.
				name := "cold/" + cg + "/" + ns.name
				if prestarted {
					name = "prestarted/" + cg + "/" + ns.name
				}
				b.Run(name, func(b *testing.B) {
					if cg == "no-cgroup" {
						withoutCgroups(b)
					}
					if prestarted {
						KeepWarm()
						defer CloseIdle()
						// The pool fills once a first child has started.
						p, err := Start(context.Background(), &Spec{Name: "bench", Command: "/bin/true", Stderr: io.Discard})
						if err != nil {
							b.Fatal(err)
						}
						<-p.Done()
					}
					for range b.N {
						if prestarted {
							b.StopTimer()
							idleLauncher(b)
							b.StartTimer()
						}
						p, err := Start(context.Background(), &Spec{Name: "bench", Command: "/bin/echo", Args: []string{"up"}, Stderr: io.Discard, Limits: Limits{Namespaces: &ns.on}})
						if err != nil {
							b.Fatal(err)
						}
						firstLine(b, p.Stdout())
						b.StopTimer()
						<-p.Done()
						b.StartTimer()
					}
				})
			}
		}
	}
}

type namespaceMode struct {
	name string
	on   bool
}

// namespaceModes are the settings of sandbox.namespaces this machine can
// run: shared always, own where the kernel allows them.
func namespaceModes() []namespaceMode {
	modes := []namespaceMode{{"shared-ns", false}}
	if ok, _ := Namespaces(); ok {
		modes = append(modes, namespaceMode{"own-ns", true})
	}
	return modes
}

// BenchmarkServerMemory reports what one running server's supervision costs
// in resident memory (the launcher's VmRSS, in KiB) with and without
// namespaces of its own.
func BenchmarkServerMemory(b *testing.B) {
	LauncherPath = testutil.BuildMoat(b)
	b.Cleanup(func() { LauncherPath = os.Args[0] })
	rss := func(pid int) float64 {
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		for line := range strings.Lines(string(st)) {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				return float64(n)
			}
		}
		return 0
	}
	for _, ns := range namespaceModes() {
		b.Run(ns.name, func(b *testing.B) {
			var launcher float64
			for range b.N {
				p, err := Start(context.Background(), &Spec{Name: "bench", Command: "/bin/sleep", Args: []string{"60"}, Stderr: io.Discard, Limits: Limits{Namespaces: &ns.on}})
				if err != nil {
					b.Fatal(err)
				}
				launcher = rss(p.Pid())
				_ = p.Stop(time.Second)
			}
			b.ReportMetric(launcher, "launcher-KiB")
		})
	}
}

// TestNodeFetchUnderTheDefaultLimits: a Node server that fetches twice
// (Node's fetch parses HTTP with WebAssembly, for which V8 reserves about
// 10 GiB of address space) works under the default limits. With an
// RLIMIT_AS of 2 GiB its second fetch crashed the process (server-everything's
// gzip-file-as-resource, seen through the TypeScript SDK's tests).
func TestNodeFetchUnderTheDefaultLimits(t *testing.T) {
	testutil.RequireNode(t)
	script := `for (let i = 0; i < 3; i++) { const r = await fetch("data:text/plain,hi"); console.log(await r.text()); }`
	stderr := &syncBuffer{}
	out, exit := run(t, &Spec{Command: "node", Args: []string{"--input-type=module", "-e", script}, Stderr: stderr})
	if exit != "exit status 0" || out != "hi\nhi\nhi\n" {
		t.Fatalf("node fetching three times: %s, stdout %q, stderr (tail) %q", exit, out, tail(stderr.String(), 600))
	}
}
