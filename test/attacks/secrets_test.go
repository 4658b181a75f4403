package attacks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// TestLeakedEnvironmentCanary: moat runs with credentials in its own
// environment (as it would inherit them from a shell). A server that dumps
// its environment sees none of them, only the clean set plus what its
// config gives it; the audit log records the child's start, and no canary
// appears in the log either.
//
// SECURITY.md, overview row "environment fully inherited by every server"
// and Child processes, "Clean environment".
func TestLeakedEnvironmentCanary(t *testing.T) {
	canaries := []string{"AWS_SECRET_ACCESS_KEY=canary-aws-8c1d", "GITHUB_TOKEN=canary-gh-77e0", "OPENAI_API_KEY=canary-oai-3f2a"}
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{"test": testServer(t, "test")}),
		append(canaries, "MOAT_PASSPHRASE="+testutil.MoatPassphrase)...)
	env := resultText(m.call(t, "test", "env", nil))
	if !strings.Contains(env, "PATH=") {
		t.Fatalf("the env tool returned %q, not an environment", env)
	}
	for _, c := range canaries {
		name, value, _ := strings.Cut(c, "=")
		if strings.Contains(env, name) || strings.Contains(env, value) {
			t.Errorf("%s reached the server", name)
		}
	}
	if strings.Contains(env, "MOAT_PASSPHRASE") || strings.Contains(env, testutil.MoatPassphrase) {
		t.Error("moat's own passphrase reached the server")
	}
	recs := m.auditLog(t)
	findRecord(t, recs, "the server's start with a clean environment", func(r audit.Record) bool {
		return r.Event == "child_start" && r.Group == "test" && strings.Contains(r.Detail["enforced"], "clean_env")
	})
	data, _ := os.ReadFile(auditPath(m.env))
	for _, c := range canaries {
		if _, value, _ := strings.Cut(c, "="); strings.Contains(string(data), value) {
			t.Errorf("a canary is in the audit log: %s", value)
		}
	}
}

// TestSecretEchoedBackByATool: a server gets a secret from the store in its
// environment (${secret:NAME}) and a tool sends its environment back. The
// client sees [REDACTED:NAME] instead of the value, and neither the audit
// log nor moat's log holds it.
//
// SECURITY.md, Secrets, "In the config" (cmd/moat:
// TestSecretReferenceReachesTheChildOnly) and the redaction of results.
func TestSecretEchoedBackByATool(t *testing.T) {
	const value = "echoed-secret-5a7c0d9e"
	env := testutil.MoatEnv(t)
	testutil.SetSecret(t, env, "api-key", value)
	srv := testServer(t, "test")
	srv["env"] = map[string]string{"API_KEY": "${secret:api-key}"}
	m := startMoatWith(t, env, nil, testutil.WriteConfig(t, t.TempDir(), map[string]server{"test": srv}))
	res := m.call(t, "test", "env", nil)
	if got := resultText(res); strings.Contains(got, value) || !strings.Contains(got, "API_KEY=[REDACTED:api-key]") {
		t.Fatalf("the tool's echo of the secret was not redacted to its name: %q", got)
	}
	recs := m.auditLog(t)
	findRecord(t, recs, "the env call", func(r audit.Record) bool { return r.Event == "tool_call" && r.Tool == "env" })
	data, _ := os.ReadFile(auditPath(m.env))
	if strings.Contains(string(data), value) {
		t.Error("the secret is in the audit log")
	}
	if strings.Contains(m.stderr.String(), value) {
		t.Error("the secret is in moat's log")
	}
}

// TestWorldReadableSecretFile: after a session, the files of the encrypted
// secret store (which hold the audit keys and a token) are made 0644.
// Moat refuses to read it: `moat secret list` fails with the chmod to run,
// and a serving moat refuses every call (its audit log cannot get its keys,
// so nothing runs unrecorded) and logs which file has which mode. After the
// chmod everything works and the log verifies.
//
// SECURITY.md, overview row "no file permission hardening" and Secrets,
// "Files" (internal/secrets: TestFileRefusesLoosePermissions).
func TestWorldReadableSecretFile(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "calls.jsonl")
	cfg := testutil.WriteConfig(t, dir, map[string]server{"test": testServer(t, "test", "-record", rec)})
	env := testutil.MoatEnv(t)
	testutil.SetSecret(t, env, "oauth-token", "token-value-1")
	m := startMoatWith(t, env, nil, cfg)
	m.echoWorks(t, "test")
	m.stop(t)

	store := filepath.Join(testutil.EnvValue(env, "XDG_DATA_HOME"), "moat", "secrets")
	items, err := os.ReadDir(store)
	if err != nil || len(items) < 2 {
		t.Fatalf("the secret store %s holds %v (%v); want the token and the audit keys", store, items, err)
	}
	for _, it := range items {
		if err := os.Chmod(filepath.Join(store, it.Name()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out := runMoat(t, env, "secret", "list")
	if code == 0 || !strings.Contains(out, "chmod 600 "+store) {
		t.Errorf("moat secret list with a 0644 store file: exit %d, %q; want a refusal with the chmod to run", code, out)
	}

	before := len(recordedCalls(t, rec))
	m2 := startMoatWith(t, env, nil, cfg)
	res := m2.call(t, "test", "echo", map[string]any{"message": "x"})
	if !res.IsError || !strings.Contains(resultText(res), "audit log cannot be written") {
		t.Errorf("a call ran although the secret store is readable by others: %q", resultText(res))
	}
	if got := len(recordedCalls(t, rec)); got != before {
		t.Errorf("the call reached the upstream")
	}
	m2.stop(t)
	// The serving moat names the file and its mode; the chmod command itself
	// is printed by the CLI commands (above), not in serve mode's log.
	if !strings.Contains(m2.stderr.String(), store) || !strings.Contains(m2.stderr.String(), "(mode 0644)") {
		t.Errorf("moat's log does not name the loose file and its mode:\n%s", tail(m2.stderr.String(), 4096))
	}

	for _, it := range items {
		if err := os.Chmod(filepath.Join(store, it.Name()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m3 := startMoatWith(t, env, nil, cfg)
	m3.echoWorks(t, "test")
	recs := m3.auditLog(t)
	findRecord(t, recs, "the call after the fix", func(r audit.Record) bool { return r.Event == "tool_call" && r.Outcome == "ok" })
}
