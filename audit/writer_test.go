package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/moatmcp/moat/internal/testutil/faultyfs"
)

func TestConcurrentWritersKeepLinesWholeAndSeqGapFree(t *testing.T) {
	k := testKeys(1)
	o := Options{Path: logPath(t), CheckpointEvery: 333}
	w := mustOpen(t, o, k)
	const writers, each = 8, 1000
	var wg sync.WaitGroup
	seqs := make([][]uint64, writers)
	for g := range writers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 7))
			for range each {
				r := randomRecord(rnd)
				if err := w.Write(context.Background(), r); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				seqs[g] = append(seqs[g], r.Seq)
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]bool{}
	for _, s := range seqs {
		for _, q := range s {
			if acked[q] {
				t.Fatalf("seq %d returned to two writers", q)
			}
			acked[q] = true
		}
	}
	lines := readLines(t, o.Path)
	calls := 0
	for i, l := range lines {
		var r Record
		if err := json.Unmarshal(l, &r); err != nil || !bytes.HasSuffix(l, []byte("}\n")) {
			t.Fatalf("line %d is torn or interleaved: %q", i+1, l)
		}
		if r.Seq != uint64(i+1) {
			t.Fatalf("line %d has seq %d: not gap-free", i+1, r.Seq)
		}
		if r.Event == "tool_call" {
			calls++
			if !acked[r.Seq] {
				t.Errorf("seq %d is in the file but no writer got it", r.Seq)
			}
		}
	}
	if calls != writers*each {
		t.Errorf("%d tool_call records in the file, want %d", calls, writers*each)
	}
	for _, mac := range []bool{true, false} {
		if _, err := verifyFile(t, o.Path, k, mac); err != nil {
			t.Errorf("Verify (mac=%v): %v", mac, err)
		}
	}
}

func TestOpenRefusesUnsafeFiles(t *testing.T) {
	k := testKeys(1)
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string
	}{
		{"file readable by others", func(t *testing.T, p string) { mkfile(t, p, 0o644) }, "chmod 600 " + "PATH"},
		{"file writable by group", func(t *testing.T, p string) { mkfile(t, p, 0o620) }, "chmod 600 PATH"},
		{"directory writable by others", func(t *testing.T, p string) { os.Chmod(filepath.Dir(p), 0o777) }, "chmod 700 DIR"},
		{"file owned by someone else", func(t *testing.T, p string) {
			mkfile(t, p, 0o600)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Skipf("cannot chown here: %v", err)
			}
		}, "chown"},
		{"symlink", func(t *testing.T, p string) { os.Symlink("/etc/passwd", p) }, "opening log"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := logPath(t)
			os.MkdirAll(filepath.Dir(p), 0o700)
			tt.setup(t, p)
			want := strings.NewReplacer("PATH", p, "DIR", filepath.Dir(p)).Replace(tt.want)
			w, err := Open(Options{Path: p}, k)
			if err == nil {
				w.Close()
				t.Fatalf("Open succeeded, want an error containing %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Open error = %q, want it to contain %q", err, want)
			}
		})
	}
}

func mkfile(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, nil, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
}

func TestNewFilesAre0600In0700(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	p := logPath(t)
	w := mustOpen(t, Options{Path: p, Rotate: RotateOptions{MaxSize: 500}}, testKeys(1))
	writeRecords(t, w, rand.New(rand.NewPCG(1, 1)), 10)
	w.Close()
	files, _ := LogFiles(p)
	if len(files) < 2 {
		t.Fatalf("expected rotation, got %v", files)
	}
	for _, f := range append(files, filepath.Dir(p)) {
		st, _ := os.Stat(f)
		want := os.FileMode(0o600)
		if st.IsDir() {
			want = 0o700 | os.ModeDir
		}
		if st.Mode() != want {
			t.Errorf("%s has mode %v, want %v", f, st.Mode(), want)
		}
	}
}

