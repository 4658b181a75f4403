package doctor

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/socket"
)

const gatewayConfig = `{"mcpServers": {"off": {"description": "d", "command": "x", "enabled": false}},
 "gateway": {"socket_mode": "0660", "identities": {"alice": {"uids": [0], "unix_groups": ["no-such-group-moat"]}}}}`

// gatewayChecks runs doctor and returns its gateway checks by name.
func gatewayChecks(t *testing.T, f *fixture) map[string]Check {
	t.Helper()
	out := map[string]Check{}
	for _, c := range Run(context.Background(), f.opts).Checks {
		if c.Section == SectionGateway {
			out[c.Name] = c
		}
	}
	return out
}

func TestGatewayChecks(t *testing.T) {
	t.Run("no gateway block, no socket: nothing said", func(t *testing.T) {
		f := newFixture(t, `{"mcpServers": {}}`)
		if got := gatewayChecks(t, f); len(got) != 0 {
			t.Fatalf("gateway checks for a stdio-only user: %v", got)
		}
	})

	t.Run("configured, not running", func(t *testing.T) {
		f := newFixture(t, gatewayConfig)
		got := gatewayChecks(t, f)
		if c := got["gateway.socket"]; c.Status != OK || !strings.Contains(c.Message, "moat serve --listen unix:"+f.opts.GatewaySocket) {
			t.Errorf("gateway.socket: %+v", c)
		}
		if c := got["gateway.identities"]; c.Status != Warn || !strings.Contains(strings.Join(c.Details, "\n"), `"no-such-group-moat" does not exist`) {
			t.Errorf("gateway.identities: %+v", c)
		}
	})

	t.Run("running", func(t *testing.T) {
		f := newFixture(t, gatewayConfig)
		l, err := socket.Listen(f.opts.GatewaySocket, 0o660, "")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		got := gatewayChecks(t, f)
		if c := got["gateway.socket"]; c.Status != OK || !strings.Contains(c.Message, "0660") {
			t.Errorf("gateway.socket: %+v", c)
		}
		if c := got["gateway.listening"]; c.Status != OK || !strings.Contains(c.Message, "a gateway listens") {
			t.Errorf("gateway.listening: %+v", c)
		}

		// Someone opened the socket to every user.
		if err := os.Chmod(f.opts.GatewaySocket, 0o666); err != nil {
			t.Fatal(err)
		}
		if c := gatewayChecks(t, f)["gateway.socket"]; c.Status != Fail || !strings.Contains(c.Message, "every user of the host") {
			t.Errorf("a 0666 socket: %+v", c)
		}
	})

	t.Run("stale socket", func(t *testing.T) {
		f := newFixture(t, gatewayConfig)
		if err := os.MkdirAll(f.dir+"/run", 0o700); err != nil {
			t.Fatal(err)
		}
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: f.opts.GatewaySocket, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		os.Chmod(f.opts.GatewaySocket, 0o660)
		l.Close()
		if c := gatewayChecks(t, f)["gateway.listening"]; c.Status != Warn || !strings.Contains(c.Message, "left its socket") {
			t.Errorf("a stale socket: %+v", c)
		}
	})
}
