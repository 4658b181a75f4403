package testutil

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// VM says how RunInVM runs its program.
type VM struct {
	// UID 0 runs the program as root in /sys/fs/cgroup/test; another uid
	// runs it as that uid (gid uid, no other groups) in
	// /sys/fs/cgroup/user.slice/deleg, a cgroup delegated to it the way
	// systemd's Delegate=yes does. Both start empty, with nothing enabled
	// in their own cgroup.subtree_control.
	UID int
	// Env are KEY=VALUE pairs added to the program's environment.
	Env []string
	// Copy are more host paths under /tmp (files or directories) that the
	// program needs: the VM's /tmp is a fresh tmpfs.
	Copy []string
}

// RunInVM runs argv in a throwaway Linux VM (scripts/vm-run.sh: Debian's
// kernel under qemu, the host's root filesystem read-only, a fresh tmpfs on
// /tmp, and cgroup v2 as the only cgroup hierarchy with every controller),
// as vm says.
//
// argv[0] must be a host path; under /tmp (a test binary, say) it is copied
// into the VM at the same path. The program gets stdin /dev/null, HOME=/tmp,
// TMPDIR=/tmp, the caller's PATH and CI, vm.Env, and the caller's working
// directory.
// output is its stdout and stderr as one stream (ending in a newline), exit
// its exit status (128+N when killed by signal N).
//
// Without qemu or a cached kernel the test is skipped loudly, or fails under
// CI=true; scripts/test-deps.sh (as root) installs both. A VM that fails
// (kernel panic, timeout) fails the test.
func RunInVM(t testing.TB, vm VM, argv ...string) (output string, exit int) {
	t.Helper()
	if len(argv) == 0 {
		t.Fatal("RunInVM: no program to run")
	}
	script := filepath.Join(RepoRoot(t), "scripts", "vm-run.sh")
	var stderr bytes.Buffer
	check := exec.Command(script, "--check")
	check.Stderr = &stderr
	if err := check.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && (ee.ExitCode() == 3 || ee.ExitCode() == 4) {
			missing(t, "the cgroup v2 VM cannot run: "+strings.TrimSpace(stderr.String())+" (scripts/test-deps.sh installs qemu and fetches the kernel when run as root)")
		}
		t.Fatalf("%s --check: %v\n%s", script, err, stderr.Bytes())
	}

	args := []string{}
	if vm.UID != 0 {
		args = append(args, "--user", strconv.Itoa(vm.UID))
	}
	if ci, ok := os.LookupEnv("CI"); ok {
		args = append(args, "--env", "CI="+ci)
	}
	for _, kv := range vm.Env {
		args = append(args, "--env", kv)
	}
	for _, p := range vm.Copy {
		args = append(args, "--copy", p)
	}
	args = append(args, "--")
	args = append(args, argv...)
	cmd := exec.Command(script, args...)
	stderr.Reset()
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	exit = 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("run %s: %v", script, err)
		}
		exit = ee.ExitCode()
	}
	// vm-run.sh says "vm-run: the VM ..." exactly when the VM, not the
	// program, failed; other lines (a first download, the KVM verdict) are news.
	if strings.Contains(stderr.String(), "vm-run: the VM") {
		t.Fatalf("VM run of %q failed (exit %d):\n%s\n%s", argv, exit, out, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Logf("scripts/vm-run.sh: %s", bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), exit
}
