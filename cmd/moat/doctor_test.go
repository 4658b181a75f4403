package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/doctor"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/secrets"
	"github.com/moatmcp/moat/internal/testutil"
)

// doctorSetup is a user's machine in temp dirs: home, XDG dirs, the
// encrypted file store (no keychain) with a known passphrase.
type doctorSetup struct {
	home, state, data string
	env               []string
}

func newDoctorSetup(t *testing.T) *doctorSetup {
	dir := t.TempDir()
	s := &doctorSetup{home: filepath.Join(dir, "home"), state: filepath.Join(dir, "state"), data: filepath.Join(dir, "data")}
	for _, d := range []string{s.home, s.state, s.data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.env = append(os.Environ(),
		"HOME="+s.home,
		"XDG_STATE_HOME="+s.state,
		"XDG_DATA_HOME="+s.data,
		"DBUS_SESSION_BUS_ADDRESS=disabled:",
		"MOAT_PASSPHRASE=test passphrase",
		"MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG=",
		"MOAT_LOG=debug") // the most verbose stderr, for the canary checks
	return s
}

func (s *doctorSetup) store(t *testing.T) *secrets.Store {
	st, err := secrets.Open(context.Background(), &secrets.Options{
		Backend:    secrets.BackendFile,
		Dir:        filepath.Join(s.data, "moat", "secrets"),
		Passphrase: func() ([]byte, error) { return []byte("test passphrase"), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// doctor runs the real moat binary (which is also the sandbox launcher).
func (s *doctorSetup) doctor(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testutil.BuildMoat(t), append([]string{"doctor"}, args...)...)
	cmd.Env = s.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running moat doctor: %v", err)
	}
	return out.String(), errb.String(), code
}

// wantLines fails unless each pattern matches a whole line of out.
func wantLines(t *testing.T, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)^\s*` + p + `$`).MatchString(out) {
			t.Errorf("no line matching %q in:\n%s", p, out)
		}
	}
}

// writeAuditLog writes a sealed audit log with the keys serve would create.
func (s *doctorSetup) writeAuditLog(t *testing.T) string {
	keys, err := auditlog.Keys(context.Background(), s.store(t), true)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.state, "moat", "audit.jsonl")
	w, err := audit.Open(audit.Options{Path: path}, keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"sandboxCheckstart", "sandboxCheckstop"} {
		if err := w.Write(context.Background(), &audit.Record{Event: e}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDoctorHealthy(t *testing.T) {
	s := newDoctorSetup(t)
	const canary = "canary-secret-value-4d1f0c9e"
	if err := s.store(t).Set(context.Background(), "api-token", secrets.NewSecret(canary)); err != nil {
		t.Fatal(err)
	}
	local := testServer(t, "local")
	local["env"] = map[string]string{"API_TOKEN": "${secret:api-token}"}
	url := testutil.StartHTTPServer(t, testutil.BuildTestServer(t))
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"local":  local,
		"remote": map[string]any{"description": "Go test server over HTTP", "url": url},
		"off":    map[string]any{"description": "disabled", "command": "no-such-command", "enabled": false},
	})
	s.writeAuditLog(t)

	stdout, stderr, code := s.doctor(t, cfg)
	if code != 0 {
		t.Fatalf("moat doctor on a healthy setup: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	wantLines(t, stdout,
		`✓ config is valid: 3 servers \(2 enabled\)`,
		`✓ config file mode 0600, owned by you: no other user can change it`,
		`✓ no literal credentials in env, headers, args or urls`,
		`✓ secret store: encrypted file \(.*\)`,
		`✓ no plain-text tokens left by dynamic-mcp`,
		`Server "local"`,
		`✓ command: `+regexp.QuoteMeta(testutil.BuildTestServer(t)),
		`✓ sandbox enforces: .*no_new_privs.*`,
		`✓ reachable in \S+: local 1\.0\.0, protocol 2025-11-25`,
		`✓ \d+ tools`,
		`Server "remote"`,
		`✓ plain HTTP to 127\.0\.0\.1:\d+ \(loopback: it never leaves this machine\)`,
		`✓ reachable in \S+: testserver 1\.0\.0, protocol 2025-11-25`,
		`✓ disabled \(enabled: false\): not checked`,
		`✓ audit keys present in the encrypted file \(.*\)`,
		`✓ chain verifies: \d+ records in 1 file, \d+ signed checkpoints`,
		`✓ (landlock_fs: .*|landlock_fs not available: .*)`,
		`\d+ ok, \d+ warnings?, 0 problems`,
	)
	if strings.Contains(stdout+stderr, canary) {
		t.Errorf("moat doctor printed the value of a ${secret:...} reference")
	}
}

func TestDoctorBroken(t *testing.T) {
	s := newDoctorSetup(t)
	// A GitHub-shaped token written literally in the config, and one that
	// dynamic-mcp left in plain text: neither may ever be printed.
	literal := "ghp_" + strings.Repeat("Zq8", 12)
	leftover := "dynamic-mcp-leftover-7c1e2b"
	tokDir := secrets.DynamicMCPDir(s.home)
	if err := os.MkdirAll(tokDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tokDir, "github.json"), []byte(`{"access_token":"`+leftover+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	leaky := testServer(t, "leaky")
	leaky["env"] = map[string]string{"GITHUB_TOKEN": literal}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"leaky":   leaky,
		"missing": map[string]any{"description": "a command that is not installed", "command": "moat-no-such-command"},
		// 0.0.0.0 is refused by the network guard before any packet is
		// sent: the transport check is what this server is here for.
		"plain": map[string]any{"description": "plain HTTP", "url": "http://0.0.0.0:9/mcp", "allow_insecure_http": true},
	})
	logPath := s.writeAuditLog(t)
	tamper(t, logPath)

	for _, args := range [][]string{{cfg}, {"--json", cfg}} {
		stdout, stderr, code := s.doctor(t, args...)
		if code != 1 {
			t.Errorf("moat doctor %v on a broken setup: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", args, code, stdout, stderr)
		}
		for name, v := range map[string]string{"literal token": literal, "dynamic-mcp token": leftover} {
			if strings.Contains(stdout+stderr, v) {
				t.Errorf("moat doctor %v printed the %s", args, name)
			}
		}
		if args[0] == "--json" {
			continue
		}
		wantLines(t, stdout,
			`⚠ server "leaky": env GITHUB_TOKEN holds a literal credential \(.*\); anyone who can read the file has it`,
			"fix: run `moat secret set github-token` \\(it asks for the value\\), then write \\$\\{secret:github-token\\} in place of the value",
			`⚠ dynamic-mcp left 1 plain-text OAuth token in .* \(github\)`,
			"fix: `moat secret migrate` moves them into the secret store and deletes the files",
			`✗ command "moat-no-such-command" cannot be used: .*`,
			`⚠ plain HTTP to 0\.0\.0\.0:9, allowed by allow_insecure_http: anyone on the network can read and change its traffic`,
			`fix: use an https:// url and remove allow_insecure_http`,
			`✗ not reachable: .*`,
			`✗ the log was changed: .*`,
			`✓ reachable in \S+: leaky 1\.0\.0, protocol 2025-11-25`,
			`\d+ ok, \d+ warnings, 3 problems`,
		)
	}
}

// tamper changes one byte of a record in the middle of the log.
func tamper(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte(`"sandboxCheckstop"`))
	if i < 0 {
		t.Fatalf("no sandboxCheckstop record in %s", data)
	}
	copy(data[i+1:], "sandboxCheckstip")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDoctorJSONMatchesText: --json holds the same checks, in the same
// order, with the same verdicts and messages, as the text report.
func TestDoctorJSONMatchesText(t *testing.T) {
	s := newDoctorSetup(t)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{
		"local":   testServer(t, "local"),
		"missing": map[string]any{"description": "not installed", "command": "moat-no-such-command"},
	})
	text, _, textCode := s.doctor(t, cfg)
	js, stderr, jsonCode := s.doctor(t, "--json", cfg)
	if textCode != 1 || jsonCode != 1 {
		t.Errorf("exit codes: text %d, --json %d; want 1 for both", textCode, jsonCode)
	}
	var rep struct {
		Config  string
		Checks  []doctor.Check
		Summary map[doctor.Status]int
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s\nstderr:\n%s", err, js, stderr)
	}
	took := regexp.MustCompile(`in [0-9.]+[µm]?s:`) // connect times differ between runs
	var fromJSON []string
	for _, c := range rep.Checks {
		fromJSON = append(fromJSON, took.ReplaceAllString(c.Status.Symbol()+" "+c.Message, "in T:"))
	}
	var fromText []string
	for _, line := range strings.Split(text, "\n") {
		check, indented := strings.CutPrefix(line, "  ")
		if indented && strings.IndexAny(check, "✓⚠✗") == 0 {
			fromText = append(fromText, took.ReplaceAllString(check, "in T:"))
		}
	}
	if diff := cmp.Diff(fromText, fromJSON); diff != "" {
		t.Errorf("checks in the text report (-) and in --json (+) differ:\n%s", diff)
	}
	if rep.Summary[doctor.Fail] != 1 || rep.Summary[doctor.OK] == 0 {
		t.Errorf("summary %v: want 1 fail and some ok", rep.Summary)
	}
	var sandboxReport bool
	for _, c := range rep.Checks {
		if c.Server == "local" && c.Name == "server.sandbox" && len(c.Protections) > 0 {
			sandboxReport = true
		}
	}
	if !sandboxReport {
		t.Errorf("--json has no sandbox protections for server local:\n%s", js)
	}
}

