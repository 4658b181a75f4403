package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFullConfig(t *testing.T) {
	secrets := map[string]string{"files-api-key": "k-123", "kb-token": "t-456"}
	cfg, err := Load(copyFile(t, filepath.Join(testdata, "valid", "full.json")), &LoadOptions{
		Getenv: env(map[string]string{"HOME": "/home/u", "USER": "u"}),
		Secret: func(name string) (string, error) {
			if v, ok := secrets[name]; ok {
				return v, nil
			}
			return "", errors.New("not found")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*Server{
		"files": {
			Name: "files", Description: "Read and search files in my project", Type: Stdio, Command: "npx",
			Args:    []string{"-y", "@modelcontextprotocol/server-filesystem", "/home/u/project"},
			Env:     map[string]string{"API_KEY": "k-123", "PLAIN": "$HOME stays"},
			Enabled: true, Features: Features{Tools: true, Resources: true, Prompts: false},
			Timeout:      Timeouts{2 * time.Minute, 15 * time.Second, 500 * time.Millisecond},
			SecretValues: []string{"k-123"},
		},
		"remote": {
			Name: "remote", Description: "Company knowledge base", Type: SSE, URL: "https://mcp.example.com/sse",
			Headers:       map[string]string{"X-Team": "infra", "Authorization": "Bearer t-456"},
			OAuthClientID: "moat-u", OAuthScopes: []string{"read"},
			Enabled: true, Features: Features{true, true, true},
			Timeout:      Timeouts{30 * time.Second, 10 * time.Second, time.Hour},
			SecretValues: []string{"t-456"},
		},
		"off": {
			Name: "off", Description: "disabled for now", Type: HTTP, TypeInferred: true, URL: "http://127.0.0.1:9/mcp",
			Enabled: false, Features: Features{true, true, true},
			Timeout: Timeouts{30 * time.Second, 10 * time.Second, 10 * time.Second},
		},
	}
	if diff := cmp.Diff(want, cfg.Servers); diff != "" {
		t.Errorf("full.json (-want +got):\n%s", diff)
	}
	abs, _ := filepath.Abs(cfg.Path)
	if cfg.Path != abs || len(cfg.Hash) != 64 {
		t.Errorf("Path = %q (want absolute), Hash = %q (want hex SHA-256)", cfg.Path, cfg.Hash)
	}
}

func TestArgsNullAndEmptyServers(t *testing.T) {
	cfg, err := Load(copyFile(t, filepath.Join(testdata, "valid", "args-null.json")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Servers["echo"]; s.Args != nil || s.Type != Stdio || s.TypeInferred {
		t.Errorf("echo = %+v, want stdio with no args", s)
	}
	cfg, err = Load(copyFile(t, filepath.Join(testdata, "valid", "minimal.json")), nil)
	if err != nil || len(cfg.Servers) != 0 {
		t.Errorf("minimal config: %v, %d servers", err, len(cfg.Servers))
	}
}

func TestExpansionIsSinglePass(t *testing.T) {
	src := srv(`"description": "d", "command": "x", "args": ["${A}", "$A", "${B}${A}", "pre-${A}-post"]`)
	cfg, err := Parse("/cfg/moat.json", []byte(src), &LoadOptions{
		Getenv: env(map[string]string{"A": "${B}", "B": "${secret:x}"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"${B}", "$A", "${secret:x}${B}", "pre-${B}-post"}
	if diff := cmp.Diff(want, cfg.Servers["s"].Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
}

func TestDescriptionNotExpanded(t *testing.T) {
	src := srv(`"description": "uses ${NOT_SET}", "command": "x", "oauth_scopes_absent": null`)
	// oauth_scopes_absent makes it invalid; what matters is that ${NOT_SET}
	// in the description is not reported as an undefined variable.
	err := parseErr(t, src, &LoadOptions{Getenv: env(nil)})
	if strings.Contains(err.Error(), "NOT_SET") {
		t.Errorf("description was expanded:\n%v", err)
	}
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   any
		want time.Duration
	}{
		{nil, 0}, {"", 0}, {"   ", 0},
		{"30", 30 * time.Second}, {" 30s ", 30 * time.Second}, {"500ms", 500 * time.Millisecond},
		{"1min", time.Minute}, {"1MIN", time.Minute}, {"2m", 2 * time.Minute}, {"1h", time.Hour}, {"1H", time.Hour},
		{"007s", 7 * time.Second}, {"\t5\n", 5 * time.Second},
		{jsonNumber("30"), 30 * time.Second}, {30.0, 30 * time.Second}, {7, 7 * time.Second},
		{"2562047h", 2562047 * time.Hour}, {jsonNumber("9223372036"), 9223372036 * time.Second},
	} {
		got, err := ParseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%#v) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []any{
		"0", "0s", "0ms", jsonNumber("0"), 0, -1, jsonNumber("-5"), 1.5, jsonNumber("1.5"), jsonNumber("1e3"),
		"1.5s", "1m30s", "30 s", "5mins", "30x", "-5s", "+5s", "s", "ms", "１s",
		"2562048h", "9223372037", jsonNumber("9223372037"), "99999999999999999999999s", true, []any{},
	} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%#v) = %v, want an error", in, d)
		} else if !strings.Contains(err.Error(), durationForms) {
			t.Errorf("ParseDuration(%#v) error %q does not list the valid forms", in, err)
		}
	}
}

func TestResolvePath(t *testing.T) {
	wd, _ := os.Getwd()
	for _, tt := range []struct {
		arg        string
		vars       map[string]string
		want, from string
	}{
		{"a.json", map[string]string{"MOAT_CONFIG": "/m.json", "DYNAMIC_MCP_CONFIG": "/d.json"}, filepath.Join(wd, "a.json"), "command line argument"},
		{"", map[string]string{"MOAT_CONFIG": "/m.json", "DYNAMIC_MCP_CONFIG": "/d.json"}, "/m.json", "MOAT_CONFIG environment variable"},
		{"", map[string]string{"MOAT_CONFIG": "", "DYNAMIC_MCP_CONFIG": "/d.json"}, "/d.json", "DYNAMIC_MCP_CONFIG environment variable"},
		{"", map[string]string{"DYNAMIC_MCP_CONFIG": "/d.json"}, "/d.json", "DYNAMIC_MCP_CONFIG environment variable"},
	} {
		got, from, err := ResolvePath(tt.arg, env(tt.vars))
		if err != nil || got != tt.want || from != tt.from {
			t.Errorf("ResolvePath(%q, %v) = %q, %q, %v; want %q, %q", tt.arg, tt.vars, got, from, err, tt.want, tt.from)
		}
	}
	for _, vars := range []map[string]string{nil, {"MOAT_CONFIG": "", "DYNAMIC_MCP_CONFIG": ""}} {
		if _, _, err := ResolvePath("", env(vars)); !errors.Is(err, ErrNoConfig) {
			t.Errorf("ResolvePath with %v: err = %v, want ErrNoConfig", vars, err)
		}
	}
}

func TestServerEqual(t *testing.T) {
	load := func(body string) *Server {
		t.Helper()
		cfg, err := Parse("/cfg/moat.json", []byte(srv(body)), &LoadOptions{Getenv: env(map[string]string{"V": "1", "W": "2"})})
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Servers["s"]
	}
	base := `"description": "d", "command": "x", "args": ["a"], "env": {"K": "${V}"}`
	a := load(base)
	if !a.Equal(load(base)) {
		t.Error("a server is not Equal to itself loaded twice")
	}
	if !a.Equal(load(`"description": "other words", "command": "x", "args": ["a"], "env": {"K": "${V}"}`)) {
		t.Error("a description change alone must not need a restart")
	}
	for _, body := range []string{
		`"description": "d", "command": "y", "args": ["a"], "env": {"K": "${V}"}`,
		`"description": "d", "command": "x", "args": ["a", "b"], "env": {"K": "${V}"}`,
		`"description": "d", "command": "x", "args": ["a"], "env": {"K": "${W}"}`,
		`"description": "d", "command": "x", "args": ["a"], "env": {"K": "${V}"}, "enabled": false`,
		`"description": "d", "command": "x", "args": ["a"], "env": {"K": "${V}"}, "features": {"prompts": false}`,
		`"description": "d", "command": "x", "args": ["a"], "env": {"K": "${V}"}, "timeout": {"tools": 31}`,
		`"description": "d", "url": "https://h/"`,
	} {
		if a.Equal(load(body)) {
			t.Errorf("Equal ignores the change to %s", body)
		}
	}
	h1, h2 := load(`"description": "d", "url": "https://h/"`), load(`"description": "d", "url": "https://h/", "type": "http"`)
	if h1.Equal(h2) {
		t.Error("Equal ignores the change from an inferred to an explicit http type (which turns off the SSE fallback)")
	}
	if !slices.Equal(h1.OAuthScopes, h2.OAuthScopes) || (*Server)(nil).Equal(nil) != true || a.Equal(nil) {
		t.Error("nil handling in Equal is wrong")
	}
}

func jsonNumber(s string) any { return json.Number(s) }
