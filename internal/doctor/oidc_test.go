package doctor

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/testutil/oidcprovider"
)

// TestOIDCCheck: doctor's gateway.oidc check against a real issuer on
// loopback TLS: reachable with usable keys; down; another issuer named in
// its discovery document; keys of no allowed algorithm.
func TestOIDCCheck(t *testing.T) {
	p := oidcprovider.Start(t)
	client, err := netguard.NewOAuthClient(&netguard.Options{TLS: netguard.TLS{CAFile: p.CAFile}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(issuer, algs string) Check {
		t.Helper()
		f := newFixture(t, fmt.Sprintf(`{"mcpServers": {}, "gateway": {"oidc": {"issuer": %q, "audience": "https://moat.test/mcp"%s}}}`, issuer, algs))
		f.opts.OIDCClient = client
		for _, c := range Run(context.Background(), f.opts).Checks {
			if c.Name == "gateway.oidc" {
				return c
			}
		}
		t.Fatal("no gateway.oidc check")
		return Check{}
	}
	if c := check(p.URL, ""); c.Status != OK || !strings.Contains(c.Message, "publishes 1 usable signing keys") {
		t.Errorf("reachable: %+v", c)
	}
	if c := check(p.URL, `, "allowed_algs": ["ES256"]`); c.Status != Fail || !strings.Contains(c.Message, "none of an algorithm gateway.oidc.allowed_algs allows (ES256; the keys' are RS256)") ||
		!strings.Contains(c.Fix, "allowed_algs") {
		t.Errorf("no key of an allowed alg: %+v", c)
	}
	if c := check(p.URL+"/", ""); c.Status != Fail || !strings.Contains(c.Message, "names another issuer") || !strings.Contains(c.Fix, "exactly the issuer") {
		t.Errorf("another issuer: %+v", c)
	}
	p.SetDown(true)
	if c := check(p.URL, ""); c.Status != Fail || !strings.Contains(c.Message, "cannot be reached for discovery") || !strings.Contains(c.Fix, "check gateway.oidc.issuer") {
		t.Errorf("down: %+v", c)
	}
}
