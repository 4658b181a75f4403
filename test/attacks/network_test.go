package attacks

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// startSink runs a hostile sink on 127.0.0.2 (another origin than the
// 127.0.0.1 servers) and proves that it is reachable and records: the test
// sends it "PROBE" itself over a raw connection. It returns the sink's
// base URL and a function that returns what anything else sent it.
func startSink(t *testing.T) (string, func() []string) {
	t.Helper()
	rec := filepath.Join(t.TempDir(), "sink.txt")
	base := startHostileHTTP(t, "-mode", "sink", "-addr", "127.0.0.2:0", "-record", rec)
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatalf("the sink on %s is not reachable (is 127.0.0.2 on lo?): %v", base, err)
	}
	c.Write([]byte("PROBE"))
	c.Close()
	waitFor(t, "the sink to record the probe", func() bool { return len(recordedCalls(t, rec)) > 0 }, nil)
	return base, func() []string {
		var others []string
		for _, line := range recordedCalls(t, rec) {
			if !strings.HasSuffix(line, `sent "PROBE"`) {
				others = append(others, line)
			}
		}
		return others
	}
}

// TestRedirectToAnotherOriginWithBearerToken: an upstream that holds a
// bearer token (from the secret store) redirects every request to another
// origin. Moat does not follow: the other origin receives nothing at all,
// so neither the token nor the request body leaves; the group shows as
// unavailable, and the audit log records it without the token.
//
// SECURITY.md, Network, "Redirects": "same origin only ... Authorization
// and cookies never go to another origin" (internal/netguard: TestRedirects).
func TestRedirectToAnotherOriginWithBearerToken(t *testing.T) {
	const token = "bearer-canary-31b9e4"
	sinkURL, sinkGot := startSink(t)
	dir := t.TempDir()
	redirRec := filepath.Join(dir, "redirect.txt")
	url := startHostileHTTP(t, "-mode", "redirect", "-target", sinkURL+"/mcp", "-record", redirRec)
	env := testutil.MoatEnv(t)
	testutil.SetSecret(t, env, "upstream-token", token)
	m := startMoatWith(t, env, nil, testutil.WriteConfig(t, dir, map[string]server{
		"evil": {"description": "redirects", "url": url, "type": "http", "headers": map[string]string{"Authorization": "Bearer ${secret:upstream-token}"}},
		"good": testServer(t, "good"),
	}))
	reason := m.waitStatus(t, "evil", "unavailable")
	if !strings.Contains(reason, "redirect") {
		t.Errorf("the group's reason %q does not say it was a refused redirect", reason)
	}
	m.echoWorks(t, "good")
	if got := recordedCalls(t, redirRec); len(got) == 0 || !strings.Contains(got[0], token) {
		t.Fatalf("the redirecting server saw %v; want a request carrying the token (else this test proves nothing)", got)
	}
	if got := sinkGot(); len(got) != 0 {
		t.Fatalf("the other origin received: %v", got)
	}
	recs := m.auditLog(t)
	r := findRecord(t, recs, "evil unavailable", func(r audit.Record) bool {
		return r.Event == "upstream_unavailable" && r.Group == "evil"
	})
	if !strings.Contains(r.Detail["reason"], "redirect") {
		t.Errorf("the audited reason %q does not name the redirect", r.Detail["reason"])
	}
	for _, r := range recs {
		if strings.Contains(r.Reason+r.Detail["reason"]+r.Detail["error"], token) {
			t.Errorf("the token is in the audit log: %+v", r)
		}
	}
	if strings.Contains(m.stderr.String(), token) {
		t.Error("the token is in moat's log")
	}
}

// TestSSEEndpointOnAnotherOrigin: a legacy SSE upstream's endpoint event
// sends the client's POSTs to another origin. Moat refuses the endpoint:
// the other origin receives nothing, the group shows as unavailable, and
// the audit log records it.
//
// SECURITY.md, Network, "Redirects": "The legacy SSE endpoint event must be
// on the SSE URL's origin" (internal/netguard:
// TestLegacySSEEndpointOnAnotherOrigin).
func TestSSEEndpointOnAnotherOrigin(t *testing.T) {
	sinkURL, sinkGot := startSink(t)
	url := startHostileHTTP(t, "-mode", "sse-endpoint", "-target", sinkURL+"/message")
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"evil": {"description": "moves its endpoint", "url": url, "type": "sse"},
		"good": testServer(t, "good"),
	}))
	reason := m.waitStatus(t, "evil", "unavailable")
	if !strings.Contains(reason, "origin") {
		t.Errorf("the group's reason %q does not say the endpoint is on another origin", reason)
	}
	m.echoWorks(t, "good")
	if got := sinkGot(); len(got) != 0 {
		t.Fatalf("the other origin received: %v", got)
	}
	recs := m.auditLog(t)
	findRecord(t, recs, "evil unavailable for its endpoint", func(r audit.Record) bool {
		return r.Event == "upstream_unavailable" && r.Group == "evil" && strings.Contains(r.Detail["reason"], "origin")
	})
}

// TestSSRFToLinkLocal: a server url points at the cloud metadata address
// https://169.254.169.254/mcp, without allow_private_network. Moat refuses
// it before dialling, and the group's reason names the address.
//
// No packet can leave: moat runs in an empty network namespace, where a
// dial would fail with "network is unreachable" instead of Moat's refusal,
// so the assertion on the reason also proves the refusal came first.
//
// SECURITY.md, Network, "SSRF": link-local (cloud metadata) addresses are
// refused (internal/netguard: TestIPLiteralUpstreamRefusedBeforeDial).
func TestSSRFToLinkLocal(t *testing.T) {
	netns := netnsWrapper(t)
	m := startMoatWith(t, testutil.MoatEnv(t), netns, testutil.WriteConfig(t, t.TempDir(), map[string]server{
		"metadata": {"description": "cloud metadata", "url": "https://169.254.169.254/mcp", "allow_private_network": false},
		"good":     testServer(t, "good"),
	}))
	reason := m.waitStatus(t, "metadata", "unavailable")
	if !strings.Contains(reason, "169.254.169.254") || !strings.Contains(reason, "refus") || strings.Contains(reason, "unreachable") {
		t.Errorf("the group's reason %q does not name the refused address", reason)
	}
	m.echoWorks(t, "good")
	recs := m.auditLog(t)
	findRecord(t, recs, "the metadata group refused", func(r audit.Record) bool {
		return r.Event == "upstream_unavailable" && r.Group == "metadata" && strings.Contains(r.Detail["reason"], "169.254.169.254")
	})
}
