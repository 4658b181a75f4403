package sandbox

import (
	"context"
	"errors"
	"flag"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatmcp/moat/internal/testutil"
)

// wantCgroup is set by TestCgroupV2OnARealKernel for the run inside its
// virtual machine: the cgroup tests must then use this version, not skip.
var wantCgroup = flag.Int("want-cgroup", 0, "fail unless per-server cgroups of this version are used")

// needCgroups skips (loudly) when this machine cannot give a child a
// cgroup, and returns the version Start will use.
func needCgroups(t *testing.T) int {
	t.Helper()
	ok, detail := cgroupStatus()
	if !ok {
		if *wantCgroup != 0 {
			t.Fatalf("no usable per-server cgroup (%s), want cgroup v%d", detail, *wantCgroup)
		}
		t.Skipf("SKIPPED LOUDLY: no usable per-server cgroup here (%s)", detail)
	}
	h, err := findHierarchies()
	if err != nil {
		t.Fatal(err)
	}
	version := 1
	if h.v2 != "" {
		if ctrl, _ := os.ReadFile(filepath.Join(h.v2, "cgroup.controllers")); hasControllers(string(ctrl)) {
			version = 2
		}
	}
	if *wantCgroup != 0 && version != *wantCgroup {
		t.Fatalf("per-server cgroups use v%d here, want v%d", version, *wantCgroup)
	}
	return version
}

// withSystemdUser runs its arguments as uid 1000 under a systemd user
// manager, in a D-Bus session, as in a desktop session. It runs as root: a
// systemd manager wants /run/systemd/system, and root delegates the cgroup.
const withSystemdUser = `#!/bin/sh
set -eu
mkdir -p /run/systemd/system
cg=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)
chown 1000:1000 "$cg" "$cg/cgroup.procs" "$cg/cgroup.subtree_control" "$cg/cgroup.threads"
export XDG_RUNTIME_DIR=/tmp/run-1000
mkdir -m 700 "$XDG_RUNTIME_DIR"
chown 1000:1000 "$XDG_RUNTIME_DIR"
exec setpriv --reuid 1000 --regid 1000 --clear-groups dbus-run-session -- sh -c '
	/lib/systemd/systemd --user >/tmp/systemd-user.log 2>&1 &
	for i in $(seq 100); do
		case $(systemctl --user is-system-running 2>/dev/null) in running|degraded) break ;; esac
		sleep 0.1
	done
	"$@" && exit 0
	rc=$?
	echo "systemd --user log:"; cat /tmp/systemd-user.log
	exit $rc' sh "$@"
`

// TestCgroupV2OnARealKernel runs the cgroup tests of this package in a
// virtual machine whose only cgroup hierarchy is v2 (this host may be v1 or
// hybrid): as root; as an unprivileged user in a delegated subtree, the way
// systemd's Delegate=yes gives one; and as a user whose systemd gives Moat
// such a subtree on request.
func TestCgroupV2OnARealKernel(t *testing.T) {
	if *wantCgroup != 0 {
		t.Skip("already inside the virtual machine")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sandbox.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the test binary: %v\n%s", err, out)
	}
	inside := []string{
		"TestForkBombContainedByPidsMax", "TestCgroupMemoryLimitsTheWholeTree",
		"TestTargetIsInItsCgroupFromItsFirstInstruction", "TestProbeReportsCgroups",
		"TestKill9OfMoatLeavesNoProcess", "TestPrestartedLauncher",
		// Namespaces on Debian's kernel, as root and as a user.
		"TestServersSeeOnlyTheirOwnWorld", "TestTargetPidIsTheHostPid",
	}
	// systemd: as root, the VM's cgroup is delegated to uid 1000, which
	// runs a systemd user manager (what a desktop session has) and then
	// the tests, in that cgroup with other processes: Moat must ask
	// systemd for a delegated scope of its own.
	systemd := filepath.Join(dir, "with-systemd-user.sh")
	if err := os.WriteFile(systemd, []byte(withSystemdUser), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		uid     int
		wrap    []string
		more    []string
		cgroups string // a regexp the target's cgroup must match
	}{
		{"root", 0, nil, []string{"TestStrictMaxProcsAsRoot", "TestRunAs"}, `0::/test/moat-children/cat-\d+-\d+`},
		{"delegated to uid 1000", 1000, nil, nil, `0::/user\.slice/deleg/moat-children/cat-\d+-\d+`},
		{"uid 1000 under systemd --user", 0, []string{systemd}, nil, `0::/test/app\.slice/moat-\d+\.scope/moat-children/cat-\d+-\d+`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tests := append(append([]string{}, inside...), tc.more...)
			argv := append(append([]string{}, tc.wrap...), bin, "-want-cgroup=2", "-test.v", "-test.count=1",
				"-test.run", "^("+strings.Join(tests, "|")+")$")
			out, exit := testutil.RunInVM(t, testutil.VM{UID: tc.uid, Copy: []string{bin}}, argv...)
			if !regexp.MustCompile(tc.cgroups).MatchString(out) {
				t.Errorf("the target's cgroup does not match %s:\n%s", tc.cgroups, out)
			}
			if exit != 0 {
				t.Errorf("the cgroup tests failed in the VM (exit %d):\n%s", exit, out)
			}
			for _, name := range tests {
				if !strings.Contains(out, "--- PASS: "+name+" ") {
					t.Errorf("%s did not pass in the VM:\n%s", name, out)
				}
			}
			if strings.Contains(out, "SKIP") {
				t.Errorf("a test skipped in the VM:\n%s", out)
			}
		})
	}
}