func TestDoctorUsage(t *testing.T) {
	s := newDoctorSetup(t)
	for _, tt := range []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no config", nil, "no config file given"},
		{"missing file", []string{filepath.Join(t.TempDir(), "nope.json")}, "no such file"},
		{"two configs", []string{"a.json", "b.json"}, "at most one CONFIG"},
		{"flag typo", []string{"--jsno"}, "did you mean --json?"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := s.doctor(t, tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("moat doctor %v: exit %d, stderr %q; want exit 2 and %q", tt.args, code, stderr, tt.stderr)
			}
		})
	}
}

// TestDoctorAuditKeysMatchVerify: the keys doctor verifies with are the
// ones in the store (a log signed with other keys fails, and is not called
// tampering).
func TestDoctorAuditKeysMatchVerify(t *testing.T) {
	s := newDoctorSetup(t)
	path := filepath.Join(s.state, "moat", "audit.jsonl")
	other := audit.Keys{MAC: bytes.Repeat([]byte{7}, 32), Signer: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))}
	w, err := audit.Open(audit.Options{Path: path}, other)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(context.Background(), &audit.Record{Event: "sandboxCheckstart"})
	w.Close()
	if _, err := auditlog.Keys(context.Background(), s.store(t), true); err != nil {
		t.Fatal(err)
	}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"local": testServer(t, "local")})
	stdout, _, code := s.doctor(t, cfg)
	if code != 1 {
		t.Errorf("exit %d, want 1 for a log written with other keys\n%s", code, stdout)
	}
	wantLines(t, stdout, `✗ the log was written with other keys than this secret store's: .*`)
}

