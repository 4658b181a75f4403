package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// baseReadPaths are readable (and executable) by every child under a Landlock
// filesystem policy: what a dynamically linked program, a script interpreter
// and TLS/DNS need, and the system-wide /proc files runtimes read. Not /proc
// as a whole: it was verified here that a Landlock-sandboxed child can still
// read /proc/<moat pid>/environ. /proc/self is not granted either (a rule
// would bind to the launcher's pid, not the target's); readlink of
// /proc/self/exe is not restricted by Landlock.
var baseReadPaths = []string{
	"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin",
	"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
	"/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/crypto-policies",
	"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf",
	"/etc/localtime", "/etc/passwd", "/etc/group",
	"/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/uptime",
	"/proc/version", "/proc/filesystems", "/proc/sys",
	"/dev/urandom", "/dev/random", "/dev/zero",
}

// baseWritePaths are writable by every child under a Landlock policy.
var baseWritePaths = []string{"/dev/null", "/dev/full"}

// waitDelay bounds how long the reaper waits for the stderr copy after the
// launcher exited.
const waitDelay = 2 * time.Second

// Start starts the child described by s through the launcher. ctx bounds only
// the start (until the launcher reports the target running); the child lives
// until it exits or Stop is called.
func Start(ctx context.Context, s *Spec) (*Process, error) {
	if s.Stderr == nil {
		return nil, fmt.Errorf("sandbox: server %q: Spec.Stderr is nil; the child's stderr must go to a log", s.Name)
	}
	path, err := Resolve(s.Command, s.Env)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", s.Name, err)
	}
	launcher, err := launcherPath()
	if err != nil {
		return nil, err
	}
	lim := s.Limits.withDefaults()
	p := &Process{name: s.Name, done: make(chan struct{})}

	isolated := lim.Namespaces == nil || *lim.Namespaces
	if isolated && s.RunAs == "" {
		// With KeepWarm, a launcher in the spaces this server most likely
		// gets starts now, beside the namespace probe a first Start waits
		// for (a launcher of its own), rather than after it; launch takes it.
		warm.fill(spaces{isolated: true, net: lim.Network != nil && !*lim.Network})
	}
	var nsOff string // why the child does not get its namespaces
	if !isolated {
		nsOff = "not asked (sandbox.namespaces is false): the server shares Moat's view of processes and files"
	} else if ok, why := Namespaces(); !ok {
		if lim.Mode == Strict {
			return nil, fmt.Errorf("strict sandbox: no namespaces of its own here: %s; or set sandbox.mode \"best-effort\"", why)
		}
		isolated, nsOff = false, why
	}

	var who *identity
	if s.RunAs != "" {
		if euid := os.Geteuid(); euid != 0 {
			return nil, fmt.Errorf("sandbox: server %q: run_as %q needs moat to run as root (it runs as uid %d): remove run_as, or run moat as root", s.Name, s.RunAs, euid)
		}
		if who, err = lookupRunAs(s.RunAs); err != nil {
			return nil, fmt.Errorf("sandbox: server %q: run_as %q: %w", s.Name, s.RunAs, err)
		}
	}

	dir := s.Dir
	if dir == "" {
		// Another user's private directory cannot be in Moat's private
		// root (0700): it is in TMPDIR, owned by that user, as closed to
		// the other servers as its owner's uid makes it.
		root := privateRoot()
		if who != nil {
			root = ""
		}
		dir, err = os.MkdirTemp(root, "moat-"+safeName(s.Name)+"-")
		if err == nil && who != nil {
			err = os.Chown(dir, int(who.uid), int(who.gid))
		}
		if err != nil {
			return nil, fmt.Errorf("sandbox: server %q: creating its private working directory: %w; set \"cwd\" or fix TMPDIR", s.Name, err)
		}
		p.privDir = dir
	}
	ok := false
	defer func() {
		if !ok && p.privDir != "" {
			_ = os.RemoveAll(p.privDir)
		}
	}()

	cfg := launchConfig{
		Name: s.Name, Path: path, Argv: append([]string{path}, s.Args...),
		Env: buildEnv(os.Environ(), s.InheritEnv, s.Env), Dir: dir, Mode: lim.Mode,
		Memory: lim.Memory, MemorySet: s.Limits.Memory != 0,
		CPUSeconds: uint64((lim.CPU + time.Second - 1) / time.Second),
		MaxFiles:   lim.MaxFiles, MaxProcs: s.Limits.MaxProcs, MaxFSize: lim.MaxFileSize,
		NetConnect: lim.NetConnect,
		NewNetNS:   lim.Network != nil && !*lim.Network,
		Isolated:   isolated,
	}
	if who != nil {
		cfg.Env = withIdentity(cfg.Env, who, s.Env)
		cfg.RunAs = &runAs{Uid: who.uid, Gid: who.gid}
	}
	var kept []string
	if isolated {
		cfg.Hide, kept = hideList(s.Hide, append(envPaths(cfg.Env), dir))
		if root := privateRoot(); root != "" && (p.privDir != "" || !within(dir, root)) {
			cfg.PrivateRoot = root
		}
	}
	if cg, err := newCgroup(s.Name, lim.Memory, pidsMax(s.Limits)); err != nil {
		cfg.CgroupDetail = err.Error() + ": only rlimits apply (RLIMIT_NPROC is per user, not per server, and not applied to root)"
	} else {
		p.cgroup = cg
		cfg.CgroupProcs, cfg.CgroupDetail, cfg.CgroupDirs = cg.procs, cg.detail, cg.dirs
		if cg.version == 2 {
			cfg.CgroupClone = cg.dirs[0]
		}
		defer func() {
			if !ok {
				_ = cg.remove()
			}
		}()
	}
	if lim.FSRead != nil || lim.FSWrite != nil {
		cfg.Landlock = true
		cfg.ReadPaths = append(append(append([]string{}, baseReadPaths...), executablePaths(path)...), lim.FSRead...)
		cfg.WritePaths = append(append([]string{}, baseWritePaths...), lim.FSWrite...)
		if p.privDir != "" {
			cfg.WritePaths = append(cfg.WritePaths, p.privDir)
		} else {
			cfg.ReadPaths = append(cfg.ReadPaths, dir)
		}
	}

	var rep Report
	rep.set(PCleanEnv, true, "%d variables: %s", len(cfg.Env), envNames(cfg.Env))
	rep.set(PProcessGroup, true, "own process group; Stop signals the whole group")
	if !isolated {
		rep.set(PNamespaces, false, "%s", nsOff)
	}
	switch {
	case who != nil:
		rep.set(PRunAs, true, "runs as %s (uid %d, gid %d), no supplementary groups", who.name, who.uid, who.gid)
	case os.Geteuid() == 0:
		rep.set(PRunAs, false, "not asked: moat runs as root and this server has no run_as, so it runs as root (without capabilities in its own namespaces, if it has them)")
	default:
		rep.set(PRunAs, false, "not asked: runs as moat's own user")
	}

	err = p.launch(ctx, launcher, &cfg, s, &rep)
	if err != nil && cfg.Isolated && lim.Mode == BestEffort && errors.Is(err, errNamespaces) {
		slog.Warn("sandbox: cannot give the server namespaces of its own; starting it without", "server", s.Name, "err", err)
		cfg.Isolated, cfg.Hide, cfg.PrivateRoot = false, nil, ""
		rep.set(PNamespaces, false, "asked, but setting them up failed: %v", err)
		err = p.launch(ctx, launcher, &cfg, s, &rep)
	}
	if err != nil && cfg.NewNetNS && lim.Mode == BestEffort && errors.Is(err, errNetNS) {
		slog.Warn("sandbox: cannot create a network namespace; starting with the host network", "server", s.Name, "err", err)
		cfg.NewNetNS = false
		rep.set(PNetNS, false, "asked, but creating a user+network namespace failed: %v", err)
		err = p.launch(ctx, launcher, &cfg, s, &rep)
	}
	if err != nil {
		return nil, err
	}
	ok = true
	if pr, _ := rep.Get(PNamespaces); pr.Enforced && len(kept) > 0 {
		rep.set(PNamespaces, true, "%s; left visible, since they hold its working directory: %s", pr.Detail, strings.Join(kept, ", "))
	}
	p.report = rep
	if bad := rep.NotEnforced(); len(bad) > 0 {
		// As root, RLIMIT_NPROC does nothing, but the cgroup's pids.max
		// does the job: nothing to warn about then.
		cg, _ := rep.Get(PCgroup)
		var names []string
		for _, b := range bad {
			if !strings.HasPrefix(b.Detail, "not asked") && !(b.Name == PNProc && cg.Enforced) {
				names = append(names, b.Name+" ("+b.Detail+")")
			}
		}
		if len(names) > 0 {
			slog.Warn("sandbox: protections not enforced", "server", s.Name, "not_enforced", strings.Join(names, "; "))
		}
	}
	return p, nil
}