// TestForkBombContainedByPidsMax runs a bounded fork bomb as root, whom
// RLIMIT_NPROC does not limit: pids.max stops it at exactly MaxProcs
// processes, and the cgroup is gone once the child is reaped.
func TestForkBombContainedByPidsMax(t *testing.T) {
	version := needCgroups(t)
	stderr := &syncBuffer{}
	// Every successful fork prints the number of sleeps running so far;
	// the shell itself is the first process of the cgroup.
	p := start(t, &Spec{Name: "fork/bomb", Command: "/bin/sh", Stderr: stderr,
		Args:   []string{"-c", "i=0; while [ $i -lt 300 ]; do sleep 30 & i=$((i+1)); echo $i; done; echo all-forked"},
		Limits: Limits{MaxProcs: 40}})
	pr, _ := p.Enforced().Get(PCgroup)
	if !pr.Enforced || !strings.HasPrefix(pr.Detail, "cgroup v"+strconv.Itoa(version)+" ") || !strings.Contains(pr.Detail, "pids.max=40") {
		t.Errorf("Report cgroup = %+v, want enforced, cgroup v%d, pids.max=40", pr, version)
	}
	dirs := append([]string{}, p.cgroup.dirs...)
	out, _ := io.ReadAll(p.Stdout())
	<-p.Done()
	exit, _ := p.ExitStatus()
	lines := strings.Fields(string(out))
	if len(lines) == 0 || lines[len(lines)-1] != "39" || exit != "exit status 2" || !strings.Contains(stderr.String(), "Cannot fork") {
		last := ""
		if len(lines) > 0 {
			last = lines[len(lines)-1]
		}
		t.Errorf("fork bomb under pids.max=40: last count %q (want 39: the shell + 39 sleeps), exit %q (want exit status 2), stderr %q (want Cannot fork)", last, exit, stderr)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s still exists after the child was reaped (stat: %v)", d, err)
		}
	}
	// Moat (this process) still works after the bomb.
	if _, exit := run(t, &Spec{Command: "/bin/true"}); exit != "exit status 0" {
		t.Errorf("a child started after the bomb: %s", exit)
	}
}

