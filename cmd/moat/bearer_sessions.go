package main

import (
	"sync"
	"time"
)

// bearerSessions are a gateway's HTTP sessions with the credential that
// opened each, and what to release when each ends (its place in the
// session counts). A session ends when its credential does: a moat
// token revoked (gone from the store), or an OIDC token expired with no
// newer one of the same person presented on the session since (a client
// that refreshes its token keeps its session). Authentication is per
// request; without this, an event stream opened before would go on
// receiving notifications and requests.
type bearerSessions struct {
	mu sync.Mutex
	by map[string]*bearerSession // by session ID
}

type bearerSession struct {
	token     string    // the moat token's SHA-256, or ""
	principal string    // guard.Identity.Principal
	expiry    time.Time // of the latest OIDC token presented; zero for none
	reason    string    // why it is being ended, once it is
	release   func()    // called once it has ended
}

func newBearerSessions() *bearerSessions {
	return &bearerSessions{by: map[string]*bearerSession{}}
}

// add records session id, opened by who (nil: by no credential to
// watch), with release to call when it ends.
func (b *bearerSessions) add(id string, who *bearerOf, release func()) {
	s := &bearerSession{release: release}
	if who != nil {
		s.token, s.principal = who.sum, who.id.Principal
		if who.oidc != nil {
			s.expiry = who.oidc.Expiry
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.by[id] = s
}

// renew notes an OIDC token of who presented on session id: a later
// expiry keeps the session, if who is the person it belongs to.
func (b *bearerSessions) renew(id string, who *bearerOf) {
	if who.oidc == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.by[id]; s != nil && s.principal == who.id.Principal && who.oidc.Expiry.After(s.expiry) {
		s.expiry = who.oidc.Expiry
	}
}

// remove forgets session id, which has ended, calls its release, and
// returns why it was ended, if it was.
func (b *bearerSessions) remove(id string) (reason string) {
	b.mu.Lock()
	s := b.by[id]
	delete(b.by, id)
	b.mu.Unlock()
	if s == nil {
		return ""
	}
	if s.release != nil {
		s.release()
	}
	return s.reason
}

// over returns the sessions whose credential is no longer good at now:
// a moat token whose hash is not among stored (nil when the stored list
// is unknown: then none is taken for revoked; by hash, so that a token
// revoked and made again under its name within a second is still gone), an OIDC token past its expiry and
// skew. Each is returned once.
func (b *bearerSessions) over(now time.Time, stored map[string]bool, skew time.Duration) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for id, s := range b.by {
		switch {
		case s.reason != "":
			continue
		case s.token != "" && stored != nil && !stored[s.token]:
			s.reason = "its token was revoked"
		case !s.expiry.IsZero() && now.After(s.expiry.Add(skew)):
			s.reason = "its OIDC token expired, and no newer one was presented"
		default:
			continue
		}
		ids = append(ids, id)
	}
	return ids
}

// kinds reports whether a session of a moat token is open, and of an
// OIDC token.
func (b *bearerSessions) kinds() (tokens, oidc bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.by {
		tokens = tokens || s.token != ""
		oidc = oidc || !s.expiry.IsZero()
	}
	return tokens, oidc
}
