package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeManaged(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadManaged(t *testing.T) {
	good := `{"defaults": {"deny": ["rm"], "global": {"rate": "50/s"}}, "servers": {"files": {"allow": ["read_*"]}}}`
	m, err := LoadManaged(writeManaged(t, good, 0o644))
	if err != nil {
		t.Fatalf("LoadManaged(good, 0644): %v", err)
	}
	if d, s := m.Policy.For("files"); d == nil || s == nil {
		t.Errorf("LoadManaged(good) lost its blocks: defaults %v, files %v", d, s)
	}
	for _, tt := range []struct {
		name, body string
		mode       os.FileMode
		want       string
	}{
		{"world-writable", good, 0o646, "chmod go-w"},
		{"bad policy, placed", "{\"defaults\":\n  {\"rate\": \"fast\"}}", 0o600, "/defaults/rate (line 2, col 12): managed policy: must be a rate"},
		{"typo, placed, with the meant word", "{\"servers\": {\"x\": {\"pin\": \"strcit\"}}}", 0o600, `/servers/x/pin (line 1, col 27): managed policy: must be one of ["strict" "auto-add" "off"], got "strcit": did you mean "strict"?`},
		{"unknown top key at the key", "{\n \"default\": {}}", 0o600, `/default (line 2, col 2): managed policy: unknown key "default"`},
		{"empty file", ``, 0o600, "(line 1, col 1)"},
		{"duplicate key", `{"defaults": {}, "defaults": {}}`, 0o600, `duplicate key "defaults"`},
	} {
		_, err := LoadManaged(writeManaged(t, tt.body, tt.mode))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadManaged(%s) = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := LoadManaged(filepath.Join(t.TempDir(), "absent.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadManaged(missing) = %v, want fs.ErrNotExist so the caller can tell absence from breakage", err)
	}
	path := writeManaged(t, good, 0o600)
	dir := filepath.Dir(path)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManaged(path); err == nil || !strings.Contains(err.Error(), "chmod go-w "+dir) {
		t.Errorf("LoadManaged in a world-writable directory = %v, want a refusal naming the directory", err)
	}
}

func TestLoadManagedRefusesOtherOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a file or directory to another user (uid 65534) needs root; CI runs the tests as root")
	}
	path := writeManaged(t, `{}`, 0o644)
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManaged(path); err == nil || !strings.Contains(err.Error(), "chown root "+path) {
		t.Errorf("LoadManaged(file owned by uid 65534) = %v, want a refusal with the chown fix", err)
	}
	path = writeManaged(t, `{}`, 0o644)
	if err := os.Chown(filepath.Dir(path), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManaged(path); err == nil || !strings.Contains(err.Error(), "chown root "+filepath.Dir(path)) {
		t.Errorf("LoadManaged(in a directory owned by uid 65534) = %v, want a refusal naming the directory", err)
	}
}