func TestRedactionKeepsCanaryOutOfTheFile(t *testing.T) {
	const canary = "sk-CANARY-8c1f2e"
	redact := func(s string) string { return strings.ReplaceAll(s, canary, "[REDACTED]") }
	for _, recordArgs := range []bool{true, false} {
		p := logPath(t)
		w := mustOpen(t, Options{Path: p, Redact: redact, RecordArgs: recordArgs}, testKeys(1))
		args := json.RawMessage(`{"token":"` + canary + `","nested":{"` + canary + `":[1,"x ` + canary + `"]}}`)
		shape, sum := ArgsShape(args)
		r := &Record{Event: "tool_call", Group: "g-" + canary, Tool: canary, Reason: "bad " + canary, Args: args,
			ArgsShape: shape, ArgsSHA256: sum, Session: canary, Detail: map[string]string{canary: "v " + canary}}
		if err := w.Write(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		w.Close()
		data, _ := os.ReadFile(p)
		if bytes.Contains(data, []byte(canary)) {
			t.Errorf("record_args=%v: the canary is in the log:\n%s", recordArgs, data)
		}
		if got := bytes.Contains(data, []byte(`"args":`)); got != recordArgs {
			t.Errorf("record_args=%v: args present = %v", recordArgs, got)
		}
		if _, err := verifyFile(t, p, testKeys(1), true); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
}

func TestArgsShape(t *testing.T) {
	shape, sum := ArgsShape(json.RawMessage(`{"a":"x","b":1.5,"c":true,"d":null,"e":{},"f":[]}`))
	want := map[string]string{"a": "string", "b": "number", "c": "boolean", "d": "null", "e": "object", "f": "array"}
	if d := cmp.Diff(want, shape); d != "" {
		t.Errorf("ArgsShape (-want +got):\n%s", d)
	}
	if len(sum) != 64 {
		t.Errorf("sha %q is not hex SHA-256", sum)
	}
	if s, _ := ArgsShape(json.RawMessage(`[1`)); s[""] != "invalid" {
		t.Errorf("ArgsShape of invalid JSON = %v", s)
	}
}

func TestRotationCarriesTheChainAcrossFiles(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Millisecond); return now }
	w := mustOpen(t, Options{Path: p, Fsync: FsyncOff, Rotate: RotateOptions{MaxSize: 4000}, Clock: clock}, k)
	writeRecords(t, w, rand.New(rand.NewPCG(3, 3)), 200)
	w.Close()
	files, err := LogFiles(p)
	if err != nil || len(files) < 5 {
		t.Fatalf("LogFiles = %v, %v; want several rotated files", files, err)
	}
	for _, mac := range [][]byte{k.MAC, nil} {
		rep, err := VerifyFiles(files, mac, pub(k))
		if err != nil || rep.FirstSeq != 1 {
			t.Fatalf("VerifyFiles(%d files, mac %v) = %+v, %v", len(files), mac != nil, rep, err)
		}
	}
	// Retention may drop the oldest files; the rest still verifies.
	if rep, err := VerifyFiles(files[2:], k.MAC, pub(k)); err != nil || rep.FirstSeq <= 1 {
		t.Errorf("VerifyFiles without the two oldest = %+v, %v", rep, err)
	}
	// A file missing from the middle is a deletion.
	_, err = VerifyFiles(append(files[:2:2], files[3:]...), k.MAC, pub(k))
	var prob *Problem
	if !errors.As(err, &prob) || prob.Kind != KindDeleted || prob.File != files[3] || prob.Line != 1 {
		t.Errorf("VerifyFiles without the third file = %v, want deleted at %s:1", err, files[3])
	}
}

