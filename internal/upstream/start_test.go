package upstream

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/redact"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/testutil"
)

// gateSecret is part of the gate file's name, which the test server prints
// on stderr while it "installs": the redactor knows it as a secret.
const gateSecret = "s3cret-gate-value-7f3a9c"

// starting is one Manager running one group that is not awaited, and a
// channel woken at every change the Manager reports.
type starting struct {
	m       *Manager
	g       *Group
	events  *events
	changed chan struct{}
}

// startUnwaited runs s through a Manager with opts (the test's logger,
// events and change hook added) and returns at once.
func startUnwaited(t *testing.T, s *config.Server, opts Options) *starting {
	t.Helper()
	sandbox.LauncherPath = testutil.BuildMoat(t)
	logs := &testutil.SyncBuffer{}
	st := &starting{events: &events{}, changed: make(chan struct{}, 1)}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.OnEvent = st.events.add
	opts.OnChange = func() {
		select {
		case st.changed <- struct{}{}:
		default:
		}
	}
	opts.GracePeriod = 2 * time.Second
	st.m = NewManager(opts)
	st.m.Apply(&config.Config{Servers: map[string]*config.Server{s.Name: s}})
	st.m.Open(Client{})
	t.Cleanup(func() {
		st.m.Close()
		if t.Failed() {
			t.Logf("manager log:\n%s", logs.String())
		}
	})
	g, ok := st.m.Group(s.Name)
	if !ok {
		t.Fatalf("no group %q", s.Name)
	}
	st.g = g
	return st
}

// await returns the group's status once cond holds for it, checking at
// every change the Manager reports; it fails the test after limit.
func (st *starting) await(t *testing.T, what string, limit time.Duration, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		s := st.g.Status()
		if cond(s) {
			return s
		}
		select {
		case <-st.changed:
		case <-deadline.C:
			t.Fatalf("after %s, still not %s: the group is %s", limit, what, s.Summary(time.Now()))
		}
	}
}

// gatedServer is the test server, which says on stderr that it is
// installing and serves only once the returned gate file exists.
func gatedServer(t *testing.T, name string) (s *config.Server, gate string) {
	gate = filepath.Join(t.TempDir(), "gate-"+gateSecret)
	s = stdioTestServer(t, name)
	s.Args = append(s.Args, "-start-gate", gate)
	return s, gate
}

func redactor() func(string) string {
	r := redact.New()
	r.Add("gate", gateSecret)
	return r.String
}

// TestSlowFirstStartIsNotRestarted (issue 20, item 4): a stdio server
// whose first start takes many times the restart timeout (as `npx -y`
// does while npm fetches the package) is neither killed nor retried: one
// process, no failure, and it serves once its "install" ends. Meanwhile
// the group's status says it is starting, on its first start, and shows
// its last stderr line, with the known secret in it redacted.
func TestSlowFirstStartIsNotRestarted(t *testing.T) {
	const restart = 200 * time.Millisecond // stands for the old fixed 10 s
	s, gate := gatedServer(t, "slow")
	st := startUnwaited(t, s, Options{ConnectTimeout: restart, Backoff: []time.Duration{restart}, RetryEvery: restart, Redact: redactor()})

	got := st.await(t, "starting with its stderr line shown", time.Minute, func(s Status) bool {
		return s.State == Starting && strings.Contains(s.Stderr, "installing")
	})
	summary := got.Summary(time.Now())
	for _, want := range []string{"starting for ", "of at most " + DefaultFirstStartTimeout.String(), "first start", "last stderr line", "testserver slow: installing", "[REDACTED:gate]"} {
		if !strings.Contains(summary, want) {
			t.Errorf("while starting, the status %q does not say %q", summary, want)
		}
	}
	if strings.Contains(summary, gateSecret) {
		t.Errorf("the status shows a known secret from the server's stderr: %q", summary)
	}

	// A start five times longer than the restart timeout is still the
	// same start: the process is alive and making progress.
	<-time.After(time.Until(got.Since.Add(5 * restart)))
	if now := st.g.Status(); now.State != Starting || now.Attempts != 0 {
		t.Fatalf("%s into its first start, the group is %s (attempts %d), want still starting", time.Since(got.Since).Round(time.Millisecond), now.Summary(time.Now()), now.Attempts)
	}
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st.await(t, "ready", time.Minute, func(s Status) bool { return s.State == Ready })

	if n := len(st.events.of("child_start")); n != 1 {
		t.Errorf("the server was started %d times, want once", n)
	}
	if ev := st.events.of("upstream_unavailable"); len(ev) != 0 {
		t.Errorf("the slow first start was counted as a failure: %v", ev)
	}
	h := &harness{m: st.m, g: st.g, events: st.events}
	if got := h.mustCall(t, "echo", map[string]any{"message": "after a slow start"}); got != "after a slow start" {
		t.Fatalf("echo after the slow start: %q", got)
	}
}

