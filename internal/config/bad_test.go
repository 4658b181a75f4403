package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// srv wraps one server body into a config named "s".
func srv(body string) string {
	return `{"mcpServers": {"s": {` + body + `}}}`
}

const desc = `"description": "d", `

// schemaSees says whether the JSON Schema alone can reject the case; the
// others need what only Go can check (duplicates, expansion, URL parsing,
// overflow, syntax). The test asserts it both ways, so the schema and the
// loader cannot drift apart unnoticed.
type schemaSees bool

func TestBadConfigs(t *testing.T) {
	for _, tt := range []struct {
		name     string
		src      string
		path     string // of a problem
		frag     string // in that problem's Msg+Hint
		schema   schemaSees
		getenv   map[string]string
		secret   func(string) (string, error)
		problems int // when > 0, the exact number expected
	}{
		// structure
		{"root array", `[]`, "", "top level is an array", true, nil, nil, 0},
		{"root string", `"x"`, "", "not an object", true, nil, nil, 0},
		{"no mcpServers", `{}`, "", `missing "mcpServers"`, true, nil, nil, 0},
		{"mcpServers array", `{"mcpServers": []}`, "/mcpServers", "not an object", true, nil, nil, 0},
		{"unknown top key", `{"mcpServers": {}, "mcpServer": {}}`, "/mcpServer", `did you mean "mcpServers"?`, true, nil, nil, 0},
		{"case variant top key", `{"MCPServers": {}, "mcpServers": {}}`, "/MCPServers", "keys are case-sensitive", true, nil, nil, 0},
		{"$schema not string", `{"$schema": 1, "mcpServers": {}}`, "/$schema", "not a string", true, nil, nil, 0},
		{"server not object", `{"mcpServers": {"s": "npx"}}`, "/mcpServers/s", "not an object", true, nil, nil, 0},
		// syntax
		{"trailing garbage", `{"mcpServers": {}} x`, "", "after the end of the JSON document", false, nil, nil, 1},
		{"two documents", `{"mcpServers": {}}{"mcpServers": {}}`, "", "after the end", false, nil, nil, 1},
		{"trailing comma", `{"mcpServers": {},}`, "", "no trailing comma", false, nil, nil, 1},
		{"comment", "{// hi\n\"mcpServers\": {}}", "", "no comments", false, nil, nil, 1},
		{"single quotes", `{'mcpServers': {}}`, "", "double quotes", false, nil, nil, 1},
		{"empty file", ``, "", "empty", false, nil, nil, 1},
		{"truncated", `{"mcpServers": {`, "", "end of file", false, nil, nil, 1},
		{"invalid utf-8", "{\"mcpServers\": {\"s\xff\": {}}}", "", "not valid UTF-8", false, nil, nil, 1},
		{"bom", "\uFEFF{\"mcpServers\": {}}", "", "byte order mark", false, nil, nil, 1},
		{"raw newline in string", "{\"mcpServers\": {\"s\": {\"description\": \"a\nb\"}}}", "", "control character", false, nil, nil, 1},
		{"too deep", `{"mcpServers": {"s": {"x": ` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}}}`, "", "nested deeper", false, nil, nil, 1},
		{"leading zero", srv(desc + `"command": "x", "timeout": {"tools": 01}`), "", "leading zero", false, nil, nil, 1},
		// duplicate keys, at any depth
		{"duplicate top key", `{"mcpServers": {}, "mcpServers": {}}`, "/mcpServers", "duplicate key", false, nil, nil, 1},
		{"duplicate server", `{"mcpServers": {"s": {"description": "d", "command": "x"}, "s": {"description": "d", "command": "y"}}}`, "/mcpServers/s", `duplicate key "s" (first at line 1, col 17)`, false, nil, nil, 1},
		{"duplicate command", srv(desc + `"command": "safe", "command": "evil"`), "/mcpServers/s/command", "duplicate key", false, nil, nil, 1},
		{"duplicate env key", srv(desc + `"command": "x", "env": {"A": "1", "A": "2"}`), "/mcpServers/s/env/A", "duplicate key", false, nil, nil, 1},
		{"duplicate timeout key", srv(desc + `"command": "x", "timeout": {"tools": 1, "tools": 2}`), "/mcpServers/s/timeout/tools", "duplicate key", false, nil, nil, 1},
		// server names
		{"empty name", `{"mcpServers": {"": {"description": "d", "command": "x"}}}`, "/mcpServers/", "invalid server name", true, nil, nil, 1},
		{"dot name", `{"mcpServers": {".": {"description": "d", "command": "x"}}}`, "/mcpServers/.", "invalid server name", true, nil, nil, 1},
		{"dotdot name", `{"mcpServers": {"..": {"description": "d", "command": "x"}}}`, "/mcpServers/..", "invalid server name", true, nil, nil, 1},
		{"slash name", `{"mcpServers": {"a/b": {"description": "d", "command": "x"}}}`, "/mcpServers/a~1b", "invalid server name", true, nil, nil, 1},
		{"space name", `{"mcpServers": {"a b": {"description": "d", "command": "x"}}}`, "/mcpServers/a b", "1 to 64 letters", true, nil, nil, 1},
		{"long name", `{"mcpServers": {"` + strings.Repeat("a", 65) + `": {"description": "d", "command": "x"}}}`, "/mcpServers/" + strings.Repeat("a", 65), "invalid server name", true, nil, nil, 1},
		// server keys
		{"missing description", srv(`"command": "x"`), "/mcpServers/s", `no "description"`, true, nil, nil, 1},
		{"empty description", srv(`"description": "", "command": "x"`), "/mcpServers/s/description", "description is empty", true, nil, nil, 1},
		{"blank description", srv(`"description": "  \t ", "command": "x"`), "/mcpServers/s/description", "description is empty", true, nil, nil, 1},
		{"description number", srv(`"description": 5, "command": "x"`), "/mcpServers/s/description", "not a string", true, nil, nil, 1},
		{"near-miss description", srv(`"descripton": "d", "command": "x"`), "/mcpServers/s/descripton", `did you mean "description"?`, true, nil, nil, 2},
		{"case variant command", srv(desc + `"command": "x", "Command": "y"`), "/mcpServers/s/Command", `did you mean "command"? (keys are case-sensitive)`, true, nil, nil, 1},
		{"unknown key lists valid", srv(desc + `"command": "x", "cwd": "/"`), "/mcpServers/s/cwd", `valid keys in a stdio server: "description", "type", "enabled", "features", "timeout", "command", "args", "env"`, true, nil, nil, 1},
		{"missing command", srv(`"description": "d"`), "/mcpServers/s", `no "command"`, true, nil, nil, 1},
		{"empty command", srv(desc + `"command": " "`), "/mcpServers/s/command", "command is empty", true, nil, nil, 1},
		{"command empty after expansion", srv(desc + `"command": "${EMPTY}"`), "/mcpServers/s/command", "empty or holds a NUL", false, map[string]string{"EMPTY": ""}, nil, 1},
		{"bad type", srv(desc + `"type": "STDIO", "command": "x"`), "/mcpServers/s/type", `did you mean "stdio"?`, true, nil, nil, 1},
		{"type number", srv(desc + `"type": 1, "command": "x"`), "/mcpServers/s/type", "not a string", true, nil, nil, 1},
		{"url with stdio type", srv(desc + `"type": "stdio", "command": "x", "url": "https://h/"`), "/mcpServers/s/url", `"url" is not valid for a stdio server`, true, nil, nil, 1},
		{"command with url", srv(desc + `"url": "https://h/", "command": "x"`), "/mcpServers/s/command", `it is remote: remove "command"`, true, nil, nil, 1},
		{"env on http", srv(desc + `"type": "http", "url": "https://h/", "env": {}`), "/mcpServers/s/env", "not valid for a http server", true, nil, nil, 1},
		{"headers on stdio", srv(desc + `"command": "x", "headers": {}`), "/mcpServers/s/headers", "not valid for a stdio server", true, nil, nil, 1},
		{"sse without url", srv(desc + `"type": "sse"`), "/mcpServers/s", `no "url"`, true, nil, nil, 1},
		{"args not array", srv(desc + `"command": "x", "args": "-y"`), "/mcpServers/s/args", "not an array", true, nil, nil, 1},
		{"args item number", srv(desc + `"command": "x", "args": ["a", 1]`), "/mcpServers/s/args/1", "args[1] is a number", true, nil, nil, 1},
		{"env value number", srv(desc + `"command": "x", "env": {"A": 1}`), "/mcpServers/s/env/A", "not a string", true, nil, nil, 1},
		{"env key with =", srv(desc + `"command": "x", "env": {"A=B": "1"}`), "/mcpServers/s/env/A=B", "invalid name", true, nil, nil, 1},
		{"env key empty", srv(desc + `"command": "x", "env": {"": "1"}`), "/mcpServers/s/env/", "invalid name", true, nil, nil, 1},
		{"header name with space", srv(desc + `"url": "https://h/", "headers": {"X Y": "1"}`), "/mcpServers/s/headers/X Y", "invalid name", true, nil, nil, 1},
		{"header value newline via env", srv(desc + `"url": "https://h/", "headers": {"X": "${V}"}`), "/mcpServers/s/headers/X", "control character", false, map[string]string{"V": "a\r\nEvil: 1"}, nil, 1},
		{"oauth_scopes not array", srv(desc + `"url": "https://h/", "oauth_scopes": "read"`), "/mcpServers/s/oauth_scopes", "not an array", true, nil, nil, 1},
		{"enabled string", srv(desc + `"command": "x", "enabled": "false"`), "/mcpServers/s/enabled", "not true or false", true, nil, nil, 1},
		{"features unknown", srv(desc + `"command": "x", "features": {"tool": false}`), "/mcpServers/s/features/tool", `did you mean "tools"?`, true, nil, nil, 1},
		{"features not bool", srv(desc + `"command": "x", "features": {"tools": 0}`), "/mcpServers/s/features/tools", "not true or false", true, nil, nil, 1},
		{"timeout unknown", srv(desc + `"command": "x", "timeout": {"call": "1s"}`), "/mcpServers/s/timeout/call", "unknown key", true, nil, nil, 1},
		{"timeout not object", srv(desc + `"command": "x", "timeout": 30`), "/mcpServers/s/timeout", "not an object", true, nil, nil, 1},
		// urls (checked after expansion)
		{"relative url", srv(desc + `"url": "/mcp"`), "/mcpServers/s/url", "not an http or https URL", false, nil, nil, 1},
		{"ftp url", srv(desc + `"url": "ftp://h/mcp"`), "/mcpServers/s/url", "not an http or https URL", false, nil, nil, 1},
		{"url without host", srv(desc + `"url": "http:///mcp"`), "/mcpServers/s/url", "has no host", false, nil, nil, 1},
		{"url bad after expansion", srv(desc + `"url": "${BASE}/mcp"`), "/mcpServers/s/url", `"${BASE}/mcp" (after expansion) is not an http`, false, map[string]string{"BASE": "localhost:1"}, nil, 1},
		// timeouts
		{"timeout zero", srv(desc + `"command": "x", "timeout": {"tools": 0}`), "/mcpServers/s/timeout/tools", "greater than zero", true, nil, nil, 1},
		{"timeout zero string", srv(desc + `"command": "x", "timeout": {"tools": "0s"}`), "/mcpServers/s/timeout/tools", "greater than zero", true, nil, nil, 1},
		{"timeout negative", srv(desc + `"command": "x", "timeout": {"resources": -5}`), "/mcpServers/s/timeout/resources", "greater than zero", true, nil, nil, 1},
		{"timeout float", srv(desc + `"command": "x", "timeout": {"prompts": 1.5}`), "/mcpServers/s/timeout/prompts", "whole number", true, nil, nil, 1},
		{"timeout compound", srv(desc + `"command": "x", "timeout": {"tools": "1m30s"}`), "/mcpServers/s/timeout/tools", "1min, 2m, 1h", true, nil, nil, 1},
		{"timeout inner space", srv(desc + `"command": "x", "timeout": {"tools": "30 s"}`), "/mcpServers/s/timeout/tools", `invalid duration "30 s"`, true, nil, nil, 1},
		{"timeout mins", srv(desc + `"command": "x", "timeout": {"tools": "5mins"}`), "/mcpServers/s/timeout/tools", `invalid duration "5mins"`, true, nil, nil, 1},
		{"timeout bool", srv(desc + `"command": "x", "timeout": {"tools": true}`), "/mcpServers/s/timeout/tools", "got a boolean", true, nil, nil, 1},
		{"timeout overflow hours", srv(desc + `"command": "x", "timeout": {"tools": "9999999999h"}`), "/mcpServers/s/timeout/tools", "too large", false, nil, nil, 1},
		{"timeout overflow int", srv(desc + `"command": "x", "timeout": {"tools": 99999999999999999999999}`), "/mcpServers/s/timeout/tools", "too large", true, nil, nil, 1},
		// expansion
		{"undefined var", srv(desc + `"command": "npx", "args": ["-y", "${PROJECT_DIR}"]`), "/mcpServers/s/args/1", `${PROJECT_DIR} is not set (used in server "s" args[1]): export PROJECT_DIR before starting moat, or store it with ` + "`moat secret set project_dir`" + ` and write ${secret:project_dir}`, false, nil, nil, 1},
		{"undefined var in command", srv(desc + `"command": "${TOOL}"`), "/mcpServers/s/command", `${TOOL} is not set (used in server "s" command)`, false, nil, nil, 1},
		{"undefined var in env", srv(desc + `"command": "x", "env": {"K": "${KEY}"}`), "/mcpServers/s/env/K", `server "s" env "K"`, false, nil, nil, 1},
		{"undefined var in header", srv(desc + `"url": "https://h/", "headers": {"Authorization": "Bearer ${TOKEN}"}`), "/mcpServers/s/headers/Authorization", "${TOKEN} is not set", false, nil, nil, 1},
		{"undefined var in oauth id", srv(desc + `"url": "https://h/", "oauth_client_id": "${CID}"`), "/mcpServers/s/oauth_client_id", "${CID} is not set", false, nil, nil, 1},
		{"undefined var in url", srv(desc + `"url": "https://${HOST}/mcp"`), "/mcpServers/s/url", "${HOST} is not set", false, nil, nil, 1},
		{"two undefined vars", srv(desc + `"command": "x", "args": ["${A}${B}"]`), "/mcpServers/s/args/0", "${A} is not set", false, nil, nil, 2},
		{"malformed ref", srv(desc + `"command": "x", "args": ["${A-b}"]`), "/mcpServers/s/args/0", `invalid reference "${A-b}"`, false, nil, nil, 1},
		{"ref starts with digit", srv(desc + `"command": "x", "args": ["${1A}"]`), "/mcpServers/s/args/0", "invalid reference", false, nil, nil, 1},
		{"unterminated ref", srv(desc + `"command": "x", "args": ["${A"]`), "/mcpServers/s/args/0", "unterminated", false, nil, nil, 1},
		{"secret without store", srv(desc + `"command": "x", "env": {"K": "${secret:api-key}"}`), "/mcpServers/s/env/K", "secret references need the secret store", false, nil, nil, 1},
		{"secret missing", srv(desc + `"command": "x", "env": {"K": "${secret:api-key}"}`), "/mcpServers/s/env/K", "`moat secret set api-key`", false, nil,
			func(name string) (string, error) { return "", fmt.Errorf("no secret %q", name) }, 1},
		{"bad secret name", srv(desc + `"command": "x", "env": {"K": "${secret:a b}"}`), "/mcpServers/s/env/K", "invalid secret name", false, nil, nil, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := &LoadOptions{Getenv: env(tt.getenv), Secret: tt.secret}
			err := parseErr(t, tt.src, opts)
			var p *Problem
			for i := range err.Problems {
				if err.Problems[i].Path == tt.path {
					p = &err.Problems[i]
					break
				}
			}
			if p == nil {
				t.Fatalf("no problem at path %q:\n%v", tt.path, err)
			}
			if text := p.Msg + ": " + p.Hint; !strings.Contains(text, tt.frag) {
				t.Errorf("problem at %s is %q; want it to contain %q", tt.path, text, tt.frag)
			}
			if !strings.Contains(err.Error(), "config: /cfg/moat.json: ") {
				t.Errorf("error does not name the file: %v", err)
			}
			if p.Line < 1 || p.Col < 1 {
				t.Errorf("problem has no position: %+v", p)
			}
			if tt.problems > 0 && len(err.Problems) != tt.problems {
				t.Errorf("%d problems, want %d:\n%v", len(err.Problems), tt.problems, err)
			}
			// The schema alone, on the same file:
			root, _, serr := parseTree([]byte(tt.src))
			if serr != nil {
				return
			}
			ps := &problems{data: []byte(tt.src)}
			schemaProblems(root, ps)
			if rejected := len(ps.list) > 0; rejected != bool(tt.schema) {
				t.Errorf("schema rejects = %v, want %v: the schema and the Go checks disagree (%v)", rejected, bool(tt.schema), ps.list)
			}
		})
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	const secret = "s3cr3t-value"
	src := srv(desc + `"url": "${secret:tok}://h/", "headers": {"X": "${secret:tok}\n", "Y": "${SECRETENV}"}`)
	_, err := Parse("/cfg/moat.json", []byte(src), &LoadOptions{
		Getenv: env(map[string]string{"SECRETENV": secret + "\r\n"}),
		Secret: func(string) (string, error) { return secret, nil },
	})
	if err == nil {
		t.Fatal("accepted a url with a bad scheme and headers with line breaks")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error text reveals a secret value:\n%v", err)
	}
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Errorf("want 3 problems (url, X, Y), got:\n%v", err)
	}
}
