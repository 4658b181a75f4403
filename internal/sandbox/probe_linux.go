package sandbox

import (
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// Probe reports what this machine can enforce for a child started by Moat
// as the current user (for `moat doctor`). It starts /bin/true once in a new
// user+network namespace to find out whether that is allowed.
func Probe() Report {
	var r Report
	r.set(PCleanEnv, true, "only PATH, HOME, USER, LOGNAME, LANG, LC_*, TMPDIR, inherit_env and env")
	r.set(PProcessGroup, true, "own process group")
	r.set(PNoInheritedFD, true, "only stdin, stdout and stderr")
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
		r.set(PTreeTeardown, false, "PR_SET_CHILD_SUBREAPER unavailable: %v", err)
	} else {
		r.set(PTreeTeardown, true, "the launcher reaps and SIGKILLs the whole tree, also when moat is killed")
	}
	r.set(PRlimits, true, "RLIMIT_AS, CPU, NOFILE, FSIZE, NPROC, CORE=0")
	if os.Geteuid() == 0 {
		r.set(PNProc, false, "running as root: the kernel does not apply RLIMIT_NPROC to uid 0")
	} else {
		r.set(PNProc, true, "RLIMIT_NPROC counts all processes of this user, not per server")
	}
	if v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); err != nil || v < 0 {
		r.set(PNoNewPrivs, false, "PR_GET_NO_NEW_PRIVS failed: %v", err)
	} else {
		r.set(PNoNewPrivs, true, "always set")
	}
	abi := landlockABI()
	switch {
	case abi < 1:
		r.set(PLandlockFS, false, "no Landlock in this kernel (needs Linux >= 5.13, landlock in lsm=)")
		r.set(PLandlockNet, false, "no Landlock in this kernel")
	case abi < 4:
		r.set(PLandlockFS, true, "Landlock ABI %d", abi)
		r.set(PLandlockNet, false, "Landlock ABI %d < 4: no TCP connect restriction", abi)
	default:
		r.set(PLandlockFS, true, "Landlock ABI %d", abi)
		r.set(PLandlockNet, true, "Landlock ABI %d", abi)
	}
	cmd := exec.Command("/bin/true")
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	if err := cmd.Run(); err != nil {
		r.set(PNetNS, false, "cannot create a user+network namespace: %v", err)
	} else {
		r.set(PNetNS, true, "user+network namespaces allowed (sandbox.network false)")
	}
	ok, detail := cgroupStatus()
	r.set(PCgroup, ok, "%s", detail)
	ok, detail = Namespaces()
	r.set(PNamespaces, ok, "%s", detail)
	return r
}