// TestDoctorProgress: connecting servers shows progress on stderr when it
// is a terminal, and nothing when it is not (the report itself is on
// stdout either way).
func TestDoctorProgress(t *testing.T) {
	s := newDoctorSetup(t)
	for _, kv := range s.env[len(os.Environ()):] {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	old := sandbox.LauncherPath
	sandbox.LauncherPath = testutil.BuildMoat(t) // the test binary is no launcher
	t.Cleanup(func() { sandbox.LauncherPath = old })
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"a": testServer(t, "a"), "b": testServer(t, "b")})
	for _, terminal := range []bool{true, false} {
		var stdout, stderr bytes.Buffer
		if code := doctorCommand(context.Background(), []string{cfg}, &stdout, &stderr, terminal); code != exitOK {
			t.Fatalf("doctor: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
		}
		progress := regexp.MustCompile(`(?m)^  \[[12]/2\] [ab] checked$`).FindAllString(stderr.String(), -1)
		if want := map[bool]int{true: 2, false: 0}[terminal]; len(progress) != want {
			t.Errorf("stderr a terminal: %v; %d progress lines, want %d:\n%s", terminal, len(progress), want, stderr.String())
		}
		if !strings.Contains(stdout.String(), `Server "b"`) {
			t.Errorf("no report on stdout:\n%s", stdout.String())
		}
	}
}