var (
	errNetNS      = errors.New("network namespace")
	errNamespaces = errors.New("namespaces")
)

// errLauncherGone marks a launcher that exited before it read its
// configuration: a prestarted one that died while idle is replaced by a
// fresh one.
var errLauncherGone = errors.New("the launcher exited before starting the server")

func (p *Process) launch(ctx context.Context, launcher string, cfg *launchConfig, s *Spec, rep *Report) error {
	sp := spaces{isolated: cfg.Isolated, net: cfg.NewNetNS}
	if cfg.RunAs != nil {
		sp.runAs = *cfg.RunAs
	}
	defer warm.fill(sp)
	if l := warm.take(launcher, sp); l != nil {
		err := p.handshake(ctx, l, cfg, s, rep)
		if !errors.Is(err, errLauncherGone) {
			return err
		}
		slog.Debug("sandbox: the prestarted launcher was gone; starting another", "server", s.Name, "err", err)
	}
	l, err := startLauncher(launcher, sp)
	if err != nil {
		if cfg.Isolated {
			return fmt.Errorf("sandbox: server %q: starting the launcher in new user, PID and mount namespaces: %w (%w)", s.Name, err, errNamespaces)
		}
		if cfg.NewNetNS {
			return fmt.Errorf("sandbox: server %q: starting the launcher in a new user+network namespace: %w (%w); unprivileged user namespaces may be disabled: set sandbox.network true or allow them", s.Name, err, errNetNS)
		}
		return fmt.Errorf("sandbox: server %q: starting the launcher %s: %w", s.Name, launcher, err)
	}
	return p.handshake(ctx, l, cfg, s, rep)
}