// TestFailedRotationGoesOn: when the rename of a rotation fails (here the
// rotated name is taken by a directory; on a host, the log's directory made
// read-only), records go on in the sealed current file, the failure is
// recorded once, and rotation is retried after RotateRetry.
func TestFailedRotationGoesOn(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	w := mustOpen(t, Options{Path: p, Fsync: FsyncOff, Rotate: RotateOptions{MaxSize: 2000}, Clock: func() time.Time { return now }}, k)
	taken := p + "." + now.Format(stampLayout)
	if err := os.MkdirAll(filepath.Join(taken, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(5, 5))
	writeRecords(t, w, rnd, 40) // each ~500 bytes: rotation is due many times
	if st, err := os.Stat(taken); err != nil || !st.IsDir() {
		t.Fatalf("the rotated name was taken by the file: %v", err)
	}
	var failures []Record
	for _, l := range readLines(t, p) {
		var r Record
		json.Unmarshal(l, &r)
		if r.Event == EventRotateFailed {
			failures = append(failures, r)
		}
	}
	if len(failures) != 1 || !strings.Contains(failures[0].Reason, "records go on in audit.jsonl") || !strings.Contains(failures[0].Reason, "writable") {
		t.Fatalf("rotate_failed records = %+v, want one that says records go on and what to fix", failures)
	}
	os.RemoveAll(taken)
	writeRecords(t, w, rnd, 5)
	if rotated, _ := RotatedFiles(p); len(rotated) != 0 {
		t.Fatalf("rotation retried before RotateRetry: %v", rotated)
	}
	now = now.Add(RotateRetry)
	writeRecords(t, w, rnd, 5) // one rotation; the next, due at the same time, is refused its name
	if data, _ := os.ReadFile(p + "." + now.Format(stampLayout)); !bytes.Contains(data, []byte(`"seq":1,`)) {
		t.Fatal("the rotated file lost its first records: a second rotation at the same time replaced it")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := LogFiles(p)
	if len(files) != 2 {
		t.Fatalf("log files %v, want the retried rotation's two", files)
	}
	if rep, err := VerifyFiles(files, k.MAC, pub(k)); err != nil || rep.FirstSeq != 1 || rep.Records < 50 {
		t.Errorf("VerifyFiles = %+v, %v; want every record, chained across the rotation", rep, err)
	}
}

func TestRotationKeepsOnlyKeepFiles(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	w := mustOpen(t, Options{Path: p, Fsync: FsyncOff, Rotate: RotateOptions{MaxSize: 3000, Keep: 2}}, k)
	writeRecords(t, w, rand.New(rand.NewPCG(3, 3)), 100)
	w.Close()
	rotated, _ := RotatedFiles(p)
	if len(rotated) != 2 {
		t.Errorf("%d rotated files kept, want 2: %v", len(rotated), rotated)
	}
	files, _ := LogFiles(p)
	if _, err := VerifyFiles(files, k.MAC, pub(k)); err != nil {
		t.Errorf("VerifyFiles: %v", err)
	}
}

func TestReopenResumesTheChain(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	rnd := rand.New(rand.NewPCG(4, 4))
	for range 3 {
		w := mustOpen(t, Options{Path: p, Fsync: FsyncOff, CheckpointEvery: 4}, k)
		writeRecords(t, w, rnd, 10)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := verifyFile(t, p, k, true)
	if err != nil || rep.LastSeq != uint64(len(readLines(t, p))) {
		t.Fatalf("Verify after 3 sessions = %+v, %v", rep, err)
	}
	// A tampered tail (here the final checkpoint) is refused on Open, with a hint.
	lines := readLines(t, p)
	last := len(lines) - 1
	lines[last] = bytes.Replace(lines[last], []byte(`"time":"2`), []byte(`"time":"3`), 1)
	os.WriteFile(p, bytes.Join(lines, nil), 0o600)
	if w, err := Open(Options{Path: p}, k); err == nil || !strings.Contains(err.Error(), "move it aside") {
		if w != nil {
			w.Close()
		}
		t.Errorf("Open of a tampered log = %v, want a refusal that says to move it aside", err)
	}
}

func TestTornTailIsReportedThenRecovered(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	w := mustOpen(t, Options{Path: p, Fsync: FsyncOff}, k)
	writeRecords(t, w, rand.New(rand.NewPCG(5, 5)), 5)
	w.Close()
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"v":1,"seq":7,"time":"2026`)
	f.Close()
	_, err := verifyFile(t, p, k, true)
	var prob *Problem
	if !errors.As(err, &prob) || prob.Kind != KindTornTail || prob.Line != 7 || errors.Is(err, ErrTampered) {
		t.Fatalf("Verify of a torn log = %v, want torn-tail at line 7, not tampering", err)
	}
	w = mustOpen(t, Options{Path: p, Fsync: FsyncOff}, k)
	writeRecords(t, w, rand.New(rand.NewPCG(5, 6)), 1)
	w.Close()
	if _, err := verifyFile(t, p, k, true); err != nil {
		t.Fatalf("Verify after recovery: %v", err)
	}
	torn, _ := filepath.Glob(p + ".torn-*")
	if len(torn) != 1 {
		t.Fatalf("torn files: %v, want one", torn)
	}
	if data, _ := os.ReadFile(torn[0]); string(data) != `{"v":1,"seq":7,"time":"2026` {
		t.Errorf("torn file holds %q", data)
	}
	if !bytes.Contains(bytes.Join(readLines(t, p), nil), []byte(`"event":"recovered"`)) {
		t.Error("no recovered record after cutting a torn tail")
	}
}

// TestDiskFullFailsClosedWithoutCorruption limits the file size (RLIMIT_FSIZE)
// so that a write fails part-way, then lifts the limit.
func TestDiskFullFailsClosedWithoutCorruption(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	w := mustOpen(t, Options{Path: p}, k)
	writeRecords(t, w, rand.New(rand.NewPCG(6, 6)), 5)
	st, _ := os.Stat(p)

	signal.Ignore(syscall.SIGXFSZ) // else the kernel kills the test binary
	defer signal.Reset(syscall.SIGXFSZ)
	var old unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_FSIZE, &old)
	lim := unix.Rlimit{Cur: uint64(st.Size()) + 1500, Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
		t.Skipf("cannot set RLIMIT_FSIZE: %v", err)
	}
	var failErr error
	for i := range 50 {
		r := &Record{Event: "tool_call", Tool: "t", Reason: strings.Repeat("x", 100+i)}
		if failErr = w.Write(context.Background(), r); failErr != nil {
			break
		}
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(failErr, ErrUnavailable) || !strings.Contains(failErr.Error(), "file too large") {
		t.Fatalf("Write at the size limit = %v, want ErrUnavailable naming the cause", failErr)
	}
	data, _ := os.ReadFile(p)
	if !bytes.HasSuffix(data, []byte("}\n")) {
		t.Fatalf("a failed write left a partial line: ...%q", data[max(0, len(data)-40):])
	}
	if _, err := verifyFile(t, p, k, true); !errors.Is(err, ErrUnsealed) || errors.Is(err, ErrTampered) {
		t.Fatalf("Verify after the failure = %v, want an intact, unsealed prefix", err)
	}
	writeRecords(t, w, rand.New(rand.NewPCG(6, 7)), 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyFile(t, p, k, true); err != nil {
		t.Fatalf("Verify after recovery: %v", err)
	}
	var failure *Record
	for _, l := range readLines(t, p) {
		var r Record
		json.Unmarshal(l, &r)
		if r.Event == EventAuditFailure {
			failure = &r
		}
	}
	if failure == nil || failure.Detail["lost"] != "1" || failure.Detail["on_failure"] != "deny" {
		t.Errorf("audit_failure record = %+v, want lost=1 on_failure=deny", failure)
	}
}

// TestCrashLeavesAVerifiablePrefix kills a writer process with SIGKILL at
// random moments; every record it acknowledged must be on disk and verify.
func TestCrashLeavesAVerifiablePrefix(t *testing.T) {
	if os.Getenv("AUDIT_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	if testing.Short() {
		t.Skip("spawns 20 processes")
	}
	k := testKeys(1)
	p := logPath(t)
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 8))
	for iter := range 20 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashLeavesAVerifiablePrefix$")
		cmd.Env = append(os.Environ(), "AUDIT_CRASH_CHILD="+p)
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The kill lands after a random number of acknowledged records,
		// counted rather than timed, so a slow machine moves the moment
		// but never skips it.
		target := 1 + rnd.IntN(400)
		var acked []string
		reached := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				acked = append(acked, sc.Text())
				if len(acked) == target {
					close(reached)
				}
			}
		}()
		select {
		case <-reached:
		case <-done:
			t.Fatalf("iteration %d: the writer exited after %d records, before being killed", iter, len(acked))
		}
		cmd.Process.Kill()
		<-done
		cmd.Wait()

		rep, err := verifyFile(t, p, k, true)
		if errors.Is(err, ErrTampered) || (err != nil && !errors.Is(err, ErrUnsealed)) {
			t.Fatalf("iteration %d: Verify after SIGKILL = %v, want an intact prefix", iter, err)
		}
		onDisk := map[string]bool{}
		for _, l := range readLines(t, p) {
			var r Record
			if json.Unmarshal(l, &r) == nil {
				onDisk[fmt.Sprint(r.Seq)] = true
			}
		}
		n := 0
		for _, s := range acked {
			n++
			if !onDisk[s] {
				t.Fatalf("iteration %d: record seq %s was acknowledged but is not in the log", iter, s)
			}
		}
		t.Logf("iteration %d: %d acknowledged, %d records verified", iter, n, rep.Records)
	}
	w := mustOpen(t, Options{Path: p}, k)
	w.Close()
	if _, err := verifyFile(t, p, k, true); err != nil {
		t.Fatalf("Verify after reopening: %v", err)
	}
}

