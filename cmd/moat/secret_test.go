package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/secrets"
)

const secretCanary = "tok-canary-4c1e-VALUE"

// secretEnv points the command at a fresh encrypted file store and keeps it
// away from any keychain.
func secretEnv(t *testing.T) (dir string) {
	t.Helper()
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "disabled:")
	t.Setenv("MOAT_PASSPHRASE", "test-passphrase")
	// The commands record their events in the audit log, whose keys live in
	// the default secret store: both go to this test's own directories.
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", filepath.Join(state, "state"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(state, "data"))
	t.Setenv("MOAT_CONFIG", "")
	processStore = lazyStore{}
	return filepath.Join(t.TempDir(), "store")
}

// runSecret runs `moat secret ARGS` with stdin holding in.
func runSecret(t *testing.T, in string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(p, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out, errb bytes.Buffer
	code = secretCommand(t.Context(), args, f, &out, &errb)
	return code, out.String(), errb.String()
}

func storeValue(t *testing.T, dir, name string) (string, error) {
	t.Helper()
	s, err := secrets.Open(t.Context(), &secrets.Options{Backend: secrets.BackendFile, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Get(t.Context(), name)
	return v.Reveal(), err
}

func TestSecretSetRefusesArgvValue(t *testing.T) {
	dir := secretEnv(t)
	code, out, errs := runSecret(t, "", "set", "--backend", "file", "--dir", dir, "github-token", secretCanary)
	if code != exitUsage {
		t.Errorf("exit code %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errs, "moat: error: moat secret set takes only a NAME: the value is never read from the command line") ||
		!strings.Contains(errs, "moat: hint: a value in argv lands in your shell history") {
		t.Errorf("stderr does not explain why:\n%s", errs)
	}
	if strings.Contains(out+errs, secretCanary) {
		t.Errorf("the refused value was echoed:\n%s%s", out, errs)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused set touched the store (%v)", err)
	}
}

func TestSecretSetReadsStdin(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{secretCanary + "\n", secretCanary},
		{secretCanary, secretCanary},
		{secretCanary + "\r\n", secretCanary},
		{"two\n\n", "two\n"}, // only one newline is trimmed
		{" spaced \n", " spaced "},
	}
	dir := secretEnv(t)
	for i, tt := range tests {
		name := "tok" + string(rune('a'+i))
		code, out, errs := runSecret(t, tt.in, "set", "--backend", "file", "--dir", dir, name)
		if code != exitOK {
			t.Fatalf("set %q: exit %d, stderr:\n%s", tt.in, code, errs)
		}
		if strings.Contains(out+errs, strings.TrimSpace(tt.want)) {
			t.Errorf("set printed the value:\n%s%s", out, errs)
		}
		got, err := storeValue(t, dir, name)
		if err != nil || got != tt.want {
			t.Errorf("stdin %q stored %q (%v), want %q", tt.in, got, err, tt.want)
		}
	}
	// Flags may also follow NAME.
	if code, _, errs := runSecret(t, "v\n", "set", "late", "--backend", "file", "--dir", dir); code != exitOK {
		t.Errorf("set NAME --flags: exit %d:\n%s", code, errs)
	}
	if code, _, errs := runSecret(t, "\n", "set", "--backend", "file", "--dir", dir, "empty"); code != exitUsage || !strings.Contains(errs, "empty") {
		t.Errorf("empty value: exit %d, stderr:\n%s", code, errs)
	}
}

func TestSecretListRm(t *testing.T) {
	dir := secretEnv(t)
	for _, n := range []string{"github-token", "api-key"} {
		if code, _, errs := runSecret(t, secretCanary+n, "set", "--backend", "file", "--dir", dir, n); code != exitOK {
			t.Fatalf("set: %s", errs)
		}
	}
	code, out, errs := runSecret(t, "", "list", "--backend", "file", "--dir", dir)
	if code != exitOK {
		t.Fatalf("list: exit %d:\n%s", code, errs)
	}
	want := "# secrets: encrypted file (" + dir + ") (encrypted at rest; key from MOAT_PASSPHRASE)\n" +
		"NAME          BACKEND\n" +
		"api-key       encrypted file (" + dir + ")\n" +
		"github-token  encrypted file (" + dir + ")\n"
	if out != want {
		t.Errorf("list printed:\n%s\nwant:\n%s", out, want)
	}
	if strings.Contains(out+errs, "canary") {
		t.Errorf("list printed a value:\n%s%s", out, errs)
	}

	if code, _, errs := runSecret(t, "", "rm", "--backend", "file", "--dir", dir, "api-key"); code != exitOK {
		t.Errorf("rm: exit %d:\n%s", code, errs)
	}
	if _, err := storeValue(t, dir, "api-key"); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("after rm, Get = %v, want ErrNotFound", err)
	}
	code, _, errs = runSecret(t, "", "rm", "--backend", "file", "--dir", dir, "api-key")
	if code != exitFailure || !strings.Contains(errs, "moat: error: ") {
		t.Errorf("rm of a missing secret: exit %d, stderr:\n%s", code, errs)
	}
}

func TestSecretUsageAndFailures(t *testing.T) {
	dir := secretEnv(t)
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"no subcommand", nil, exitUsage, "needs a subcommand"},
		{"unknown", []string{"get", "x"}, exitUsage, `unknown subcommand "get"`},
		{"set without name", []string{"set"}, exitUsage, "needs a NAME"},
		{"bad name", []string{"set", "--backend", "file", "--dir", dir, "../x"}, exitUsage, "invalid secret name"},
		{"bad flag", []string{"list", "--nope"}, exitUsage, "flag provided but not defined"},
		{"bad backend", []string{"list", "--backend", "vault"}, exitFailure, `unknown back end "vault"`},
		{"list with args", []string{"list", "x"}, exitUsage, "takes no arguments"},
		{"identity on list", []string{"list", "--identity", "alice"}, exitUsage, "--identity goes with `moat secret set` or `moat secret rm`"},
		{"bad identity", []string{"set", "--identity", "a/b", "x"}, exitUsage, `--identity "a/b" is not an identity name`},
		{"identity twice", []string{"set", "--identity", "alice", "x@bob"}, exitUsage, "give the plain NAME with --identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := runSecret(t, "v", tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) || !strings.HasPrefix(errs, "moat: error: ") {
				t.Errorf("moat secret %q: exit %d, stderr:\n%s\nwant exit %d and %q", tt.args, code, errs, tt.code, tt.want)
			}
		})
	}

}