// handshake gives the launcher l its configuration and waits until it
// reports the target running.
func (p *Process) handshake(ctx context.Context, l *launcherProc, cfg *launchConfig, s *Spec, rep *Report) error {
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(s.Stderr, l.stderr)
		close(copied)
	}()
	abort := func(err error) error {
		l.discard()
		<-copied
		return err
	}
	if err := json.NewEncoder(l.control).Encode(cfg); err != nil {
		return abort(fmt.Errorf("sandbox: server %q: sending the launcher its configuration: %w (%w)", s.Name, err, errLauncherGone))
	}
	first := make(chan launchStatus, 1)
	gone := make(chan struct{})
	go func() {
		for {
			st, err := l.next()
			if err != nil {
				close(gone)
				st = launchStatus{Error: errLauncherGone.Error()} // reported below, with gone
			}
			if !st.Ready {
				first <- st
				return
			}
		}
	}()
	var st launchStatus
	select {
	case st = <-first:
	case <-ctx.Done():
		err := abort(fmt.Errorf("sandbox: server %q: start: %w", s.Name, ctx.Err()))
		<-first
		return err
	}
	if st.Error != "" {
		select {
		case <-gone:
			return abort(fmt.Errorf("sandbox: server %q: %w (see its stderr)", s.Name, errLauncherGone))
		default:
		}
		if st.Namespaces {
			return abort(fmt.Errorf("sandbox: server %q: %s (%w)", s.Name, st.Error, errNamespaces))
		}
		return abort(fmt.Errorf("sandbox: server %q: %s", s.Name, st.Error))
	}
	for _, pr := range st.Report.Protections {
		rep.set(pr.Name, pr.Enforced, "%s", pr.Detail)
	}
	if cfg.NewNetNS {
		rep.set(PNetNS, true, "new user+network namespace: loopback only")
	} else if _, ok := rep.Get(PNetNS); !ok {
		rep.set(PNetNS, false, "not asked (sandbox.network is not false): host network")
	}
	if _, ok := rep.Get(PCgroup); !ok {
		rep.set(PCgroup, false, "%s", cfg.CgroupDetail)
	}

	p.cmd, p.stdin, p.stdout, p.control = l.cmd, l.stdin, l.stdout, l.control
	p.pid, p.targetPid = l.cmd.Process.Pid, st.Pid
	if cfg.Isolated {
		p.targetPid = outerPid(p.pid, st.Pid)
	}
	go p.reap(l, copied)
	return nil
}

// reap waits for the launcher's final status, its exit and the end of its
// stderr, then releases everything and closes Done.
func (p *Process) reap(l *launcherProc, copied <-chan struct{}) {
	final, _ := l.next()
	_ = l.status.Close()
	werr := l.cmd.Wait()
	// The launcher killed the tree, so stderr reaches EOF; the timer is a
	// backstop against a descendant that escaped with the pipe.
	t := time.NewTimer(waitDelay)
	select {
	case <-copied:
	case <-t.C:
		_ = l.stderr.Close()
		<-copied
	}
	t.Stop()
	_ = l.stderr.Close()
	if final.Exit != "" {
		p.setExit(final.Exit, final.Rusage)
	} else {
		var ru *syscall.Rusage
		if ps := l.cmd.ProcessState; ps != nil {
			ru, _ = ps.SysUsage().(*syscall.Rusage)
		}
		p.setExit(fmt.Sprintf("launcher ended without the server's status: %v", werr), ru)
	}
	_ = p.control.Close()
	if p.cgroup != nil {
		if err := p.cgroup.remove(); err != nil {
			slog.Warn("sandbox: cannot remove the server's cgroup", "server", p.name, "err", err)
		}
	}
	if p.privDir != "" {
		_ = os.RemoveAll(p.privDir)
	}
	close(p.done)
}

func (p *Process) signalGroup(sig syscall.Signal) {
	select {
	case <-p.done:
		return // reaped: the pgid may belong to someone else now
	default:
	}
	_ = syscall.Kill(-p.pid, sig)
}

// executablePaths are the binary, its symlink target and, for a script, its
// #! interpreter: what the child needs to exec at all.
func executablePaths(path string) []string {
	out := []string{path}
	if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
		out = append(out, real)
	}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, _ := f.Read(buf)
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	if rest, ok := strings.CutPrefix(line, "#!"); ok {
		if f := strings.Fields(rest); len(f) > 0 && filepath.IsAbs(f[0]) {
			out = append(out, f[0])
		}
	}
	return out
}

func envNames(env []string) string {
	names := make([]string, 0, len(env))
	for _, kv := range env {
		n, _, _ := strings.Cut(kv, "=")
		names = append(names, n)
	}
	return strings.Join(names, " ")
}

func safeName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, name)
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}