// crashChild writes from 4 goroutines until killed, printing each
// acknowledged seq.
func crashChild() {
	w, err := Open(Options{Path: os.Getenv("AUDIT_CRASH_CHILD"), CheckpointEvery: 50}, testKeys(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 9))
			for {
				r := randomRecord(rnd)
				if err := w.Write(context.Background(), r); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Printf("%d\n", r.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestWriteRejectsWriterOwnedEvents(t *testing.T) {
	w := mustOpen(t, Options{Path: logPath(t)}, testKeys(1))
	defer w.Close()
	for _, ev := range []string{"", EventCheckpoint, EventContinued} {
		if err := w.Write(context.Background(), &Record{Event: ev}); err == nil {
			t.Errorf("Write(event %q) succeeded", ev)
		}
	}
	w.Close()
	if err := w.Write(context.Background(), &Record{Event: "x"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}

func TestPublicPackageStaysPure(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if dep == "os/exec" || dep == "net/http" || strings.HasPrefix(dep, "github.com/moatmcp/moat/") && dep != "github.com/moatmcp/moat/audit" {
			t.Errorf("audit depends on %s; it must stay free of Moat internals and unrelated I/O", dep)
		}
	}
}

// TestProcessesShareOneLog runs several moats' writers on one log at once,
// as two clients (or a client and `moat call`) do: real processes, with
// rotation and checkpoints, one of them killed mid-write. The log stays one
// chain that verifies, and every acknowledged record is in it.
func TestProcessesShareOneLog(t *testing.T) {
	if os.Getenv("AUDIT_SHARED_CHILD") != "" {
		sharedChild()
		return
	}
	if testing.Short() {
		t.Skip("spawns 4 processes")
	}
	k := testKeys(1)
	p := logPath(t)
	const writers, each = 3, 200
	type child struct {
		cmd     *exec.Cmd
		acked   []string      // read after done
		reached chan struct{} // closed at the 100th acknowledged record
		done    chan struct{}
	}
	start := func(id, n int) *child {
		c := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestProcessesShareOneLog$"), reached: make(chan struct{}), done: make(chan struct{})}
		c.cmd.Env = append(os.Environ(), "AUDIT_SHARED_CHILD="+p, fmt.Sprintf("AUDIT_SHARED_ID=%d", id), fmt.Sprintf("AUDIT_SHARED_N=%d", n))
		out, _ := c.cmd.StdoutPipe()
		var stderr bytes.Buffer
		c.cmd.Stderr = &stderr
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(c.done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				c.acked = append(c.acked, sc.Text())
				if len(c.acked) == 100 {
					close(c.reached)
				}
			}
		}()
		t.Cleanup(func() {
			c.cmd.Process.Kill()
			<-c.done
			if c.cmd.Wait() != nil && stderr.Len() > 0 && t.Failed() {
				t.Logf("writer %d stderr: %.2000s", id, stderr.Bytes())
			}
		})
		return c
	}
	// Writer "victim" writes until it is killed, after it has acknowledged
	// 100 records: counted, so a slow machine moves the moment but never
	// skips it. The others run to completion meanwhile.
	var kids []*child
	for id := range writers {
		kids = append(kids, start(id, each))
	}
	victim := start(writers, 0)
	select {
	case <-victim.reached:
	case <-victim.done:
		t.Fatalf("the victim exited after %d records, before being killed", len(victim.acked))
	}
	victim.cmd.Process.Kill()
	<-victim.done
	for id, c := range kids {
		<-c.done
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("writer %d: %v after %d records", id, err, len(c.acked))
		}
	}

	files, err := LogFiles(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Errorf("the log did not rotate (files %v): the test does not cover rotation by another writer", files)
	}
	rep, err := VerifyFiles(files, k.MAC, pub(k))
	if err != nil && !errors.Is(err, ErrUnsealed) {
		t.Fatalf("VerifyFiles = %v, want one chain", err)
	}
	perWriter := map[string]int{}
	seqs := map[string]bool{}
	for _, f := range files {
		for _, l := range readLines(t, f) {
			var r Record
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			seqs[fmt.Sprint(r.Seq)] = true
			if w := r.Detail["writer"]; w != "" {
				perWriter[w]++
			}
		}
	}
	for id := range writers {
		if got := perWriter[fmt.Sprint(id)]; got != each {
			t.Errorf("writer %d has %d records in the log, want %d", id, got, each)
		}
	}
	for _, s := range victim.acked {
		if !seqs[s] {
			t.Errorf("the killed writer's acknowledged record seq %s is not in the log", s)
		}
	}
	t.Logf("%d files, %d records verified, %d checkpoints; the killed writer had %d acknowledged", len(files), rep.Records, rep.Checkpoints, len(victim.acked))
}

// sharedChild writes AUDIT_SHARED_N records (0: until killed) from 4
// goroutines, printing each acknowledged seq, then closes.
func sharedChild() {
	id, n := os.Getenv("AUDIT_SHARED_ID"), 0
	fmt.Sscan(os.Getenv("AUDIT_SHARED_N"), &n)
	w, err := Open(Options{Path: os.Getenv("AUDIT_SHARED_CHILD"), CheckpointEvery: 40, Rotate: RotateOptions{MaxSize: 48 << 10}}, testKeys(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var next atomic.Int64
	for g := range 4 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 11))
			for n == 0 || next.Add(1) <= int64(n) {
				r := randomRecord(rnd)
				r.Detail = map[string]string{"writer": id}
				if err := w.Write(context.Background(), r); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Printf("%d\n", r.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
}

// TestWriterWithOtherKeysStops: a second writer on the same log with other
// keys (a moat whose secret store differs) cannot continue the chain; it
// refuses its records with a message that says so, and the log stays valid.
func TestWriterWithOtherKeysStops(t *testing.T) {
	p := logPath(t)
	a := mustOpen(t, Options{Path: p}, testKeys(1))
	b := mustOpen(t, Options{Path: p}, testKeys(2))
	ctx := context.Background()
	if err := a.Write(ctx, &Record{Event: "tool_call"}); err != nil {
		t.Fatal(err)
	}
	err := b.Write(ctx, &Record{Event: "tool_call"})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "other audit keys") {
		t.Fatalf("second writer's Write = %v, want ErrUnavailable naming other audit keys", err)
	}
	b.Close()
	if err := a.Write(ctx, &Record{Event: "tool_call"}); err != nil {
		t.Fatalf("the first writer after the second stopped: %v", err)
	}
	a.Close()
	if _, err := verifyFile(t, p, testKeys(1), true); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

// TestTornLineOfAnotherWriterIsCut: a writer that died mid-write left half a
// line; the next writer to take its turn moves it aside and records that,
// and the log verifies.
func TestTornLineOfAnotherWriterIsCut(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	a := mustOpen(t, Options{Path: p}, k)
	b := mustOpen(t, Options{Path: p}, k)
	ctx := context.Background()
	if err := b.Write(ctx, &Record{Event: "tool_call", Tool: "from_b"}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"v":1,"seq":2,"time":"2026-`)
	f.Close()
	if err := a.Write(ctx, &Record{Event: "tool_call", Tool: "from_a"}); err != nil {
		t.Fatalf("Write after another writer's torn line: %v", err)
	}
	a.Close()
	b.Close()
	if _, err := verifyFile(t, p, k, true); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	var events []string
	for _, l := range readLines(t, p) {
		var r Record
		json.Unmarshal(l, &r)
		events = append(events, r.Event+":"+r.Tool)
	}
	want := []string{"tool_call:from_b", "recovered:", "tool_call:from_a", "checkpoint:"}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if torn, _ := filepath.Glob(p + ".torn-*"); len(torn) != 1 {
		t.Errorf("torn files %v, want the half line saved in one", torn)
	}
}

// TestOpenReadsOnlyTheTail: a log several times larger than the window Open
// reads is resumed from its end: writing goes on, a torn last line is cut
// at the right offset, a record changed before the last checkpoint is not
// read by Open (verify finds it), and a refusal names the true line.
// (BenchmarkOpenLargeLog shows that opening does not grow with the log.)
func TestOpenReadsOnlyTheTail(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	rnd := rand.New(rand.NewPCG(9, 9))
	o := Options{Path: p, Fsync: FsyncOff, CheckpointEvery: 500}
	w := mustOpen(t, o, k)
	writeRecords(t, w, rnd, 4000)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Size() < 4*tailWindow {
		t.Fatalf("the log is %d bytes; the test needs one over %d", fi.Size(), 4*tailWindow)
	}
	// A torn line, then reopen: the cut happens at the file's end.
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"v":1,"seq":9999,"time":"2026`)
	f.Close()
	w = mustOpen(t, o, k)
	writeRecords(t, w, rnd, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyFile(t, p, k, true); err != nil {
		t.Fatalf("Verify after reopening a large log: %v", err)
	}

	// A record changed at line 10: Open, which reads only from the last
	// checkpoint, still resumes; verify reports the change.
	lines := readLines(t, p)
	lines[9] = bytes.Replace(lines[9], []byte(`"files"`), []byte(`"fileZ"`), 1)
	if err := os.WriteFile(p, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	w = mustOpen(t, o, k)
	w.Close()
	if _, err := verifyFile(t, p, k, true); !errors.Is(err, ErrTampered) {
		t.Errorf("Verify of the changed record = %v, want tampering", err)
	}

	// A change to the last checkpoint (the line Open starts from) is
	// refused on Open, at its line.
	lines = readLines(t, p)
	n := len(lines) - 1
	lines[n] = bytes.Replace(lines[n], []byte(`"time":"2`), []byte(`"time":"3`), 1)
	if err := os.WriteFile(p, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(o, k)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("audit.jsonl:%d ", n+1)) {
		t.Errorf("Open of a log changed at line %d = %v; want a refusal naming that line", n+1, err)
	}
}

// TestAnchorFollowsDurableCheckpoints: Options.Anchor learns every
// checkpoint that is on disk, in order, with the hash Verify reports for it;
// with fsync off only the seal at Close is durable, so only it is anchored.
func TestAnchorFollowsDurableCheckpoints(t *testing.T) {
	for _, mode := range []FsyncMode{FsyncBatch, FsyncOff} {
		k := testKeys(1)
		p := logPath(t)
		var seqs []uint64
		hashes := map[uint64]string{}
		anchor := func(seq uint64, hash string) { seqs = append(seqs, seq); hashes[seq] = hash }
		w := mustOpen(t, Options{Path: p, Fsync: mode, CheckpointEvery: 4, Anchor: anchor}, k)
		for range 10 {
			writeRecords(t, w, rand.New(rand.NewPCG(3, 3)), 1) // one at a time: one batch each
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		rep, err := verifyFile(t, p, k, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(seqs) == 0 || seqs[len(seqs)-1] != rep.SealedSeq || !slices.IsSorted(seqs) {
			t.Fatalf("fsync %v: anchors at %v, want ascending and ending at the final seal %d", mode, seqs, rep.SealedSeq)
		}
		if mode == FsyncOff && len(seqs) != 1 {
			t.Errorf("fsync off: anchors at %v, want only the seal at Close", seqs)
		}
		if mode == FsyncBatch && len(seqs) < 3 {
			t.Errorf("fsync batch: anchors at %v, want every checkpoint", seqs)
		}
		for _, s := range seqs {
			if h, ok := rep.CheckpointHash(s); !ok || h != hashes[s] {
				t.Errorf("anchor seq %d hash %.12s…: the log's checkpoint there is %q (%v)", s, hashes[s], h, ok)
			}
		}
	}
}

// TestWriteBehind: a record written behind is in the file when WriteBehind
// returns (it survives the writer being killed), and becomes durable
// without any later write: the writer syncs it within BehindDelay, which
// the anchor of its checkpoint (given only for synced checkpoints) shows.
func TestWriteBehind(t *testing.T) {
	k := testKeys(1)
	p := logPath(t)
	anchored := make(chan uint64, 16)
	w := mustOpen(t, Options{Path: p, CheckpointEvery: 1, Anchor: func(seq uint64, _ string) { anchored <- seq }}, k)
	r := &Record{Event: "tool_call", Tool: "behind"}
	if err := w.WriteBehind(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(p); !bytes.Contains(data, []byte(`"tool":"behind"`)) {
		t.Fatal("WriteBehind returned before its record was in the file")
	}
	select {
	case seq := <-anchored:
		if seq <= r.Seq {
			t.Errorf("anchored checkpoint seq %d does not seal the record (seq %d)", seq, r.Seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the record written behind was not synced without a later write")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyFile(t, p, k, true); err != nil {
		t.Fatal(err)
	}
}

// TestFailedSyncOfRecordsWrittenBehind: on a real filesystem whose syncs
// fail with EIO (writes succeed), a record written behind cannot be made
// durable. The durable write that finds it is refused, naming the I/O
// error and the fix; once syncs work, writing goes on without a new Open,
// and the first record says which records may not be on disk. The log
// verifies.
func TestFailedSyncOfRecordsWrittenBehind(t *testing.T) {
	k := testKeys(1)
	dir, backing := filepath.Join(t.TempDir(), "mnt"), t.TempDir()
	os.Mkdir(dir, 0o700)
	faults := faultyfs.Mount(t, dir, backing)
	p := filepath.Join(dir, "state", "audit.jsonl")
	w := mustOpen(t, Options{Path: p}, k)
	writeRecords(t, w, rand.New(rand.NewPCG(8, 8)), 3)
	faults.Syncs.Store(true)
	behind := &Record{Event: "tool_call", Tool: "behind"}
	if err := w.WriteBehind(context.Background(), behind); err != nil {
		t.Fatal(err)
	}
	err := w.Write(context.Background(), &Record{Event: "tool_call", Tool: "refused"})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "input/output error") || !strings.Contains(err.Error(), "dmesg") {
		t.Fatalf("a durable write while syncs fail = %v, want ErrUnavailable naming the I/O error and what to check", err)
	}
	faults.Syncs.Store(false)
	writeRecords(t, w, rand.New(rand.NewPCG(8, 9)), 2)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var notDurable string
	for _, l := range readLines(t, p) {
		var r Record
		json.Unmarshal(l, &r)
		if r.Event == EventAuditFailure && r.Detail["not_durable"] != "" {
			notDurable = r.Detail["not_durable"]
		}
		if r.Tool == "refused" {
			t.Error("the refused record is in the log")
		}
	}
	if want := fmt.Sprintf("%d-%d", behind.Seq, behind.Seq); notDurable != want {
		t.Errorf("audit_failure not_durable = %q, want %q (the record written behind)", notDurable, want)
	}
	if _, err := verifyFile(t, p, k, true); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}
