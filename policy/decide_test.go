package policy

import (
	"strings"
	"testing"
)

func boolp(b bool) *bool { return &b }

var (
	readOnly    = &Annotations{ReadOnlyHint: true}
	destructive = &Annotations{DestructiveHint: boolp(true)}
	additive    = &Annotations{DestructiveHint: boolp(false)}
)

func TestDecideTools(t *testing.T) {
	for _, tt := range []struct {
		policy, tool string
		ann          *Annotations
		wantAllow    bool
		wantRule     string
	}{
		{`{}`, "anything", nil, true, "default"},
		{`{"deny": ["write_*"]}`, "write_file", readOnly, false, "deny:write_*"},
		{`{"deny": ["write_*"]}`, "read_file", nil, true, "default"},
		{`{"allow": ["write_*"], "deny": ["write_*"]}`, "write_file", nil, false, "deny:write_*"}, // deny wins
		{`{"allow": ["read_*", "list_?"]}`, "read_file", nil, true, "allow"},
		{`{"allow": ["read_*", "list_?"]}`, "list_x", nil, true, "allow"},
		{`{"allow": ["read_*", "list_?"]}`, "list_xy", nil, false, "allow"},
		{`{"allow": ["read_*"]}`, "xread_file", nil, false, "allow"},
		{`{"allow": []}`, "read_file", nil, false, "allow"},
		{`{"allow": ["*"]}`, "", nil, true, "allow"},
		{`{"deny": ["*_file*"]}`, "read_file_now", nil, false, "deny:*_file*"},
		{`{"deny": ["a*b*c"]}`, "aXbYbZc", nil, false, "deny:a*b*c"},
		{`{"deny": ["a*b*c"]}`, "aXbYcZ", nil, true, "default"},
		{`{"destructive": "deny"}`, "rm", nil, false, "destructive"}, // no annotations: MCP says may be destructive
		{`{"destructive": "deny"}`, "rm", destructive, false, "destructive"},
		{`{"destructive": "deny"}`, "add", additive, true, "default"},
		{`{"destructive": "deny"}`, "read", readOnly, true, "default"},
		{`{"destructive": "deny"}`, "read", &Annotations{ReadOnlyHint: true, DestructiveHint: boolp(true)}, true, "default"},
		{`{"destructive": "deny", "allow": ["rm"]}`, "rm", destructive, true, "allow"},        // named exactly
		{`{"destructive": "deny", "allow": ["r*"]}`, "rm", destructive, false, "destructive"}, // a glob does not exempt
		{`{"destructive": "allow"}`, "rm", destructive, true, "default"},
		{`{"read_only_only": true}`, "add", additive, false, "read_only_only"},
		{`{"read_only_only": true}`, "read", readOnly, true, "default"},
		{`{"read_only_only": false}`, "add", nil, true, "default"},
	} {
		d := mustParse(t, tt.policy).Decide(tt.tool, tt.ann, nil)
		if d.Allow != tt.wantAllow || d.Rule != tt.wantRule {
			t.Errorf("policy %s: Decide(%q) = %v by %q (%s), want %v by %q", tt.policy, tt.tool, d.Allow, d.Rule, d.Reason, tt.wantAllow, tt.wantRule)
		}
		if !d.Allow && d.Reason == "" {
			t.Errorf("policy %s: Decide(%q) refuses without a reason", tt.policy, tt.tool)
		}
	}
	if d := (*Policy)(nil).Decide("x", nil, nil); d.Allow {
		t.Error("a nil policy allowed a call; it must fail closed")
	}
}

