package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

func auditTestKeys() audit.Keys {
	return audit.Keys{
		MAC:    bytes.Repeat([]byte{7}, 32),
		Signer: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize)),
	}
}

// writeAuditLog writes n tool-call records (sealed by Close unless open).
func writeAuditLog(t *testing.T, n int, seal bool) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "state", "audit.jsonl")
	w, err := audit.Open(audit.Options{Path: p, Fsync: audit.FsyncOff}, auditTestKeys())
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := w.Write(context.Background(), &audit.Record{Event: "tool_call", Group: "files", Tool: "read_file", Decision: "allow", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if seal {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	} else {
		// Leave it as a killed moat would: written, no final checkpoint.
		t.Cleanup(func() { w.Close() })
	}
	return p
}

// testAudit is auditSecrets with the test keys (or keysErr) and no
// anchor: in-process tests never touch the real secret store, whose
// session bus connection would outlive the test.
type testAudit struct{ keysErr error }

func (a testAudit) Keys(context.Context) (audit.Keys, error) { return auditTestKeys(), a.keysErr }
func (testAudit) Anchor(context.Context, string) (uint64, string, bool, error) {
	return 0, "", false, nil
}

func runAudit(t *testing.T, keysErr error, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = auditCommand(context.Background(), args, testAudit{keysErr}, &out, &errb)
	return code, out.String(), errb.String()
}

func TestAuditCommand(t *testing.T) {
	sealed := writeAuditLog(t, 5, true)
	tampered := filepath.Join(t.TempDir(), "tampered.jsonl")
	data, _ := os.ReadFile(sealed)
	os.WriteFile(tampered, bytes.Replace(data, []byte("read_file"), []byte("rm_rf"), 1), 0o600)
	pubFile := filepath.Join(t.TempDir(), "pub.txt")
	_, pubOut, _ := runAudit(t, nil, "pubkey")
	os.WriteFile(pubFile, []byte(pubOut), 0o600)
	// A log another secret store's keys wrote, and a public key file that
	// is not the log's: neither is tampering.
	otherLog := filepath.Join(t.TempDir(), "other.jsonl")
	other := audit.Keys{MAC: bytes.Repeat([]byte{1}, 32), Signer: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize))}
	w, err := audit.Open(audit.Options{Path: otherLog, Fsync: audit.FsyncOff}, other)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(context.Background(), &audit.Record{Event: "tool_call", Group: "files", Tool: "read_file"})
	w.Close()
	otherPub := filepath.Join(t.TempDir(), "other-pub.txt")
	os.WriteFile(otherPub, []byte(audit.FormatPublicKey(other.Signer.Public().(ed25519.PublicKey))), 0o600)

	for _, tt := range []struct {
		name       string
		args       []string
		keysErr    error
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"pubkey", []string{"pubkey"}, nil, 0, "moat-audit-ed25519:", ""},
		{"verify with keys", []string{"verify", sealed}, nil, 0, "audit log OK: 6 records (seq 1..6)", ""},
		{"verify with public key", []string{"verify", "--pubkey", pubFile, sealed}, nil, 0, "public key only", ""},
		{"auditor needs no keychain", []string{"verify", "--pubkey", pubFile, sealed}, errors.New("no keychain"), 0, "audit log OK", ""},
		{"tampered", []string{"verify", tampered}, nil, 1, "", "tampered.jsonl:1 (seq 1): edited"},
		{"tampered, public key", []string{"verify", "--pubkey", pubFile, tampered}, nil, 1, "", "edited"},
		{"other keys in the store", []string{"verify", otherLog}, nil, 1, "", "most likely the keys in this shell's secret store are not the ones"},
		{"wrong public key file", []string{"verify", "--pubkey", otherPub, sealed}, nil, 1, "", "either " + otherPub + " is not the key the log was signed with"},
		{"keychain unavailable", []string{"verify", sealed}, errors.New("keychain locked"), 1, "", "--pubkey FILE"},
		{"unsealed", []string{"verify", writeAuditLog(t, 3, false)}, nil, 1, "", "--allow-unsealed"},
		{"unsealed allowed", []string{"verify", "--allow-unsealed", writeAuditLog(t, 3, false)}, nil, 0, "audit log OK: 3 records", "warning"},
		{"flags after files", []string{"verify", sealed, "--pubkey", pubFile}, nil, 0, "public key only", ""},
		{"tail", []string{"tail", sealed}, nil, 0, "#5  tool_call  files/read_file  allow  ok", ""},
		{"export ocsf", []string{"export", "--format", "ocsf", sealed}, nil, 0, `"class_uid":6003`, ""},
		{"export cef", []string{"export", "--format", "cef", sealed}, nil, 0, "CEF:0|Moat|Moat|", ""},
		{"export of a live log", []string{"export", "--format", "ocsf", writeAuditLog(t, 3, false)}, nil, 0, `"api":{"operation":"read_file"`, ""},
		{"export of a tampered log", []string{"export", "--format", "cef", tampered}, nil, 1, "", "edited"},
		{"export needs a format", []string{"export", sealed}, nil, 2, "", "--format ocsf or --format cef"},
		{"export with the public key", []string{"export", "--format", "ocsf", "--pubkey", pubFile, sealed}, errors.New("no keychain"), 0, `"class_uid":6003`, ""},
		{"both key flags", []string{"verify", "--pubkey", pubFile, "--key-from-store", sealed}, nil, 2, "", "exclude each other"},
		{"no subcommand", nil, nil, 2, "", "needs a subcommand"},
		{"unknown subcommand", []string{"veriffy"}, nil, 2, "", "unknown audit subcommand"},
		{"unknown flag", []string{"verify", "--nope"}, nil, 2, "", "-nope"},
		{"missing file", []string{"verify", filepath.Join(t.TempDir(), "none")}, nil, 1, "", "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runAudit(t, tt.keysErr, tt.args...)
			if code != tt.wantCode || !strings.Contains(stdout, tt.wantStdout) || !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("moat audit %s = %d\nstdout: %s\nstderr: %s\nwant %d, stdout containing %q, stderr containing %q",
					strings.Join(tt.args, " "), code, stdout, stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

func TestAuditVerifyDefaultsToTheConfiguredLogAndItsRotatedFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := audit.Open(audit.Options{Path: p, Fsync: audit.FsyncOff, Rotate: audit.RotateOptions{MaxSize: 600}}, auditTestKeys())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		w.Write(context.Background(), &audit.Record{Event: "tool_call", Tool: "t"})
	}
	w.Close()
	old := auditLogPath
	auditLogPath = func() (string, error) { return p, nil }
	defer func() { auditLogPath = old }()
	code, stdout, stderr := runAudit(t, nil, "verify")
	if code != 0 || strings.Contains(stdout, " in 1 file(s)") {
		t.Errorf("moat audit verify = %d, %q %q; want all rotated files verified", code, stdout, stderr)
	}
}

