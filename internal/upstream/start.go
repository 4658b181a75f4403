package upstream

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/hygiene"
)

// stderrNoticeEvery is how often a starting group publishes a new stderr
// line: each publication tells the client that the tool list changed, so
// a server printing fast must not flood it.
const stderrNoticeEvery = time.Second

// StartPhase is the part of a start that was under way.
type StartPhase int

const (
	PhaseSpawn      StartPhase = iota // starting the process (through the sandbox launcher)
	PhaseInitialize                   // the initialize handshake
	PhaseLists                        // reading the tool, resource and prompt lists
)

// timedOut says what did not happen in time.
func (p StartPhase) timedOut() string {
	switch p {
	case PhaseSpawn:
		return "the process did not start"
	case PhaseInitialize:
		return "no answer to initialize"
	}
	return "the lists were not read"
}

// A StartTimeoutError is a start that did not finish within its limit. Its
// text names the limit and the config key that raises it.
type StartTimeoutError struct {
	Group string
	Phase StartPhase
	Limit time.Duration // how long the start was allowed
	Set   bool          // the limit is the server's timeout.connect
	First bool          // the limit was the first-start default
}

func (e *StartTimeoutError) Error() string {
	which := "the default for a restart"
	switch {
	case e.Set:
		which = "its timeout.connect"
	case e.First:
		which = "the default for a first start"
	}
	return fmt.Sprintf("%s within %s (%s); if the server needs longer to start, raise mcpServers.%s.timeout.connect, e.g. \"5min\"",
		e.Phase.timedOut(), e.Limit, which, e.Group)
}

// startLimit is how long the next start of g may take: the config's
// timeout.connect, else the first-start default for a stdio server not yet
// ready since Moat started it, else the restart default. first reports the
// first-start case.
func (g *Group) startLimit() (limit time.Duration, first bool) {
	if d := g.cfg.Timeout.Connect; d > 0 {
		return d, false
	}
	if g.cfg.Type == config.Stdio && !g.everReady {
		return g.m.opts.FirstStartTimeout, true
	}
	return g.m.opts.ConnectTimeout, false
}

// timeoutError is the error of a start of g that ran out of time in phase.
func (g *Group) timeoutError(phase StartPhase, limit time.Duration) error {
	_, first := g.startLimit()
	return &StartTimeoutError{Group: g.name, Phase: phase, Limit: limit, Set: g.cfg.Timeout.Connect > 0, First: first}
}

// startStatus is the status of an attempt about to begin; it also marks
// where this attempt's stderr lines begin. Called from run only.
func (g *Group) startStatus(failures int) Status {
	limit, _ := g.startLimit()
	state := Connecting
	if g.cfg.Type == config.Stdio {
		state = Starting
	}
	_, g.stderrSeen = g.stderrLines.last()
	return Status{State: state, Attempts: failures, Since: time.Now(), Limit: limit,
		FirstStart: !g.everReady}
}

// watchStderr publishes, while an attempt runs, the last line the server
// wrote to stderr (at most once per stderrNoticeEvery), so the model and
// the user see what a slow start is doing. The returned func stops it.
func (g *Group) watchStderr() (stop func()) {
	if g.cfg.Type != config.Stdio {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	seen := g.stderrSeen
	wg.Go(func() {
		t := time.NewTicker(stderrNoticeEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			line, n := g.stderrLines.last()
			if n == seen {
				continue
			}
			seen = n
			g.setStderr(g.shown(line, "stderr"))
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// setStderr updates a starting group's last stderr line.
func (g *Group) setStderr(line string) {
	g.mu.Lock()
	if g.status.State != Starting || g.status.Stderr == line {
		g.mu.Unlock()
		return
	}
	g.status.Stderr = line
	g.mu.Unlock()
	g.m.changed()
}

// shown makes upstream text (what is the text: "reason", "stderr") fit to
// show the model: known secrets redacted, one line without invisible
// characters, at most maxReason characters, and withheld when it reads
// like instructions to the model.
func (g *Group) shown(s, what string) string {
	if g.m.opts.Redact != nil {
		s = g.m.opts.Redact(s)
	}
	s = hygiene.Line(s, maxReason)
	if findings := hygiene.Suspicious(s, nil, nil); len(findings) > 0 {
		// The text reaches the model through the tool list: text that
		// reads like instructions stays in the log for the user.
		g.m.event(g.name, "suspicious_"+what, map[string]string{"findings": strings.Join(findings, "; ")})
		g.log.Warn("the server's text looks like instructions to the model; it is withheld from the tool list", "what", what, "text", s, "findings", findings)
		return "the server's " + what + " text is withheld: it reads like instructions to the model (see moat's log)"
	}
	return s
}

// Summary describes the status for the model and the user: for a pending
// start, e.g. `starting for 14s of at most 2m0s, first start: a package
// manager may be installing it; last stderr line: "npm warn exec …"`; for
// an unavailable group its reason and last stderr line; otherwise the
// state's name.
func (st Status) Summary(now time.Time) string {
	var b strings.Builder
	b.WriteString(st.State.String())
	switch {
	case st.State.Pending() && !st.Since.IsZero():
		fmt.Fprintf(&b, " for %s of at most %s", now.Sub(st.Since).Round(time.Second), st.Limit)
		if st.FirstStart && st.State == Starting {
			b.WriteString(", first start: a package manager may be installing it")
		}
		if st.Attempts > 0 {
			fmt.Fprintf(&b, ", attempt %d", st.Attempts+1)
		}
	case st.State == Unavailable && st.Reason != "":
		b.WriteString(": " + st.Reason)
	}
	if st.Stderr != "" && st.State != Ready {
		fmt.Fprintf(&b, "; last stderr line: %q", st.Stderr)
	}
	return b.String()
}
