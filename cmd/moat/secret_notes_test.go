package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// TestSecretCommandsNoteOnce pins issue 20: the secret commands repeated
// the "keychain is not usable" note at every command. It is printed once,
// where a value is about to be stored (set); list and rm name each secret's
// backend anyway. No command warns about the audit log when it works.
func TestSecretCommandsNoteOnce(t *testing.T) {
	env := append(testutil.MoatEnv(t), "MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG=") // no keychain (DBUS disabled)
	run := func(stdin string, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(testutil.BuildMoat(t), args...)
		cmd.Env, cmd.Stdin = env, strings.NewReader(stdin)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("moat %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return out.String(), errb.String()
	}
	const note = "moat: note: the keychain is not usable"
	_, stderr := run("value-1\n", "secret", "set", "token")
	if n := strings.Count(stderr, note); n != 1 || strings.Contains(stderr, "warning") {
		t.Errorf("moat secret set: the note %d times, or a warning:\n%s", n, stderr)
	}
	for _, args := range [][]string{{"secret", "list"}, {"secret", "rm", "token"}} {
		if _, stderr := run("", args...); strings.Contains(stderr, note) || strings.Contains(stderr, "warning") {
			t.Errorf("moat %s repeats the note, or warns:\n%s", strings.Join(args, " "), stderr)
		}
	}
	log, err := os.ReadFile(filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl"))
	if err != nil || !strings.Contains(string(log), `"secret_set"`) || !strings.Contains(string(log), `"secret_rm"`) {
		t.Errorf("the audit log lacks secret_set or secret_rm (err %v):\n%s", err, log)
	}
}