// TestAuditVerifyFindsTheConfiguredLog: with the config's audit.path
// elsewhere than the default, `moat audit verify` and `tail` without FILE
// read that log (the one the config named by MOAT_CONFIG writes), not the
// default path.
func TestAuditVerifyFindsTheConfiguredLog(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "custom", "audit.jsonl")
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")},
		map[string]any{"audit": map[string]any{"path": logPath}})
	env := append(testutil.MoatEnv(t), "MOAT_CONFIG="+cfg)
	if _, errs, code := moatCLIEnv(t, env, "call", "test", "echo", `{"message":"custom-path"}`); code != 0 {
		t.Fatalf("moat call: exit %d\n%s", code, errs)
	}
	out, errs, code := moatCLIEnv(t, env, "audit", "verify")
	if code != 0 || !strings.Contains(out+errs, "audit log OK") {
		t.Fatalf("moat audit verify with audit.path set: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = moatCLIEnv(t, env, "audit", "tail")
	if code != 0 || !strings.Contains(out, "echo") {
		t.Errorf("moat audit tail with audit.path set: exit %d, want the call to echo\n%s%s", code, out, errs)
	}
}

// TestAuditVerifyDetectsRollback: a log replaced by an older copy of itself
// verifies on its own (every record and checkpoint in it is genuine), so
// `moat audit verify` compares its end with the anchor the writers keep in
// the secret store, and fails.
func TestAuditVerifyDetectsRollback(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
	env := append(testutil.MoatEnv(t), "MOAT_CONFIG="+cfg)
	call := func(msg string) {
		t.Helper()
		if _, errs, code := moatCLIEnv(t, env, "call", "test", "echo", `{"message":"`+msg+`"}`); code != 0 {
			t.Fatalf("moat call: exit %d\n%s", code, errs)
		}
	}
	logPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	call("first")
	older, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	call("second")
	if out, errs, code := moatCLIEnv(t, env, "audit", "verify"); code != 0 {
		t.Fatalf("moat audit verify of the intact log: exit %d\n%s%s", code, out, errs)
	}
	if err := os.WriteFile(logPath, older, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code := moatCLIEnv(t, env, "audit", "verify")
	if code != exitFailure || !strings.Contains(errs, "rolled back") {
		t.Errorf("moat audit verify of the log replaced by its older copy: exit %d, want 1 and \"rolled back\"\n%s%s", code, out, errs)
	}
	// The older copy alone, named as a FILE (no anchor applies), verifies:
	// that is what the anchor adds.
	if _, errs, code := moatCLIEnv(t, env, "audit", "verify", logPath); code != 0 {
		t.Errorf("moat audit verify FILE of the older copy: exit %d\n%s", code, errs)
	}
}
