package upstream

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
)

// TestOversizedAnswerOverHTTPFailsOnlyThatCall: over streamable HTTP (SSE
// and JSON responses) and legacy SSE, an answer over max_message_bytes
// fails its call with the clear error; the next call goes to the same
// upstream session, whose server state is intact. The same holds when
// netguard's own bound on a response or an event is the lower one (cmd/moat
// keeps it above max_message_bytes; this is the fallback): the error then
// names netguard's bound.
func TestOversizedAnswerOverHTTPFailsOnlyThatCall(t *testing.T) {
	const limit = 256 << 10
	for _, tt := range []struct {
		name, mode string
		typ        config.Transport
		net        netguard.Options
		bound      int
	}{
		{"streamable", "streamable", config.HTTP, netguard.Options{}, limit},
		{"streamable-json", "streamable-json", config.HTTP, netguard.Options{}, limit},
		{"sse", "sse", config.SSE, netguard.Options{}, limit},
		{"streamable under netguard's event bound", "streamable", config.HTTP, netguard.Options{MaxEventBytes: 200 << 10}, 200 << 10},
		{"streamable-json under netguard's body bound", "streamable-json", config.HTTP, netguard.Options{MaxResponseBytes: 200 << 10}, 200 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := startHTTPUpstream(t, tt.mode)
			s := remoteServer("big", u.url, tt.typ)
			s.MaxMessageBytes = limit
			h := startGroupNet(t, s, nil, tt.net)
			session := h.g.readySession()

			if got := h.mustCall(t, "count", map[string]any{}); got != "1" {
				t.Fatalf("count: %q", got)
			}
			if got := h.mustCall(t, "large", map[string]any{"bytes": tt.bound - 300}); len(got) != tt.bound-300 {
				t.Fatalf("an answer under the limit came back with %d bytes", len(got))
			}
			_, err := h.call(t, "large", map[string]any{"bytes": tt.bound})
			if !errors.Is(err, ErrMessageTooLarge) || !strings.Contains(err.Error(), `raise "max_message_bytes" for "big"`) || !strings.Contains(err.Error(), strconv.Itoa(tt.bound)+" bytes") {
				t.Fatalf("an answer over the limit: %v", err)
			}
			t.Logf("the caller sees: %v", err)
			if got := h.mustCall(t, "count", map[string]any{}); got != "2" {
				t.Fatalf("count after the oversized answer: %q", got)
			}
			if h.g.readySession() != session {
				t.Error("the upstream session was replaced")
			}
			if ev := h.events.of("upstream_unavailable"); len(ev) != 0 {
				t.Errorf("the group went unavailable: %+v", ev)
			}
		})
	}
}
