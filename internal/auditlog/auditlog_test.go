package auditlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/secrets"
)

// fileStore is a real secret store (encrypted file back end) in a temp dir.
func fileStore(t *testing.T) *secrets.Store {
	t.Helper()
	s, err := secrets.Open(context.Background(), &secrets.Options{
		Backend:    secrets.BackendFile,
		Dir:        filepath.Join(t.TempDir(), "secrets"),
		Passphrase: func() ([]byte, error) { return []byte("test passphrase"), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKeysAreCreatedOnceAndReused(t *testing.T) {
	store := fileStore(t)
	ctx := context.Background()
	if _, err := Keys(ctx, store, false); err == nil {
		t.Fatal("Keys without create succeeded on an empty store")
	}
	k1, err := Keys(ctx, store, true)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := Keys(ctx, store, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1.MAC, k2.MAC) || !k1.Signer.Equal(k2.Signer) {
		t.Fatal("a second Keys call returned different keys: the log could no longer be verified")
	}
}

type harness struct {
	log   *Log
	path  string
	keys  audit.Keys
	calls int
}

func open(t *testing.T, onFailure audit.FailureMode, keysErr error) *harness {
	t.Helper()
	h := &harness{path: filepath.Join(t.TempDir(), "state", "audit.jsonl")}
	store := fileStore(t)
	h.log = Open(audit.Options{Path: h.path, OnFailure: onFailure}, func() (audit.Keys, error) {
		if keysErr != nil {
			return audit.Keys{}, keysErr
		}
		k, err := Keys(context.Background(), store, true)
		h.keys = k
		return k, err
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { h.log.Close() })
	return h
}

// handler is the audit log's two layers around next, as serve stacks them
// (with nothing between), counting the calls that reach next.
func (h *harness) handler(next guard.Handler) guard.Handler {
	return h.log.Layer()(h.log.Intent()(func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
		h.calls++
		return next(ctx, c)
	}))
}

func ok(context.Context, *guard.Call) (*guard.Result, error) {
	return &guard.Result{Tool: &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}}, nil
}

func records(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestCallsAreRecordedWithoutArgumentValues(t *testing.T) {
	h := open(t, audit.FailDeny, nil)
	call := &guard.Call{Kind: guard.KindTool, Group: "files", Name: "read_file", Args: json.RawMessage(`{"path":"/home/me/diary-7c1e.txt","n":3}`), Session: "s1"}
	if _, err := h.handler(ok)(context.Background(), call); err != nil {
		t.Fatal(err)
	}
	denied := &guard.Denial{Layer: "policy", Rule: "deny:write_*", Reason: "write tools are denied"}
	_, err := h.handler(func(context.Context, *guard.Call) (*guard.Result, error) { return nil, denied })(context.Background(),
		&guard.Call{Kind: guard.KindTool, Group: "files", Name: "write_file", Args: json.RawMessage(`{}`)})
	if !errors.Is(err, denied) {
		t.Fatalf("the inner denial was not passed on: %v", err)
	}
	h.log.Close()

	data, _ := os.ReadFile(h.path)
	if bytes.Contains(data, []byte("diary-7c1e")) {
		t.Fatal("an argument value is in the audit log")
	}
	var calls []map[string]any
	for _, r := range records(t, h.path) {
		if r["event"] == "tool_call" {
			calls = append(calls, r)
		}
	}
	if len(calls) != 2 {
		t.Fatalf("got %d tool_call records, want 2", len(calls))
	}
	if calls[0]["tool"] != "read_file" || calls[0]["decision"] != "allow" || calls[0]["outcome"] != "ok" || calls[0]["args_sha256"] == nil {
		t.Errorf("allowed call recorded as %v", calls[0])
	}
	if shape, _ := calls[0]["args_shape"].(map[string]any); shape["path"] != "string" || shape["n"] != "number" {
		t.Errorf("args shape = %v", calls[0]["args_shape"])
	}
	if calls[1]["decision"] != "deny" || calls[1]["rule"] != "policy:deny:write_*" || calls[1]["outcome"] != "denied" {
		t.Errorf("denied call recorded as %v", calls[1])
	}
	if _, err := audit.VerifyFiles([]string{h.path}, h.keys.MAC, h.keys.Signer.Public().(ed25519.PublicKey)); err != nil {
		t.Fatalf("the log does not verify: %v", err)
	}
}

// TestUnwritableLogRefusesCallsBeforeTheyRun: from the very first call after
// the log stops taking records (a full disk, here a closed writer), no call
// reaches the upstream: its intent record cannot be written.
func TestUnwritableLogRefusesCallsBeforeTheyRun(t *testing.T) {
	h := open(t, audit.FailDeny, nil)
	if _, err := h.handler(ok)(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t"}); err != nil {
		t.Fatal(err)
	}
	h.log.w.Load().Close() // every later write fails
	for i := range 2 {
		calls := h.calls
		_, err := h.handler(ok)(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t"})
		var d *guard.Denial
		if !errors.As(err, &d) || d.Layer != guard.LayerAudit {
			t.Fatalf("call %d with an unwritable log: %v, want an audit denial", i+1, err)
		}
		if h.calls != calls {
			t.Fatalf("call %d after the log stopped taking records reached the upstream", i+1)
		}
	}
}

// TestIntentBeforeOutcome: an allowed call's intent record is durable
// before the call runs, and its outcome names it; a call refused below the
// intent has no intent; verify lists an intent without outcome as an
// incomplete call.
func TestIntentBeforeOutcome(t *testing.T) {
	h := open(t, audit.FailDeny, nil)
	_, err := h.handler(func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
		// While the call runs, its intent is already in the file.
		var seen bool
		for _, r := range records(t, h.path) {
			seen = seen || r["event"] == audit.EventIntent && r["tool"] == "t"
		}
		if !seen {
			t.Error("the call runs before its intent record is in the log")
		}
		return ok(ctx, c)
	})(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t", Args: json.RawMessage(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	// An intent whose outcome never comes: written as Intent would, with no
	// outcome after it (the process died).
	orphan := &audit.Record{Event: audit.EventIntent, Group: "g", Tool: "lost"}
	if err := h.log.Write(context.Background(), orphan); err != nil {
		t.Fatal(err)
	}
	h.log.Close()
	var intent, outcome map[string]any
	for _, r := range records(t, h.path) {
		switch {
		case r["event"] == audit.EventIntent && r["tool"] == "t":
			intent = r
		case r["event"] == "tool_call" && r["tool"] == "t":
			outcome = r
		}
	}
	if intent == nil || outcome == nil {
		t.Fatalf("intent %v, outcome %v", intent, outcome)
	}
	if d, _ := outcome["detail"].(map[string]any); d[audit.DetailIntent] != fmt.Sprint(intent["seq"]) {
		t.Errorf("the outcome's detail %v does not name its intent (seq %v)", outcome["detail"], intent["seq"])
	}
	if intent["args_sha256"] != outcome["args_sha256"] || intent["args_sha256"] == nil {
		t.Errorf("intent and outcome describe different arguments: %v / %v", intent["args_sha256"], outcome["args_sha256"])
	}
	rep, err := audit.VerifyFiles([]string{h.path}, h.keys.MAC, h.keys.Signer.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Incomplete) != 1 || rep.Incomplete[0].Tool != "lost" || rep.Incomplete[0].Seq != orphan.Seq {
		t.Errorf("incomplete calls: %+v; want only the lost one (seq %d)", rep.Incomplete, orphan.Seq)
	}
}

func TestUnopenableLog(t *testing.T) {
	for _, tt := range []struct {
		mode    audit.FailureMode
		wantRun bool
	}{{audit.FailDeny, false}, {audit.FailContinue, true}} {
		h := open(t, tt.mode, errors.New("no keychain and no MOAT_PASSPHRASE"))
		_, err := h.handler(ok)(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t"})
		if ran := h.calls == 1; ran != tt.wantRun || (err == nil) != tt.wantRun {
			t.Errorf("mode %v: call ran=%v err=%v, want ran=%v", tt.mode, ran, err, tt.wantRun)
		}
	}
}

// TestCancelledCallIsRecorded: a call the client cancels while it runs may
// already have reached the upstream, so its record is written (outcome
// "cancelled") although the call's context is done, and the client is not
// told the log failed.
func TestCancelledCallIsRecorded(t *testing.T) {
	h := open(t, audit.FailDeny, nil)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := h.handler(func(ctx context.Context, _ *guard.Call) (*guard.Result, error) {
		cancel()
		return nil, ctx.Err()
	})(ctx, &guard.Call{Kind: guard.KindTool, Group: "g", Name: "slow"})
	var d *guard.Denial
	if errors.As(err, &d) || !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled call returned %v, want the cancellation itself", err)
	}
	h.log.Close()
	for _, r := range records(t, h.path) {
		if r["event"] == "tool_call" && r["tool"] == "slow" {
			if r["outcome"] != string(audit.OutcomeCancelled) {
				t.Fatalf("the cancelled call was recorded as %v", r)
			}
			return
		}
	}
	t.Fatal("the cancelled call has no record")
}

// The log's directory and every directory above it count: a log below a
// directory another user can write is that user's to replace (issue 20,
// item 5). Both ways in refuse it, naming the directory and the fix.
func TestLogBelowAWritableDirectoryIsRefused(t *testing.T) {
	parent := t.TempDir()
	path := filepath.Join(parent, "state", "audit.jsonl")
	if err := os.Chmod(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	store := fileStore(t)
	keys := func() (audit.Keys, error) { return Keys(context.Background(), store, true) }
	err := RecordCommand(context.Background(), audit.Options{Path: path}, keys, &audit.Record{Event: "test"})
	if err == nil || !strings.Contains(err.Error(), "directory "+parent) || !strings.Contains(err.Error(), "chmod go-w "+parent) {
		t.Errorf("RecordCommand with the log below a 0777 directory = %v, want a refusal naming %s with the chmod fix", err, parent)
	}
	l := Open(audit.Options{Path: path, OnFailure: audit.FailDeny}, keys, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer l.Close()
	<-l.ready
	if l.openErr == nil || !strings.Contains(l.openErr.Error(), "chmod go-w "+parent) {
		t.Errorf("Open with the log below a 0777 directory: %v, want a refusal with the chmod fix", l.openErr)
	}
}

// TestLogOpensOnceItsCauseIsFixed: a log that cannot be opened (here a file
// other users can read) refuses calls with the fix, and once the cause is
// fixed a later call opens it: no restart of Moat, whose client may not
// offer one.
func TestLogOpensOnceItsCauseIsFixed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "audit.jsonl")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	store := fileStore(t)
	h := &harness{path: path}
	h.log = Open(audit.Options{Path: path}, func() (audit.Keys, error) {
		return Keys(context.Background(), store, true)
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), &audit.Record{Event: "server_start"})
	t.Cleanup(func() { h.log.Close() })
	call := &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t"}
	_, err := h.handler(ok)(context.Background(), call)
	var d *guard.Denial
	if !errors.As(err, &d) || d.Layer != guard.LayerAudit || !strings.Contains(err.Error(), "chmod 600") || h.calls != 0 {
		t.Fatalf("a call with an unopenable log: %v (reached the server %d times), want an audit denial naming the fix", err, h.calls)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err = h.handler(ok)(context.Background(), call); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log was not opened within 30 s of its fix: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.log.Close()
	var events []string
	for _, r := range records(t, path) {
		events = append(events, fmt.Sprint(r["event"]))
	}
	if len(events) < 3 || events[0] != "server_start" || !slices.Contains(events, audit.EventIntent) {
		t.Errorf("events in the log: %v, want server_start first, then the call", events)
	}
}

// Requests the proxy refuses before the chain are recorded as refusals: a
// denial with its layer and rule, any other cause with the rule and outcome
// the caller read from it, the arguments by shape only, and the record is
// written even when the client has cancelled the request.
func TestRefusedBeforeTheChain(t *testing.T) {
	h := open(t, audit.FailDeny, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	off := &guard.Denial{Layer: guard.LayerPolicy, Rule: "tools-off", Reason: "the group's tools are off"}
	if err := h.log.Refused(ctx, &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t"}, off, "proxy:ignored", audit.OutcomeError); err != nil {
		t.Fatal(err)
	}
	bad := &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t", Args: json.RawMessage(`{"path":"/secret-5d2a"}`)}
	if err := h.log.Refused(ctx, bad, errors.New("smuggled arguments"), "proxy:invalid-request", audit.OutcomeDenied); err != nil {
		t.Fatal(err)
	}
	h.log.Close()
	if data, _ := os.ReadFile(h.path); bytes.Contains(data, []byte("secret-5d2a")) {
		t.Fatal("a refused request's argument value is in the audit log")
	}
	var got []string
	for _, r := range records(t, h.path) {
		if r["event"] == "tool_call" {
			got = append(got, fmt.Sprintf("%v %v %v %v %v", r["decision"], r["rule"], r["outcome"], r["reason"], r["args_sha256"] != nil))
		}
	}
	want := []string{
		"deny policy:tools-off denied policy: refused by rule tools-off: the group's tools are off false",
		"deny proxy:invalid-request denied smuggled arguments true",
	}
	if !slices.Equal(got, want) {
		t.Errorf("refusals recorded as\n%q\nwant\n%q", got, want)
	}
}

// TestIdentityInEveryRecord: a call made for a gateway identity names it
// in its intent, its outcome and a refusal before the chain, with only the
// peer's known values; a call without one has no identity member.
func TestIdentityInEveryRecord(t *testing.T) {
	h := open(t, audit.FailDeny, nil)
	ctx := context.Background()
	alice := &guard.Identity{Name: "alice", UID: 1000, GID: 0, PID: 4321}
	if _, err := h.handler(ok)(ctx, &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t", Args: json.RawMessage(`{}`), Identity: alice}); err != nil {
		t.Fatal(err)
	}
	denied := func(context.Context, *guard.Call) (*guard.Result, error) {
		return nil, &guard.Denial{Layer: guard.LayerPolicy, Rule: "identity:server", Reason: "no"}
	}
	if _, err := h.handler(denied)(ctx, &guard.Call{Kind: guard.KindResource, Group: "kb", URI: "file:///x", Identity: alice}); err == nil {
		t.Fatal("the refusal went through")
	}
	tcp := &guard.Identity{Name: "remote", UID: -1, GID: -1, PID: -1}
	if err := h.log.Refused(ctx, &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t", Identity: tcp}, errors.New("bad"), "proxy:invalid-request", audit.OutcomeDenied); err != nil {
		t.Fatal(err)
	}
	if _, err := h.handler(ok)(ctx, &guard.Call{Kind: guard.KindTool, Group: "g", Name: "stdio", Args: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	h.log.Close()
	var got []string
	for _, r := range records(t, h.path) {
		if r["group"] == nil {
			continue // lifecycle and checkpoints
		}
		id, _ := json.Marshal(r["identity"])
		got = append(got, fmt.Sprintf("%v %v %s", r["event"], r["tool"], id))
	}
	want := []string{
		`call_intent t {"gid":0,"name":"alice","pid":4321,"uid":1000}`,
		`tool_call t {"gid":0,"name":"alice","pid":4321,"uid":1000}`,
		`call_intent file:///x {"gid":0,"name":"alice","pid":4321,"uid":1000}`, // the harness refuses below Intent
		`resource_read file:///x {"gid":0,"name":"alice","pid":4321,"uid":1000}`,
		`tool_call t {"name":"remote"}`,
		`call_intent stdio null`,
		`tool_call stdio null`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("records\n%q\nwant\n%q", got, want)
	}
	rep, err := audit.VerifyFiles([]string{h.path}, h.keys.MAC, h.keys.Signer.Public().(ed25519.PublicKey))
	if err != nil || rep.Problem != nil {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

// TestWritesAreObserved: every record written is timed for the metrics,
// and the queue is empty once the writes returned.
func TestWritesAreObserved(t *testing.T) {
	h := open(t, audit.FailDeny, nil)
	var seen atomic.Int32
	h.log.Observe(func(d time.Duration) {
		if d > 0 {
			seen.Add(1)
		}
	})
	if _, err := h.handler(ok)(context.Background(), &guard.Call{Kind: guard.KindTool, Group: "g", Name: "t"}); err != nil {
		t.Fatal(err)
	}
	if n := seen.Load(); n != 2 { // the intent and the outcome
		t.Errorf("%d writes observed, want 2", n)
	}
	if n := h.log.Pending(); n != 0 {
		t.Errorf("Pending() = %d after the writes returned, want 0", n)
	}
}
