package policy

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
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
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
	d, s := m.For("files")
	p := Effective(nil, mustParse(t, `{"allow": ["*"]}`), d, s)
	if p.Decide("rm", readOnly, nil).Allow || p.Decide("write_file", readOnly, nil).Allow || !p.Decide("read_file", readOnly, nil).Allow {
		t.Error("the managed deny and allow rules did not survive Effective")
	}
	for _, tt := range []struct {
		name, body string
		mode       os.FileMode
		want       string
	}{
		{"group-writable", good, 0o664, "chmod go-w"},
		{"world-writable", good, 0o646, "chmod go-w"},
		{"bad policy", `{"defaults": {"rate": "fast"}}`, 0o600, "/defaults/rate"},
		{"global in a server", `{"servers": {"x": {"global": {"rate": "1/s"}}}}`, 0o600, "/servers/x/global"},
		{"unknown top key", `{"default": {}}`, 0o600, `unknown key "default"`},
		{"empty file", ``, 0o600, "invalid JSON"},
	} {
		_, err := LoadManaged(writeManaged(t, tt.body, tt.mode))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("LoadManaged(%s) = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := LoadManaged(filepath.Join(t.TempDir(), "absent.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadManaged(missing) = %v, want fs.ErrNotExist so the caller can tell absence from breakage", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
	os.WriteFile(path, []byte(good), 0o600)
	os.Chmod(dir, 0o777)
	if _, err := LoadManaged(path); err == nil || !strings.Contains(err.Error(), "chmod go-w "+dir) {
		t.Errorf("LoadManaged in a world-writable directory = %v, want a refusal naming the directory", err)
	}
}

func TestLoadManagedRefusesOtherOwners(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to create a file owned by another user")
	}
	path := writeManaged(t, `{}`, 0o644)
	if err := os.Chown(path, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManaged(path); err == nil || !strings.Contains(err.Error(), "chown root") {
		t.Errorf("LoadManaged(file owned by uid 12345) = %v, want a refusal with the chown fix", err)
	}
}
