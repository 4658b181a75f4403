package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func mustParseIdentity(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := ParseIdentity([]byte(s))
	if err != nil {
		t.Fatalf("ParseIdentity(%s): %v", s, err)
	}
	return p
}

// TestParseIdentity: an identity's policy takes the decision rules and
// "global" limits, and refuses what only a group's policy may say, each
// at its key with the fix.
func TestParseIdentity(t *testing.T) {
	p := mustParseIdentity(t, `{"deny": ["write_*"], "allow": ["read_*", "write_x"], "destructive": "deny", "read_only_only": false,
		"args": {"read_*": {"path": {"prefix": ["/srv"]}}}, "resources": {"deny": ["file:///etc/*"]}, "prompts": {"allow": []},
		"global": {"rate": "10/m", "burst": 2, "max_concurrent": 3}}`)
	if got := p.IdentitySettings(); got.Rate != (Rate{N: 10, Per: time.Minute}) || got.Burst != 2 || got.MaxConcurrent != 3 {
		t.Errorf("IdentitySettings() = %+v, want rate 10/m, burst 2, max_concurrent 3", got)
	}
	if got := mustParseIdentity(t, `{}`).IdentitySettings(); got != (Settings{}) {
		t.Errorf("IdentitySettings() of an empty policy = %+v, want zero (no limiter of its own)", got)
	}
	for _, tt := range []struct {
		src, path, frag string
	}{
		{`{"pin": "off"}`, "/pin", "identity policies only restrict access and limits"},
		{`{"redact": "off"}`, "/redact", `the group's own policy (the server's "policy" or "defaults.policy") keeps it`},
		{`{"on_invalid_schema": "passthrough"}`, "/on_invalid_schema", "not allowed in an identity's policy"},
		{`{"tools": {"t": {"rate": "1/s"}}}`, "/tools", "not allowed in an identity's policy"},
		{`{"timeout": "1s"}`, "/timeout", "not allowed in an identity's policy"},
		{`{"max_result_bytes": 10}`, "/max_result_bytes", "not allowed in an identity's policy"},
		{`{"rate": "1/s"}`, "/rate", `write "global": {"rate": ...}`},
		{`{"global": {"timeout": "1s"}}`, "/global/timeout", "unknown key"},
		{`{"dny": ["x"]}`, "/dny", `did you mean "deny"?`},
	} {
		_, err := ParseIdentity([]byte(tt.src))
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("ParseIdentity(%s) = %v, want a *policy.Error", tt.src, err)
			continue
		}
		found := false
		for _, p := range pe.Problems {
			if p.Path == tt.path && strings.Contains(p.Msg+": "+p.Hint, tt.frag) {
				found = true
			}
		}
		if !found {
			t.Errorf("ParseIdentity(%s): no problem at %s containing %q; got %v", tt.src, tt.path, tt.frag, err)
		}
	}
}

// TestIdentityRefusalsNameTheIdentity: a refusal by an identity's policy
// says it is the identity's, not the group's.
func TestIdentityRefusalsNameTheIdentity(t *testing.T) {
	p := mustParseIdentity(t, `{"deny": ["write_*"], "read_only_only": true, "resources": {"deny": ["secret:*"]}}`)
	for _, d := range []Decision{p.Decide("write_x", nil, nil), p.Decide("read_x", nil, nil), p.DecideResource("secret:a")} {
		if d.Allow || !strings.Contains(d.Reason, "this identity") || strings.Contains(d.Reason, "group") {
			t.Errorf("decision %+v: want a refusal naming this identity's policy, not a group's", d)
		}
	}
	if d := mustParse(t, `{"deny": ["x"]}`).Decide("x", nil, nil); !strings.Contains(d.Reason, "this group's policy") {
		t.Errorf("a group's refusal = %q, want it to name this group's policy", d.Reason)
	}
}

// TestIdentityLimits: each identity has its own rate and concurrency cap
// over all groups; two identities never share one; a reload that leaves
// an identity's settings alone keeps its bucket, one that changes them
// starts afresh, and one that removes the identity removes its limiter.
func TestIdentityLimits(t *testing.T) {
	now := time.Now()
	l := limitsFor(t, `{"global": {"rate": "1000/s"}}`, map[string]string{"g": `{}`, "h": `{}`})
	ids := func(a, b string) map[string]*Policy {
		return map[string]*Policy{"alice": mustParseIdentity(t, a), "bob": mustParseIdentity(t, b)}
	}
	l.UpdateIdentities(ids(`{"global": {"rate": "1/h"}}`, `{"global": {"rate": "1/h"}}`))
	if ok, _ := l.AllowAsAt(now, "alice", "g", "t"); !ok {
		t.Fatal("alice's first call was refused")
	}
	if ok, retry := l.AllowAsAt(now, "alice", "h", "u"); ok || retry <= 0 {
		t.Errorf("alice's second call, to another group, = %v (retry %v); want refused: her rate counts over all groups", ok, retry)
	}
	if ok, _ := l.AllowAsAt(now, "bob", "g", "t"); !ok {
		t.Error("bob was refused after alice spent her rate: two identities share a limiter")
	}
	if ok, _ := l.AllowAt(now, "g", "t"); !ok {
		t.Error("a call without an identity was refused by an identity's rate")
	}
	l.UpdateIdentities(ids(`{"global": {"rate": "1/h"}}`, `{"global": {"rate": "2/h"}}`))
	if ok, _ := l.AllowAsAt(now, "alice", "g", "t"); ok {
		t.Error("a reload that left alice's rate unchanged refilled her bucket")
	}
	if ok, _ := l.AllowAsAt(now, "bob", "g", "t"); !ok {
		t.Error("bob's rate changed, yet his old bucket was kept")
	}
	l.UpdateIdentities(map[string]*Policy{"bob": mustParseIdentity(t, `{}`)})
	if ok, _ := l.AllowAsAt(now, "alice", "g", "t"); !ok {
		t.Error("alice, removed from the identities, still meets her old limiter here (the policy layer refuses her; the limits only count)")
	}

	l.UpdateIdentities(ids(`{"global": {"max_concurrent": 1}}`, `{}`))
	ctx := context.Background()
	rel, err := l.AcquireAs(ctx, "alice", "g", "t")
	if err != nil {
		t.Fatal(err)
	}
	var busy *BusyError
	if _, err := l.AcquireAs(ctx, "alice", "h", "u"); !errors.As(err, &busy) || busy.Scope != "identity" || !strings.Contains(busy.Error(), `identity "alice"`) {
		t.Errorf("alice's second concurrent call = %v, want a BusyError of scope identity naming her", err)
	}
	rel2, err := l.AcquireAs(ctx, "bob", "g", "t")
	if err != nil {
		t.Errorf("bob was refused while alice held her one slot: %v", err)
	} else {
		rel2()
	}
	rel()
	if rel, err := l.AcquireAs(ctx, "alice", "h", "u"); err != nil {
		t.Errorf("alice was refused after her call ended: %v", err)
	} else {
		rel()
	}
}
