package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// On a systemd desktop Moat usually starts inside a cgroup it cannot use for
// its children: its client's (Claude Desktop's app scope, a terminal's
// scope), shared with other processes and not delegated. The user's systemd
// gives any of the user's processes a cgroup of their own on request, as
// `systemd-run --user --scope -p Delegate=yes` does: a transient scope with
// Moat alone in it, delegated to the user. Moat's processes, parents and
// signals stay as they are; only its cgroup changes.

// scopeTimeout bounds the whole request, so a stuck systemd never delays a
// start for long.
const scopeTimeout = 3 * time.Second

// moveToDelegatedScope asks the user's systemd for a delegated transient
// scope holding this process, and returns the scope's cgroup directory in
// h's cgroup2 mount.
func moveToDelegatedScope(h hierarchies) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), scopeTimeout)
	defer cancel()
	conn, err := connectUserSystemd(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()

	type property struct {
		Name  string
		Value dbus.Variant
	}
	type aux struct {
		Name  string
		Props []property
	}
	pid := os.Getpid()
	unit := fmt.Sprintf("moat-%d.scope", pid)
	props := []property{
		{"Description", dbus.MakeVariant("Moat MCP proxy: per-server cgroups for its stdio servers")},
		{"PIDs", dbus.MakeVariant([]uint32{uint32(pid)})},
		{"Delegate", dbus.MakeVariant(true)},
	}
	systemd := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	var job dbus.ObjectPath
	err = systemd.CallWithContext(ctx, "org.freedesktop.systemd1.Manager.StartTransientUnit", 0,
		unit, "fail", props, []aux{}).Store(&job)
	if err != nil {
		return "", fmt.Errorf("asking the user's systemd for a delegated scope: %w", err)
	}
	// systemd moves the process while it runs the job: wait for the move.
	for {
		own, err := os.ReadFile(procCgroupPath)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(string(own), "\n") {
			if rel, ok := strings.CutPrefix(line, "0::"); ok && strings.HasSuffix(rel, "/"+unit) {
				if dir := mountedDir(h.v2Mount, h.v2Root, rel); dir != "" {
					return dir, nil
				}
				return "", fmt.Errorf("systemd's scope %s is outside the cgroup2 mount at %s", rel, h.v2Mount)
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("systemd did not move moat into %s: %w", unit, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// connectUserSystemd connects to the user's systemd on its private socket,
// as systemctl --user does.
func connectUserSystemd(ctx context.Context) (*dbus.Conn, error) {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	p := filepath.Join(dir, "systemd", "private")
	if dir == "" || !isSocket(p) {
		return nil, errors.New("no systemd user manager to ask for a delegated scope (no $XDG_RUNTIME_DIR/systemd/private)")
	}
	conn, err := dbus.Dial("unix:path="+p, dbus.WithContext(ctx))
	if err == nil {
		if err = conn.Auth(nil); err == nil {
			return conn, nil
		}
		conn.Close()
	}
	return nil, fmt.Errorf("connecting to the systemd user manager at %s: %w", p, err)
}

func isSocket(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&os.ModeSocket != 0
}
