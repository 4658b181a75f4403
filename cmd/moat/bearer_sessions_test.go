package main

import (
	"slices"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/oidcverify"
)

// TestBearerSessionsEnd: which HTTP sessions end because their credential
// did: a revoked token's, even made again under its name (not while the
// store cannot be read), an OIDC
// session once its latest token is past expiry and skew, unless the same
// person presented a newer one; another person's newer token keeps
// nothing alive. Each is ended once, and says why.
func TestBearerSessionsEnd(t *testing.T) {
	now := time.Unix(10_000, 0)
	const skew = time.Minute
	alice := &guard.Identity{Name: "staff", Principal: "oidc https://idp sub-alice"}
	bob := &guard.Identity{Name: "staff", Principal: "oidc https://idp sub-bob"}
	oidcOf := func(id *guard.Identity, exp time.Time) *bearerOf {
		return &bearerOf{oidc: &oidcverify.Claims{Expiry: exp}, id: id}
	}
	b := newBearerSessions()
	released := map[string]bool{}
	add := func(id string, who *bearerOf) { b.add(id, who, func() { released[id] = true }) }
	add("laptop-session", &bearerOf{token: "laptop", sum: "hash-of-the-first-laptop", id: &guard.Identity{Name: "ops", Principal: "token laptop"}})
	add("alice-session", oidcOf(alice, now.Add(5*time.Minute)))
	add("bob-session", oidcOf(bob, now.Add(5*time.Minute)))

	if got := b.over(now, nil, skew); len(got) != 0 {
		t.Errorf("with the token list unknown and no token expired: %v ended", got)
	}
	if got := b.over(now, map[string]bool{"hash-of-the-first-laptop": true}, skew); len(got) != 0 {
		t.Errorf("with every token stored: %v ended", got)
	}
	// Revoked, and a new token made under its name (moat token revoke
	// laptop && moat token create laptop) within the second.
	if got := b.over(now, map[string]bool{"hash-of-the-new-laptop": true}, skew); !slices.Equal(got, []string{"laptop-session"}) {
		t.Errorf("laptop revoked and made again: %v ended, want laptop-session", got)
	}
	if got := b.over(now, map[string]bool{}, skew); len(got) != 0 {
		t.Errorf("a second look ended %v again", got)
	}

	// Alice refreshed her token; her newer token shown on bob's session
	// does not keep his alive.
	b.renew("alice-session", oidcOf(alice, now.Add(time.Hour)))
	b.renew("bob-session", oidcOf(alice, now.Add(time.Hour)))
	later := now.Add(5*time.Minute + skew + time.Second)
	if got := b.over(later, nil, skew); !slices.Equal(got, []string{"bob-session"}) {
		t.Errorf("past the first tokens' expiry and skew: %v ended, want bob-session (alice renewed hers)", got)
	}
	for id, want := range map[string]string{
		"laptop-session": "its token was revoked",
		"bob-session":    "its OIDC token expired, and no newer one was presented",
		"alice-session":  "",
	} {
		if got := b.remove(id); got != want || !released[id] {
			t.Errorf("remove(%s) = %q (released: %v), want %q, released", id, got, released[id], want)
		}
	}
}
