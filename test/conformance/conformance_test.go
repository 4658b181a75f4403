package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/testutil"
)

const (
	// startTimeout bounds the wait for a bridge to listen (Node starts in
	// about a second on a loaded 2-core machine).
	startTimeout = 30 * time.Second
	// stopTimeout bounds the wait for a bridge and its sessions to exit after
	// SIGTERM (supergateway gives each session 5s before SIGKILL).
	stopTimeout = 15 * time.Second
	// serverSuiteTimeout bounds one `conformance server` run over every
	// scenario: about 5s directly and 35s behind Moat when idle, but a
	// request the suite's client never gets an answer to waits 60s.
	serverSuiteTimeout = 5 * time.Minute
	// clientScenarioTimeout bounds one `conformance client` run; the suite
	// gets clientSuiteTimeoutMS for the driver, and the driver gives up on
	// its own after 75s, so a hung moat is reported by the driver.
	clientScenarioTimeout = 2 * time.Minute
	clientSuiteTimeoutMS  = "100000"
	// maxReason bounds each failure reason in the test's output.
	maxReason = 400
	// maxProblems bounds how many problems a failing run prints.
	maxProblems = 40
)

// keepEnv names a directory to keep each phase's results and logs in (the
// bridges' logs hold every message and moat's stderr); without it they go
// to temporary directories that are removed with the test.
const keepEnv = "MOAT_CONFORMANCE_OUT"

// workDir is the directory for one phase's results and logs.
func workDir(t *testing.T, name string) string {
	t.Helper()
	base := os.Getenv(keepEnv)
	if base == "" {
		return t.TempDir()
	}
	d, err := filepath.Abs(filepath.Join(base, name))
	if err == nil {
		err = os.MkdirAll(d, 0o700)
	}
	if err != nil {
		t.Fatalf("%s: %v", keepEnv, err)
	}
	t.Logf("keeping the results and logs of %s in %s", name, d)
	return d
}

// pendingScenarios are the server scenarios of conformance 0.1.13 outside
// its default ("active") suite (read from its dist/index.js). The test runs
// --suite all; the summary also gives the scores over the active 30.
var pendingScenarios = map[string]bool{"json-schema-2020-12": true, "server-sse-polling": true}

// clientScenarios are the suite's client scenarios about the protocol
// itself; the others (auth/*) test an OAuth client.
var clientScenarios = []string{"initialize", "tools_call", "elicitation-sep1034-client-defaults", "sse-retry"}

