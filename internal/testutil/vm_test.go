package testutil

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestVMCgroupV2 boots the VM as root and as an unprivileged user and checks
// what Moat's sandbox relies on: cgroup v2 only, memory and pids available,
// the right user in the right cgroup, exit status and stderr carried back.
func TestVMCgroupV2(t *testing.T) {
	const script = `cat /proc/self/cgroup; cat /sys/fs/cgroup/cgroup.controllers; id -u; echo to-stderr >&2; exit 7`
	tests := []struct {
		uid        int
		wantCgroup string
		wantID     string
	}{
		{uid: 0, wantCgroup: "0::/test", wantID: "0"},
		{uid: 1000, wantCgroup: "0::/user.slice/deleg", wantID: "1000"},
	}
	for _, tt := range tests {
		t.Run(tt.wantID, func(t *testing.T) {
			out, exit := RunInVM(t, VM{UID: tt.uid}, "/bin/sh", "-c", script)
			if exit != 7 {
				t.Errorf("exit status %d, want 7; output:\n%s", exit, out)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 4 {
				t.Fatalf("got %d output lines, want 4 (cgroup, controllers, uid, stderr):\n%s", len(lines), out)
			}
			// A v1 hierarchy would add "N:controller:/path" lines to /proc/self/cgroup.
			got := []string{lines[0], lines[2], lines[3]}
			want := []string{tt.wantCgroup, tt.wantID, "to-stderr"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("cgroup, uid and stderr lines (-want +got):\n%s\nfull output:\n%s", diff, out)
			}
			controllers := strings.Fields(lines[1])
			for _, c := range []string{"memory", "pids"} {
				if !slices.Contains(controllers, c) {
					t.Errorf("controller %s missing from the root's cgroup.controllers %q", c, controllers)
				}
			}
		})
	}
}

// TestVMBootRetry makes the first boot's kernel die before the init starts
// (no such init), as emulated SMP sometimes does on its own: the second boot
// runs the program, whose output alone comes back on stdout.
func TestVMBootRetry(t *testing.T) {
	t.Setenv("VM_BREAK_FIRST_BOOT", "1")
	out, exit := RunInVM(t, VM{}, "/bin/sh", "-c", "echo ran; exit 3")
	if exit != 3 || out != "ran\n" {
		t.Errorf("RunInVM = %q, exit %d; want %q, exit 3", out, exit, "ran\n")
	}
}

// TestVMRunsTestBinary runs this test binary (under /tmp, hidden in the VM by
// its tmpfs unless copied in) inside the VM, the way sandbox tests run
// themselves there: TestVMGuestSide then reports from inside.
func TestVMRunsTestBinary(t *testing.T) {
	out, exit := RunInVM(t, VM{UID: 1000}, os.Args[0], "-test.run=^TestVMGuestSide$", "-test.v")
	if exit != 0 {
		t.Fatalf("test binary in the VM exited %d:\n%s", exit, out)
	}
	for _, want := range []string{`guest: uid=1000 cgroup="0::/user.slice/deleg" home=/tmp tmpdir=/tmp`, "--- PASS: TestVMGuestSide"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestVMGuestSide is the inside half of TestVMRunsTestBinary; on the host it
// skips.
func TestVMGuestSide(t *testing.T) {
	cmdline, _ := os.ReadFile("/proc/1/cmdline")
	if string(cmdline) != "/init\x00" || os.Getenv("HOME") != "/tmp" {
		t.Skip("runs only inside the VM (TestVMRunsTestBinary)")
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^0::/\S*\n$`).Match(cg) {
		t.Errorf("/proc/self/cgroup = %q, want one cgroup v2 line", cg)
	}
	t.Logf("guest: uid=%d cgroup=%q home=%s tmpdir=%s", os.Getuid(), strings.TrimSpace(string(cg)), os.Getenv("HOME"), os.TempDir())
}
