package sandbox

import (
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a running sandboxed child.
type Process struct {
	name      string
	cmd       *exec.Cmd
	stdin     *os.File
	stdout    *os.File
	control   *os.File // write end of the launcher's config pipe; closing it kills the tree
	pid       int      // launcher (process group leader), or the target without a launcher
	targetPid int
	privDir   string
	cgroup    *cgroup // removed once the tree is reaped; nil = none
	report    Report

	done     chan struct{}
	stopOnce sync.Once

	mu     sync.Mutex
	exit   string
	rusage *syscall.Rusage
}

// Stdin is the child's standard input. Closing it tells an MCP stdio server
// to exit.
func (p *Process) Stdin() io.WriteCloser { return p.stdin }

// Stdout is the child's standard output. The caller reads it until EOF; Stop
// closes it.
func (p *Process) Stdout() io.ReadCloser { return p.stdout }

// Pid is the pid of the process group leader: on Linux the launcher, which
// supervises the target (see TargetPid).
func (p *Process) Pid() int { return p.pid }

// TargetPid is the pid of the configured command itself.
func (p *Process) TargetPid() int { return p.targetPid }

// Done is closed when the child has exited and been reaped (with its whole
// process tree on Linux).
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitStatus describes how the target ended ("exit status 1", "signal:
// killed") and its resource usage (including its reaped descendants), for
// the audit log. Valid after Done; rusage may be nil if unknown.
func (p *Process) ExitStatus() (string, *syscall.Rusage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit, p.rusage
}

// Enforced reports what is actually enforced for this child.
func (p *Process) Enforced() Report { return p.report }

// killBackstop bounds the wait for the launcher to tear the tree down after
// Stop closes its control pipe, before the group gets SIGKILL directly.
const killBackstop = 2 * time.Second

// Stop ends the child: it closes stdin, sends SIGTERM to the whole process
// group, waits up to grace, then has the whole tree SIGKILLed and reaped.
// It returns when the child has been reaped. It is idempotent and safe to
// call concurrently; later calls wait for the first.
func (p *Process) Stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		_ = p.stdin.Close()
		select {
		case <-p.done:
		default:
			p.signalGroup(syscall.SIGTERM)
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-p.done:
			case <-t.C:
				p.kill()
			}
		}
		<-p.done
		_ = p.stdout.Close()
	})
	<-p.done
	return nil
}

// kill has the launcher SIGKILL the whole tree (closing its control pipe),
// and SIGKILLs the group itself if the launcher does not finish in time.
func (p *Process) kill() {
	if p.control != nil {
		_ = p.control.Close()
		t := time.NewTimer(killBackstop)
		defer t.Stop()
		select {
		case <-p.done:
			return
		case <-t.C:
		}
	}
	p.signalGroup(syscall.SIGKILL)
}

func (p *Process) setExit(exit string, ru *syscall.Rusage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.exit, p.rusage = exit, ru
}
