package doctor

import (
	"context"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/secrets"
)

// TestPerUserChecks: doctor neither demands a shared secret a gateway's
// per-user server never uses nor starts it with a placeholder, and says
// which identity lacks its own secret and which identity is shared by a
// group (seen failing with per-user servers loaded like shared ones).
func TestPerUserChecks(t *testing.T) {
	const server = `"kb": {"description": "d", "url": "https://kb.example.com/mcp", "per_user": true,
		"headers": {"Authorization": "Bearer ${secret:kb-token}"}}`
	withStored := func(f *fixture, names ...string) {
		open := f.opts.OpenStore
		f.opts.OpenStore = func(ctx context.Context, backend string) (*secrets.Store, error) {
			s, err := open(ctx, backend)
			for _, n := range names {
				if err == nil {
					err = s.Set(ctx, n, secrets.NewSecret("v-"+n))
				}
			}
			return s, err
		}
	}
	byName := func(r *Report) map[string]Check {
		m := map[string]Check{}
		for _, c := range r.Checks {
			m[c.Name] = c
		}
		return m
	}

	t.Run("gateway", func(t *testing.T) {
		f := newFixture(t, `{"mcpServers": {`+server+`}, "gateway": {"identities": {
			"alice": {"uids": [1000]}, "devs": {"unix_groups": ["devs"]}, "ci": {"tokens": ["ci"], "servers": []}}}}`)
		withStored(f, secrets.ForIdentity("kb-token", "alice"))
		got := byName(Run(context.Background(), f.opts))
		if c := got["config.valid"]; c.Status != OK {
			t.Fatalf("config.valid without a shared kb-token: %+v", c)
		}
		if c := got["server.per_user"]; c.Status != OK || !strings.Contains(c.Message, "each identity's own kb-token") {
			t.Errorf("server.per_user: %+v", c)
		}
		if _, ok := got["server.reachable"]; ok {
			t.Errorf("doctor connected to a per-user server with a placeholder secret: %+v", got["server.reachable"])
		}
		c := got["gateway.per_user"]
		details := strings.Join(c.Details, "\n")
		if c.Status != Warn || !strings.Contains(c.Message, "kb (alice, devs)") ||
			!strings.Contains(details, "identity devs has no secret \"kb-token\" of its own: moat secret set --identity devs kb-token") ||
			!strings.Contains(details, "identity devs is matched by unix_groups") ||
			strings.Contains(details, "identity alice") || strings.Contains(details, "ci") {
			t.Errorf("gateway.per_user: %+v", c)
		}
	})

	t.Run("stdio", func(t *testing.T) {
		f := newFixture(t, `{"mcpServers": {`+server+`}}`)
		got := byName(Run(context.Background(), f.opts))
		if c := got["server.per_user"]; c.Status != Fail || !strings.Contains(c.Fix, "moat secret set kb-token") {
			t.Errorf("server.per_user on stdio without the shared secret: %+v", c)
		}
		if _, ok := got["gateway.per_user"]; ok {
			t.Errorf("gateway.per_user without identities: %+v", got["gateway.per_user"])
		}
	})
}
