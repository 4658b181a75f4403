package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/importer"
	"github.com/moatmcp/moat/internal/redact"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/secrets"
)

// fixedProbe stands in for sandbox.Probe, which depends on the kernel.
func fixedProbe() sandbox.Report {
	return sandbox.Report{Protections: []sandbox.Protection{
		{Name: sandbox.PRlimits, Enforced: true, Detail: "RLIMIT_AS, CPU"},
		{Name: sandbox.PLandlockFS, Enforced: true, Detail: "Landlock ABI 7"},
		{Name: sandbox.PCgroup, Enforced: false, Detail: "no cgroup v2 hierarchy: only rlimits apply"},
	}}
}

type fixture struct {
	dir, home, cfg string
	opts           Options
}

func newFixture(t *testing.T, config string) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.home = filepath.Join(f.dir, "home")
	f.cfg = filepath.Join(f.dir, "moat.json")
	if err := os.WriteFile(f.cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	storeDir := filepath.Join(f.dir, "secrets")
	f.opts = Options{
		ConfigPath: f.cfg,
		Getenv:     func(string) (string, bool) { return "", false },
		Home:       f.home,
		SecretsDir: storeDir,
		OpenStore: func(ctx context.Context, backend string) (*secrets.Store, error) {
			return secrets.Open(ctx, &secrets.Options{Backend: secrets.BackendFile, Dir: storeDir,
				Passphrase: func() ([]byte, error) { return []byte("pass"), nil }})
		},
		AuditPath:     filepath.Join(f.dir, "state", "audit.jsonl"),
		Probe:         fixedProbe,
		GatewaySocket: filepath.Join(f.dir, "run", "gateway.sock"),
	}
	return f
}

// verdicts maps each check's name to its status (the last one for a
// repeated name).
func verdicts(r *Report) map[string]Status {
	m := map[string]Status{}
	for _, c := range r.Checks {
		m[c.Name] = c.Status
	}
	return m
}

func TestRun(t *testing.T) {
	const cfg = `{"mcpServers": {"off": {"description": "d", "command": "x", "enabled": false}}}`
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, f *fixture)
		want  map[string]Status
	}{
		{"healthy", nil, map[string]Status{
			"config.permissions": OK, "config.valid": OK, "config.literal_secret": OK,
			"secrets.backend": OK, "secrets.permissions": OK, "secrets.dynamic_mcp_tokens": OK,
			"server.enabled": OK, "audit.permissions": OK, "audit.keys": OK, "tracing.exporter": OK,
			"machine.landlock_fs": OK, "machine.cgroup": Warn, "machine.base": OK,
		}},
		{"no secret store", func(t *testing.T, f *fixture) {
			f.opts.OpenStore = func(context.Context, string) (*secrets.Store, error) {
				return nil, errors.New("no keychain and no MOAT_PASSPHRASE")
			}
		}, map[string]Status{
			"config.permissions": OK, "config.valid": OK, "config.literal_secret": OK,
			"secrets.backend": Fail, "secrets.dynamic_mcp_tokens": OK,
			"server.enabled": OK, "audit.permissions": OK, "audit.keys": Fail, "tracing.exporter": OK,
			"machine.landlock_fs": OK, "machine.cgroup": Warn, "machine.base": OK,
		}},
		{"unsafe modes and leftovers", func(t *testing.T, f *fixture) {
			mustChmod(t, f.cfg, 0o666)
			mustMkdir(t, filepath.Join(f.dir, "state"), 0o777)
			tokens := secrets.DynamicMCPDir(f.home)
			mustMkdir(t, tokens, 0o700)
			if err := os.WriteFile(filepath.Join(tokens, "gh.json"), []byte(`{"access_token":"x"}`), 0o600); err != nil {
				t.Fatal(err)
			}
		}, map[string]Status{
			"config.permissions": Fail, "config.valid": Fail, "config.literal_secret": OK,
			"secrets.backend": OK, "secrets.permissions": OK, "secrets.dynamic_mcp_tokens": Warn,
			"audit.permissions": Fail, "audit.keys": OK, "tracing.exporter": OK,
			"machine.landlock_fs": OK, "machine.cgroup": Warn, "machine.base": OK,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, cfg)
			if tt.setup != nil {
				tt.setup(t, f)
			}
			r := Run(context.Background(), f.opts)
			if diff := cmp.Diff(tt.want, verdicts(r)); diff != "" {
				var b bytes.Buffer
				WriteText(&b, r)
				t.Errorf("verdicts (-want +got):\n%s\nreport:\n%s", diff, b.String())
			}
		})
	}
}

func mustChmod(t *testing.T, p string, m os.FileMode) {
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, p string, m os.FileMode) {
	if err := os.MkdirAll(p, m); err != nil {
		t.Fatal(err)
	}
	mustChmod(t, p, m)
}

