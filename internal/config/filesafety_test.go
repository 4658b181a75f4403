//go:build unix

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestLoadRefusesFilesOthersCanWrite(t *testing.T) {
	const body = `{"mcpServers": {"s": {"description": "d", "command": "x"}}}`
	for _, tt := range []struct {
		name string
		mode os.FileMode
		frag string
	}{
		{"group writable, shared group", 0o620, "writable by its group"},
		{"world writable", 0o602, "writable by other users"},
		{"both", 0o666, "writable by other users"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, body)
			if tt.mode&0o002 == 0 {
				sharedGroup(t, p)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p, nil)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load of a mode %04o file: err = %v, want *Error", tt.mode, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.frag) || !strings.Contains(msg, "chmod go-w "+p) {
				t.Errorf("error %q should say %q and give the fix `chmod go-w %s`", msg, tt.frag, p)
			}
			if err := os.Chmod(p, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(p, nil); err != nil {
				t.Errorf("after chmod go-w the file still does not load: %v", err)
			}
		})
	}
}

// sharedGroup gives p to a group other users are in (nogroup, gid 65534,
// the primary group of nobody), or skips: only root can, and a group-writable
// file of the user's private group is accepted by design.
func sharedGroup(t *testing.T, p string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("giving a file to a shared group needs root (a file of your private group may be group-writable)")
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil || !strings.Contains(string(passwd), ":65534::") && !strings.Contains(string(passwd), ":65534:") {
		t.Skip("no user has gid 65534 as primary group here")
	}
	if err := os.Chown(p, 0, 65534); err != nil {
		t.Fatal(err)
	}
}

// The directories on the way to the config count as much as the file: a
// 0600 config in a directory another user can write (or owns) is that
// user's to replace (issue 20, item 5).
func TestLoadRefusesUnsafeDirectories(t *testing.T) {
	const body = `{"mcpServers": {}}`
	t.Run("world-writable directory", func(t *testing.T) {
		p := writeConfig(t, body)
		dir := filepath.Dir(p)
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, nil)
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "directory "+dir+" is writable by other users") ||
			!strings.Contains(err.Error(), "chmod go-w "+dir) {
			t.Fatalf("Load of a 0600 config in a 0777 directory = %v, want a refusal naming %s and `chmod go-w %s`", err, dir, dir)
		}
		if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p, nil); err != nil {
			t.Errorf("your own config in a sticky 1777 directory (like /tmp) is refused: %v", err)
		}
	})
	t.Run("directory owned by another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("giving a directory to another user (uid 65534) needs root; CI runs the tests as root")
		}
		p := writeConfig(t, body)
		dir := filepath.Dir(p)
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, nil)
		if err == nil || !strings.Contains(err.Error(), "directory "+dir+" is owned by nobody") ||
			!strings.Contains(err.Error(), "sudo chown root "+dir) {
			t.Fatalf("Load of a config in a directory of uid 65534 = %v, want a refusal naming %s and the chown fix", err, dir)
		}
	})
}

func TestLoadRefusesFilesOwnedByOthers(t *testing.T) {
	p := writeConfig(t, `{"mcpServers": {}}`)
	// Only root can give a file away; as another user, ask for a file root
	// owns and check it is accepted instead.
	if os.Getuid() != 0 {
		if _, err := Load("/etc/hostname", nil); err != nil && strings.Contains(err.Error(), "owned by") {
			t.Errorf("a root-owned file was refused: %v", err)
		}
		t.Skip("giving a file to another user needs root; only the root-owner case was checked")
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p, nil)
	if err == nil || !strings.Contains(err.Error(), "owned by") || !strings.Contains(err.Error(), "chown") ||
		!strings.Contains(err.Error(), p) {
		t.Errorf("Load of a file owned by uid 65534: err = %v, want a refusal naming the chown fix", err)
	}
	if err := os.Chown(p, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, nil); err != nil {
		t.Errorf("a root-owned file loads for root: %v", err)
	}
}

func TestLoadRefusesNonRegularAndMissing(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(fifo, nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load(FIFO) = %v, want a refusal (and no hang)", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an error wrapping os.ErrNotExist", err)
	}
}