// TestConformance runs the suite's server scenarios directly against the
// fixture and behind Moat, and its client scenarios with Moat as the client,
// all in one run from a cold start, and compares (see doc.go).
func TestConformance(t *testing.T) {
	conf := testutil.NodeBin(t, "conformance")
	gateway := testutil.NodeBin(t, "supergateway")
	bl := loadBaseline(t)
	moat := testutil.BuildMoat(t)
	fixture := testutil.BuildTestdataCommand(t, "conformanceserver")
	driver := testutil.BuildTestdataCommand(t, "conformanceclient")
	dir := t.TempDir()
	for _, p := range []string{moat, fixture, driver, dir} {
		if !safeWord(p) {
			t.Fatalf("path %q has characters the conformance suite cannot pass through its command line (it splits on spaces and runs sh -c); set TMPDIR to a plain path", p)
		}
	}
	env := nodeEnv(t, dir)
	serverNames, clientNames := suiteScenarios(t, conf, env)
	checkNames(t, bl, serverNames, clientNames)

	moatDir := filepath.Join(dir, "moat")
	if err := os.Mkdir(moatDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := testutil.WriteConfig(t, moatDir, map[string]map[string]any{
		"conformance": {"description": "The MCP conformance suite's fixture server", "command": fixture},
	})
	session := writeSessionScript(t, moatDir, moat, cfg)

	// Server scenarios: directly and behind Moat at once (each bridge,
	// each moat and each fixture is its own process).
	// A phase that -run leaves out is neither run nor compared.
	var direct, behind map[string]result
	var panics [2]string // the first Go panic behind each bridge
	var serverRan [2]bool
	t.Run("server", func(t *testing.T) {
		t.Run("direct", func(t *testing.T) {
			serverRan[0] = true
			t.Parallel()
			direct, panics[0] = serverRun(t, conf, gateway, "direct", fixture, env, serverNames)
		})
		t.Run("moat", func(t *testing.T) {
			serverRan[1] = true
			t.Parallel()
			behind, panics[1] = serverRun(t, conf, gateway, "moat", session, env, serverNames)
		})
	})

	// Client scenarios: Moat is the client of each scenario's server.
	clients := make([]*result, len(clientScenarios))
	t.Run("client", func(t *testing.T) {
		for i, s := range clientScenarios {
			t.Run(s, func(t *testing.T) {
				clients[i] = &result{problem: "the run stopped early (see its subtest)"}
				t.Parallel()
				r := clientRun(t, conf, driver, moat, s, env)
				clients[i] = &r
			})
		}
	})

	t.Log(summary(serverNames, direct, behind, clients, bl))

	var problems []string
	// A panic is a crash even where the suite did not notice it.
	for i, label := range []string{"directly (the fixture)", "behind moat"} {
		if panics[i] != "" {
			problems = append(problems, fmt.Sprintf("%s, a Go process panicked; the first panic in the bridge's log:\n%s", label, panics[i]))
		}
	}
	if serverRan[0] && serverRan[1] {
		problems = append(problems, compareServer(serverNames, direct, behind, bl)...)
	} else if serverRan[0] || serverRan[1] {
		t.Log("only one of server/direct and server/moat was selected by -run: the server scenarios are not compared")
	}
	for i, s := range clientScenarios {
		if clients[i] == nil {
			continue // not selected by -run
		}
		r := *clients[i]
		e, listed := bl.Client[s]
		switch {
		case !r.passed() && !listed:
			problems = append(problems, fmt.Sprintf("client %s: moat as the client fails: %s", s, r.why(maxReason)))
		case !r.passed() && e.Expect != "" && !strings.Contains(r.messages(), e.Expect):
			problems = append(problems, fmt.Sprintf("client %s: fails, but not with the baseline's %q: %s", s, e.Expect, r.why(maxReason)))
		case r.passed() && listed:
			problems = append(problems, fmt.Sprintf("client %s: passes now; remove it from baseline.yaml (client)", s))
		}
	}
	if len(problems) > 0 {
		msg := problems
		if len(msg) > maxProblems {
			msg = append(slices.Clip(msg[:maxProblems]), fmt.Sprintf("… and %d more", len(problems)-maxProblems))
		}
		t.Errorf("%d conformance problems (baseline: test/conformance/baseline.yaml):\n  %s", len(problems), strings.Join(msg, "\n  "))
	}
}

// checkNames fails the test when the baseline or the test names a scenario
// that the installed suite does not have.
func checkNames(t *testing.T, bl baseline, server, client []string) {
	t.Helper()
	for _, sec := range []struct {
		name    string
		entries map[string]baselineEntry
		known   []string
	}{{"direct", bl.Direct, server}, {"moat", bl.Moat, server}, {"client", bl.Client, client}} {
		for s, e := range sec.entries {
			if !slices.Contains(sec.known, s) {
				t.Errorf("baseline.yaml line %d: %s %s is not a scenario of the installed suite", e.line, sec.name, s)
			}
		}
	}
	for _, s := range clientScenarios {
		if !slices.Contains(client, s) {
			t.Fatalf("the installed suite has no client scenario %s (it has %v)", s, client)
		}
	}
}

// writeSessionScript writes the command the bridge runs for each session
// behind Moat: moat with its own HOME and XDG directories, because the
// bridge starts one moat per HTTP session, several alive at once, and two
// moats may not share an audit log (one client runs one moat).
func writeSessionScript(t *testing.T, dir, moat, cfg string) string {
	t.Helper()
	sessions := filepath.Join(dir, "sessions")
	if err := os.Mkdir(sessions, 0o700); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
# One private HOME and XDG tree per moat (see writeSessionScript).
d=$(mktemp -d '%s/s.XXXXXX') || exit 1
export HOME="$d/home" XDG_STATE_HOME="$d/state" XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/config"
exec '%s' '%s'
`, sessions, moat, cfg)
	p := filepath.Join(dir, "moat-session.sh")
	if err := os.WriteFile(p, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

// serverRun serves stdioCmd through a bridge, runs every server scenario
// against it, stops the bridge, and returns the results (a scenario the
// suite left out has a problem saying so) and the first Go panic in the
// bridge's log, if any.
func serverRun(t *testing.T, conf, gateway, label, stdioCmd string, env, names []string) (map[string]result, string) {
	dir := workDir(t, "server-"+label)
	b := startBridge(t, gateway, label, stdioCmd, dir, env)
	out := filepath.Join(dir, "results")
	start := time.Now()
	code, log := runSuite(t, conf, env, out, label+"-suite.log", serverSuiteTimeout, "server", "--url", b.url, "--suite", "all")
	t.Logf("%s: conformance server ran for %v (exit %d)", label, time.Since(start).Round(time.Second), code)
	b.stop()
	res, err := readResults(out, "server-")
	if err != nil {
		t.Fatalf("%s: read results: %v", label, err)
	}
	if len(res) == 0 {
		t.Errorf("%s: the suite reported no scenario (exit %d); its output ends:\n%s\nthe bridge's log ends:\n%s", label, code, tail(log, 15), tail(b.log, 15))
	}
	for _, n := range names {
		if _, ok := res[n]; !ok {
			res[n] = result{problem: "no result: the suite did not finish this scenario"}
		}
	}
	t.Logf("%s: slowest scenarios: %s", label, slowest(res, 3))
	return res, firstPanic(b.log)
}

// clientRun runs one client scenario with the driver as the client under
// test, and returns its result; a scenario the suite failed as a whole (the
// client exited with an error or timed out) has a problem with the driver's
// own error line.
func clientRun(t *testing.T, conf, driver, moat, scenario string, env []string) result {
	dir := workDir(t, "client-"+scenario)
	work := filepath.Join(dir, "driver")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "results")
	command := strings.Join([]string{driver, "-moat", moat, "-dir", work}, " ")
	code, log := runSuite(t, conf, env, out, "suite.log", clientScenarioTimeout,
		"client", "--command", command, "--scenario", scenario, "--timeout", clientSuiteTimeoutMS)
	res, err := readResults(out, "")
	if err != nil {
		t.Fatalf("read results: %v", err)
	}
	r, ok := res[scenario]
	if !ok {
		return result{problem: fmt.Sprintf("no result (suite exit %d); its output ends: %s", code, clip(tail(log, 8), maxReason))}
	}
	if code != 0 {
		var why []string
		if r.passed() {
			why = append(why, fmt.Sprintf("the suite failed the run (exit %d) though no check failed", code))
		}
		if line := driverError(r.dir); line != "" {
			why = append(why, "driver: "+line)
		}
		r.problem = strings.Join(why, "; ")
	}
	return r
}

// driverError is the driver's own error line from the stderr the suite
// saved in dir, or "".
func driverError(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "stderr.txt"))
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "conformanceclient ") {
			return line
		}
	}
	return ""
}

// compareServer applies the baseline to the server scenarios and returns
// one line per problem.
func compareServer(names []string, direct, behind map[string]result, bl baseline) []string {
	if direct == nil || behind == nil {
		return []string{"the server scenarios did not run (see the subtests' errors)"}
	}
	var problems []string
	for _, s := range names {
		d, m := direct[s], behind[s]
		if e, listed := bl.Direct[s]; !d.passed() {
			switch {
			case !listed:
				problems = append(problems, fmt.Sprintf("direct %s: the fixture fails it (fix testdata/conformanceserver, or baseline it under direct with its reason): %s", s, d.why(maxReason)))
			case !strings.Contains(d.messages(), e.Expect):
				problems = append(problems, fmt.Sprintf("direct %s: fails, but not with the baseline's %q: %s", s, e.Expect, d.why(maxReason)))
			}
			continue
		} else if listed {
			problems = append(problems, fmt.Sprintf("direct %s: passes now; remove it from baseline.yaml (direct)", s))
		}
		e, listed := bl.Moat[s]
		switch {
		case !m.passed() && !listed:
			problems = append(problems, fmt.Sprintf("moat %s: passes directly, fails behind moat: %s", s, m.why(maxReason)))
		case !m.passed() && !strings.Contains(m.messages(), e.Expect):
			problems = append(problems, fmt.Sprintf("moat %s: fails behind moat, but not with the baseline's %q: %s", s, e.Expect, m.why(maxReason)))
		case m.passed() && listed:
			problems = append(problems, fmt.Sprintf("moat %s: passes behind moat now; remove it from baseline.yaml (moat)", s))
		}
	}
	return problems
}

// summary is the score table of one run, for the test log and the README.
func summary(names []string, direct, behind map[string]result, clients []*result, bl baseline) string {
	count := func(res map[string]result, activeOnly bool) (pass, total int) {
		for _, s := range names {
			if activeOnly && pendingScenarios[s] {
				continue
			}
			total++
			if res[s].passed() {
				pass++
			}
		}
		return pass, total
	}
	mark := func(r result, listed bool) string {
		switch {
		case r.passed():
			return "pass"
		case listed:
			return "fail (baseline)"
		}
		return "FAIL"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "MCP conformance suite 0.1.13, one run from a cold start\n")
	if direct != nil && behind != nil {
		dp, dt := count(direct, false)
		mp, mt := count(behind, false)
		dpa, dta := count(direct, true)
		mpa, mta := count(behind, true)
		fmt.Fprintf(&b, "server scenarios passed: directly %d/%d, behind moat %d/%d (the suite's default active set: %d/%d and %d/%d)\n",
			dp, dt, mp, mt, dpa, dta, mpa, mta)
		fmt.Fprintf(&b, "  %-36s %-16s %s\n", "scenario", "direct", "behind moat")
		for _, s := range names {
			_, ld := bl.Direct[s]
			_, lm := bl.Moat[s]
			m := mark(behind[s], lm)
			if !direct[s].passed() {
				m = strings.ToLower(mark(behind[s], false)) + " (not compared)"
			}
			name := s
			if pendingScenarios[s] {
				name += " (pending)"
			}
			fmt.Fprintf(&b, "  %-36s %-16s %s\n", name, mark(direct[s], ld), m)
		}
	}
	pass, ran := 0, 0
	var lines strings.Builder
	for i, s := range clientScenarios {
		r := clients[i]
		if r == nil {
			continue
		}
		ran++
		_, l := bl.Client[s]
		line := mark(*r, l)
		if r.passed() {
			pass++
		} else {
			line += ": " + r.why(200)
		}
		fmt.Fprintf(&lines, "  %-36s %s\n", s, line)
	}
	if ran > 0 {
		fmt.Fprintf(&b, "client scenarios passed (moat as the client): %d/%d\n%s", pass, ran, lines.String())
	}
	return b.String()
}
