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
	"syscall"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
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
	for _, line := range recordedCalls(t, rec) {
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
	findRecord(t, recs, "the records lost while the disk was full", func(r audit.Record) bool {
		return r.Event == audit.EventAuditFailure
	})
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
