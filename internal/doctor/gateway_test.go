package doctor

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/secrets"
	"github.com/moatmcp/moat/internal/socket"
	"github.com/moatmcp/moat/internal/testutil"
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

func TestGatewayTLSAndTokenChecks(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name     string
		notAfter time.Time
		keyMode  os.FileMode
		want     Status
		message  string
		keyCheck Status // "" when the key is fine
	}{
		{"valid", now.Add(90 * 24 * time.Hour), 0o600, OK, "(localhost) is valid until 2027-03-06", ""},
		{"expiring", now.Add(10 * 24 * time.Hour), 0o600, Warn, "expires on 2026-12-16, in 10 days", ""},
		{"expired", now.Add(-24 * time.Hour), 0o600, Fail, "expired on 2026-12-05", ""},
		{"key readable by others", now.Add(90 * 24 * time.Hour), 0o644, OK, "is valid", Fail},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, `{"mcpServers": {}}`)
			certFile, keyFile := testutil.WriteSelfSignedCert(t, f.dir, c.notAfter, "localhost")
			if err := os.Chmod(keyFile, c.keyMode); err != nil {
				t.Fatal(err)
			}
			cfg := fmt.Sprintf(`{"mcpServers": {"off": {"description": "d", "command": "x", "enabled": false}},
 "gateway": {"tls": {"cert_file": %q, "key_file": %q}, "identities": {"alice": {"tokens": ["laptop", "phone"]}}}}`, certFile, keyFile)
			if err := os.WriteFile(f.cfg, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			f.opts.Now = func() time.Time { return now }
			f.opts.Tokens = func(context.Context, *secrets.Store) ([]string, error) { return []string{"laptop", "old"}, nil }
			got := gatewayChecks(t, f)
			if tc := got["gateway.tls"]; tc.Status != c.want || !strings.Contains(tc.Message, c.message) {
				t.Errorf("gateway.tls: %+v; want %s with %q", tc, c.want, c.message)
			}
			if kc := got["gateway.tls_key"]; kc.Status != c.keyCheck {
				t.Errorf("gateway.tls_key: %+v; want %q", kc, c.keyCheck)
			}
			tok := got["gateway.tokens"]
			details := strings.Join(tok.Details, "\n")
			if tok.Status != Warn || !strings.Contains(details, `token "phone" of identity alice was never created`) || !strings.Contains(details, `token "old" is stored but no identity names it`) {
				t.Errorf("gateway.tokens: %+v", tok)
			}
		})
	}
}