// TestCgroupMemoryLimitsTheWholeTree: the cgroup bounds a server's
// processes together. Three processes of about 50 MiB resident each, every
// one far inside its RLIMIT_AS, cannot all live under a 100 MiB cgroup:
// the kernel's OOM killer ends at least one.
func TestCgroupMemoryLimitsTheWholeTree(t *testing.T) {
	needCgroups(t)
	const hog = `import time; b = b'x' * (40 << 20); time.sleep(3)`
	stderr := &syncBuffer{}
	out, exit := run(t, &Spec{Command: "/bin/sh", Stderr: stderr,
		Args:   []string{"-c", `for i in 1 2 3; do (python3 -c "` + hog + `"; echo "rc=$?") & done; wait`},
		Limits: Limits{Memory: 100 << 20}})
	if exit != "exit status 0" || !strings.Contains(out, "rc=137") || strings.Count(out, "rc=") != 3 {
		t.Errorf("three 50 MiB processes under a 100 MiB cgroup: stdout %q exit %q, want three rc= lines, one of them rc=137 (SIGKILL by the OOM killer); stderr %q", out, exit, stderr)
	}
	if strings.Contains(stderr.String(), "MemoryError") {
		t.Errorf("RLIMIT_AS stopped a hog (stderr %q); the test must show the cgroup limit, not RLIMIT_AS", stderr)
	}
}

// TestTargetIsInItsCgroupFromItsFirstInstruction: cat, exec'd directly as
// the target, reads its own cgroup membership on its first read; also when
// the launcher runs in a new user+network namespace. On cgroup v2 the kernel
// creates the target in its cgroup.
func TestTargetIsInItsCgroupFromItsFirstInstruction(t *testing.T) {
	needCgroups(t)
	noNet := false
	for _, tc := range []struct {
		name    string
		network *bool
	}{{"host network", nil}, {"network namespace", &noNet}} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, &Spec{Name: "cat", Command: "/bin/cat", Args: []string{"/proc/self/cgroup"},
				Limits: Limits{Network: tc.network}})
			pr, _ := p.Enforced().Get(PCgroup)
			if !pr.Enforced {
				t.Errorf("Report cgroup = %+v, want enforced", pr)
			}
			// v2 (Linux >= 5.7): created in its cgroup, never migrated.
			if p.cgroup.version == 2 && !strings.HasSuffix(pr.Detail, "; "+clonedIntoCgroup) {
				t.Errorf("Report cgroup = %+v, want the target created in its cgroup (CLONE_INTO_CGROUP)", pr)
			}
			leaf := filepath.Base(p.cgroup.dirs[0])
			out, _ := io.ReadAll(p.Stdout())
			<-p.Done()
			t.Logf("the target's /proc/self/cgroup: %q", out)
			var in []string
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.HasSuffix(line, "/"+leaf) {
					in = append(in, strings.SplitN(line, ":", 3)[1])
				}
			}
			want := []string{"pids", "memory"}
			if p.cgroup.version == 2 {
				want = []string{""}
			}
			if !cmp.Equal(slices.Sorted(slices.Values(in)), slices.Sorted(slices.Values(want))) {
				t.Errorf("the target's /proc/self/cgroup:\n%s\nhierarchies with %s: %q, want %q", out, leaf, in, want)
			}
		})
	}
}

// TestProbeReportsCgroups: moat doctor says per-server cgroups work here,
// and which version.
func TestProbeReportsCgroups(t *testing.T) {
	version := needCgroups(t)
	pr, _ := Probe().Get(PCgroup)
	if !pr.Enforced || !strings.HasPrefix(pr.Detail, "cgroup v"+strconv.Itoa(version)+" ") {
		t.Errorf("Probe cgroup = %+v, want enforced, cgroup v%d", pr, version)
	}
}

// leftCgroups lists the cgroup directories, in the hierarchies this
// process belongs to, created by the Moat process moatPid.
func leftCgroups(t *testing.T, moatPid int) []string {
	t.Helper()
	h, err := findHierarchies()
	if err != nil {
		t.Fatal(err)
	}
	roots := []string{h.v2, h.v1Memory, h.v1Pids}
	if filepath.Base(h.v2) == "moat" {
		roots[0] = filepath.Dir(h.v2) // children are in the sibling moat-children
	}
	var out []string
	for _, root := range roots {
		if root == "" {
			continue
		}
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && strings.Contains(d.Name(), "-"+strconv.Itoa(moatPid)+"-") {
				out = append(out, path)
			}
			return nil
		})
	}
	return out
}

// withoutCgroups makes this process see a machine without cgroups.
func withoutCgroups(t testing.TB) {
	t.Helper()
	empty := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	old := mountInfoPath
	mountInfoPath = empty
	t.Cleanup(func() { mountInfoPath = old })
}

