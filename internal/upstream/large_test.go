package upstream

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/testutil"
)

// stdioTestServer is the Go test server as a stdio upstream.
func stdioTestServer(t *testing.T, name string) *config.Server {
	s := server(name, config.Stdio)
	s.Command = testutil.BuildTestServer(t)
	s.Args = []string{"-name", name}
	s.Sandbox.Mode = config.SandboxBestEffort
	return s
}

// TestOversizedAnswerFailsOnlyThatCall: over stdio, through the real
// sandbox launcher and the real test server, an answer just over
// max_message_bytes fails its call with an error that names the limit and
// the key to raise; the next call goes to the same server process, whose
// state (a tool added before) is still there, and the group never leaves
// Ready.
func TestOversizedAnswerFailsOnlyThatCall(t *testing.T) {
	const limit = 1 << 20
	s := stdioTestServer(t, "big")
	s.MaxMessageBytes = limit
	h := startGroup(t, s, nil)
	session := h.g.readySession()

	if got := h.mustCall(t, "add_tool", map[string]any{"name": "kept"}); got != "added kept" {
		t.Fatalf("add_tool: %q", got)
	}
	// The JSON-RPC envelope is under 200 bytes: this answer fits.
	if got := h.mustCall(t, "large", map[string]any{"bytes": limit - 200}); len(got) != limit-200 {
		t.Fatalf("an answer under the limit came back with %d bytes", len(got))
	}
	// The text alone fills the limit, so the line is just over it.
	_, err := h.call(t, "large", map[string]any{"bytes": limit})
	if !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("an answer over the limit: err = %v, want ErrMessageTooLarge", err)
	}
	for _, want := range []string{`"big"`, strconv.Itoa(limit) + " bytes", `raise "max_message_bytes" for "big"`, "server keeps running"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error %q does not say %q", err, want)
		}
	}
	t.Logf("the caller sees: %v", err)

	if got := h.mustCall(t, "echo", map[string]any{"message": "still here"}); got != "still here" {
		t.Fatalf("echo after the oversized answer: %q", got)
	}
	if got := h.mustCall(t, "kept", map[string]any{}); got != "kept" {
		t.Fatalf("the tool added before the oversized answer: %q (the server's state was lost)", got)
	}
	if h.g.readySession() != session {
		t.Error("the upstream session was replaced")
	}
	if n := len(h.events.of("child_start")); n != 1 {
		t.Errorf("%d child_start events: the server was restarted", n)
	}
	if ev := h.events.of("upstream_unavailable"); len(ev) != 0 {
		t.Errorf("the group went unavailable: %+v", ev)
	}
	drops := h.events.of("message_too_large")
	if len(drops) != 1 || drops[0].Detail["kind"] != "response" || drops[0].Detail["limit"] != strconv.Itoa(limit) {
		t.Errorf("message_too_large events: %+v", drops)
	}
}

// TestFortyMiBAnswerPassesWhenTheLimitIsRaised: with the defaults a 40 MiB
// answer fails its call (the limit is 32 MiB); a policy allowing 40 MiB
// results raises the derived limit to 80 MiB, and the same answer passes
// whole. (The test server needs more address space than the sandbox's
// default to build a 40 MiB answer, and under the race detector decoding
// it takes longer than the default tools timeout.)
func TestFortyMiBAnswerPassesWhenTheLimitIsRaised(t *testing.T) {
	const size = 40 << 20
	bin := testutil.BuildTestServer(t)
	load := func(policy string) *config.Server {
		cfg, err := config.Parse("/cfg/moat.json", []byte(`{"mcpServers": {"big": {"description": "d", "command": "`+bin+`", "policy": `+policy+`,
			"sandbox": {"memory": "4GiB"}, "timeout": {"tools": "5m"}}}}`), &config.LoadOptions{
			Getenv: func(string) (string, bool) { return "", false },
		})
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Servers["big"]
	}

	h := startGroup(t, load(`{}`), nil)
	if _, err := h.call(t, "large", map[string]any{"bytes": size}); !errors.Is(err, ErrMessageTooLarge) || !strings.Contains(err.Error(), "33554432 bytes") {
		t.Fatalf("a 40 MiB answer under the default limit: %v", err)
	}
	if got := h.mustCall(t, "echo", map[string]any{"message": "ok"}); got != "ok" {
		t.Fatalf("echo afterwards: %q", got)
	}
	h.m.Close()

	s := load(`{"max_result_bytes": "40MiB"}`)
	if s.MaxMessageBytes != 80<<20 {
		t.Fatalf("max_result_bytes 40MiB gave max_message_bytes %d, want 80 MiB", s.MaxMessageBytes)
	}
	h = startGroup(t, s, nil)
	got := h.mustCall(t, "large", map[string]any{"bytes": size})
	if len(got) != size || strings.Trim(got, "x") != "" {
		t.Fatalf("a 40 MiB answer under an 80 MiB limit came back with %d bytes", len(got))
	}
}
