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

// gw is a config with one server, "files", and the gateway block body.
func gw(body string) string {
	return `{"mcpServers": {"files": {"description": "d", "command": "x"}}, "gateway": ` + body + `}`
}

// mt is a config with no servers and the metrics block body.
func mt(body string) string { return `{"mcpServers": {}, "metrics": ` + body + `}` }

// stdio is a stdio server "s" with extra keys; sbx one with a sandbox
// block; tlsSrv a remote one with a tls block.
func stdio(body string) string { return srv(desc + `"command": "x", ` + body) }
func sbx(body string) string   { return stdio(`"sandbox": {` + body + `}`) }
func tlsSrv(body string) string {
	return srv(desc + `"url": "https://h/", "tls": {` + body + `}`)
}

// xchg is a remote server "s" with extra keys, in a config whose gateway
// accepts OIDC tokens (which token_exchange needs).
func xchg(body string) string {
	return `{"mcpServers": {"s": {` + desc + `"url": "https://h/mcp", ` + body + `}}, "gateway": {"oidc": {"issuer": "https://idp.example.com", "audience": "https://moat.example.com/mcp"}}}`
}

// okSecret resolves every ${secret:NAME}, so a case fails only for where
// the reference is.
func okSecret(string) (string, error) { return "sv", nil }

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
		{"case variant top key", `{"MCPServers": {}, "mcpServers": {}}`, "/MCPServers", "(case matters)", true, nil, nil, 0},
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
		{"case variant command", srv(desc + `"command": "x", "Command": "y"`), "/mcpServers/s/Command", `did you mean "command"? (case matters)`, true, nil, nil, 1},
		{"unknown key lists valid", srv(desc + `"command": "x", "workdir": "/"`), "/mcpServers/s/workdir", `valid keys in a stdio server: "description", "type", "enabled", "features", "timeout", "policy", "max_message_bytes", "per_user", "command", "args", "env", "inherit_env", "cwd", "run_as", "sandbox"`, true, nil, nil, 1},
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
		{"connect timeout zero", srv(desc + `"command": "x", "timeout": {"connect": "0s"}`), "/mcpServers/s/timeout/connect", "greater than zero", true, nil, nil, 1},
		{"connect timeout typo", srv(desc + `"command": "x", "timeout": {"conect": "2min"}`), "/mcpServers/s/timeout/conect", `did you mean "connect"?`, true, nil, nil, 1},
		{"timeout compound", srv(desc + `"command": "x", "timeout": {"tools": "1m30s"}`), "/mcpServers/s/timeout/tools", "1min, 2m, 1h", true, nil, nil, 1},
		{"timeout inner space", srv(desc + `"command": "x", "timeout": {"tools": "30 s"}`), "/mcpServers/s/timeout/tools", `invalid duration "30 s"`, true, nil, nil, 1},
		{"timeout mins", srv(desc + `"command": "x", "timeout": {"tools": "5mins"}`), "/mcpServers/s/timeout/tools", `invalid duration "5mins"`, true, nil, nil, 1},
		{"timeout bool", srv(desc + `"command": "x", "timeout": {"tools": true}`), "/mcpServers/s/timeout/tools", "got a boolean", true, nil, nil, 1},
		{"timeout overflow hours", srv(desc + `"command": "x", "timeout": {"tools": "9999999999h"}`), "/mcpServers/s/timeout/tools", "too large", false, nil, nil, 1},
		{"timeout overflow int", srv(desc + `"command": "x", "timeout": {"tools": 99999999999999999999999}`), "/mcpServers/s/timeout/tools", "too large", true, nil, nil, 1},
		// expansion
		{"undefined var", srv(desc + `"command": "npx", "args": ["-y", "${PROJECT_DIR}"]`), "/mcpServers/s/args/1", `${PROJECT_DIR} is not set (used in server "s" args[1]): export PROJECT_DIR before starting moat; if it is a secret, pass it to the server in "env" as ${secret:project_dir}`, false, nil, nil, 1},
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
		{"secret in args", srv(desc + `"command": "x", "args": ["--token=${secret:tok}"]`), "/mcpServers/s/args/0",
			`${secret:tok} in server "s" args[0] would put the secret on the server's command line, which every local user can read (/proc/PID/cmdline): pass it in "env" instead, e.g. "env": {"API_TOKEN": "${secret:tok}"}`, false, nil, okSecret, 1},
		{"secret in command", srv(desc + `"command": "/opt/${secret:tok}/bin/x"`), "/mcpServers/s/command", "would put the secret on the server's command line", false, nil, okSecret, 1},
		{"run_as not a user", stdio(`"run_as": "root; rm -rf /"`), "/mcpServers/s/run_as", `run_as "root; rm -rf /" is not a user: write a user name or uid`, true, nil, nil, 1},
		{"run_as number", stdio(`"run_as": 2001`), "/mcpServers/s/run_as", `"run_as" is a number, not a string`, true, nil, nil, 1},
		{"namespaces not a boolean", stdio(`"sandbox": {"namespaces": "no"}`), "/mcpServers/s/sandbox/namespaces", "sandbox.namespaces", true, nil, nil, 1},
		// inherit_env
		{"inherit_env string", stdio(`"inherit_env": "LANG"`), "/mcpServers/s/inherit_env", `inherit_env is a string, not an array of strings: write "inherit_env": ["LANG", "NODE_*"]`, true, nil, nil, 1},
		{"inherit_env item number", stdio(`"inherit_env": ["LANG", 1]`), "/mcpServers/s/inherit_env/1", "inherit_env[1] is a number, not a string: quote it", true, nil, nil, 1},
		{"inherit_env star alone", stdio(`"inherit_env": ["*"]`), "/mcpServers/s/inherit_env/0", `inherit_env[0] "*" is not a variable name or a NAME_* prefix: write a name such as "LANG" or a prefix such as "NODE_*" (letters, digits and '_', not starting with a digit; '*' only at the end, never alone)`, true, nil, nil, 1},
		{"inherit_env inner star", stdio(`"inherit_env": ["A*B"]`), "/mcpServers/s/inherit_env/0", "not a variable name", true, nil, nil, 1},
		{"inherit_env leading digit", stdio(`"inherit_env": ["1A"]`), "/mcpServers/s/inherit_env/0", "not a variable name", true, nil, nil, 1},
		{"per_user string", stdio(`"per_user": "yes"`), "/mcpServers/s/per_user", `"per_user" is a string, not true or false`, true, nil, nil, 1},
		// token_exchange
		{"token_exchange not per user", xchg(`"oauth_client_id": "moat", "token_exchange": {"issuer": "https://auth.example.com"}`), "/mcpServers/s/token_exchange", `token_exchange gets each person's own token, but server "s" is shared by every user: add "per_user": true to the server`, false, nil, nil, 1},
		{"token_exchange without client id", xchg(`"per_user": true, "token_exchange": {"issuer": "https://auth.example.com"}`), "/mcpServers/s/token_exchange", `server "s" has no oauth_client_id`, false, nil, nil, 1},
		{"token_exchange on sse", xchg(`"type": "sse", "per_user": true, "oauth_client_id": "moat", "token_exchange": {"issuer": "https://auth.example.com"}`), "/mcpServers/s/token_exchange", `token_exchange needs a streamable HTTP server; server "s" is sse`, false, nil, nil, 1},
		{"token_exchange without gateway.oidc", srv(desc + `"url": "https://h/", "per_user": true, "oauth_client_id": "moat", "token_exchange": {"issuer": "https://auth.example.com"}`), "/mcpServers/s/token_exchange", `server "s" exchanges each person's OIDC sign-in token, but the config has no gateway.oidc`, false, nil, nil, 1},
		{"token_exchange plain secret", xchg(`"per_user": true, "oauth_client_id": "moat", "token_exchange": {"issuer": "https://auth.example.com", "client_secret": "hunter2"}`), "/mcpServers/s/token_exchange/client_secret", "token_exchange.client_secret is written in the config file in plain text: store it with `moat secret set NAME`", false, nil, nil, 1},
		{"token_exchange without issuer", xchg(`"per_user": true, "oauth_client_id": "moat", "token_exchange": {"client_secret": "${secret:k}"}`), "/mcpServers/s/token_exchange", `server "s"'s token_exchange names no authorization server: add "issuer"`, true, nil, okSecret, 1},
		{"token_exchange http issuer", xchg(`"per_user": true, "oauth_client_id": "moat", "token_exchange": {"issuer": "http://auth.example.com"}`), "/mcpServers/s/token_exchange/issuer", `token_exchange.issuer "http://auth.example.com" uses plain http:// to a host that is not loopback: it receives the users' sign-in tokens`, false, nil, nil, 1},
		{"token_exchange http token_url", xchg(`"per_user": true, "oauth_client_id": "moat", "token_exchange": {"token_url": "http://auth.example.com/token"}`), "/mcpServers/s/token_exchange/token_url", `uses plain http:// to a host that is not loopback`, false, nil, nil, 1},
		{"token_exchange unknown key", xchg(`"per_user": true, "oauth_client_id": "moat", "token_exchange": {"issuer": "https://auth.example.com", "secret": "x"}`), "/mcpServers/s/token_exchange/secret", `unknown key "secret"`, true, nil, nil, 1},
		{"inherit_env on http", srv(desc + `"url": "https://h/", "inherit_env": []`), "/mcpServers/s/inherit_env", `"inherit_env" is not valid for a http server`, true, nil, nil, 1},
		// cwd
		{"cwd number", stdio(`"cwd": 1`), "/mcpServers/s/cwd", `"cwd" is a number, not a string: quote it`, true, nil, nil, 1},
		{"cwd relative", stdio(`"cwd": "project"`), "/mcpServers/s/cwd", `server "s" cwd "project" is not an absolute path: write an absolute path such as "/home/me/project", or start it with ~/ for your home directory`, false, nil, nil, 1},
		{"cwd relative after expansion", stdio(`"cwd": "${D}/x"`), "/mcpServers/s/cwd", `server "s" cwd "${D}/x" (after expansion) is not an absolute path`, false, map[string]string{"D": "rel"}, nil, 1},
		{"cwd tilde without HOME", stdio(`"cwd": "~/p"`), "/mcpServers/s/cwd", `server "s" cwd starts with ~ but HOME is not set: set HOME, or write an absolute path`, false, nil, nil, 1},
		{"cwd tilde user", stdio(`"cwd": "~bob/p"`), "/mcpServers/s/cwd", `"~bob/p" is not an absolute path`, false, map[string]string{"HOME": "/home/u"}, nil, 1},
		{"cwd undefined var", stdio(`"cwd": "${PROJ}"`), "/mcpServers/s/cwd", `${PROJ} is not set (used in server "s" cwd)`, false, nil, nil, 1},
		{"cwd secret", stdio(`"cwd": "/p/${secret:k}"`), "/mcpServers/s/cwd", `${secret:k} cannot be used in server "s" cwd: secrets are expanded only in env, url, headers, oauth_client_id and token_exchange.client_secret, where Moat redacts them; use ${VAR} or a literal here`, false, nil, okSecret, 1},
		{"cwd NUL via env", stdio(`"cwd": "/p/${N}"`), "/mcpServers/s/cwd", `server "s" cwd holds a NUL byte`, false, map[string]string{"N": "a\x00b"}, nil, 1},
		{"cwd on http", srv(desc + `"url": "https://h/", "cwd": "/"`), "/mcpServers/s/cwd", `"cwd" is not valid for a http server`, true, nil, nil, 1},
		// sandbox
		{"sandbox array", stdio(`"sandbox": []`), "/mcpServers/s/sandbox", `"sandbox" is an array, not an object: write "sandbox": {"memory": "1GiB", "fs": {"read": ["~/project"]}}`, true, nil, nil, 1},
		{"sandbox unknown key", sbx(`"memroy": "1GiB"`), "/mcpServers/s/sandbox/memroy", `unknown key "memroy" in "sandbox": did you mean "memory"?; valid keys in "sandbox": "mode", "memory", "cpu", "max_files", "max_procs", "max_file_size", "fs", "net", "network"`, true, nil, nil, 1},
		{"sandbox on sse", srv(desc + `"type": "sse", "url": "https://h/", "sandbox": {}`), "/mcpServers/s/sandbox", `"sandbox" is not valid for a sse server`, true, nil, nil, 1},
		{"sandbox mode typo", sbx(`"mode": "strct"`), "/mcpServers/s/sandbox/mode", `unknown sandbox.mode "strct": did you mean "strict"?; use "best-effort" (the default: start the server and report what cannot be enforced) or "strict" (refuse to start it then)`, true, nil, nil, 1},
		{"sandbox mode number", sbx(`"mode": 1`), "/mcpServers/s/sandbox/mode", "sandbox.mode is a number, not a string", true, nil, nil, 1},
		{"memory decimal unit", sbx(`"memory": "1GB"`), "/mcpServers/s/sandbox/memory", `invalid size "1GB": the unit "GB" is not accepted: write 1GiB: units are B, KiB, MiB and GiB (1024-based)`, true, nil, nil, 1},
		{"memory lowercase mb", sbx(`"memory": "512mb"`), "/mcpServers/s/sandbox/memory", `write 512MiB`, true, nil, nil, 1},
		{"memory zero", sbx(`"memory": 0`), "/mcpServers/s/sandbox/memory", "sandbox.memory is 0: give a size greater than zero, or remove the key for the default", true, nil, nil, 1},
		{"memory zero string", sbx(`"memory": "0MiB"`), "/mcpServers/s/sandbox/memory", "sandbox.memory is 0", true, nil, nil, 1},
		{"memory fraction", sbx(`"memory": "1.5GiB"`), "/mcpServers/s/sandbox/memory", `invalid size "1.5GiB": use a whole number of bytes, or a string such as "100B", "64KiB", "512MiB", "1GiB"`, true, nil, nil, 1},
		{"memory inner space", sbx(`"memory": "1 GiB"`), "/mcpServers/s/sandbox/memory", `invalid size "1 GiB"`, true, nil, nil, 1},
		{"memory negative", sbx(`"memory": -1`), "/mcpServers/s/sandbox/memory", "invalid size -1: a size cannot be negative", true, nil, nil, 1},
		{"memory bool", sbx(`"memory": true`), "/mcpServers/s/sandbox/memory", "invalid size: got a boolean", true, nil, nil, 1},
		{"memory overflow", sbx(`"memory": "99999999999GiB"`), "/mcpServers/s/sandbox/memory", `invalid size "99999999999GiB": too large`, false, nil, nil, 1},
		{"memory exponent", sbx(`"memory": 1e9`), "/mcpServers/s/sandbox/memory", "invalid size 1e9: bytes must be a whole number", false, nil, nil, 1},
		{"cpu compound", sbx(`"cpu": "1h30m"`), "/mcpServers/s/sandbox/cpu", `invalid duration "1h30m": use an integer number of seconds or one of 500ms, 30s, 1min, 2m, 1h`, true, nil, nil, 1},
		{"cpu zero", sbx(`"cpu": 0`), "/mcpServers/s/sandbox/cpu", "a duration must be greater than zero", true, nil, nil, 1},
		{"cpu object", sbx(`"cpu": {}`), "/mcpServers/s/sandbox/cpu", "invalid duration: got an object", true, nil, nil, 1},
		{"max_files too small", sbx(`"max_files": 8`), "/mcpServers/s/sandbox/max_files", "sandbox.max_files is 8; it must be at least 16", true, nil, nil, 1},
		{"max_files string", sbx(`"max_files": "1024"`), "/mcpServers/s/sandbox/max_files", "sandbox.max_files is a string, not a whole number", true, nil, nil, 1},
		{"max_files fraction", sbx(`"max_files": 100.5`), "/mcpServers/s/sandbox/max_files", "sandbox.max_files is 100.5, not a whole number: write it without a fraction or exponent", true, nil, nil, 1},
		{"max_files integral float", sbx(`"max_files": 100.0`), "/mcpServers/s/sandbox/max_files", "not a whole number", false, nil, nil, 1},
		{"max_files huge", sbx(`"max_files": 99999999999999999999`), "/mcpServers/s/sandbox/max_files", "it must be at most 9223372036854775807", true, nil, nil, 1},
		{"max_procs zero", sbx(`"max_procs": 0`), "/mcpServers/s/sandbox/max_procs", "sandbox.max_procs is 0; it must be at least 1", true, nil, nil, 1},
		{"max_procs negative", sbx(`"max_procs": -3`), "/mcpServers/s/sandbox/max_procs", "sandbox.max_procs is -3; it must be at least 1", true, nil, nil, 1},
		{"max_file_size MB", sbx(`"max_file_size": "10MB"`), "/mcpServers/s/sandbox/max_file_size", "write 10MiB", true, nil, nil, 1},
		{"max_file_size null", sbx(`"max_file_size": null`), "/mcpServers/s/sandbox/max_file_size", "invalid size: got null", true, nil, nil, 1},
		{"fs array", sbx(`"fs": ["/"]`), "/mcpServers/s/sandbox/fs", `"sandbox.fs" is an array, not an object: write "fs": {"read": ["~/project"], "write": []}`, true, nil, nil, 1},
		{"fs unknown key", sbx(`"fs": {"exec": []}`), "/mcpServers/s/sandbox/fs/exec", `unknown key "exec" in "sandbox.fs"`, true, nil, nil, 1},
		{"fs read string", sbx(`"fs": {"read": "/"}`), "/mcpServers/s/sandbox/fs/read", `sandbox.fs.read is a string, not an array of strings: write "read": ["/home/me/project"]`, true, nil, nil, 1},
		{"fs write item number", sbx(`"fs": {"write": [1]}`), "/mcpServers/s/sandbox/fs/write/0", "sandbox.fs.write[0] is a number, not a string", true, nil, nil, 1},
		{"fs read relative", sbx(`"fs": {"read": ["/ok", "data"]}`), "/mcpServers/s/sandbox/fs/read/1", `server "s" sandbox.fs.read[1] "data" is not an absolute path`, false, nil, nil, 1},
		{"fs secret", sbx(`"fs": {"read": ["${secret:k}"]}`), "/mcpServers/s/sandbox/fs/read/0", `${secret:k} cannot be used in server "s" sandbox.fs.read[0]`, false, nil, okSecret, 1},
		{"net not object", sbx(`"net": [443]`), "/mcpServers/s/sandbox/net", `"sandbox.net" is an array, not an object: write "net": {"connect": [443]}`, true, nil, nil, 1},
		{"net unknown key", sbx(`"net": {"listen": [1]}`), "/mcpServers/s/sandbox/net/listen", `unknown key "listen" in "sandbox.net"`, true, nil, nil, 1},
		{"net connect not array", sbx(`"net": {"connect": 443}`), "/mcpServers/s/sandbox/net/connect", `sandbox.net.connect is a number, not an array of port numbers: write "connect": [443, 8080]`, true, nil, nil, 1},
		{"net port zero", sbx(`"net": {"connect": [0]}`), "/mcpServers/s/sandbox/net/connect/0", "sandbox.net.connect[0] is 0; it must be at least 1", true, nil, nil, 1},
		{"net port too big", sbx(`"net": {"connect": [443, 70000]}`), "/mcpServers/s/sandbox/net/connect/1", "sandbox.net.connect[1] is 70000; it must be at most 65535", true, nil, nil, 1},
		{"net port string", sbx(`"net": {"connect": ["443"]}`), "/mcpServers/s/sandbox/net/connect/0", "sandbox.net.connect[0] is a string, not a whole number", true, nil, nil, 1},
		{"network string", sbx(`"network": "no"`), "/mcpServers/s/sandbox/network", "sandbox.network is a string, not true or false", true, nil, nil, 1},
		{"sandbox many problems", sbx(`"memory": "1GB", "max_files": 1, "network": 0`), "/mcpServers/s/sandbox/network", "not true or false", true, nil, nil, 3},
		// remote-only switches
		{"allow_insecure_http string", srv(desc + `"url": "https://h/", "allow_insecure_http": "yes"`), "/mcpServers/s/allow_insecure_http", `"allow_insecure_http" is a string, not true or false`, true, nil, nil, 1},
		{"allow_private_network number", srv(desc + `"url": "https://h/", "allow_private_network": 1`), "/mcpServers/s/allow_private_network", `"allow_private_network" is a number, not true or false`, true, nil, nil, 1},
		{"allow_insecure_http on stdio", stdio(`"allow_insecure_http": true`), "/mcpServers/s/allow_insecure_http", `"allow_insecure_http" is not valid for a stdio server`, true, nil, nil, 1},
		{"plain http remote", srv(desc + `"url": "http://example.com/mcp"`), "/mcpServers/s/url", `url "http://example.com/mcp" uses plain http:// to a host that is not loopback: plain HTTP sends every request readable and changeable on the network; use https://, or set "allow_insecure_http": true for this server if you accept that`, false, nil, nil, 1},
		{"plain http uppercase scheme", srv(desc + `"url": "HTTP://10.0.0.1/mcp"`), "/mcpServers/s/url", "uses plain http://", false, nil, nil, 1},
		{"plain http opt-in false", srv(desc + `"url": "http://example.com/mcp", "allow_insecure_http": false`), "/mcpServers/s/url", "uses plain http://", false, nil, nil, 1},
		{"plain http after expansion", srv(desc + `"url": "http://${H}/mcp"`), "/mcpServers/s/url", `url "http://${H}/mcp" (after expansion) uses plain http://`, false, map[string]string{"H": "10.1.2.3"}, nil, 1},
		{"plain http localhost lookalike", srv(desc + `"url": "http://localhost.example.com/mcp"`), "/mcpServers/s/url", "uses plain http://", false, nil, nil, 1},
		{"plain http 0.0.0.0", srv(desc + `"url": "http://0.0.0.0:8080/mcp"`), "/mcpServers/s/url", "uses plain http://", false, nil, nil, 1},
		// tls
		{"tls string", srv(desc + `"url": "https://h/", "tls": "1.3"`), "/mcpServers/s/tls", `"tls" is a string, not an object: write "tls": {"min_version": "1.3"}`, true, nil, nil, 1},
		{"tls unknown key", srv(desc + `"url": "https://h/", "tls": {"pin": []}`), "/mcpServers/s/tls/pin", `unknown key "pin" in "tls": did you mean "pins"?`, true, nil, nil, 1},
		{"tls on stdio", stdio(`"tls": {}`), "/mcpServers/s/tls", `"tls" is not valid for a stdio server`, true, nil, nil, 1},
		{"tls min_version 1.1", tlsSrv(`"min_version": "1.1"`), "/mcpServers/s/tls/min_version", `unknown tls.min_version "1.1": did you mean "1.2"?; use "1.2" (the default) or "1.3", as a string`, true, nil, nil, 1},
		{"tls min_version number", tlsSrv(`"min_version": 1.3`), "/mcpServers/s/tls/min_version", `tls.min_version is a number, not a string: use "1.2" (the default) or "1.3", as a string`, true, nil, nil, 1},
		{"tls ca_file number", tlsSrv(`"ca_file": 1`), "/mcpServers/s/tls/ca_file", `"ca_file" is a number, not a string: quote it`, true, nil, nil, 1},
		{"tls ca_file relative", tlsSrv(`"ca_file": "ca.pem"`), "/mcpServers/s/tls/ca_file", `server "s" tls.ca_file "ca.pem" is not an absolute path`, false, nil, nil, 1},
		{"tls key_file secret", tlsSrv(`"cert_file": "/c", "key_file": "${secret:k}"`), "/mcpServers/s/tls/key_file", `${secret:k} cannot be used in server "s" tls.key_file`, false, nil, okSecret, 1},
		{"tls cert without key", tlsSrv(`"cert_file": "/c.pem"`), "/mcpServers/s/tls/cert_file", `"tls.cert_file" is given without "tls.key_file": give the client certificate and its private key together, or neither`, true, nil, nil, 1},
		{"tls key without cert", tlsSrv(`"key_file": "/k.pem"`), "/mcpServers/s/tls/key_file", `"tls.key_file" is given without "tls.cert_file"`, true, nil, nil, 1},
		{"tls cert empty key set", tlsSrv(`"cert_file": "", "key_file": "/k.pem"`), "/mcpServers/s/tls", "one of tls.cert_file and tls.key_file is empty: give the client certificate and its private key together, or neither", false, nil, nil, 1},
		{"tls pins string", tlsSrv(`"pins": "sha256/x"`), "/mcpServers/s/tls/pins", `tls.pins is a string, not an array of strings: write "pins": ["sha256/..."]`, true, nil, nil, 1},
		{"tls pin short", tlsSrv(`"pins": ["sha256/abc="]`), "/mcpServers/s/tls/pins/0", `tls.pins[0] "sha256/abc=" is not sha256/ followed by the base64 of 32 bytes: a pin is "sha256/" and the base64 of the SHA-256 of the server's public key (44 characters ending in "="), as Moat prints it when a pin does not match, or from: openssl x509`, true, nil, nil, 1},
		{"tls pin sha1", tlsSrv(`"pins": ["sha1/mGobcTX0mGFQql+gAo/uqmbNrz7WoAo1XdhuBC9/tJQ="]`), "/mcpServers/s/tls/pins/0", "not sha256/ followed by", true, nil, nil, 1},
		{"tls pin url-safe base64", tlsSrv(`"pins": ["sha256/mGobcTX0mGFQql-gAo_uqmbNrz7WoAo1XdhuBC9_tJQ="]`), "/mcpServers/s/tls/pins/0", "not sha256/ followed by", true, nil, nil, 1},
		{"tls pin stray low bits", tlsSrv(`"pins": ["sha256/mGobcTX0mGFQql+gAo/uqmbNrz7WoAo1XdhuBC9/tJR="]`), "/mcpServers/s/tls/pins/0", "not sha256/ followed by", true, nil, nil, 1},
		{"tls pin escaped newline", tlsSrv(`"pins": ["sha256/mGobcTX0mGFQql+gAo/uqmbNrz7WoAo1Xdhu\nBC9/tJQ="]`), "/mcpServers/s/tls/pins/0", "not sha256/ followed by", true, nil, nil, 1},
		// policy
		{"policy array", stdio(`"policy": ["read_*"]`), "/mcpServers/s/policy", `server "s" policy is an array, not an object: write "policy": {"deny": ["write_*"]}`, true, nil, nil, 1},
		{"policy undefined var deep", stdio(`"policy": {"args": {"read_file": {"path": {"prefix": ["/ok", "${PROJ}"]}}}}`), "/mcpServers/s/policy/args/read_file/path/prefix/1", `${PROJ} is not set (used in server "s" policy)`, false, nil, nil, 1},
		{"policy secret", srv(desc + `"url": "https://h/", "policy": {"deny": ["${secret:k}"]}`), "/mcpServers/s/policy/deny/0", `${secret:k} cannot be used in server "s" policy`, false, nil, okSecret, 1},
		{"policy two bad refs", stdio(`"policy": {"pin": "${A}", "deny": ["${B}"]}`), "/mcpServers/s/policy/deny/0", "${B} is not set", false, nil, nil, 2},
		// defaults
		// policy typos (issue 20): each with its place and the word that was meant
		{"policy value typo", stdio(`"policy": {"destructive": "dney"}`), "/mcpServers/s/policy/destructive", `got "dney": did you mean "deny"?`, true, nil, nil, 1},
		{"policy key typo", stdio(`"policy": {"destructiv": "deny"}`), "/mcpServers/s/policy/destructiv", `unknown key "destructiv"; known keys: allow, deny, destructive`, true, nil, nil, 1},
		{"policy key typo hint", stdio(`"policy": {"destructiv": "deny"}`), "/mcpServers/s/policy/destructiv", `did you mean "destructive"?`, true, nil, nil, 1},
		{"policy deep typo", stdio(`"policy": {"tools": {"t": {"max_concurent": 2}}}`), "/mcpServers/s/policy/tools/t/max_concurent", `did you mean "max_concurrent"?`, true, nil, nil, 1},
		{"policy bad rate", stdio(`"policy": {"rate": "10/d"}`), "/mcpServers/s/policy/rate", `must be a rate such as "10/s"`, true, nil, nil, 1},
		{"policy global in a server", stdio(`"policy": {"global": {"rate": "1/s"}}`), "/mcpServers/s/policy/global", `belongs in "defaults.policy"`, true, nil, nil, 1},
		{"defaults policy typo", `{"mcpServers": {}, "defaults": {"policy": {"pin": "strcit"}}}`, "/defaults/policy/pin", `did you mean "strict"?`, true, nil, nil, 1},
		{"policy value from ${VAR} is not shown", stdio(`"policy": {"pin": "${P}"}`), "/mcpServers/s/policy/pin", "the value is not shown", false, map[string]string{"P": "hunter2"}, nil, 1},
		{"defaults array", `{"mcpServers": {}, "defaults": []}`, "/defaults", `"defaults" is an array, not an object: write "defaults": {"sandbox": {...}, "policy": {...}}`, true, nil, nil, 1},
		{"defaults unknown key", `{"mcpServers": {}, "defaults": {"sandbox": {}, "timeout": {}}}`, "/defaults/timeout", `unknown key "timeout" in "defaults": valid keys in "defaults": "sandbox", "policy"`, true, nil, nil, 1},
		{"defaults policy string", `{"mcpServers": {}, "defaults": {"policy": "strict"}}`, "/defaults/policy", `defaults.policy is a string, not an object`, true, nil, nil, 1},
		{"defaults policy undefined var", `{"mcpServers": {}, "defaults": {"policy": {"allow": ["${NOPE}"]}}}`, "/defaults/policy/allow/0", `${NOPE} is not set (used in defaults.policy)`, false, nil, nil, 1},
		{"defaults sandbox max_procs", `{"mcpServers": {}, "defaults": {"sandbox": {"max_procs": 0}}}`, "/defaults/sandbox/max_procs", "sandbox.max_procs is 0; it must be at least 1", true, nil, nil, 1},
		{"defaults sandbox fs relative", `{"mcpServers": {}, "defaults": {"sandbox": {"fs": {"write": ["tmp"]}}}}`, "/defaults/sandbox/fs/write/0", `defaults sandbox.fs.write[0] "tmp" is not an absolute path`, false, nil, nil, 1},
		{"defaults checked without mcpServers", `{"defaults": {"sandbox": {"mode": "hard"}}}`, "/defaults/sandbox/mode", `unknown sandbox.mode "hard"`, true, nil, nil, 2},
		// audit
		{"audit string", `{"mcpServers": {}, "audit": "on"}`, "/audit", `"audit" is a string, not an object: write "audit": {"path": "~/.local/state/moat/audit.jsonl"}`, true, nil, nil, 1},
		{"audit syslog bad scheme", `{"mcpServers": {}, "audit": {"syslog": "http://logs:514"}}`, "/audit/syslog", `audit.syslog "http://logs:514": unknown scheme "http"`, true, nil, nil, 1},
		{"audit syslog relative socket", `{"mcpServers": {}, "audit": {"syslog": "unix://dev/log"}}`, "/audit/syslog", `a unix socket needs an absolute path`, false, nil, nil, 1},
		{"audit path number", `{"mcpServers": {}, "audit": {"path": 1}}`, "/audit/path", `"path" is a number, not a string: quote it`, true, nil, nil, 1},
		{"audit path relative", `{"mcpServers": {}, "audit": {"path": "audit.jsonl"}}`, "/audit/path", `audit.path "audit.jsonl" is not an absolute path: write an absolute path such as "/home/me/project", or start it with ~/ for your home directory`, false, nil, nil, 1},
		{"audit path tilde no HOME", `{"mcpServers": {}, "audit": {"path": "~/a.jsonl"}}`, "/audit/path", "audit.path starts with ~ but HOME is not set", false, nil, nil, 1},
		{"audit path secret", `{"mcpServers": {}, "audit": {"path": "/x/${secret:k}"}}`, "/audit/path", "${secret:k} cannot be used in audit.path", false, nil, okSecret, 1},
		{"audit fsync typo", `{"mcpServers": {}, "audit": {"fsync": "batched"}}`, "/audit/fsync", `unknown audit.fsync "batched": did you mean "batch"?; use "batch" (the default: group commit), "always" (one sync per record) or "off" (no sync; records can be lost in a power cut)`, true, nil, nil, 1},
		{"audit fsync bool", `{"mcpServers": {}, "audit": {"fsync": false}}`, "/audit/fsync", "audit.fsync is a boolean, not a string", true, nil, nil, 1},
		{"audit on_failure", `{"mcpServers": {}, "audit": {"on_failure": "ignore"}}`, "/audit/on_failure", `unknown audit.on_failure "ignore": use "deny" (the default: refuse calls while the audit log cannot be written) or "continue"`, true, nil, nil, 1},
		{"audit record_args string", `{"mcpServers": {}, "audit": {"record_args": "true"}}`, "/audit/record_args", "audit.record_args is a string, not true or false", true, nil, nil, 1},
		{"audit rotate number", `{"mcpServers": {}, "audit": {"rotate": 10}}`, "/audit/rotate", `"audit.rotate" is a number, not an object: write "rotate": {"max_size": "100MiB", "keep": 10}`, true, nil, nil, 1},
		{"audit rotate unknown", `{"mcpServers": {}, "audit": {"rotate": {"max_files": 3}}}`, "/audit/rotate/max_files", `unknown key "max_files" in "audit.rotate"`, true, nil, nil, 1},
		{"audit rotate max_size MB", `{"mcpServers": {}, "audit": {"rotate": {"max_size": "100MB"}}}`, "/audit/rotate/max_size", `invalid size "100MB": the unit "MB" is not accepted: write 100MiB`, true, nil, nil, 1},
		{"audit rotate max_size zero", `{"mcpServers": {}, "audit": {"rotate": {"max_size": 0}}}`, "/audit/rotate/max_size", "audit.rotate.max_size is 0", true, nil, nil, 1},
		{"audit rotate max_age days", `{"mcpServers": {}, "audit": {"rotate": {"max_age": "7d"}}}`, "/audit/rotate/max_age", `invalid duration "7d": use an integer number of seconds`, true, nil, nil, 1},
		{"audit syslog_format unknown", `{"mcpServers": {}, "audit": {"syslog_format": "leef"}}`, "/audit/syslog_format", `use "json" (the default: each audit line as written), "ocsf" (OCSF 1.5.0 events) or "cef"`, true, nil, nil, 1},
		{"audit rotate keep negative", `{"mcpServers": {}, "audit": {"rotate": {"keep": -1}}}`, "/audit/rotate/keep", "audit.rotate.keep is -1; it must be at least 0", true, nil, nil, 1},
		{"audit rotate keep huge", `{"mcpServers": {}, "audit": {"rotate": {"keep": 3000000000}}}`, "/audit/rotate/keep", "audit.rotate.keep is 3000000000; it must be at most 2147483647", true, nil, nil, 1},
		{"audit checkpoint zero", `{"mcpServers": {}, "audit": {"checkpoint_every": 0}}`, "/audit/checkpoint_every", "audit.checkpoint_every is 0; it must be at least 1", true, nil, nil, 1},
		{"audit checkpoint string", `{"mcpServers": {}, "audit": {"checkpoint_every": "100"}}`, "/audit/checkpoint_every", "audit.checkpoint_every is a string, not a whole number", true, nil, nil, 1},
		// secrets
		{"secrets array", `{"mcpServers": {}, "secrets": []}`, "/secrets", `"secrets" is an array, not an object: write "secrets": {"backend": "auto"}`, true, nil, nil, 1},
		{"secrets unknown key", `{"mcpServers": {}, "secrets": {"backnd": "file"}}`, "/secrets/backnd", `did you mean "backend"?`, true, nil, nil, 1},
		{"secrets require_encryption string", `{"mcpServers": {}, "secrets": {"require_encryption": "yes"}}`, "/secrets/require_encryption", `secrets.require_encryption is a string, not true or false`, true, nil, nil, 1},
		{"secrets backend typo", `{"mcpServers": {}, "secrets": {"backend": "keychian"}}`, "/secrets/backend", `unknown secrets.backend "keychian": did you mean "keychain"?; use "auto" (the default: the OS keychain, else the encrypted file), "keychain" or "file"`, true, nil, nil, 1},
		{"secrets backend number", `{"mcpServers": {}, "secrets": {"backend": 1}}`, "/secrets/backend", "secrets.backend is a number, not a string", true, nil, nil, 1},
		// gateway
		{"gateway array", gw(`[]`), "/gateway", `"gateway" is an array, not an object`, true, nil, nil, 1},
		{"gateway unknown key", gw(`{"socket_mod": "0660"}`), "/gateway/socket_mod", `did you mean "socket_mode"?`, true, nil, nil, 1},
		{"socket_mode world-writable", gw(`{"socket_mode": "0666"}`), "/gateway/socket_mode", `gateway.socket_mode "0666" lets every user of the host connect (o+w): use "0660" and set "socket_group" to the group of the users who may connect, or "0600"`, true, nil, nil, 1},
		{"per_user_idle bad", gw(`{"per_user_idle": "soon"}`), "/gateway/per_user_idle", `invalid duration`, true, nil, nil, 1},
		{"socket_mode too tight", gw(`{"socket_mode": "0400"}`), "/gateway/socket_mode", `does not let the gateway's own user read and write its socket (it must be from 0600 to 0777)`, true, nil, nil, 1},
		{"socket_mode setuid", gw(`{"socket_mode": "4660"}`), "/gateway/socket_mode", `is not an octal mode such as "0660"`, true, nil, nil, 1},
		{"socket_mode not octal", gw(`{"socket_mode": "0680"}`), "/gateway/socket_mode", `is not an octal mode`, true, nil, nil, 1},
		{"socket_mode number", gw(`{"socket_mode": 660}`), "/gateway/socket_mode", `gateway.socket_mode is a number, not a string: write the mode as an octal string, quoted`, true, nil, nil, 1},
		{"socket_group bad", gw(`{"socket_group": "a b"}`), "/gateway/socket_group", `gateway.socket_group "a b" is not a group name or gid`, true, nil, nil, 1},
		{"identities array", gw(`{"identities": []}`), "/gateway/identities", `gateway.identities is an array, not an object`, true, nil, nil, 1},
		{"identity bad name", gw(`{"identities": {"a/b": {"uids": [1]}}}`), "/gateway/identities/a~1b", `invalid identity name "a/b"`, true, nil, nil, 1},
		{"identity not object", gw(`{"identities": {"alice": [1000]}}`), "/gateway/identities/alice", `identity "alice" is an array, not an object`, true, nil, nil, 1},
		{"identity unknown key", gw(`{"identities": {"alice": {"uid": [1000]}}}`), "/gateway/identities/alice/uid", `did you mean "uids"?`, true, nil, nil, 0},
		{"identity matches nobody", gw(`{"identities": {"alice": {"servers": ["files"]}}}`), "/gateway/identities/alice", `identity "alice" has no uids, unix_groups, tokens or oidc, so no peer can ever be it`, true, nil, nil, 1},
		{"token under two identities", gw(`{"identities": {"alice": {"tokens": ["laptop"]}, "bob": {"tokens": ["ci", "laptop"]}}}`), "/gateway/identities/bob/tokens/1", `token "laptop" is listed under identities "alice" and "bob"; a token's bearer must be exactly one identity: remove one of them`, false, nil, nil, 1},
		{"token twice in one identity", gw(`{"identities": {"alice": {"tokens": ["laptop", "laptop"]}}}`), "/gateway/identities/alice/tokens/1", `token "laptop" is listed twice under identity "alice"`, false, nil, nil, 1},
		{"token bad name", gw(`{"identities": {"alice": {"tokens": ["my laptop"]}}}`), "/gateway/identities/alice/tokens/0", `identity "alice" tokens[0] "my laptop" is not a token name`, true, nil, nil, 0},
		{"tls without key", gw(`{"tls": {"cert_file": "/etc/moat/cert.pem"}}`), "/gateway/tls", `gateway.tls has no "key_file"`, true, nil, nil, 0},
		{"tls relative path", gw(`{"tls": {"cert_file": "cert.pem", "key_file": "/etc/moat/key.pem"}}`), "/gateway/tls/cert_file", `gateway.tls.cert_file "cert.pem" is not an absolute path`, false, nil, nil, 1},
		{"tls old version", gw(`{"tls": {"cert_file": "/c.pem", "key_file": "/k.pem", "min_version": "1.1"}}`), "/gateway/tls/min_version", `use "1.2" (the default) or "1.3"`, true, nil, nil, 1},
		{"tls unknown key", gw(`{"tls": {"cert_file": "/c.pem", "key_file": "/k.pem", "ca_file": "/ca.pem"}}`), "/gateway/tls/ca_file", `ca_file`, true, nil, nil, 1},
		{"origin with path", gw(`{"allowed_origins": ["https://app.example.com/"]}`), "/gateway/allowed_origins/0", `gateway.allowed_origins[0] "https://app.example.com/" is not an origin`, true, nil, nil, 1},
		{"origin wildcard", gw(`{"allowed_origins": ["*"]}`), "/gateway/allowed_origins/0", `is not an origin`, true, nil, nil, 1},
		{"identity negative uid", gw(`{"identities": {"alice": {"uids": [-1]}}}`), "/gateway/identities/alice/uids/0", `identity "alice" uids[0] is -1; it must be at least 0`, true, nil, nil, 0},
		{"identity uid string", gw(`{"identities": {"alice": {"uids": ["1000"]}}}`), "/gateway/identities/alice/uids/0", `is a string, not a whole number`, true, nil, nil, 0},
		{"identity uid huge", gw(`{"identities": {"alice": {"uids": [4294967295]}}}`), "/gateway/identities/alice/uids/0", `it must be at most 4294967294`, true, nil, nil, 0},
		{"uid under two identities", gw(`{"identities": {"alice": {"uids": [1000]}, "bob": {"uids": [1001, 1000]}}}`), "/gateway/identities/bob/uids/1", `uid 1000 is listed under identities "alice" and "bob"; a peer must be exactly one identity: remove one of them`, false, nil, nil, 1},
		{"oidc without audience", gw(`{"oidc": {"issuer": "https://login.example.com"}}`), "/gateway/oidc", `gateway.oidc has no "audience"`, true, nil, nil, 1},
		{"oidc http issuer", gw(`{"oidc": {"issuer": "http://login.example.com", "audience": "https://m/mcp"}}`), "/gateway/oidc/issuer", `is plain http on a host other than loopback`, false, nil, nil, 1},
		{"oidc alg none", gw(`{"oidc": {"issuer": "https://i", "audience": "https://m/mcp", "allowed_algs": ["none"]}}`), "/gateway/oidc/allowed_algs/0", `"none" proves nothing`, true, nil, nil, 1},
		{"oidc alg HS256", gw(`{"oidc": {"issuer": "https://i", "audience": "https://m/mcp", "allowed_algs": ["RS256", "HS256"]}}`), "/gateway/oidc/allowed_algs/1", `is a shared-key algorithm`, true, nil, nil, 1},
		{"oidc skew too long", gw(`{"oidc": {"issuer": "https://i", "audience": "https://m/mcp", "max_clock_skew": "10m"}}`), "/gateway/oidc/max_clock_skew", `is more than 5m0s`, false, nil, nil, 1},
		{"oidc unknown key", gw(`{"oidc": {"issuer": "https://i", "audience": "https://m/mcp", "audiences": []}}`), "/gateway/oidc/audiences", `did you mean "audience"?`, true, nil, nil, 1},
		{"identity oidc without gateway oidc", gw(`{"identities": {"alice": {"oidc": {"subjects": ["u1"]}}}}`), "/gateway/identities/alice/oidc", `gateway.oidc names no issuer`, false, nil, nil, 1},
		{"identity oidc empty", gw(`{"oidc": {"issuer": "https://i", "audience": "https://m/mcp"}, "identities": {"alice": {"oidc": {}}}}`), "/gateway/identities/alice/oidc", `lists no subjects, groups or scopes`, true, nil, nil, 1},
		{"subject under two identities", gw(`{"oidc": {"issuer": "https://i", "audience": "https://m/mcp"}, "identities": {"alice": {"oidc": {"subjects": ["u1"]}}, "bob": {"oidc": {"subjects": ["u2", "u1"]}}}}`), "/gateway/identities/bob/oidc/subjects/1", `subject "u1" is listed under identities "alice" and "bob"; a token's subject must be exactly one identity: remove one of them`, false, nil, nil, 1},
		{"uid twice in one identity", gw(`{"identities": {"alice": {"uids": [1000, 1000]}}}`), "/gateway/identities/alice/uids/1", `uid 1000 is listed twice under identity "alice"`, false, nil, nil, 1},
		{"unix group bad", gw(`{"identities": {"alice": {"unix_groups": ["dev s"]}}}`), "/gateway/identities/alice/unix_groups/0", `identity "alice" unix_groups[0] "dev s" is not a group name or gid`, true, nil, nil, 0},
		{"unix group number", gw(`{"identities": {"alice": {"unix_groups": [1500]}}}`), "/gateway/identities/alice/unix_groups/0", `is a number, not a string: quote it`, true, nil, nil, 0},
		{"unknown server", gw(`{"identities": {"alice": {"uids": [1000], "servers": ["fils"]}}}`), "/gateway/identities/alice/servers/0", `identity "alice" lists server "fils", which is not in mcpServers: did you mean "files"?; list servers by their name in mcpServers: "files"`, false, nil, nil, 1},
		{"identity policy pin", gw(`{"identities": {"alice": {"uids": [1000], "policy": {"pin": "off"}}}}`), "/gateway/identities/alice/policy/pin", `"pin" is not allowed in an identity's policy: identity policies only restrict access and limits`, true, nil, nil, 1},
		{"identity policy tools", gw(`{"identities": {"alice": {"uids": [1000], "policy": {"tools": {"t": {"rate": "1/s"}}}}}}`), "/gateway/identities/alice/policy/tools", `the group's own policy (the server's "policy" or "defaults.policy") keeps it`, true, nil, nil, 1},
		{"identity policy rate", gw(`{"identities": {"alice": {"uids": [1000], "policy": {"rate": "1/s"}}}}`), "/gateway/identities/alice/policy/rate", `write "global": {"rate": ...}`, true, nil, nil, 1},
		{"identity policy typo", gw(`{"identities": {"alice": {"uids": [1000], "policy": {"dney": ["x"]}}}}`), "/gateway/identities/alice/policy/dney", `did you mean "deny"?`, true, nil, nil, 1},
		{"identity policy secret", gw(`{"identities": {"alice": {"uids": [1000], "policy": {"deny": ["${secret:x}"]}}}}`), "/gateway/identities/alice/policy/deny/0", `secret`, false, nil, okSecret, 1},
		// metrics
		{"metrics no listen", mt(`{}`), "/metrics", `metrics has no "listen"`, true, nil, nil, 1},
		{"metrics typo", mt(`{"listen": "127.0.0.1:9464", "token": ["p"]}`), "/metrics/token", `did you mean "tokens"?`, true, nil, nil, 1},
		{"metrics listen no port", mt(`{"listen": "127.0.0.1"}`), "/metrics/listen", `metrics.listen "127.0.0.1" is not HOST:PORT: write "127.0.0.1:9464"`, true, nil, nil, 1},
		{"metrics listen port 0", mt(`{"listen": "127.0.0.1:0"}`), "/metrics/listen", `port "0" is not a number from 1 to 65535`, false, nil, nil, 1},
		{"metrics off loopback without tls", mt(`{"listen": "0.0.0.0:9464", "tokens": ["p"]}`), "/metrics/listen", `plain HTTP would show the metrics to the network: set "gateway": {"tls"`, false, nil, nil, 1},
		{"metrics off loopback without tokens", `{"mcpServers": {}, "gateway": {"tls": {"cert_file": "/c.pem", "key_file": "/k.pem"}}, "metrics": {"listen": "192.0.2.1:9464"}}`, "/metrics/listen", "no metrics.tokens may scrape it: make a token with `moat token create prometheus`", false, nil, nil, 1},
		{"metrics bad token", mt(`{"listen": "127.0.0.1:9464", "tokens": ["a b"]}`), "/metrics/tokens/0", `metrics.tokens[0] "a b" is not a token name`, true, nil, nil, 1},
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
