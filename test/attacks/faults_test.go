package attacks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/testutil/faultyfs"
)

// smallStateFS returns the command prefix that runs moat in a private mount
// namespace whose $XDG_STATE_HOME (where the audit log lives) is a tmpfs of
// size bytes, a real filesystem that fills up. When moat exits, the log is
// copied out to out (the tmpfs goes with the namespace). It skips the test
// where no mount namespace can be made.
func smallStateFS(t *testing.T, state, out string, size int) []string {
	t.Helper()
	script := `mount -t tmpfs -o size=` + strconv.Itoa(size) + `,mode=0700 tmpfs "$0" || exit 97
"$@"; rc=$?
cp -a "$0/moat/." "$OUT_DIR/" || exit 98
exit $rc`
	for _, w := range [][]string{{"unshare", "--mount", "--propagation", "private", "--"}, {"unshare", "-rm", "--"}} {
		if err := exec.Command(w[0], append(w[1:], "true")...).Run(); err == nil {
			return append(w, "sh", "-c", script, state)
		}
	}
	t.Skip("SKIPPED LOUDLY: cannot make a mount namespace (unshare --mount / -rm), needed for a small filesystem of moat's own")
	return nil
}

// TestDiskFullLosesNoRecord: the audit log is on a real 512 KiB tmpfs.
// After three calls, the test fills the filesystem; calls go on until the
// log refuses them (the file's last, partly used page still takes a few
// records). Every refusal names the full disk; once space is back, calls
// work again. The log then verifies, and every call the upstream saw has its
// intent record in it (a call whose outcome could not be written shows as
// incomplete, never as absent), no call has two outcomes, and the lost
// records are counted.
//
// SECURITY.md, Audit log, "write-ahead".
func TestDiskFullLosesNoRecord(t *testing.T) {
	env := testutil.MoatEnv(t)
	state := testutil.EnvValue(env, "XDG_STATE_HOME")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	env = append(env, "OUT_DIR="+out)
	rec := filepath.Join(t.TempDir(), "calls.jsonl")
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{"g": testServer(t, "g", "-record", rec)})
	m := startMoatWith(t, env, smallStateFS(t, state, out, 512<<10), cfg)
	echo := func(msg string) (string, bool) {
		r, err := m.callRaw(t, "call_dynamic_tool", map[string]any{"group": "g", "name": "echo", "args": map[string]any{"message": msg}})
		if err != nil {
			return err.Error(), false
		}
		return resultText(r), !r.IsError
	}
	for i := range 3 {
		if got, ok := echo("before-" + strconv.Itoa(i)); !ok {
			t.Fatalf("call before the disk filled: %s", got)
		}
	}
	// The tmpfs as moat sees it, through its root.
	logDir := filepath.Join("/proc", strconv.Itoa(m.cmd.Process.Pid), "root", state, "moat")
	filler := filepath.Join(logDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, zeros{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v, want ENOSPC", err)
	}
	f.Close()
	refused := 0
	for i := 0; i < 200 && refused < 3; i++ {
		got, ok := echo("full-" + strconv.Itoa(i))
		if ok {
			continue
		}
		refused++
		if !strings.Contains(got, "audit log cannot be written") || !strings.Contains(got, "no space left on device") {
			t.Errorf("a call on a full disk was refused with %q; want the audit log and the full disk named", tail(got, 400))
		}
	}
	if refused < 3 {
		t.Fatal("200 calls on a full disk all succeeded")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "calls to work again once there is space", func() bool {
		_, ok := echo("after")
		return ok
	}, nil)
	m.stop(t)

	// The log, copied out of the namespace, back where moat keeps it.
	if err := os.MkdirAll(filepath.Dir(auditPath(env)), 0o700); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if err := os.Rename(filepath.Join(out, e.Name()), filepath.Join(filepath.Dir(auditPath(env)), e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	recs := verifiedAudit(t, env)
	checkEveryCallRecorded(t, recs, rec)
	findRecord(t, recs, "the records lost while the disk was full", func(r audit.Record) bool {
		return r.Event == audit.EventAuditFailure
	})
}

// checkEveryCallRecorded checks the write-ahead promise on a verified log:
// every call the upstream saw (rec, the test server's -record file) has
// exactly one intent record, every echo outcome is ok (a call either ran
// or was refused before its intent), and no call has two outcomes.
func checkEveryCallRecorded(t *testing.T, recs []audit.Record, rec string) {
	t.Helper()
	intents := map[string]int{}     // args hash -> intent records
	outcomes := map[string]int{}    // intent seq -> outcome records
	intentOf := map[uint64]string{} // intent seq -> args hash
	for _, r := range recs {
		switch {
		case r.Event == audit.EventIntent:
			intents[r.ArgsSHA256]++
			intentOf[r.Seq] = r.ArgsSHA256
		case r.Event == "tool_call" && r.Tool == "echo":
			outcomes[r.Detail[audit.DetailIntent]]++
			if r.Outcome != audit.OutcomeOK {
				t.Errorf("an echo call was recorded as %s (%s): it either ran or was refused before its intent", r.Outcome, r.Reason)
			}
		}
	}
	calls := recordedCalls(t, rec)
	for _, line := range calls {
		var c struct{ Arguments json.RawMessage }
		json.Unmarshal([]byte(line), &c)
		_, sum := audit.ArgsShape(c.Arguments)
		if intents[sum] != 1 {
			t.Errorf("the upstream saw %s, which has %d intent records in the log; want 1", c.Arguments, intents[sum])
		}
	}
	for seq, n := range outcomes {
		if n != 1 {
			t.Errorf("the call of intent %s has %d outcome records", seq, n)
		}
		if s, _ := strconv.ParseUint(seq, 10, 64); intentOf[s] == "" {
			t.Errorf("an outcome names intent %q, which is not an intent record", seq)
		}
	}
	t.Logf("%d calls reached the upstream, each with its intent record", len(calls))
}

// TestKill9LosesNoCall: 50 times, moat serves 8 concurrent calls and is
// killed with SIGKILL while they run; the next moat appends to the same
// log. Then the log verifies (unsealed, as a killed writer leaves it), and
// every call the upstream saw has its intent record; the calls cut off
// between intent and outcome are listed by verify as incomplete.
//
// SECURITY.md, Audit log, "write-ahead".
func TestKill9LosesNoCall(t *testing.T) {
	env := testutil.MoatEnv(t)
	rec := filepath.Join(t.TempDir(), "calls.jsonl")
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{"g": testServer(t, "g", "-record", rec)})
	const rounds, inFlight = 50, 8
	for round := range rounds {
		m := startMoatWith(t, env, nil, cfg)
		m.echoWorks(t, "g")
		done := make(chan struct{}, inFlight)
		for i := range inFlight {
			go func() {
				defer func() { done <- struct{}{} }()
				_, _ = m.cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "call_dynamic_tool",
					Arguments: map[string]any{"group": "g", "name": "echo", "args": map[string]any{"message": fmt.Sprintf("r%d-c%d", round, i)}}})
			}()
		}
		<-done // one answered: the others are in flight, queued or done
		if err := m.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for range inFlight - 1 {
			<-done
		}
		m.cs.Close()
		_ = m.cmd.Wait()
	}
	recs := verifiedAudit(t, env)
	intents := map[string]int{}
	for _, r := range recs {
		if r.Event == audit.EventIntent {
			intents[r.ArgsSHA256]++
		}
	}
	calls := recordedCalls(t, rec)
	seen, args := map[string]int{}, map[string]string{}
	for _, line := range calls {
		var c struct{ Arguments json.RawMessage }
		json.Unmarshal([]byte(line), &c)
		_, sum := audit.ArgsShape(c.Arguments)
		seen[sum]++
		args[sum] = string(c.Arguments)
	}
	for sum, n := range seen {
		if intents[sum] < n {
			t.Errorf("the upstream saw %s %d times; the log has %d intent records of it", args[sum], n, intents[sum])
		}
	}
	verify := exec.Command(testutil.BuildMoat(t), "audit", "verify", "--allow-unsealed", auditPath(env))
	verify.Env = env
	out, _ := verify.CombinedOutput()
	t.Logf("%d calls reached the upstream in %d rounds; verify says:\n%s", len(calls), rounds, tail(string(out), 2000))
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// withoutCapabilities is the command prefix that runs moat without
// capabilities, so that file permissions bind it as they bind a user: root
// with CAP_DAC_OVERRIDE writes through any mode. Empty when not root.
func withoutCapabilities(t *testing.T) []string {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	w := []string{"setpriv", "--bounding-set", "-all", "--inh-caps", "-all", "--"}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	if err := exec.Command(w[0], append(w[1:], "touch", filepath.Join(dir, "x"))...).Run(); err == nil {
		t.Fatal("root without capabilities still writes a read-only directory; the test cannot show what permissions do")
	} else if _, ok := err.(*exec.ExitError); !ok {
		t.Skipf("SKIPPED LOUDLY: cannot drop capabilities with setpriv (util-linux): %v", err)
	}
	return w
}