func TestDecideArguments(t *testing.T) {
	p := mustParse(t, `{"args": {
		"read_file": {"path": {"prefix": ["/home/me/project", "/tmp/"]}},
		"run_*": {"cmd": {"regex": "[a-z]+", "max_length": 8}}}}`)
	for _, tt := range []struct {
		tool      string
		args      map[string]any
		wantAllow bool
		wantRule  string
	}{
		{"read_file", map[string]any{"path": "/home/me/project/a.txt"}, true, "default"},
		{"read_file", map[string]any{"path": "/home/me/project"}, true, "default"},
		{"read_file", map[string]any{"path": "/home/me/project/"}, true, "default"}, // trailing slash
		{"read_file", map[string]any{"path": "/home/me/project//sub/./x"}, true, "default"},
		{"read_file", map[string]any{"path": "/tmp/x"}, true, "default"},
		{"read_file", map[string]any{"path": "/tmp"}, true, "default"},
		{"read_file", map[string]any{"path": "/etc/../etc/passwd"}, false, "args:read_file.path:prefix"},
		{"read_file", map[string]any{"path": "/home/me/project/../../etc"}, false, "args:read_file.path:prefix"},
		{"read_file", map[string]any{"path": "/home/me/project/../project-evil/x"}, false, "args:read_file.path:prefix"},
		{"read_file", map[string]any{"path": "/home/me/project-evil"}, false, "args:read_file.path:prefix"}, // prefix boundary
		{"read_file", map[string]any{"path": "/home/me/projectx/a"}, false, "args:read_file.path:prefix"},
		{"read_file", map[string]any{"path": "project/a.txt"}, false, "args:read_file.path:prefix"}, // relative
		{"read_file", map[string]any{"path": "./a.txt"}, false, "args:read_file.path:prefix"},
		{"read_file", map[string]any{"path": "~/project"}, false, "args:read_file.path:prefix"},
		{"read_file", map[string]any{"path": "/home/me/project/a\x00/../../../etc/passwd"}, false, "args:read_file.path:prefix"}, // NUL
		{"read_file", map[string]any{"path": "/home/me/project/a\x00"}, false, "args:read_file.path:prefix"},
		{"read_file", map[string]any{"path": 42}, false, "args:read_file.path:type"},
		{"read_file", map[string]any{"path": []any{"/home/me/project"}}, false, "args:read_file.path:type"},
		{"read_file", map[string]any{"other": "/etc/passwd"}, true, "default"}, // absent: the schema decides
		{"run_cmd", map[string]any{"cmd": "ls"}, true, "default"},
		{"run_cmd", map[string]any{"cmd": "ls; rm"}, false, "args:run_cmd.cmd:regex"},
		{"run_cmd", map[string]any{"cmd": "ls\n"}, false, "args:run_cmd.cmd:regex"}, // full match, no trailing newline
		{"run_cmd", map[string]any{"cmd": "abcdefghi"}, false, "args:run_cmd.cmd:max_length"},
		{"other", map[string]any{"cmd": "; rm -rf /"}, true, "default"},
	} {
		d := p.Decide(tt.tool, nil, tt.args)
		if d.Allow != tt.wantAllow || d.Rule != tt.wantRule {
			t.Errorf("Decide(%q, %q) = %v by %q (%s), want %v by %q", tt.tool, tt.args, d.Allow, d.Rule, d.Reason, tt.wantAllow, tt.wantRule)
		}
		if s, ok := tt.args["path"].(string); ok && !d.Allow && strings.Contains(d.Reason, s) {
			t.Errorf("Decide(%q) reason %q repeats the argument value; refusals never show argument values", tt.tool, d.Reason)
		}
	}
	// Listing (no arguments) is not refused by argument rules.
	if d := p.Decide("read_file", nil, nil); !d.Allow {
		t.Errorf("listing read_file = %+v, want allowed: argument rules apply to calls only", d)
	}
}

func TestDecodeArgs(t *testing.T) {
	for _, tt := range []struct {
		in      string
		wantErr string
	}{
		{`{"path": "/a"}`, ""},
		{``, ""},
		{`null`, ""},
		{`{"path": "/home/me/project/a", "path": "/etc/passwd"}`, "duplicate key"},
		{`[1]`, "JSON object"},
		{`"x"`, "JSON object"},
		{`{"path": "/home/me/project/a", "Path": "/etc/passwd"}`, "differ only in case"},
		{strings.Repeat(`{"a":`, 65) + `1` + strings.Repeat(`}`, 65), "nested more than 64"},
		{`{"s": "\ud800"}`, "surrogate"},
		{"{\"path\": \"/a\xff\"}", "UTF-8"},
	} {
		_, err := DecodeArgs([]byte(tt.in))
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("DecodeArgs(%.40q) = %v, want error containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestMatchGlob(t *testing.T) {
	for _, tt := range []struct {
		pat, name string
		want      bool
	}{
		{"*", "", true}, {"*", "x", true}, {"?", "", false}, {"?", "é", true},
		{"a*", "a", true}, {"*a", "ba", true}, {"*a", "ab", false},
		{"a**b", "ab", true}, {"a*b", "a/b", true}, {"a.b", "aXb", false},
		{strings.Repeat("*a", 30) + "b", strings.Repeat("a", 200), false},
	} {
		if got := matchGlob(tt.pat, tt.name); got != tt.want {
			t.Errorf("matchGlob(%q, %q) = %v, want %v", tt.pat, tt.name, got, tt.want)
		}
	}
}

func TestExplain(t *testing.T) {
	p := mustParse(t, `{"deny": ["write_*"], "rate": "5/s", "args": {"read_file": {"path": {"prefix": ["/p"]}}}}`)
	got := Explain(p, "read_file", readOnly)
	for _, want := range []string{"read_file: allowed", `argument "path": under /p`, "group limits: rate 5/s (burst 5)", "pin strict"} {
		if !strings.Contains(got, want) {
			t.Errorf("Explain(read_file) = %q, want it to contain %q", got, want)
		}
	}
	if got := Explain(p, "write_file", nil); !strings.Contains(got, "DENIED (rule deny:write_*)") {
		t.Errorf("Explain(write_file) = %q, want DENIED by deny:write_*", got)
	}
}