// TestSecretEncryptDecrypt: with no keychain and no key source, `moat
// secret set` works in a store protected by permissions only, and `list`
// says so; `encrypt` and `decrypt` move between the modes, keep the
// secrets, print what is in force and are audited; require_encryption
// refuses decrypt.
func TestSecretEncryptDecrypt(t *testing.T) {
	dir := secretEnv(t)
	t.Setenv("MOAT_PASSPHRASE", "")
	t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir())
	if code, _, errs := runSecret(t, secretCanary, "set", "--dir", dir, "tok"); code != exitOK {
		t.Fatalf("set without a key source: exit %d\n%s", code, errs)
	}
	code, out, errs := runSecret(t, "", "list", "--dir", dir)
	if code != exitOK || !strings.Contains(out, "permissions only") || !strings.Contains(out, "moat secret encrypt") {
		t.Errorf("list of a permissions-only store: exit %d, stdout:\n%s\nstderr:\n%s; want the protection and the fix", code, out, errs)
	}

	t.Setenv("MOAT_PASSPHRASE", "new-pass")
	code, out, errs = runSecret(t, "", "encrypt", "--dir", dir)
	if code != exitOK || !strings.Contains(out, "now in force: secrets: encrypted file") {
		t.Fatalf("encrypt: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if v, err := storeValue(t, dir, "tok"); err != nil || v != secretCanary {
		t.Errorf("after encrypt, tok reads %v", err)
	}
	t.Setenv("MOAT_PASSPHRASE", "")
	if code, _, errs := runSecret(t, "", "list", "--dir", dir); code != exitFailure || !strings.Contains(errs, "MOAT_PASSPHRASE") {
		t.Errorf("list of the encrypted store without a key source: exit %d, stderr:\n%s", code, errs)
	}

	t.Setenv("MOAT_PASSPHRASE", "new-pass")
	if code, _, errs := runSecret(t, "", "decrypt", "--dir", dir); code != exitUsage || !strings.Contains(errs, "--yes") {
		t.Errorf("decrypt without --yes on a non-terminal: exit %d, stderr:\n%s", code, errs)
	}
	// require_encryption in the config named by MOAT_CONFIG refuses decrypt.
	cfg := filepath.Join(t.TempDir(), "moat.json")
	if err := os.WriteFile(cfg, []byte(`{"mcpServers": {}, "secrets": {"require_encryption": true}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MOAT_CONFIG", cfg)
	if code, _, errs := runSecret(t, "", "decrypt", "--yes", "--dir", dir); code != exitFailure || !strings.Contains(errs, "require_encryption") {
		t.Errorf("decrypt under require_encryption: exit %d, stderr:\n%s", code, errs)
	}
	t.Setenv("MOAT_CONFIG", "")
	code, out, errs = runSecret(t, "", "decrypt", "--yes", "--dir", dir)
	if code != exitOK || !strings.Contains(out, "now in force: secrets: file, protected by permissions only") {
		t.Fatalf("decrypt --yes: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	t.Setenv("MOAT_PASSPHRASE", "")
	if v, err := storeValue(t, dir, "tok"); err != nil || v != secretCanary {
		t.Errorf("after decrypt, tok reads %v", err)
	}
	log, err := os.ReadFile(filepath.Join(os.Getenv("XDG_STATE_HOME"), "moat", "audit.jsonl"))
	if err != nil || !bytes.Contains(log, []byte(`"secret_encrypt"`)) || !bytes.Contains(log, []byte(`"secret_decrypt"`)) {
		t.Errorf("the audit log lacks secret_encrypt or secret_decrypt (%v)", err)
	}
}

func TestSecretMigrate(t *testing.T) {
	dir := secretEnv(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	tokDir := filepath.Join(home, ".dynamic-mcp", "oauth-servers")
	if err := os.MkdirAll(tokDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tokDir, "github.json"), []byte(`{"access_token":"`+secretCanary+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runSecret(t, "", "migrate", "--backend", "file", "--dir", dir)
	if code != exitOK || !strings.Contains(out, `moved the OAuth token of "github"`) {
		t.Fatalf("migrate: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if strings.Contains(out+errs, secretCanary) {
		t.Errorf("migrate printed the token")
	}
	if _, err := os.Stat(filepath.Join(tokDir, "github.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the plain-text token file is still there (%v)", err)
	}
	if v, err := storeValue(t, dir, secrets.DynamicMCPPrefix+"github"); err != nil || !strings.Contains(v, secretCanary) {
		t.Errorf("the migrated token is not in the store: %v", err)
	}
	code, out, _ = runSecret(t, "", "migrate", "--backend", "file", "--dir", dir)
	if code != exitOK || !strings.Contains(out, "nothing to migrate") {
		t.Errorf("second migrate: exit %d, stdout:\n%s", code, out)
	}
}

// TestManagedPolicyRequiresEncryption: the administrator's
// secrets.require_encryption refuses a store protected by permissions only,
// even when the user's config says require_encryption false.
func TestManagedPolicyRequiresEncryption(t *testing.T) {
	dir := secretEnv(t)
	t.Setenv("MOAT_PASSPHRASE", "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	managed := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(managed, []byte(`{"secrets": {"require_encryption": true}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MOAT_MANAGED_POLICY", managed)
	cfg := filepath.Join(t.TempDir(), "moat.json")
	if err := os.WriteFile(cfg, []byte(`{"mcpServers": {}, "secrets": {"require_encryption": false}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MOAT_CONFIG", cfg)
	code, _, errs := runSecret(t, secretCanary, "set", "--dir", dir, "tok")
	if code != exitFailure || !strings.Contains(errs, "require_encryption") || !strings.Contains(errs, "MOAT_PASSPHRASE") {
		t.Errorf("set under the managed require_encryption with no key source: exit %d, stderr:\n%s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "header")); err == nil {
		t.Error("a secret store was created although the managed policy requires encryption")
	}
	t.Setenv("MOAT_PASSPHRASE", "pw")
	if code, _, errs := runSecret(t, secretCanary, "set", "--dir", dir, "tok"); code != exitOK {
		t.Errorf("set under the managed require_encryption with MOAT_PASSPHRASE: exit %d, stderr:\n%s", code, errs)
	}
}

// TestSecretForIdentity: --identity stores and removes an identity's own
// value of NAME, apart from the shared NAME.
func TestSecretForIdentity(t *testing.T) {
	dir := secretEnv(t)
	code, out, errs := runSecret(t, "alice's value", "set", "--backend", "file", "--dir", dir, "--identity", "alice", "token")
	if code != exitOK || !strings.Contains(out, `identity "alice" read it as ${secret:token}`) {
		t.Fatalf("set --identity: exit %d\n%s%s", code, out, errs)
	}
	if v, err := storeValue(t, dir, "token@alice"); err != nil || v != "alice's value" {
		t.Errorf("token@alice = %q, %v", v, err)
	}
	if _, err := storeValue(t, dir, "token"); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("the shared token: %v, want not found", err)
	}
	if code, _, errs := runSecret(t, "", "rm", "--backend", "file", "--dir", dir, "--identity", "alice", "token"); code != exitOK {
		t.Fatalf("rm --identity: exit %d\n%s", code, errs)
	}
	if _, err := storeValue(t, dir, "token@alice"); !errors.Is(err, secrets.ErrNotFound) {
		t.Errorf("token@alice after rm: %v", err)
	}
}
