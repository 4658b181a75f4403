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
		{"group writable", 0o620, "writable by its group"},
		{"world writable", 0o602, "writable by other users"},
		{"both", 0o666, "writable by other users"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, body)
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