// TestFixesNameTheCommand: a user reading a failed permission check gets
// the exact command to run.
func TestFixesNameTheCommand(t *testing.T) {
	f := newFixture(t, `{"mcpServers": {}}`)
	mustChmod(t, f.cfg, 0o666) // 0664 is fine when the group is your private one (see safepath)
	state := filepath.Join(f.dir, "state")
	mustMkdir(t, state, 0o700)
	if err := os.WriteFile(f.opts.AuditPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mustChmod(t, f.opts.AuditPath, 0o644)
	r := Run(context.Background(), f.opts)
	fixes := map[string]string{}
	for _, c := range r.Checks {
		fixes[c.Name] = c.Fix
	}
	for name, want := range map[string]string{
		"config.permissions": "chmod go-w " + f.cfg,
		"audit.permissions":  "chmod 600 " + f.opts.AuditPath,
	} {
		if fixes[name] != want {
			t.Errorf("fix of %s = %q, want %q", name, fixes[name], want)
		}
	}

	// A 0600 config in a directory others can write is as open (issue 20).
	mustChmod(t, f.cfg, 0o600)
	dir := filepath.Dir(f.cfg)
	mustChmod(t, dir, 0o777)
	defer mustChmod(t, dir, 0o700)
	for _, c := range Run(context.Background(), f.opts).Checks {
		if c.Name == "config.permissions" && (c.Status != Fail || c.Fix != "chmod go-w "+dir) {
			t.Errorf("config in a 0777 directory: %s %v, fix %q; want Fail with the fix %q", c.Name, c.Status, c.Fix, "chmod go-w "+dir)
		}
	}
}

// TestSecretsNeverInReport: a literal credential and a resolved
// ${secret:...} value appear nowhere in the text or JSON report, even when
// a check's message would carry them.
func TestSecretsNeverInReport(t *testing.T) {
	const literal = "ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123"
	const stored = "stored-secret-canary-91b7"
	f := newFixture(t, `{"mcpServers": {"off": {"description": "d", "command": "x", "enabled": false,
		"env": {"GITHUB_TOKEN": "`+literal+`", "API": "${secret:api}"}}}}`)
	open := f.opts.OpenStore
	f.opts.OpenStore = func(ctx context.Context, backend string) (*secrets.Store, error) {
		s, err := open(ctx, backend)
		if err == nil {
			err = s.Set(ctx, "api", secrets.NewSecret(stored))
		}
		return s, err
	}
	r := Run(context.Background(), f.opts)
	var text bytes.Buffer
	WriteText(&text, r)
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{text.String(), string(js)} {
		if strings.Contains(out, literal) || strings.Contains(out, stored) {
			t.Errorf("a secret value is in the report:\n%s", out)
		}
	}
	// A message that echoes a value, as a server's error might, is
	// redacted before it reaches the report.
	d := &run{o: f.opts, red: redact.New(), probe: fixedProbe()}
	d.checkSecretStore(context.Background())
	d.loadConfig()
	d.checkLiterals()
	for _, v := range []string{literal, stored} {
		if got := d.red.String("server said: " + v); strings.Contains(got, v) {
			t.Errorf("the redactor lets a config value through: %q", got)
		}
	}
	if !strings.Contains(text.String(), "moat secret set github-token") {
		t.Errorf("the report does not say how to move GITHUB_TOKEN into the store:\n%s", text.String())
	}
}

func TestSecretNameFor(t *testing.T) {
	for _, tt := range []struct {
		l    importer.Literal
		want string
	}{
		{importer.Literal{Server: "gh", Where: "env GITHUB_TOKEN"}, "github-token"},
		{importer.Literal{Server: "api", Where: "header Authorization"}, "api-header-authorization"},
		{importer.Literal{Server: "db", Where: "args[3]"}, "db-args-3"},
		{importer.Literal{Server: "x", Where: "url"}, "x-url"},
	} {
		if got := secretNameFor(tt.l); got != tt.want {
			t.Errorf("secretNameFor(%+v) = %q, want %q", tt.l, got, tt.want)
		}
	}
}

func TestWriteTextAndJSON(t *testing.T) {
	r := &Report{Config: "/c/moat.json", Checks: []Check{
		{Section: SectionConfig, Name: "a", Status: OK, Message: "fine"},
		{Section: "server x", Server: "x", Name: "b", Status: Warn, Message: "meh", Fix: "do this"},
		{Section: "server x", Server: "x", Name: "c", Status: Fail, Message: "broken", Details: []string{"one", "two"}},
	}}
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	want := `moat doctor: /c/moat.json

Config
  ✓ fine

Server "x"
  ⚠ meh
      fix: do this
  ✗ broken
      one
      two

1 ok, 1 warning, 1 problem
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("WriteText (-want +got):\n%s", diff)
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Summary map[Status]int
		Checks  []Check
	}
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[Status]int{OK: 1, Warn: 1, Fail: 1}, back.Summary); diff != "" {
		t.Errorf("JSON summary (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(r.Checks, back.Checks); diff != "" {
		t.Errorf("JSON checks do not round-trip (-want +got):\n%s", diff)
	}
}

// TestAuditLogOfARunningMoat: records after the last checkpoint, as a
// running moat always has, are a warning; once moat stops and seals the
// log, the chain verifies.
func TestAuditLogOfARunningMoat(t *testing.T) {
	f := newFixture(t, `{"mcpServers": {}}`)
	ctx := context.Background()
	store, err := f.opts.OpenStore(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auditlog.Keys(ctx, store, true)
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(audit.Options{Path: f.opts.AuditPath}, keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, &audit.Record{Event: "server_start"}); err != nil {
		t.Fatal(err)
	}
	chain := func() Check {
		for _, c := range Run(ctx, f.opts).Checks {
			if c.Name == "audit.chain" {
				return c
			}
		}
		t.Fatal("no audit.chain check")
		return Check{}
	}
	if c := chain(); c.Status != Warn || !strings.Contains(c.Message, "1 record after the last checkpoint") {
		t.Errorf("while the log is open: %s %q, want a warning about 1 unsealed record", c.Status, c.Message)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if c := chain(); c.Status != OK {
		t.Errorf("after Close: %s %q, want ok", c.Status, c.Message)
	}
}

// TestNProcAsRoot: as root, RLIMIT_NPROC does nothing; with a per-server
// cgroup, pids.max does its job and doctor says so instead of warning.
func TestNProcAsRoot(t *testing.T) {
	nproc := sandbox.Protection{Name: sandbox.PNProc, Detail: "running as root: the kernel does not apply RLIMIT_NPROC to uid 0"}
	for _, tt := range []struct {
		name              string
		cgroup            bool
		machine, server   Status
		serverNotEnforced bool
	}{
		{"with a cgroup", true, OK, OK, false},
		{"without a cgroup", false, Warn, Warn, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep := sandbox.Report{Protections: []sandbox.Protection{
				{Name: sandbox.PRlimits, Enforced: true, Detail: "AS=2147483648"},
				nproc,
				{Name: sandbox.PCgroup, Enforced: tt.cgroup, Detail: "cgroup v2 /sys/fs/cgroup/x: pids.max=256"},
			}}
			d := &run{probe: rep}
			d.checkMachine()
			if got := verdicts(&Report{Checks: d.checks})["machine.rlimit_nproc"]; got != tt.machine {
				t.Errorf("machine.rlimit_nproc = %v, want %v: %+v", got, tt.machine, d.checks)
			}
			sc := &serverCheck{run: d, s: &config.Server{Name: "s"}}
			sc.sandboxChecks(rep)
			warned := false
			for _, c := range sc.checks {
				if strings.Contains(c.Message, sandbox.PNProc) && c.Status == Warn {
					warned = true
				}
			}
			if warned != tt.serverNotEnforced {
				t.Errorf("server checks warn about %s: %v, want %v: %+v", sandbox.PNProc, warned, tt.serverNotEnforced, sc.checks)
			}
		})
	}
}

// TestSecretStoreProtection: the secrets check passes for an encrypted
// store, warns (naming `moat secret encrypt`) for one protected by
// permissions only, and fails for that one under require_encryption.
func TestSecretStoreProtection(t *testing.T) {
	// A headless host: no keychain answers (make test runs in a keyring).
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "disabled:")
	t.Setenv("MOAT_PASSPHRASE", "")
	t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir())
	for _, tt := range []struct {
		name, config string
		passphrase   bool
		want         Status
		message, fix string
	}{
		{"encrypted", `{"mcpServers": {}}`, true, OK, "protection: encrypted", ""},
		{"permissions only", `{"mcpServers": {}}`, false, Warn, "permissions only", "moat secret encrypt"},
		{"permissions only, require_encryption", `{"mcpServers": {}, "secrets": {"require_encryption": true}}`, false, Fail, "", "moat secret encrypt"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.config)
			f.opts.OpenStore = nil // the doctor's own Open, with the config's require_encryption
			if tt.passphrase {
				t.Setenv("MOAT_PASSPHRASE", "pw")
			} else {
				t.Setenv("MOAT_PASSPHRASE", "")
			}
			// The store exists first, made as a headless moat would make it.
			if _, err := secrets.Open(t.Context(), &secrets.Options{Backend: secrets.BackendFile, Dir: f.opts.SecretsDir}); err != nil {
				t.Fatal(err)
			}
			rep := Run(t.Context(), f.opts)
			var c *Check
			for i := range rep.Checks {
				if rep.Checks[i].Name == "secrets.backend" {
					c = &rep.Checks[i]
				}
			}
			if c == nil {
				t.Fatal("no secrets.backend check")
			}
			if c.Status != tt.want || !strings.Contains(c.Message, tt.message) || !strings.Contains(c.Fix, tt.fix) {
				t.Errorf("secrets.backend = %v %q (fix %q), want %v saying %q with a fix naming %q", c.Status, c.Message, c.Fix, tt.want, tt.message, tt.fix)
			}
		})
	}
}
