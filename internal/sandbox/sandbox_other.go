//go:build unix && !linux

package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// cgroup is Linux only; Process.cgroup stays nil elsewhere.
type cgroup struct{}

// MaybeRunLauncher is a no-op outside Linux, where no launcher is used; a
// stray "sandbox-exec" invocation exits with an error.
func MaybeRunLauncher() {
	if len(os.Args) >= 2 && os.Args[1] == LauncherArg {
		fmt.Fprintln(os.Stderr, "moat sandbox-exec: only used on Linux")
		os.Exit(2)
	}
}

func notHere() string { return "not supported on " + runtime.GOOS + " yet" }

// KeepWarm does nothing outside Linux, where no launcher is used.
func KeepWarm() {}

// CloseIdle does nothing outside Linux, where no launcher is used.
func CloseIdle() {}

// Probe reports what this machine can enforce: outside Linux, the clean
// environment and the child's own process group.
func Probe() Report {
	var r Report
	r.set(PCleanEnv, true, "only PATH, HOME, USER, LOGNAME, LANG, LC_*, TMPDIR, inherit_env and env")
	r.set(PProcessGroup, true, "own process group; Stop signals the whole group")
	for _, n := range []string{PNoInheritedFD, PTreeTeardown, PRlimits, PNProc, PNoNewPrivs, PLandlockFS, PLandlockNet, PNetNS, PCgroup, PNamespaces} {
		r.set(n, false, "%s", notHere())
	}
	return r
}

// Namespaces reports that servers get no namespaces of their own outside
// Linux.
func Namespaces() (bool, string) { return false, notHere() }

// Start starts the command directly with a clean environment. Nothing else
// is enforced outside Linux (the Report says so); Strict mode refuses.
func Start(_ context.Context, s *Spec) (*Process, error) {
	if s.Stderr == nil {
		return nil, fmt.Errorf("sandbox: server %q: Spec.Stderr is nil; the child's stderr must go to a log", s.Name)
	}
	if s.RunAs != "" {
		return nil, fmt.Errorf("sandbox: server %q: run_as needs Linux (%s); remove it", s.Name, notHere())
	}
	if s.Limits.Mode == Strict {
		return nil, fmt.Errorf("sandbox: server %q: strict sandbox mode needs Linux (%s); use sandbox.mode \"best-effort\"", s.Name, notHere())
	}
	path, err := Resolve(s.Command, s.Env)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", s.Name, err)
	}
	rep := Probe()
	p := &Process{name: s.Name, done: make(chan struct{}), report: rep}
	dir := s.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "moat-"+s.Name+"-"); err != nil {
			return nil, fmt.Errorf("sandbox: server %q: creating its private working directory: %w", s.Name, err)
		}
		p.privDir = dir
	}
	cmd := exec.Command(path, s.Args...)
	cmd.Env = buildEnv(os.Environ(), s.InheritEnv, s.Env)
	cmd.Dir = dir
	cmd.Stderr = s.Stderr
	cmd.WaitDelay = waitDelay
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdin = stdinR
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = stdoutW
	if err := cmd.Start(); err != nil {
		for _, f := range []*os.File{stdinR, stdinW, stdoutR, stdoutW} {
			f.Close()
		}
		if p.privDir != "" {
			os.RemoveAll(p.privDir)
		}
		return nil, fmt.Errorf("sandbox: server %q: starting %s: %w", s.Name, path, err)
	}
	stdinR.Close()
	stdoutW.Close()
	p.cmd = cmd
	p.stdin = stdinW
	p.stdout = stdoutR
	p.pid, p.targetPid = cmd.Process.Pid, cmd.Process.Pid
	slog.Warn("sandbox: protections not enforced on this OS", "server", s.Name, "os", runtime.GOOS)
	go func() {
		err := cmd.Wait()
		var ru *syscall.Rusage
		if ps := cmd.ProcessState; ps != nil {
			ru, _ = ps.SysUsage().(*syscall.Rusage)
			p.setExit(ps.String(), ru)
		} else {
			p.setExit(fmt.Sprint(err), nil)
		}
		if p.privDir != "" {
			os.RemoveAll(p.privDir)
		}
		close(p.done)
	}()
	return p, nil
}

const waitDelay = 2_000_000_000 // 2s, as on Linux

func (p *Process) signalGroup(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.pid, sig)
}
