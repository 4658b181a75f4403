package config

import (
	"strings"
	"testing"

	"github.com/moatmcp/moat/policy"
)

// TestDefaultMaxResultBytesMatchesPolicy: the loader sizes the transport
// from the policy package's default; the two constants must not drift.
func TestDefaultMaxResultBytesMatchesPolicy(t *testing.T) {
	if DefaultMaxResultBytes != policy.DefaultMaxResultBytes {
		t.Fatalf("config.DefaultMaxResultBytes = %d, policy.DefaultMaxResultBytes = %d", DefaultMaxResultBytes, policy.DefaultMaxResultBytes)
	}
}

// TestMaxMessageBytes: the key's value wins; without it the limit is twice
// the largest result the policy allows (server over defaults, tools entries
// where no group value is set), at least 32 MiB and at most 1 GiB.
func TestMaxMessageBytes(t *testing.T) {
	const MiB = 1 << 20
	for _, tt := range []struct {
		name, defaults, server string
		want                   uint64
	}{
		{"nothing set", ``, `"command": "x"`, 32 * MiB},
		{"remote server", ``, `"url": "https://h/mcp"`, 32 * MiB},
		{"explicit", ``, `"command": "x", "max_message_bytes": "64MiB"`, 64 * MiB},
		{"explicit bytes", ``, `"url": "https://h/", "max_message_bytes": 20971520, "policy": {"max_result_bytes": "20MiB"}`, 20 * MiB},
		{"explicit above twice", ``, `"command": "x", "max_message_bytes": "1GiB", "policy": {"max_result_bytes": "40MiB"}`, 1 << 30},
		{"group max_result_bytes", ``, `"command": "x", "policy": {"max_result_bytes": "40MiB"}`, 80 * MiB},
		{"small max_result_bytes keeps the floor", ``, `"command": "x", "policy": {"max_result_bytes": "1MiB"}`, 32 * MiB},
		{"defaults.policy", `"policy": {"max_result_bytes": "20MiB"}`, `"command": "x"`, 40 * MiB},
		{"the server's value replaces the default's", `"policy": {"max_result_bytes": "200MiB"}`, `"command": "x", "policy": {"max_result_bytes": "24MiB"}`, 48 * MiB},
		{"a tools entry where no group value is set", ``, `"command": "x", "policy": {"tools": {"big": {"max_result_bytes": "48MiB"}, "small": {"max_result_bytes": 10}}}`, 96 * MiB},
		{"a tools entry only lowers a group value", ``, `"command": "x", "policy": {"max_result_bytes": "8MiB", "tools": {"big": {"max_result_bytes": "48MiB"}}}`, 32 * MiB},
		{"the server's tools entry replaces the default's", `"policy": {"tools": {"t": {"max_result_bytes": "100MiB"}}}`, `"command": "x", "policy": {"tools": {"t": {"rate": "1/s"}}}`, 32 * MiB},
		{"a default tools entry", `"policy": {"tools": {"t": {"max_result_bytes": "30MiB"}}}`, `"command": "x"`, 60 * MiB},
		{"clamped at the ceiling", ``, `"command": "x", "policy": {"max_result_bytes": "600MiB"}`, 1 << 30},
		{"${VAR} in the policy", ``, `"command": "x", "policy": {"max_result_bytes": "${R}"}`, 100 * MiB},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := `{"mcpServers": {"s": {"description": "d", ` + tt.server + `}}`
			if tt.defaults != "" {
				src += `, "defaults": {` + tt.defaults + `}`
			}
			src += `}`
			cfg := mustParse(t, src, map[string]string{"R": "50MiB"})
			if got := cfg.Servers["s"].MaxMessageBytes; got != tt.want {
				t.Errorf("MaxMessageBytes = %s, want %s", formatSize(got), formatSize(tt.want))
			}
		})
	}
}

// TestMaxMessageBytesRefusesWhatCouldNeverPass: a limit smaller than the
// largest result the policy allows is an error naming both keys and the
// fix; so is a limit or a max_result_bytes over the ceiling.
func TestMaxMessageBytesRefusesWhatCouldNeverPass(t *testing.T) {
	for _, tt := range []struct {
		name, src, path string
		want            []string
	}{
		{"below the default max_result_bytes",
			`{"mcpServers": {"s": {"description": "d", "command": "x", "max_message_bytes": "8MiB"}}}`,
			"/mcpServers/s/max_message_bytes",
			[]string{"max_message_bytes (8MiB) is smaller than", "max_result_bytes (16MiB, the default)", "raise max_message_bytes to at least 16MiB", "lower max_result_bytes", "to at most 8MiB"}},
		{"below the server's max_result_bytes",
			`{"mcpServers": {"s": {"description": "d", "url": "https://h/", "max_message_bytes": "32MiB", "policy": {"max_result_bytes": "40MiB"}}}}`,
			"/mcpServers/s/max_message_bytes",
			[]string{"/mcpServers/s/policy/max_result_bytes (40MiB)", "at least 40MiB"}},
		{"below a tools entry of defaults.policy",
			`{"defaults": {"policy": {"tools": {"dump": {"max_result_bytes": "64MiB"}}}}, "mcpServers": {"s": {"description": "d", "command": "x", "max_message_bytes": "32MiB"}}}`,
			"/mcpServers/s/max_message_bytes",
			[]string{"/defaults/policy/tools/dump/max_result_bytes (64MiB)"}},
		{"over the ceiling",
			`{"mcpServers": {"s": {"description": "d", "command": "x", "max_message_bytes": "2GiB"}}}`,
			"/mcpServers/s/max_message_bytes",
			[]string{"max_message_bytes is 2GiB; Moat reads at most 1GiB", `give at most "1GiB"`}},
		{"max_result_bytes over the ceiling",
			`{"mcpServers": {"s": {"description": "d", "command": "x", "policy": {"max_result_bytes": "2GiB"}}}}`,
			"/mcpServers/s/policy/max_result_bytes",
			[]string{"(2GiB) is larger than the largest message Moat reads from an upstream (1GiB)", "lower it to at most 1GiB"}},
		{"zero",
			`{"mcpServers": {"s": {"description": "d", "command": "x", "max_message_bytes": 0}}}`,
			"/mcpServers/s/max_message_bytes",
			[]string{"max_message_bytes is 0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := parseErr(t, tt.src, nil)
			var found bool
			for _, p := range err.Problems {
				if p.Path != tt.path {
					continue
				}
				found = true
				for _, w := range tt.want {
					if !strings.Contains(p.String(), w) {
						t.Errorf("problem %q lacks %q", p.String(), w)
					}
				}
			}
			if !found {
				t.Errorf("no problem at %s:\n%v", tt.path, err)
			}
		})
	}
}

// TestMaxMessageBytesChangeRestarts: the limit is fixed in the transport
// when it connects, so Equal sees a change, including one that follows a
// policy edit.
func TestMaxMessageBytesChangeRestarts(t *testing.T) {
	parse := func(server string) *Server {
		return mustParse(t, `{"mcpServers": {"s": {"description": "d", "command": "x"`+server+`}}}`, nil).Servers["s"]
	}
	base := parse(``)
	if !base.Equal(parse(`, "policy": {"max_result_bytes": "1MiB"}`)) {
		t.Error("a policy edit that leaves the limit alone restarts the server")
	}
	if base.Equal(parse(`, "policy": {"max_result_bytes": "40MiB"}`)) {
		t.Error("Equal ignores a limit raised by max_result_bytes")
	}
	if base.Equal(parse(`, "max_message_bytes": "64MiB"`)) {
		t.Error("Equal ignores max_message_bytes")
	}
}
