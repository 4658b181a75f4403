package attacks

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// childStart returns the child_start record of group.
func childStart(t *testing.T, recs []audit.Record, group string) audit.Record {
	t.Helper()
	return findRecord(t, recs, "child_start of "+group, func(r audit.Record) bool {
		return r.Event == "child_start" && r.Group == group
	})
}

// TestForkBomb: a stdio server starts 60 processes (the hostile program
// caps its bomb at 200, so a broken sandbox cannot take the machine down)
// under sandbox.max_procs: 32. Moat and the other group keep answering, the
// hostile group answers again (reconnected if the bomb killed it),
// child_start in the audit log says truthfully what is enforced
// (RLIMIT_NPROC never for root: the kernel exempts uid 0; the per-server
// cgroup's pids.max where cgroups can be made), a per-server cgroup stops
// the bomb short of its 60 processes, and when moat stops no process of
// the bomb is left.
//
// SECURITY.md, Child processes, "Limits": max_procs (RLIMIT_NPROC per user,
// and the per-server cgroup's pids.max). Containment as an unprivileged
// user is internal/sandbox: TestForkBombContainedByNProc, and by pids.max
// TestForkBombContainedByPidsMax.
func TestForkBomb(t *testing.T) {
	evil := hostileStdio(t, "stdio")
	evil["sandbox"] = map[string]any{"max_procs": 32}
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{"evil": evil, "good": testServer(t, "good")}))
	m.echoWorks(t, "evil")
	// The bomb is stopped by the cgroup's pids.max or by RLIMIT_NPROC (the
	// server, a Go program, may then die when it cannot create a thread).
	res := m.call(t, "evil", "forkbomb", map[string]any{"n": 60})
	t.Logf("the bomb reports: %s", resultText(res))
	tree := testutil.Descendants(m.cmd.Process.Pid)
	m.echoWorks(t, "good")
	waitFor(t, "group evil to answer again", func() bool {
		r := m.call(t, "evil", "echo", map[string]any{"message": "back"})
		return !r.IsError && resultText(r) == "back"
	}, nil)
	tree = append(tree, testutil.Descendants(m.cmd.Process.Pid)...)
	recs := m.auditLog(t)
	testutil.NoProcessesLeft(t, tree)
	cs := childStart(t, recs, "evil")
	enforced := strings.Split(cs.Detail["enforced"], ",")
	notEnforced := strings.Split(cs.Detail["not_enforced"], ",")
	if slices.Contains(enforced, "cgroup") && !res.IsError {
		started := 60
		if _, after, ok := strings.Cut(resultText(res), "started "); ok {
			fmt.Sscanf(after, "%d of", &started)
		}
		if started >= 60 {
			t.Errorf("the per-server cgroup is enforced, yet the bomb reports %q; want it stopped short of 60", resultText(res))
		}
	}
	if os.Geteuid() == 0 {
		if !slices.Contains(notEnforced, "rlimit_nproc") || slices.Contains(enforced, "rlimit_nproc") {
			t.Errorf("as root, child_start says enforced=%q not_enforced=%q; want rlimit_nproc not enforced", cs.Detail["enforced"], cs.Detail["not_enforced"])
		}
		return
	}
	if !slices.Contains(enforced, "rlimit_nproc") {
		t.Errorf("child_start says enforced=%q; want rlimit_nproc enforced for an unprivileged user", cs.Detail["enforced"])
	}
}

// TestMemoryBomb: a stdio server under sandbox.memory: 1GiB tries to
// allocate 4 GiB. The memory limit stops it (the server's cgroup, or
// RLIMIT_AS where no cgroup can be made: a Go program needs about 800 MiB
// of address space just to start): the server dies, the call fails with a
// tool error, the group reconnects, the other group never notices, and the
// audit log records the child's exit.
//
// SECURITY.md, Child processes, "Limits": memory (internal/sandbox:
// TestResourceLimitsStopRunawayChildren).
func TestMemoryBomb(t *testing.T) {
	evil := hostileStdio(t, "stdio")
	evil["sandbox"] = map[string]any{"memory": "1GiB"}
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{"evil": evil, "good": testServer(t, "good")}))
	// A Go server's start needs most of that 1 GiB of address space; on a
	// loaded machine a start can die before initialize, and Moat starts it
	// again: wait for it to serve before the attack.
	waitFor(t, "group evil to serve", func() bool {
		r := m.call(t, "evil", "echo", map[string]any{"message": "ready"})
		return !r.IsError && resultText(r) == "ready"
	}, nil)
	res := m.call(t, "evil", "eat", map[string]any{"mb": 4096})
	if !res.IsError {
		t.Fatalf("the memory bomb survived: %q", resultText(res))
	}
	m.echoWorks(t, "good")
	waitFor(t, "group evil to reconnect", func() bool {
		r := m.call(t, "evil", "echo", map[string]any{"message": "back"})
		return !r.IsError && resultText(r) == "back"
	}, nil)
	recs := m.auditLog(t)
	findRecord(t, recs, "the bomb's exit", func(r audit.Record) bool {
		return r.Event == "child_exit" && r.Group == "evil" && r.Detail["status"] != "exit status 0"
	})
	findRecord(t, recs, "the eat call, failed", func(r audit.Record) bool {
		return r.Event == "tool_call" && r.Tool == "eat" && r.Outcome == "error"
	})
}

// TestGrandchildIgnoringSIGTERM: a stdio server starts a grandchild that
// leaves its process group and session (setsid) and ignores SIGTERM. When
// moat stops, that grandchild is killed and reaped with everything else,
// and the audit log records the server's exit.
//
// SECURITY.md, Child processes, "Teardown": "every process of the tree is
// reaped, grandchildren that left the group included" (internal/sandbox:
// TestStopKillsWholeTreeIgnoringSIGTERM; cmd/moat: TestShutdownLeavesNoProcess).
func TestGrandchildIgnoringSIGTERM(t *testing.T) {
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{"evil": hostileStdio(t, "stdio")}))
	res := m.call(t, "evil", "stubborn", nil)
	if _, err := strconv.Atoi(resultText(res)); res.IsError || err != nil {
		t.Fatalf("stubborn: %q", resultText(res))
	}
	// The pid the server gives is in its own PID namespace: find the
	// grandchild in Moat's view by its command line.
	tree := testutil.Descendants(m.cmd.Process.Pid)
	if !slices.ContainsFunc(tree, func(pid int) bool {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		return strings.Contains(string(cmdline), "stubborn-grandchild") && testutil.ProcessAlive(pid)
	}) {
		t.Fatalf("the grandchild (pid %s in its server's namespace) is not running under moat (%v)", resultText(res), tree)
	}
	recs := m.auditLog(t)
	testutil.NoProcessesLeft(t, tree)
	findRecord(t, recs, "the server's exit", func(r audit.Record) bool {
		return r.Event == "child_exit" && r.Group == "evil"
	})
}