// TestStartPastTimeoutNamesTheKey (issue 20, item 4): a start that runs
// past the server's timeout.connect is stopped, with a reason that names
// the limit and the key that raises it, and the process is reaped.
func TestStartPastTimeoutNamesTheKey(t *testing.T) {
	s, _ := gatedServer(t, "stuck") // the gate never opens
	s.Timeout.Connect = 2 * time.Second
	st := startUnwaited(t, s, Options{Backoff: []time.Duration{time.Hour}, Redact: redactor()})

	got := st.await(t, "unavailable", time.Minute, func(s Status) bool { return s.State == Unavailable })
	var timeout *StartTimeoutError
	for _, want := range []string{"within 2s", "its timeout.connect", "raise mcpServers.stuck.timeout.connect"} {
		if !strings.Contains(got.Reason, want) {
			t.Errorf("the reason %q does not say %q", got.Reason, want)
		}
	}
	_, err := st.g.Session(context.Background())
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "mcpServers.stuck.timeout.connect") {
		t.Errorf("a request for the group gets %v, want the start timeout and the key to raise", err)
	}
	if errors.As(err, &timeout) {
		t.Errorf("the request's error wraps the start's: %v", err)
	}
	if n := len(st.events.of("child_exit")); n != 1 {
		t.Errorf("%d child_exit events after the timed-out start, want 1 (the process is stopped and reaped)", n)
	}
	t.Logf("the model reads: %s", got.Summary(time.Now()))
}

// TestStartLimit: timeout.connect applies to every start; without it a
// stdio server gets the first-start default until it is first ready, then
// the restart default, and a remote server always the restart default.
func TestStartLimit(t *testing.T) {
	m := NewManager(Options{ConnectTimeout: 7 * time.Second, FirstStartTimeout: 70 * time.Second})
	for _, tt := range []struct {
		name      string
		typ       config.Transport
		connect   time.Duration
		everReady bool
		want      time.Duration
		wantFirst bool
	}{
		{"stdio first start", config.Stdio, 0, false, 70 * time.Second, true},
		{"stdio restart", config.Stdio, 0, true, 7 * time.Second, false},
		{"stdio set", config.Stdio, 3 * time.Minute, false, 3 * time.Minute, false},
		{"stdio set, restart", config.Stdio, 3 * time.Minute, true, 3 * time.Minute, false},
		{"remote first", config.HTTP, 0, false, 7 * time.Second, false},
		{"remote set", config.HTTP, time.Second, false, time.Second, false},
	} {
		s := server("x", tt.typ)
		s.Timeout.Connect = tt.connect
		g := newGroup(m, s)
		g.everReady = tt.everReady
		if got, first := g.startLimit(); got != tt.want || first != tt.wantFirst {
			t.Errorf("%s: startLimit() = %s, %v; want %s, %v", tt.name, got, first, tt.want, tt.wantFirst)
		}
	}
}

// TestSummary: what the model and the user read of each state.
func TestSummary(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		st   Status
		want string
	}{
		{Status{State: Starting, Since: now.Add(-14 * time.Second), Limit: 2 * time.Minute, FirstStart: true, Stderr: "npm warn exec"},
			`starting for 14s of at most 2m0s, first start: a package manager may be installing it; last stderr line: "npm warn exec"`},
		{Status{State: Starting, Since: now.Add(-3 * time.Second), Limit: 30 * time.Second, Attempts: 2},
			"starting for 3s of at most 30s, attempt 3"},
		{Status{State: Connecting, Since: now, Limit: 30 * time.Second, FirstStart: true}, "connecting for 0s of at most 30s"},
		{Status{State: Connecting}, "connecting"},
		{Status{State: Unavailable, Reason: "server process exited during start-up (exit status 1)", Stderr: "Error: Cannot find module 'x'"},
			`unavailable: server process exited during start-up (exit status 1); last stderr line: "Error: Cannot find module 'x'"`},
		{Status{State: Ready, Stderr: "old line"}, "ready"},
	} {
		if got := tt.st.Summary(now); got != tt.want {
			t.Errorf("Summary(%+v)\n got %s\nwant %s", tt.st, got, tt.want)
		}
	}
}