// TestStrictMaxProcsAsRoot: as root, RLIMIT_NPROC does nothing, so strict
// mode with max_procs starts only when the cgroup's pids.max applies.
func TestStrictMaxProcsAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: needs root, where RLIMIT_NPROC cannot be enforced")
	}
	t.Run("with a cgroup", func(t *testing.T) {
		needCgroups(t)
		p := start(t, &Spec{Command: "/bin/true", Limits: Limits{Mode: Strict, MaxProcs: 10}})
		<-p.Done()
		if pr, _ := p.Enforced().Get(PCgroup); !pr.Enforced || !strings.Contains(pr.Detail, "pids.max=10") {
			t.Errorf("strict start with MaxProcs: cgroup = %+v, want enforced with pids.max=10", pr)
		}
		if pr, _ := p.Enforced().Get(PNProc); pr.Enforced {
			t.Errorf("report claims NPROC enforced for root: %+v", pr)
		}
	})
	t.Run("without a cgroup", func(t *testing.T) {
		withoutCgroups(t)
		_, err := Start(context.Background(), &Spec{Name: "strict", Command: "/bin/true", Stderr: io.Discard,
			Limits: Limits{Mode: Strict, MaxProcs: 10}})
		if err == nil || !strings.Contains(err.Error(), "strict sandbox: cannot enforce rlimit_nproc") {
			t.Errorf("Start in strict mode with MaxProcs as root, no cgroup: err = %v, want a refusal naming rlimit_nproc", err)
		}
		p := start(t, &Spec{Command: "/bin/true", Limits: Limits{MaxProcs: 10}})
		<-p.Done()
		if pr, _ := p.Enforced().Get(PCgroup); pr.Enforced || !strings.Contains(pr.Detail, "only rlimits apply") {
			t.Errorf("best-effort without cgroups: cgroup = %+v, want not enforced, saying only rlimits apply", pr)
		}
	})
}

func TestFindHierarchies(t *testing.T) {
	tests := []struct {
		name, mountinfo, cgroup string
		want                    hierarchies
	}{
		{
			name: "unified",
			mountinfo: "25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n" +
				"30 20 0:30 / /run/user rw - tmpfs tmpfs rw\n",
			cgroup: "0::/user.slice/user-1000.slice/app.slice/moat.scope\n",
			want: hierarchies{v2: "/sys/fs/cgroup/user.slice/user-1000.slice/app.slice/moat.scope",
				v2Mount: "/sys/fs/cgroup", v2Root: "/"},
		},
		{
			name: "hybrid",
			mountinfo: "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n" +
				"39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n" +
				"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
			cgroup: "8:pids:/\n4:memory:/process_api/abc\n0::/\n",
			want: hierarchies{v2: "/sys/fs/cgroup/unified", v1Memory: "/sys/fs/cgroup/memory/process_api/abc", v1Pids: "/sys/fs/cgroup/pids",
				v2Mount: "/sys/fs/cgroup/unified", v2Root: "/"},
		},
		{
			name:      "container with a bind-mounted subtree and an escaped space",
			mountinfo: "50 40 0:22 /docker/x /sys/fs/my\\040cg ro - cgroup2 cgroup2 rw\n",
			cgroup:    "0::/docker/x/inner\n",
			want:      hierarchies{v2: "/sys/fs/my cg/inner", v2Mount: "/sys/fs/my cg", v2Root: "/docker/x"},
		},
		{
			name:      "no cgroups",
			mountinfo: "30 20 0:30 / /run rw - tmpfs tmpfs rw\n",
			cgroup:    "0::/\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mi, cg := filepath.Join(dir, "mountinfo"), filepath.Join(dir, "cgroup")
			if err := os.WriteFile(mi, []byte(tc.mountinfo), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cg, []byte(tc.cgroup), 0o600); err != nil {
				t.Fatal(err)
			}
			oldMI, oldCG := mountInfoPath, procCgroupPath
			mountInfoPath, procCgroupPath = mi, cg
			defer func() { mountInfoPath, procCgroupPath = oldMI, oldCG }()
			got, err := findHierarchies()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(hierarchies{})); diff != "" {
				t.Errorf("findHierarchies (-want +got):\n%s", diff)
			}
		})
	}
}