// TestPermissionFaultsLoseNoRecord: while moat serves, the audit log's
// directory is made read-only (rotation cannot rename the full file) and
// the log file's mode is changed to 0400. The running moat goes on
// recording every call in the file it holds open, and records once that
// rotation failed; a second moat, started meanwhile, cannot open the log
// and refuses its calls with the cause and the fix, before they run. Once
// the permissions are back, both moats record calls again without a
// restart, the log rotates, and the whole log verifies with every call
// the upstream saw recorded.
//
// SECURITY.md, Audit log, "write-ahead".
func TestPermissionFaultsLoseNoRecord(t *testing.T) {
	wrapper := withoutCapabilities(t)
	env := testutil.MoatEnv(t)
	rec := filepath.Join(t.TempDir(), "calls.jsonl")
	srv := testServer(t, "g", "-record", rec)
	srv["sandbox"] = map[string]any{"namespaces": false} // no capabilities: no user namespace mapping root
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{"g": srv},
		map[string]any{"audit": map[string]any{"rotate": map[string]any{"max_size": "8KiB"}}})
	m := startMoatWith(t, env, wrapper, cfg)
	echo := func(m *moatProc, msg string) (string, bool) {
		r, err := m.callRaw(t, "call_dynamic_tool", map[string]any{"group": "g", "name": "echo", "args": map[string]any{"message": msg}})
		if err != nil {
			return err.Error(), false
		}
		return resultText(r), !r.IsError
	}
	for i := range 3 {
		if got, ok := echo(m, "before-"+strconv.Itoa(i)); !ok {
			t.Fatalf("call before the fault: %s", got)
		}
	}
	path := auditPath(env)
	dir := filepath.Dir(path)
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	for i := range 40 { // about 40 KiB of records: rotation (8 KiB) is due
		if got, ok := echo(m, "read-only-dir-"+strconv.Itoa(i)); !ok {
			t.Fatalf("call %d with the log's directory read-only was refused: %s", i, tail(got, 400))
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if got, ok := echo(m, "mode-0400-"+strconv.Itoa(i)); !ok {
			t.Fatalf("call with the log's mode changed was refused by the moat that holds it open: %s", tail(got, 400))
		}
	}
	m2 := startMoatWith(t, env, wrapper, cfg)
	seen := len(recordedCalls(t, rec))
	for i := range 3 {
		got, ok := echo(m2, "second-"+strconv.Itoa(i))
		if ok || !strings.Contains(got, "audit log cannot be written") || !strings.Contains(got, "permission denied") {
			t.Fatalf("a second moat's call with the log at 0400: ok=%v %q; want a refusal naming the audit log and the denied permission", ok, tail(got, 400))
		}
	}
	if n := len(recordedCalls(t, rec)); n != seen {
		t.Fatalf("%d calls the second moat refused reached the upstream", n-seen)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second moat to record calls once the log's mode is back", func() bool {
		_, ok := echo(m2, "second-after")
		return ok
	}, nil)
	waitFor(t, "the first moat to rotate once the directory is writable", func() bool {
		if got, ok := echo(m, "after"); !ok {
			t.Fatalf("call after the fault: %s", tail(got, 400))
		}
		rotated, _ := audit.RotatedFiles(path)
		return len(rotated) > 0
	}, nil)
	m.stop(t)
	m2.stop(t)

	recs := verifiedAudit(t, env)
	checkEveryCallRecorded(t, recs, rec)
	failed := findRecord(t, recs, "the failed rotation", func(r audit.Record) bool { return r.Event == audit.EventRotateFailed })
	if !strings.Contains(failed.Reason, "permission denied") || !strings.Contains(failed.Reason, "writable") {
		t.Errorf("rotate_failed says %q; want the cause and the fix", failed.Reason)
	}
}

