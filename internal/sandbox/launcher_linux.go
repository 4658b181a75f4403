package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaybeRunLauncher must be called first in main(). When os.Args[1] is
// "sandbox-exec" the process is a launcher started by Start: it applies the
// sandbox, starts the target, supervises it and exits; it never returns.
// Otherwise it returns at once.
func MaybeRunLauncher() {
	if len(os.Args) < 2 || os.Args[1] != LauncherArg {
		return
	}
	// Landlock and the target's Pdeathsig are per thread: everything below
	// runs on this one locked thread, and the target is forked from it.
	runtime.LockOSThread()
	os.Exit(runLauncher())
}

func runLauncher() int {
	cfgFile := os.NewFile(3, "sandbox-config")
	statusFile := os.NewFile(4, "sandbox-status")
	if cfgFile == nil || statusFile == nil {
		fmt.Fprintln(os.Stderr, "moat sandbox-exec: internal command, started only by moat itself")
		return 2
	}
	status := json.NewEncoder(statusFile)
	fail := func(format string, args ...any) int {
		_ = status.Encode(launchStatus{Error: fmt.Sprintf(format, args...)})
		return 1
	}
	// Package init (moat's, for a launcher that is moat) leaves garbage
	// that this long-lived process never needs again.
	debug.FreeOSMemory()
	_ = status.Encode(launchStatus{Ready: true})
	var cfg launchConfig
	dec := json.NewDecoder(cfgFile)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return 0 // a prestarted launcher that was never used
		}
		return fail("reading sandbox configuration: %v", err)
	}

	// Signals sent to the whole group by Stop are for the target; the
	// launcher just waits for it. A handler (not SIG_IGN) so the target
	// starts with default dispositions.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)

	var rep Report
	strict := cfg.Mode == Strict
	var missing []string
	notEnforced := func(name, format string, args ...any) {
		rep.set(name, false, format, args...)
		missing = append(missing, name+": "+fmt.Sprintf(format, args...))
	}

	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		notEnforced(PTreeTeardown, "PR_SET_CHILD_SUBREAPER: %v", err)
	} else {
		rep.set(PTreeTeardown, true, "launcher is a subreaper; the whole tree is SIGKILLed when moat stops it or dies")
	}

	// The target is the launcher's child: with the same uid, it could read
	// the launcher's memory and open its file descriptors through /proc.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail("making the launcher non-dumpable: %v", err)
	}
	if cfg.Isolated {
		detail, err := setupView(&cfg)
		if err != nil {
			_ = status.Encode(launchStatus{Error: "setting up the server's namespaces: " + err.Error(), Namespaces: true})
			return 1
		}
		rep.set(PNamespaces, true, "%s", detail)
	}
	if cfg.NewNetNS {
		if err := loopbackUp(); err != nil {
			return fail("bringing up loopback in the new network namespace: %v", err)
		}
	}
	if cfg.Isolated || cfg.NewNetNS {
		// The capabilities the launcher got in its user namespace were for
		// the above only: the target gets none.
		if err := dropCapabilities(); err != nil {
			return fail("%v", err)
		}
	}
	if cfg.Probe {
		_ = status.Encode(launchStatus{Report: &rep})
		return 0
	}

	root := os.Geteuid() == 0 && cfg.RunAs == nil
	if root && !cfg.NewNetNS && !cfg.Isolated {
		// Root keeps CAP_SYS_RESOURCE across exec and could raise its
		// limits again; take it out of the bounding set.
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_RESOURCE, 0, 0, 0); err != nil {
			notEnforced(PRlimits, "dropping CAP_SYS_RESOURCE: %v", err)
		}
	}
	if root {
		// The kernel exempts uid 0 (INIT_USER) from RLIMIT_NPROC. The
		// cgroup's pids.max, when there is one, limits this server instead
		// (strict mode refuses below if the target cannot be put in it).
		detail := "running as root: the kernel does not apply RLIMIT_NPROC to uid 0"
		if len(cfg.CgroupProcs) > 0 {
			detail += "; the cgroup's pids.max limits this server instead"
		}
		if cfg.MaxProcs != 0 && len(cfg.CgroupProcs) == 0 {
			notEnforced(PNProc, "%s", detail)
		} else {
			rep.set(PNProc, false, "%s", detail)
		}
	}

	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		notEnforced(PNoNewPrivs, "prctl: %v", err)
	} else {
		rep.set(PNoNewPrivs, true, "setuid/file capabilities give the child nothing")
	}

	devNull, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		return fail("opening /dev/null: %v", err)
	}
	if err := cloexecFrom(3); err != nil {
		return fail("marking inherited file descriptors close-on-exec: %v", err)
	}
	rep.set(PNoInheritedFD, true, "only stdin, stdout and stderr reach the target")

	// Opened before Landlock, which could deny it.
	cgroupFD := -1
	if cfg.CgroupClone != "" {
		if fd, err := unix.Open(cfg.CgroupClone, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			cgroupFD = fd
			defer unix.Close(fd)
		}
	}

	applyLandlock(&cfg, &rep, notEnforced)

	if strict && len(missing) > 0 {
		return fail("strict sandbox: cannot enforce %s; use sandbox.mode \"best-effort\" or run on a kernel/user that supports it", strings.Join(missing, "; "))
	}

	// The target starts traced, so it stops right after execve: its
	// rlimits are set with prlimit before it runs one instruction of its
	// own. The launcher itself never lives under them (a Go runtime under
	// a small RLIMIT_AS or RLIMIT_NPROC cannot create threads).
	attr := &syscall.ProcAttr{
		Dir:   cfg.Dir,
		Env:   cfg.Env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Ptrace: true},
	}
	if cfg.RunAs != nil {
		attr.Sys.Credential = &syscall.Credential{Uid: cfg.RunAs.Uid, Gid: cfg.RunAs.Gid, Groups: []uint32{}}
	}
	inCgroup := false
	var pid int
	if cgroupFD >= 0 {
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, cgroupFD
		pid, err = syscall.ForkExec(cfg.Path, cfg.Argv, attr)
		inCgroup = err == nil
		// Kernels before 5.7 have no CLONE_INTO_CGROUP: join below instead.
		attr.Sys.UseCgroupFD = false
	}
	if !inCgroup {
		pid, err = syscall.ForkExec(cfg.Path, cfg.Argv, attr)
	}
	if err != nil {
		if cfg.RunAs != nil && errors.Is(err, syscall.EACCES) {
			return fail("starting %s as uid %d: %v; the server's user must be able to read and execute it and every directory above it, and enter its working directory", cfg.Path, cfg.RunAs.Uid, err)
		}
		return fail("starting %s: %v", cfg.Path, err)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || !ws.Stopped() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return fail("starting %s: it did not stop after exec (%v, %s)", cfg.Path, err, describeWait(ws))
	}
	if inCgroup {
		rep.set(PCgroup, true, "%s; %s", cfg.CgroupDetail, clonedIntoCgroup)
	} else if len(cfg.CgroupProcs) > 0 {
		// On another thread: this one may be under Landlock, which
		// would deny writing to the cgroup filesystem.
		joined := make(chan error, 1)
		go func() { joined <- joinCgroup(pid, cfg.CgroupProcs) }()
		if err := <-joined; err != nil {
			if strict {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				_, _ = syscall.Wait4(pid, nil, 0, nil)
				return fail("strict sandbox: cannot put the server in its cgroup: %v", err)
			}
			notEnforced(PCgroup, "putting the server in its cgroup: %v", err)
		} else {
			inCgroup = true
			rep.set(PCgroup, true, "%s", cfg.CgroupDetail)
		}
	}
	if rlimitErr := applyRlimits(pid, &cfg, &rep, inCgroup); rlimitErr != "" {
		if strict {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_, _ = syscall.Wait4(pid, nil, 0, nil)
			return fail("strict sandbox: cannot enforce rlimits: %s", rlimitErr)
		}
		notEnforced(PRlimits, "%s", rlimitErr)
	}
	if err := syscall.PtraceDetach(pid); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return fail("starting %s: releasing it after setting its limits: %v", cfg.Path, err)
	}
	// The target holds stdin and stdout now; the launcher must not keep
	// them open, or Moat would not see EOF when the target exits.
	_ = unix.Dup2(int(devNull.Fd()), 0)
	_ = unix.Dup2(int(devNull.Fd()), 1)
	_ = status.Encode(launchStatus{Pid: pid, Report: &rep})

	// EOF on the config pipe: moat died or Stop gave up waiting.
	go func() {
		_, _ = io.Copy(io.Discard, io.MultiReader(dec.Buffered(), cfgFile))
		killTree(false) // the wait loop below reaps the target
	}()

	var ru syscall.Rusage
	for {
		got, err := syscall.Wait4(pid, &ws, 0, &ru)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || got == pid {
			break
		}
	}
	// The server is gone: nothing it started may outlive it. killTree
	// reads /proc, which this (Landlock-restricted) thread may not: run it
	// on another one. Then the empty cgroup goes; Moat removes it too, but
	// Moat may have been killed.
	treeDone := make(chan struct{})
	go func() {
		killTree(true)
		if len(cfg.CgroupDirs) > 0 {
			_ = (&cgroup{dirs: cfg.CgroupDirs}).remove()
		}
		close(treeDone)
	}()
	<-treeDone
	_ = status.Encode(launchStatus{Exit: describeWait(ws), Rusage: &ru})
	return 0
}

