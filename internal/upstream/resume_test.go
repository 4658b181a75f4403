package upstream

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/moatmcp/moat/internal/config"
)

// staticOAuth hands out one access token and can authorize nothing more.
type staticOAuth struct{}

func (staticOAuth) TokenSource(context.Context) (oauth2.TokenSource, error) {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "moat-test-token"}), nil
}

func (staticOAuth) Authorize(context.Context, *http.Request, *http.Response) error {
	return errors.New("staticOAuth cannot authorize")
}

// TestStreamResumesAfterServerClosesIt (SEP-1699): a streamable HTTP
// upstream ends the SSE stream of a call mid-call with "retry: 300"; Moat
// waits that long, reconnects with GET and Last-Event-ID, and the call
// gets its answer from the resumed stream. The reconnection goes through
// the same guarded client (its configured header) and OAuth handler (its
// token) as every other request.
func TestStreamResumesAfterServerClosesIt(t *testing.T) {
	u := startHTTPUpstream(t, "streamable")
	h := startGroup(t, remoteServer("resumable", u.url, config.HTTP), staticOAuth{})
	session := h.g.readySession()

	if got := h.mustCall(t, "resume", map[string]any{}); got != "answered on the resumed stream" {
		t.Fatalf("resume answered %q", got)
	}
	closed := u.closedAt.Load()
	if closed == nil {
		t.Fatal("the tool never closed its stream")
	}
	var resumed *seen
	for _, r := range u.seen() {
		if r.header != "guarded" || r.auth != "Bearer moat-test-token" {
			t.Errorf("a %s request without the configured header or the OAuth token: %+v", r.method, r)
		}
		if r.method == http.MethodGet && r.lastEventID != "" && resumed == nil {
			resumed = &r
		}
	}
	if resumed == nil {
		t.Fatalf("no GET with Last-Event-ID: %+v", u.seen())
	}
	if wait := resumed.at.Sub(*closed); wait < 250*time.Millisecond || wait > 5*time.Second {
		t.Errorf("reconnected %v after the stream closed; the server asked for 300ms", wait)
	} else {
		t.Logf("reconnected %v after the stream closed (retry: 300), Last-Event-ID %q", wait, resumed.lastEventID)
	}
	if got := h.mustCall(t, "echo", map[string]any{"message": "same session"}); got != "same session" || h.g.readySession() != session {
		t.Fatalf("after the resumed call: %q, same session %v", got, h.g.readySession() == session)
	}
}
