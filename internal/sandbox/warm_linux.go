package sandbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// A launcher process costs the moat binary's whole start-up (about 7 ms, most
// of it package init: jsonschema compiles its meta-schemas) before it can do
// any work. Serve mode keeps one launcher started ahead of need, idle until it
// gets its configuration, so a restart or a reload pays only the launcher's
// work. The idle launcher has an empty environment and no configuration: it
// knows nothing of the server it will serve until it is taken.
var warm launcherPool

// launcherProc is a started launcher and Moat's ends of its pipes.
type launcherProc struct {
	path    string
	sp      spaces
	cmd     *exec.Cmd
	stdin   *os.File // write end of the target's stdin
	stdout  *os.File // read end of the target's stdout
	stderr  *os.File // read end of the launcher's (and the target's) stderr
	control *os.File // write end of fd 3
	status  *os.File // read end of fd 4
	lines   *bufio.Reader
}

// readyTimeout bounds how long a prestarted launcher may take to say it is
// ready before it is dropped.
const readyTimeout = 10 * time.Second

// startLauncher starts the launcher at path in the namespaces sp.
func startLauncher(path string, sp spaces) (*launcherProc, error) {
	var files []*os.File // the child's ends, closed once it has them
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	var stdinR, stdinW, stdoutR, stdoutW, stderrR, stderrW, cfgR, cfgW, stR, stW *os.File
	var err error
	for _, p := range []struct{ r, w **os.File }{{&stdinR, &stdinW}, {&stdoutR, &stdoutW}, {&stderrR, &stderrW}, {&cfgR, &cfgW}, {&stR, &stW}} {
		if *p.r, *p.w, err = pipe(); err != nil {
			closeAll(files...)
			return nil, err
		}
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        []string{path, LauncherArg},
		Env:         []string{}, // the launcher needs nothing; the target's env travels on fd 3
		Stdin:       stdinR,
		Stdout:      stdoutW,
		Stderr:      stderrW, // a file, not a writer: no copying goroutine tied to this cmd
		ExtraFiles:  []*os.File{cfgR, stW},
		SysProcAttr: sp.sysProcAttr(),
	}
	if err := cmd.Start(); err != nil {
		closeAll(files...)
		return nil, err
	}
	closeAll(stdinR, stdoutW, stderrW, cfgR, stW)
	return &launcherProc{
		path: path, sp: sp, cmd: cmd,
		stdin: stdinW, stdout: stdoutR, stderr: stderrR, control: cfgW, status: stR,
		lines: bufio.NewReader(stR),
	}, nil
}

// next reads the launcher's next status message.
func (l *launcherProc) next() (launchStatus, error) {
	var st launchStatus
	line, err := l.lines.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &st)
	}
	return st, err
}

// discard kills the launcher's group and releases everything.
func (l *launcherProc) discard() {
	_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
	_ = l.cmd.Wait()
	closeAll(l.stdin, l.stdout, l.stderr, l.control, l.status)
}

// launcherPool holds at most one ready, idle launcher.
type launcherPool struct {
	mu      sync.Mutex
	enabled bool
	idle    *launcherProc
	filling bool
	fillSp  spaces        // the spaces of the launcher being started
	claimed bool          // a Start waits for the launcher being started
	filled  chan struct{} // closed when a fill attempt ends; for take, tests and CloseIdle
}

// KeepWarm makes Start keep one launcher started ahead of need from now on,
// until CloseIdle: the next one starts once a child runs, so a restart or a
// reload finds it ready. Nothing is prestarted before the first Start: at
// moat's own start-up it would compete for the CPU with moat's answers to
// its client (the first tools/list took 20% longer when it did). The first
// Start has its launcher started beside its namespace probe instead (see
// Start). Serve mode calls KeepWarm; one-shot commands do not, since the
// launcher they would prestart would never be used.
func KeepWarm() {
	warm.mu.Lock()
	warm.enabled = true
	warm.mu.Unlock()
}

// CloseIdle stops keeping a launcher ahead of need and ends the idle one, if
// any. Running children are not affected.
func CloseIdle() {
	warm.mu.Lock()
	warm.enabled = false
	idle, filled := warm.idle, warm.filled
	warm.idle = nil
	warm.mu.Unlock()
	if filled != nil {
		<-filled // a launcher being started is discarded by fill itself
	}
	if idle != nil {
		idle.discard()
	}
}

// take returns the idle launcher if it was started from path in sp, or nil. The
// caller calls fill once its child runs, so the next launcher's start-up
// does not compete with this child's.
func (w *launcherPool) take(path string, sp spaces) *launcherProc {
	w.mu.Lock()
	if w.idle == nil && w.filling && w.fillSp == sp && !w.claimed {
		// A launcher for these spaces is starting: it is ready sooner than
		// a new one would be. One Start waits for it; others at the same
		// moment start their own.
		w.claimed = true
		filled := w.filled
		w.mu.Unlock()
		<-filled
		w.mu.Lock()
	}
	l := w.idle
	w.idle = nil
	w.mu.Unlock()
	if l != nil && (l.path != path || l.sp != sp) {
		l.discard()
		l = nil
	}
	return l
}

// fill starts a launcher in sp in the background unless one is idle or
// starting. sp is the last child's: the next is likely alike.
func (w *launcherPool) fill(sp spaces) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.enabled || w.idle != nil || w.filling {
		return
	}
	path, err := launcherPath()
	if err != nil {
		return // Start reports it
	}
	w.filling, w.fillSp = true, sp
	done := make(chan struct{})
	w.filled = done
	go func() {
		defer close(done)
		l, err := w.prestart(path, sp)
		w.mu.Lock()
		w.filling, w.claimed = false, false
		keep := err == nil && w.enabled && w.idle == nil
		if keep {
			w.idle = l
		}
		w.mu.Unlock()
		switch {
		case err != nil:
			// The next Start starts its own launcher and reports
			// what goes wrong.
			slog.Debug("sandbox: prestarting a launcher failed", "err", err)
		case !keep:
			l.discard()
		}
	}()
}

// prestart starts a launcher and waits until it says it is ready.
func (w *launcherPool) prestart(path string, sp spaces) (*launcherProc, error) {
	l, err := startLauncher(path, sp)
	if err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go func() {
		st, err := l.next()
		if err == nil && !st.Ready {
			err = fmt.Errorf("unexpected status %+v", st)
		}
		ready <- err
	}()
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case err = <-ready:
	case <-t.C:
		err = fmt.Errorf("not ready after %v", readyTimeout)
	}
	if err != nil {
		l.discard()
		<-ready
		return nil, err
	}
	return l, nil
}

// waitFilled waits for the fill in progress, if any (tests).
func (w *launcherPool) waitFilled() {
	w.mu.Lock()
	filled := w.filled
	w.mu.Unlock()
	if filled != nil {
		<-filled
	}
}