// clonedIntoCgroup ends the cgroup detail of a target that the kernel
// created in its cgroup (cgroup v2, CLONE_INTO_CGROUP).
const clonedIntoCgroup = "created in it"

func describeWait(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exit status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		s := "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			s += " (core dumped)"
		}
		return s
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// killTree SIGKILLs every process in the launcher's process group and every
// child re-parented to it (the launcher is a subreaper, so a descendant that
// left the group still ends up here when its parent dies) until none is
// alive. With reap it also reaps them; without, it leaves the target's
// status to the wait loop.
func killTree(reap bool) {
	self := os.Getpid()
	for range 5000 {
		victims := treeMembers(self)
		for _, pid := range victims {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if reap {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
		if len(victims) == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// treeMembers lists live (not zombie) processes other than self whose
// process group is self's or whose parent is self.
func treeMembers(self int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may
		// contain spaces: state ppid pgrp ...
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		if ppid == self || pgrp == self {
			out = append(out, pid)
		}
	}
	return out
}

// applyRlimits sets the target's limits with prlimit (it is stopped after
// exec) and returns what failed, or "". inCgroup says the target's cgroup
// limits its processes (pids.max = MaxProcs, per server): RLIMIT_NPROC, which
// counts every process of the user, is then only a backstop, never below
// DefaultMaxProcs, so that max_procs does not also cap the user's other
// processes.
func applyRlimits(pid int, cfg *launchConfig, rep *Report, inCgroup bool) string {
	type lim struct {
		res  int
		name string
		want uint64
	}
	nproc := cfg.MaxProcs
	if nproc == 0 || inCgroup {
		nproc = max(nproc, DefaultMaxProcs)
	}
	// The memory limit is the RLIMIT_AS itself only where no cgroup
	// bounds the memory and the config set it: see MinAddressSpace.
	as := max(cfg.Memory, MinAddressSpace)
	if !inCgroup && cfg.MemorySet {
		as = cfg.Memory
	}
	lims := []lim{
		{unix.RLIMIT_AS, "AS", as},
		{unix.RLIMIT_CPU, "CPU", cfg.CPUSeconds},
		{unix.RLIMIT_NOFILE, "NOFILE", cfg.MaxFiles},
		{unix.RLIMIT_FSIZE, "FSIZE", cfg.MaxFSize},
		{unix.RLIMIT_CORE, "CORE", 0},
		{unix.RLIMIT_NPROC, "NPROC", nproc},
	}
	var set, failed []string
	for _, l := range lims {
		var cur unix.Rlimit
		if err := unix.Getrlimit(l.res, &cur); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", l.name, err))
			continue
		}
		v := min(l.want, cur.Max) // cannot raise above our own hard limit
		if err := unix.Prlimit(pid, l.res, &unix.Rlimit{Cur: v, Max: v}, nil); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", l.name, err))
			continue
		}
		set = append(set, fmt.Sprintf("%s=%d", l.name, v))
	}
	if len(failed) > 0 {
		return fmt.Sprintf("set %s; failed %s", strings.Join(set, " "), strings.Join(failed, "; "))
	}
	rep.set(PRlimits, true, "%s", strings.Join(set, " "))
	if _, ok := rep.Get(PNProc); !ok {
		if inCgroup {
			rep.set(PNProc, true, "NPROC=%d, a backstop for all processes and threads of this user; this server's own limit is its cgroup's pids.max", nproc)
		} else {
			rep.set(PNProc, true, "NPROC=%d counts every process and thread of this user, not only this server's", nproc)
		}
	}
	return ""
}

// loopbackUp sets IFF_UP on lo: a new network namespace starts with lo down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// cloexecFrom marks every fd >= lowfd close-on-exec.
func cloexecFrom(lowfd int) error {
	err := unix.CloseRange(uint(lowfd), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	entries, derr := os.ReadDir("/proc/self/fd")
	if derr != nil {
		return errors.Join(err, derr)
	}
	for _, e := range entries {
		fd, convErr := strconv.Atoi(e.Name())
		if convErr == nil && fd >= lowfd {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

// Landlock ABI pieces missing from x/sys.
const landlockRuleNetPort = 2

type landlockNetPortAttr struct {
	AllowedAccess uint64
	Port          uint64
}

func landlockABI() int {
	abi, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0
	}
	return int(abi)
}

// fsRights returns every filesystem right the kernel's ABI knows.
func fsRights(abi int) uint64 {
	r := uint64(unix.LANDLOCK_ACCESS_FS_MAKE_SYM<<1) - 1 // ABI 1: bits 0..12
	if abi >= 2 {
		r |= unix.LANDLOCK_ACCESS_FS_REFER
	}
	if abi >= 3 {
		r |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	if abi >= 5 {
		r |= unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	}
	return r
}

// fileRights are the rights that may be granted on a non-directory.
const fileRights = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
	unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV

const readRights = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR

func applyLandlock(cfg *launchConfig, rep *Report, notEnforced func(string, string, ...any)) {
	wantFS, wantNet := cfg.Landlock, cfg.NetConnect != nil
	abi := landlockABI()
	if !wantFS {
		rep.set(PLandlockFS, false, "not asked (no sandbox.fs allow-list)")
	}
	if !wantNet {
		rep.set(PLandlockNet, false, "not asked (no sandbox.net.connect allow-list)")
	}
	if !wantFS && !wantNet {
		return
	}
	if abi < 1 {
		if wantFS {
			notEnforced(PLandlockFS, "this kernel has no Landlock (needs Linux >= 5.13 with landlock in lsm=)")
		}
		if wantNet {
			notEnforced(PLandlockNet, "this kernel has no Landlock")
		}
		return
	}
	attr := unix.LandlockRulesetAttr{}
	size := 8 // ABI 1-3: handled_access_fs only
	all := fsRights(abi)
	if wantFS {
		attr.Handled_access_fs = all
	}
	netOK := wantNet && abi >= 4
	if wantNet && !netOK {
		notEnforced(PLandlockNet, "Landlock ABI %d < 4 cannot restrict TCP connect", abi)
	}
	if netOK {
		attr.Handled_access_net = unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
		size = 16
	}
	if wantFS && abi >= 6 {
		// The child may not signal processes outside its domain (Moat).
		attr.Scoped = unix.LANDLOCK_SCOPE_SIGNAL
		size = 24
	}
	if attr.Handled_access_fs == 0 && attr.Handled_access_net == 0 {
		return
	}
	fd, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), uintptr(size), 0)
	if errno != 0 {
		if wantFS {
			notEnforced(PLandlockFS, "landlock_create_ruleset: %v", errno)
		}
		if netOK {
			notEnforced(PLandlockNet, "landlock_create_ruleset: %v", errno)
		}
		return
	}
	ruleset := int(fd)
	defer unix.Close(ruleset)

	var skipped []string
	addPath := func(p string, rights uint64) {
		pfd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			skipped = append(skipped, p)
			return
		}
		defer unix.Close(pfd)
		var st unix.Stat_t
		if err := unix.Fstat(pfd, &st); err != nil {
			return
		}
		rights &= all
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			rights &= fileRights
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: rights, Parent_fd: int32(pfd)}
		_, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(ruleset), unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
		if e != 0 {
			skipped = append(skipped, p+" ("+e.Error()+")")
		}
	}
	if wantFS {
		for _, p := range cfg.ReadPaths {
			addPath(p, readRights)
		}
		for _, p := range cfg.WritePaths {
			addPath(p, all)
		}
	}
	if netOK {
		for _, port := range cfg.NetConnect {
			rule := landlockNetPortAttr{AllowedAccess: unix.LANDLOCK_ACCESS_NET_CONNECT_TCP, Port: uint64(port)}
			_, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(ruleset), landlockRuleNetPort, uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
			if e != 0 {
				notEnforced(PLandlockNet, "adding port %d: %v", port, e)
				return
			}
		}
	}
	_, _, errno = unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(ruleset), 0, 0)
	if errno != 0 {
		if wantFS {
			notEnforced(PLandlockFS, "landlock_restrict_self: %v", errno)
		}
		if netOK {
			notEnforced(PLandlockNet, "landlock_restrict_self: %v", errno)
		}
		return
	}
	if wantFS {
		d := fmt.Sprintf("ABI %d; read: %d paths, write: %d paths", abi, len(cfg.ReadPaths), len(cfg.WritePaths))
		if len(skipped) > 0 {
			d += "; missing (not granted): " + strings.Join(skipped, ", ")
		}
		rep.set(PLandlockFS, true, "%s", d)
	}
	if netOK {
		rep.set(PLandlockNet, true, "ABI %d; TCP connect only to ports %v", abi, cfg.NetConnect)
	}
}
