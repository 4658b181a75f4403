package audit

import (
	"context"
	"encoding/json"
	"maps"
	"path/filepath"
	"strings"
	"testing"
)

func intp(n int) *int { return &n }

// TestLogWrittenBeforeIdentityVerifies: a log written by Moat before
// records had an "identity" member (testdata/before-identity.jsonl, made
// by the writer at 246daba) still verifies, with both keys and with the
// public key alone.
func TestLogWrittenBeforeIdentityVerifies(t *testing.T) {
	path := filepath.Join("testdata", "before-identity.jsonl")
	for _, withMAC := range []bool{true, false} {
		rep, err := verifyFile(t, path, testKeys(9), withMAC)
		if err != nil || rep.Problem != nil || rep.Records != 6 || rep.Unsealed != 0 {
			t.Errorf("Verify (MAC %v) = %+v, %v; want 6 sealed records and no problem", withMAC, rep, err)
		}
	}
}

// TestIdentityRecorded: a record's identity is written after "session",
// only with the values known (uid 0 included), redacted like every
// string, and the log verifies.
func TestIdentityRecorded(t *testing.T) {
	path := logPath(t)
	k := testKeys(3)
	w := mustOpen(t, Options{Path: path, Redact: func(s string) string { return strings.ReplaceAll(s, "s3cret", "[REDACTED]") }}, k)
	ctx := context.Background()
	for _, id := range []*Identity{
		{Name: "root", UID: intp(0), GID: intp(0), PID: intp(1)},
		{Name: "tcp-peer-s3cret"},
	} {
		if err := w.Write(ctx, &Record{Event: "tool_call", Group: "g", Tool: "t", Session: "s1", Identity: id, Decision: "allow", Outcome: OutcomeOK}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, path)
	for i, want := range []string{
		`"session":"s1","identity":{"name":"root","uid":0,"gid":0,"pid":1},"pid":`,
		`"session":"s1","identity":{"name":"tcp-peer-[REDACTED]"},"pid":`,
	} {
		if !strings.Contains(string(lines[i]), want) {
			t.Errorf("line %d = %s\nwant it to contain %s", i+1, lines[i], want)
		}
	}
	rep, err := verifyFile(t, path, k, true)
	if err != nil || rep.Problem != nil {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	var r Record
	if err := json.Unmarshal(lines[0], &r); err != nil || r.Identity == nil || *r.Identity.UID != 0 || r.Identity.Name != "root" {
		t.Errorf("read back %+v, %v", r.Identity, err)
	}
}

// TestExportsMapTheIdentity: OCSF puts a gateway identity in actor.user
// (name and uid) with Moat's process and user beside it; CEF makes it the
// source (suser, suid, spid) and Moat the device (dvcpid).
func TestExportsMapTheIdentity(t *testing.T) {
	r := exportRecords()[2]
	r.Identity = &Identity{Name: "bob", UID: intp(1001), GID: intp(1002), PID: intp(77)}
	b, err := OCSF(r, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if p := loadOCSF(t).validate(t, ev); len(p) > 0 {
		t.Errorf("not valid OCSF:\n  %s\n%s", strings.Join(p, "\n  "), b)
	}
	actor := ev["actor"].(map[string]any)
	if u := actor["user"].(map[string]any); u["name"] != "bob" || u["uid"] != "1001" {
		t.Errorf("actor.user = %v, want bob with uid 1001", u)
	}
	if p := actor["process"].(map[string]any); p["pid"] != 4242.0 || p["user"].(map[string]any)["name"] != "alice" {
		t.Errorf("actor.process = %v, want Moat's pid 4242 and its user alice", p)
	}
	if id := ev["unmapped"].(map[string]any)["identity"].(map[string]any); id["pid"] != 77.0 || id["gid"] != 1002.0 {
		t.Errorf("unmapped.identity = %v", id)
	}

	line, err := CEF(r, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	_, ext := splitCEF(line)
	want := map[string]string{"suser": "bob", "suid": "1001", "spid": "77", "dvcpid": "4242",
		"flexString1Label": "moat_user", "flexString1": "alice", "flexString2Label": "identity_gid", "flexString2": "1002"}
	got := maps.Clone(ext)
	maps.DeleteFunc(got, func(k, _ string) bool { _, ok := want[k]; return !ok })
	if !maps.Equal(got, want) {
		t.Errorf("CEF identity keys\n got %q\nwant %q\nline %s", got, want, line)
	}
	// Without one, as before: Moat's user and pid are the source.
	r.Identity = nil
	line, _ = CEF(r, "1.2.3")
	if _, ext := splitCEF(line); ext["suser"] != "alice" || ext["spid"] != "4242" || ext["suid"] != "" {
		t.Errorf("CEF without an identity: %q", ext)
	}
}