// TestDoctorOnACgroupV2Machine: on a machine whose only cgroup hierarchy is
// v2 (a VM booted by testutil.RunInVM), an unprivileged user in a delegated
// cgroup is told that every server gets a cgroup v2 of its own, and the
// server's report shows it enforced with its max_procs as pids.max.
func TestDoctorOnACgroupV2Machine(t *testing.T) {
	bin, server := testutil.BuildMoat(t), testutil.BuildTestServer(t)
	cfg, err := json.Marshal(map[string]any{"mcpServers": map[string]any{"ts": map[string]any{
		"description": "Go test server", "command": server, "args": []string{"-name", "ts"},
		"sandbox": map[string]any{"max_procs": 50},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	// The config is written inside the VM, so that the user running moat
	// owns it, as doctor requires.
	script := "umask 077; printf '%s' \"$CONFIG\" > /tmp/moat.json && exec " + bin + " doctor --json /tmp/moat.json"
	out, exit := testutil.RunInVM(t, testutil.VM{
		UID:  1000,
		Copy: []string{bin, server},
		Env: []string{"CONFIG=" + string(cfg), "MOAT_PASSPHRASE=vm-doctor-test",
			"XDG_STATE_HOME=/tmp/state", "XDG_DATA_HOME=/tmp/data", "XDG_CONFIG_HOME=/tmp/config"},
	}, "/bin/sh", "-c", script)
	var rep doctor.Report
	start := strings.Index(out, "{")
	if start < 0 || json.Unmarshal([]byte(out[start:]), &rep) != nil {
		t.Fatalf("moat doctor --json in the VM (exit %d):\n%s", exit, out)
	}
	if exit != 0 {
		t.Errorf("moat doctor exit %d, want 0:\n%s", exit, out)
	}
	var machine, sandboxCheck *doctor.Check
	for i, c := range rep.Checks {
		switch {
		case c.Name == "machine.cgroup":
			machine = &rep.Checks[i]
		case c.Name == "server.sandbox" && c.Server == "ts":
			sandboxCheck = &rep.Checks[i]
		case c.Status == doctor.Fail:
			t.Errorf("doctor failed a check: %+v", c)
		}
	}
	if machine == nil || machine.Status != doctor.OK || !strings.HasPrefix(machine.Message, "cgroup: cgroup v2 per server") {
		t.Errorf("machine cgroup check = %+v, want OK, cgroup v2 per server", machine)
	}
	if sandboxCheck == nil {
		t.Fatalf("no sandbox check for server ts:\n%s", out)
	}
	cg, _ := (sandbox.Report{Protections: sandboxCheck.Protections}).Get(sandbox.PCgroup)
	if !cg.Enforced || !strings.HasPrefix(cg.Detail, "cgroup v2 /sys/fs/cgroup/user.slice/deleg/") || !strings.Contains(cg.Detail, "pids.max=50") {
		t.Errorf("server ts cgroup = %+v, want enforced, cgroup v2 in the delegated cgroup, pids.max=50", cg)
	}
}