// TestIOErrorsLoseNoRecord: the audit log is on a real (FUSE) filesystem
// that starts failing while moat serves: first every write, sync and
// truncation with EIO, then only syncs (writes succeed: the kernel's page
// cache took them). Calls are refused before they run, each refusal naming
// the I/O error; once the disk works again calls are recorded again, with
// no restart. The log then verifies, every call the upstream saw has its
// intent, no call has two outcomes, and the lost records are counted.
//
// SECURITY.md, Audit log, "write-ahead".
func TestIOErrorsLoseNoRecord(t *testing.T) {
	env := testutil.MoatEnv(t)
	state := testutil.EnvValue(env, "XDG_STATE_HOME")
	backing := filepath.Join(t.TempDir(), "disk")
	for _, d := range []string{state, backing} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	faults := faultyfs.Mount(t, state, backing)
	rec := filepath.Join(t.TempDir(), "calls.jsonl")
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]server{"g": testServer(t, "g", "-record", rec)})
	m := startMoatWith(t, env, nil, cfg)
	echo := func(msg string) (string, bool) {
		r, err := m.callRaw(t, "call_dynamic_tool", map[string]any{"group": "g", "name": "echo", "args": map[string]any{"message": msg}})
		if err != nil {
			return err.Error(), false
		}
		return resultText(r), !r.IsError
	}
	for _, fault := range []struct {
		name string
		on   *atomic.Bool
	}{{"writes", &faults.Writes}, {"syncs", &faults.Syncs}} {
		for i := range 3 {
			if got, ok := echo("before-" + fault.name + strconv.Itoa(i)); !ok {
				t.Fatalf("call before the %s failed: %s", fault.name, got)
			}
		}
		fault.on.Store(true)
		seen := len(recordedCalls(t, rec))
		for i := range 3 {
			got, ok := echo("failing-" + fault.name + strconv.Itoa(i))
			if ok || !strings.Contains(got, "audit log cannot be written") || !strings.Contains(got, "input/output error") || strings.Contains(got, "restart") {
				t.Fatalf("a call while %s fail: ok=%v %q; want a refusal naming the audit log and the I/O error, and no restart", fault.name, ok, tail(got, 400))
			}
		}
		if n := len(recordedCalls(t, rec)); n != seen {
			t.Fatalf("%d calls refused while %s fail reached the upstream", n-seen, fault.name)
		}
		fault.on.Store(false)
		waitFor(t, "calls to be recorded again once the disk works", func() bool {
			_, ok := echo("after-" + fault.name)
			return ok
		}, nil)
	}
	m.stop(t)
	recs := verifiedAudit(t, env)
	checkEveryCallRecorded(t, recs, rec)
	lost := findRecord(t, recs, "the records lost while the disk failed", func(r audit.Record) bool {
		return r.Event == audit.EventAuditFailure && r.Detail["lost"] != ""
	})
	if !strings.Contains(lost.Reason, "input/output error") {
		t.Errorf("audit_failure says %q; want the I/O error", lost.Reason)
	}
}
