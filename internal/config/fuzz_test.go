package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that what it accepts is usable
// (described, typed, with positive timeouts and no ${...} left), that every
// problem stays on one line, and that the Go checks never accept a file the
// published schema rejects.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join(testdata, "*", "*.json"))
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		`{"mcpServers": {"s": {"description": "d", "command": "safe", "command": "evil"}}}`,
		`{"mcpServers": {"s": {"description": "d", "command": "x", "Command": "y"}}}`,
		`{"mcpServers": {"s": {"Description": "d", "command": "x"}}}`,
		"{\"mcpServers\": {\"s\xff\": {}}}",
		"{\"mcpServers\": {\"a\\nb\": {\"description\": \"d\", \"command\": \"x\"}}}",
		`{"mcpServers": {"s": {"x": ` + strings.Repeat("[", 500) + `}}}`,
		`{"mcpServers": {"s": {"description": "d", "command": "x", "timeout": {"tools": 1e400, "resources": 99999999999999999999}}}}`,
		`{"mcpServers": {"s": {"description": "d", "command": "x", "timeout": {"tools": "9223372036854775807ms"}}}}`,
		`{"mcpServers": {"s": {"description": "d", "url": "https://${H}/${secret:k}", "headers": {"A": "${B}${"}}}}`,
		`{"mcpServers": {"s": {"description": "\u00a0", "command": "\u3000"}}}`,
		`{"mcpServers": {"s": {"description": "d", "command": "x", "timeout": {"tools": "\u000b5s"}}}}`,
		`{"defaults": {"sandbox": {"memory": "1gib", "fs": {"read": ["~/${A}"]}, "net": {"connect": [1, 65535]}}, "policy": {"a": ["${B}", 1e9]}}, "mcpServers": {}}`,
		`{"mcpServers": {"s": {"description": "d", "command": "x", "cwd": "~", "inherit_env": ["A_*"], "sandbox": {"max_files": 16.0, "max_procs": 1, "cpu": "0010m"}}}}`,
		`{"mcpServers": {"s": {"description": "d", "url": "http://[::ffff:127.0.0.1]/", "tls": {"cert_file": "", "key_file": "", "pins": ["sha256/mGobcTX0mGFQql+gAo/uqmbNrz7WoAo1XdhuBC9/tJQ="]}}}}`,
		`{"mcpServers": {}, "audit": {"path": "~", "rotate": {"max_size": "9223372036854775807B", "keep": 0}, "checkpoint_every": 1}, "secrets": {"backend": "file"}}`,
	} {
		f.Add([]byte(s))
	}
	opts := &LoadOptions{
		Getenv: func(string) (string, bool) { return "v", true },
		Secret: func(string) (string, error) { return "sv", nil },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("/f/moat.json", data, opts)
		if err != nil {
			ce, ok := err.(*Error)
			if !ok {
				t.Fatalf("Parse error is %T, not *Error", err)
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(ce.Problems) {
				t.Fatalf("%d problems printed on %d lines:\n%s", len(ce.Problems), n, err)
			}
		} else {
			for name, s := range cfg.Servers {
				if strings.TrimSpace(s.Description) == "" {
					t.Errorf("server %q accepted with a blank description", name)
				}
				if s.Type != Stdio && s.Type != HTTP && s.Type != SSE {
					t.Errorf("server %q accepted with type %q", name, s.Type)
				}
				if s.Timeout.Tools <= 0 || s.Timeout.Resources <= 0 || s.Timeout.Prompts <= 0 {
					t.Errorf("server %q accepted with timeouts %+v", name, s.Timeout)
				}
				all := []string{s.Command, s.URL, s.OAuthClientID}
				all = append(all, s.Args...)
				for _, v := range s.Env {
					all = append(all, v)
				}
				for _, v := range s.Headers {
					all = append(all, v)
				}
				for _, v := range all {
					if strings.Contains(v, "${") {
						t.Errorf("server %q keeps a literal ${...}: %q", name, v)
					}
				}
				// Every path the loader accepts is absolute (HOME is "v"
				// here, so a ~ path must have failed).
				paths := []string{s.Cwd, s.TLS.CAFile, s.TLS.CertFile, s.TLS.KeyFile}
				paths = append(append(paths, s.Sandbox.FSRead...), s.Sandbox.FSWrite...)
				for _, p := range paths {
					if p != "" && (!filepath.IsAbs(p) || strings.Contains(p, "${")) {
						t.Errorf("server %q accepted with path %q", name, p)
					}
				}
				if s.Type == Stdio && s.Sandbox.Mode != SandboxBestEffort && s.Sandbox.Mode != SandboxStrict {
					t.Errorf("server %q accepted with sandbox mode %q", name, s.Sandbox.Mode)
				}
				if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
					t.Errorf("server %q accepted with only one of cert_file and key_file", name)
				}
				if s.Policy != nil && !json.Valid(s.Policy) {
					t.Errorf("server %q Policy is not valid JSON: %s", name, s.Policy)
				}
			}
			if cfg.Defaults.Policy != nil && !json.Valid(cfg.Defaults.Policy) {
				t.Errorf("Defaults.Policy is not valid JSON: %s", cfg.Defaults.Policy)
			}
			if cfg.Audit.Path != "" && !filepath.IsAbs(cfg.Audit.Path) {
				t.Errorf("accepted audit.path %q", cfg.Audit.Path)
			}
		}
		// The Go checks alone must never be more lenient than the schema.
		_, ps, root := check("/f/moat.json", data, opts)
		if len(ps.list) == 0 && root != nil {
			sp := &problems{data: data}
			schemaProblems(root, sp)
			if len(sp.list) > 0 {
				t.Errorf("the Go checks accept what config-schema.json rejects: %v\ninput: %q", sp.list, data)
			}
		}
	})
}
