package oauth

import (
	"testing"
	"time"
)

// TestOnTokenLearnsEveryStoredToken: the values a server's record holds are
// handed to OnToken when the record is read and when it is stored, so the
// redactor knows them before any upstream could echo them.
func TestOnTokenLearnsEveryStoredToken(t *testing.T) {
	e := newEnv(t)
	e.login(newBrowser(t))
	stored := e.stored()
	learned := map[string]string{}
	o := e.options(nil)
	o.OnToken = func(name, value string) { learned[name] = value }
	r, err := load(t.Context(), &o)
	if err != nil || r == nil {
		t.Fatalf("load: %v, %v", r, err)
	}
	if learned["oauth-protected-access-token"] != stored.AccessToken || learned["oauth-protected-refresh-token"] != stored.RefreshToken {
		t.Fatalf("OnToken learned %d values on load, not the stored access and refresh tokens", len(learned))
	}
	clear(learned)
	r.AccessToken = "rotated-access-token-value"
	if err := save(t.Context(), &o, r); err != nil {
		t.Fatal(err)
	}
	if learned["oauth-protected-access-token"] != "rotated-access-token-value" {
		t.Fatal("OnToken did not learn a newly stored token")
	}
	// An identity's token (a per-user server's) is learned under a name of
	// its own: a redactor keeps a few values per name, and other
	// identities' refreshes must not push this one out.
	clear(learned)
	o.Identity = "alice"
	if err := save(t.Context(), &o, r); err != nil {
		t.Fatal(err)
	}
	if learned["oauth-protected-alice-access-token"] != "rotated-access-token-value" {
		t.Fatalf("OnToken learned an identity's token as %v", learned)
	}
}

// TestOnEventLearnsOfRefreshes: a refresh is reported (for the audit log),
// without any token value.
func TestOnEventLearnsOfRefreshes(t *testing.T) {
	e := newEnv(t)
	e.login(newBrowser(t))
	var events []string
	o := e.options(nil)
	o.OnEvent = func(ev string) { events = append(events, ev) }
	h, err := NewHandler(o)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := e.connect(e.mcp.url, h)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	e.clock.advance(56 * time.Minute) // 4 minutes left: refresh before use
	if _, err := whoami(t, cs); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0] != "refreshed" {
		t.Fatalf("OnEvent got %v, want one refreshed", events)
	}
}
