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
	yes, no := true, false
	defaultSandbox := Sandbox{
		Mode: "strict", Memory: 2 << 30, CPU: time.Hour, MaxFiles: 512, MaxProcs: 64, MaxFileSize: 64 << 20,
		FSRead: []string{"/home/u/shared"}, FSWrite: []string{"/tmp"}, NetConnect: []uint16{443}, Network: &no,
	}
	want := map[string]*Server{
		"files": {
			Name: "files", Description: "Read and search files in my project", Type: Stdio, Command: "npx",
			Args:       []string{"-y", "@modelcontextprotocol/server-filesystem", "/home/u/project"},
			Env:        map[string]string{"API_KEY": "k-123", "PLAIN": "$HOME stays"},
			InheritEnv: []string{"LANG", "NODE_*"},
			Cwd:        "/home/u/project",
			Sandbox: Sandbox{
				Mode: "best-effort", Memory: 1 << 30, CPU: 10 * time.Minute, MaxFiles: 1024, MaxProcs: 256, MaxFileSize: 1 << 20,
				FSRead: []string{"/home/u/project", "/home/u/.npm"}, FSWrite: []string{}, NetConnect: []uint16{}, Network: &yes,
			},
			Enabled: true, Features: Features{Tools: true, Resources: true, Prompts: false},
			Timeout: Timeouts{2 * time.Minute, 15 * time.Second, 500 * time.Millisecond, 3 * time.Minute},
			Policy: json.RawMessage(`{"allow":["read_*","list_*"],"rate":"10/s","burst":20,"max_args_bytes":"256KiB","max_result_bytes":"24MiB",` +
				`"args":{"read_file":{"path":{"prefix":["/home/u/project"],"max_length":4096}}},"deny":["<b> & u"],"pin":"strict","destructive":"deny"}`),
			SecretValues:    []string{"k-123"},
			MaxMessageBytes: 48 << 20, // twice its policy's max_result_bytes
		},
		"scratch": {
			Name: "scratch", Description: "A scratch server that takes the default sandbox", Type: Stdio,
			Command: "/usr/bin/env", Args: []string{"true"}, Sandbox: defaultSandbox,
			Enabled: true, Features: Features{true, true, true},
			Timeout:         Timeouts{30 * time.Second, 10 * time.Second, 10 * time.Second, 0},
			MaxMessageBytes: DefaultMaxMessageBytes,
		},
		"remote": {
			Name: "remote", Description: "Company knowledge base", Type: SSE, URL: "https://mcp.example.com/sse",
			Headers:       map[string]string{"X-Team": "infra", "Authorization": "Bearer t-456"},
			OAuthClientID: "moat-u", OAuthScopes: []string{"read"},
			AllowPrivateNetwork: true, PerUser: true,
			TLS: TLS{
				MinVersion: "1.3", CAFile: "/home/u/certs/ca.pem", CertFile: "/home/u/certs/client.pem", KeyFile: "/etc/moat/client.key",
				Pins: []string{"sha256/mGobcTX0mGFQql+gAo/uqmbNrz7WoAo1XdhuBC9/tJQ=", "sha256/VNANhndYzvgWvEaF9Y4ye5SXErB+vRfDSF8//J6fUTM="},
			},
			SecretHeaders: []string{"Authorization"},
			Enabled:       true, Features: Features{true, true, true},
			Timeout:         Timeouts{30 * time.Second, 10 * time.Second, time.Hour, 0},
			Policy:          json.RawMessage(`{"pin":"strict"}`),
			SecretValues:    []string{"t-456"},
			MaxMessageBytes: 64 << 20,
		},
		"off": {
			Name: "off", Description: "disabled for now", Type: HTTP, TypeInferred: true, URL: "http://127.0.0.1:9/mcp",
			TLS:     TLS{MinVersion: "1.2"},
			Enabled: false, Features: Features{true, true, true},
			Timeout:         Timeouts{30 * time.Second, 10 * time.Second, 10 * time.Second, 0},
			MaxMessageBytes: DefaultMaxMessageBytes,
		},
		"lan": {
			Name: "lan", Description: "A test server on the LAN", Type: HTTP, TypeInferred: true, URL: "http://192.168.1.20:8080/mcp",
			AllowInsecureHTTP: true, TLS: TLS{MinVersion: "1.2"},
			Enabled: true, Features: Features{true, true, true},
			Timeout:         Timeouts{30 * time.Second, 10 * time.Second, 10 * time.Second, 0},
			MaxMessageBytes: DefaultMaxMessageBytes,
		},
	}
	if diff := cmp.Diff(want, cfg.Servers); diff != "" {
		t.Errorf("full.json servers (-want +got):\n%s", diff)
	}
	wantTop := Config{
		Path: cfg.Path, Hash: cfg.Hash, Servers: cfg.Servers,
		Defaults: Defaults{
			Sandbox: Sandbox{ // as written: Mode is not filled in here
				Mode: "strict", Memory: 2 << 30, CPU: time.Hour, MaxFiles: 512, MaxProcs: 64, MaxFileSize: 64 << 20,
				FSRead: []string{"/home/u/shared"}, FSWrite: []string{"/tmp"}, NetConnect: []uint16{443}, Network: &no,
			},
			Policy: json.RawMessage(`{"deny":["delete_*"],"destructive":"deny","args":{"read_file":{"path":{"prefix":["/home/u/project"]}}}}`),
		},
		Audit: Audit{
			Path: "/home/u/.local/state/moat/audit.jsonl", Fsync: "always", OnFailure: "continue", RecordArgs: true,
			Rotate: Rotate{MaxSize: 100 << 20, MaxAge: 24 * time.Hour, Keep: 10}, CheckpointEvery: 500, SyslogFormat: "json",
		},
		Secrets: Secrets{Backend: "keychain", RequireEncryption: true},
		Gateway: Gateway{
			SocketMode: 0o640, SocketGroup: "moat",
			TLS:            &GatewayTLS{CertFile: "/home/u/.config/moat/cert.pem", KeyFile: "/etc/moat/key.pem", MinVersion: "1.3"},
			AllowedOrigins: []string{"https://app.example.com", "http://localhost:6274"},
			PerUserIdle:    30 * time.Minute,
			Identities: map[string]*Identity{
				"alice": {
					Name: "alice", UIDs: []int{1000, 0}, Groups: []string{"devs", "1500"}, Servers: []string{"files", "remote"},
					Policy: json.RawMessage(`{"deny":["write_*"],"resources":{"deny":["file:///etc/*"]},"args":{"read_*":{"path":{"prefix":["/home/u/project"]}}},"global":{"rate":"60/m","max_concurrent":2}}`),
				},
				"ci":     {Name: "ci", Groups: []string{"ci"}, Servers: []string{}},
				"laptop": {Name: "laptop", Tokens: []string{"laptop", "phone"}},
			},
		},
	}
	if diff := cmp.Diff(wantTop, *cfg); diff != "" {
		t.Errorf("full.json top level (-want +got):\n%s", diff)
	}
	for name, s := range cfg.Servers {
		if s.Policy != nil && !json.Valid(s.Policy) {
			t.Errorf("server %s: Policy is not valid JSON: %s", name, s.Policy)
		}
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
	if !a.Equal(load(base + `, "policy": {"deny": ["*"]}`)) {
		t.Error("a policy change alone must not restart the server")
	}
	for _, extra := range []string{
		`"inherit_env": ["LANG"]`,
		`"cwd": "/tmp"`,
		`"sandbox": {"mode": "strict"}`,
		`"sandbox": {"memory": "1GiB"}`,
		`"sandbox": {"cpu": "1m"}`,
		`"sandbox": {"max_files": 64}`,
		`"sandbox": {"max_procs": 9}`,
		`"sandbox": {"max_file_size": 1}`,
		`"sandbox": {"fs": {}}`, // nothing allowed, against no restriction
		`"sandbox": {"fs": {"read": ["/a"]}}`,
		`"sandbox": {"net": {}}`,
		`"sandbox": {"network": true}`,
	} {
		if a.Equal(load(base + ", " + extra)) {
			t.Errorf("Equal ignores the change to %s", extra)
		}
	}
	sandboxed := load(base + `, "sandbox": {"fs": {"read": ["/a"]}, "network": false}`)
	if !sandboxed.Equal(load(base + `, "sandbox": {"fs": {"read": ["/a"], "write": []}, "network": false}`)) {
		t.Error(`a missing "write" list and an empty one are the same sandbox`)
	}
	if sandboxed.Equal(load(base+`, "sandbox": {"fs": {"read": ["/b"]}, "network": false}`)) ||
		sandboxed.Equal(load(base+`, "sandbox": {"fs": {"read": ["/a"]}, "network": true}`)) {
		t.Error("Equal ignores a change inside the sandbox")
	}
	remote := `"description": "d", "url": "https://h/", "headers": {"X": "v"}`
	r := load(remote)
	for _, extra := range []string{
		`"allow_insecure_http": true`,
		`"allow_private_network": true`,
		`"tls": {"min_version": "1.3"}`,
		`"tls": {"ca_file": "/ca.pem"}`,
		`"tls": {"cert_file": "/c.pem", "key_file": "/k.pem"}`,
		`"tls": {"pins": ["sha256/mGobcTX0mGFQql+gAo/uqmbNrz7WoAo1XdhuBC9/tJQ="]}`,
	} {
		if r.Equal(load(remote + ", " + extra)) {
			t.Errorf("Equal ignores the change to %s", extra)
		}
	}
	// The same header value, once literal and once from the secret store:
	// only the second is refused over plain HTTP and redacted by name.
	fromSecret, err := Parse("/cfg/moat.json", []byte(srv(`"description": "d", "url": "https://h/", "headers": {"X": "${secret:x}"}`)),
		&LoadOptions{Secret: func(string) (string, error) { return "v", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if r.Equal(fromSecret.Servers["s"]) {
		t.Error("Equal ignores that a header's value now comes from the secret store")
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

// TestGatewayChangeKeepsServers: a reload that only changes the gateway
// block (identities, their servers and policies, the socket) keeps every
// upstream running: no server compares unequal.
func TestGatewayChangeKeepsServers(t *testing.T) {
	const servers = `"mcpServers": {"files": {"description": "d", "command": "x"}, "kb": {"description": "d", "url": "https://h/"}}`
	before := mustParse(t, `{`+servers+`}`, nil)
	after := mustParse(t, `{`+servers+`, "gateway": {"socket_mode": "0600", "identities": {"alice": {"uids": [1000], "servers": ["kb"], "policy": {"deny": ["*"]}}}}}`, nil)
	for name, s := range before.Servers {
		if !s.Equal(after.Servers[name]) {
			t.Errorf("server %s compares unequal after a gateway-only change, so a reload would restart it", name)
		}
	}
	if after.Gateway.SocketMode != 0o600 || after.Gateway.Identities["alice"].Servers[0] != "kb" {
		t.Errorf("gateway = %+v", after.Gateway)
	}
}

// TestGatewayOIDC: gateway.oidc's defaults (resource = audience, groups
// claim, skew, algorithms) and an identity's oidc block as read.
func TestGatewayOIDC(t *testing.T) {
	cfg := mustParse(t, `{"mcpServers": {}, "gateway": {"oidc": {"issuer": "http://127.0.0.1:8443/realms/x", "audience": "https://moat.example.com/mcp"},
		"identities": {"alice": {"oidc": {"subjects": ["u1"], "groups": ["devs"]}}, "ops": {"oidc": {"scopes": ["mcp:ops"]}}}}}`, nil)
	want := &GatewayOIDC{Issuer: "http://127.0.0.1:8443/realms/x", Audience: "https://moat.example.com/mcp", Resource: "https://moat.example.com/mcp",
		GroupsClaim: "groups", MaxClockSkew: 60 * time.Second, AllowedAlgs: []string{"RS256", "ES256"}}
	if diff := cmp.Diff(want, cfg.Gateway.OIDC); diff != "" {
		t.Errorf("gateway.oidc (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&IdentityOIDC{Subjects: []string{"u1"}, Groups: []string{"devs"}}, cfg.Gateway.Identities["alice"].OIDC); diff != "" {
		t.Errorf("alice's oidc (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&IdentityOIDC{Scopes: []string{"mcp:ops"}}, cfg.Gateway.Identities["ops"].OIDC); diff != "" {
		t.Errorf("ops' oidc (-want +got):\n%s", diff)
	}
}

// TestPerUserSecrets: with LoadOptions.UserSecret, a per-user server's
// ${secret:NAME} is the identity's own value and every other server's is
// the shared one, so one load per identity gives each its own credentials.
func TestPerUserSecrets(t *testing.T) {
	shared := map[string]string{"files-api-key": "k-123", "kb-token": "t-456"}
	var asked []string
	cfg, err := Load(copyFile(t, filepath.Join(testdata, "valid", "full.json")), &LoadOptions{
		Getenv: env(map[string]string{"HOME": "/home/u", "USER": "u"}),
		Secret: func(name string) (string, error) { return shared[name], nil },
		UserSecret: func(server, name string) (string, error) {
			asked = append(asked, server+"/"+name)
			return "alice-" + name, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Servers["remote"].Headers["Authorization"]; got != "Bearer alice-kb-token" {
		t.Errorf("per-user server's header = %q, want the identity's secret", got)
	}
	if diff := cmp.Diff([]string{"alice-kb-token"}, cfg.Servers["remote"].SecretValues); diff != "" {
		t.Errorf("per-user server's secret values (-want +got):\n%s", diff)
	}
	if got := cfg.Servers["files"].Env["API_KEY"]; got != "k-123" {
		t.Errorf("shared server's env = %q, want the shared secret", got)
	}
	if diff := cmp.Diff([]string{"remote/kb-token"}, asked); diff != "" {
		t.Errorf("UserSecret was asked for (-want +got):\n%s", diff)
	}
}

// TestTokenExchangeConfig: a per-user server's token_exchange client
// secret is the gateway's, read from the shared store (never asked of
// each identity) and redacted like every secret; a changed client secret
// restarts the server.
func TestTokenExchangeConfig(t *testing.T) {
	src := `{"mcpServers": {"gh": {"description": "d", "url": "https://mcp.example.com/mcp", "per_user": true,
		"oauth_client_id": "moat-gw", "oauth_scopes": ["repo"],
		"token_exchange": {"issuer": "https://auth.example.com", "client_secret": "${secret:gw-secret}", "audience": "https://auth.example.com/api", "token_url": "https://auth.example.com/token"}}},
		"gateway": {"oidc": {"issuer": "https://idp.example.com", "audience": "https://moat.example.com/mcp"}}}`
	path := filepath.Join(t.TempDir(), "moat.json")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var asked []string
	cfg, err := Load(path, &LoadOptions{
		Getenv: env(map[string]string{"HOME": "/home/u"}),
		Secret: func(name string) (string, error) { return "shared-" + name, nil },
		UserSecret: func(server, name string) (string, error) {
			asked = append(asked, server+"/"+name)
			return "alice-" + name, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Servers["gh"]
	want := &TokenExchange{Issuer: "https://auth.example.com", ClientSecret: "shared-gw-secret", Audience: "https://auth.example.com/api", TokenURL: "https://auth.example.com/token"}
	if diff := cmp.Diff(want, s.TokenExchange); diff != "" {
		t.Errorf("token_exchange (-want +got):\n%s", diff)
	}
	if len(asked) != 0 {
		t.Errorf("the client secret was asked of an identity: %v", asked)
	}
	if !slices.Contains(s.SecretValues, "shared-gw-secret") {
		t.Errorf("the client secret is not among the values redacted: %d values", len(s.SecretValues))
	}
	other := *s
	te := *s.TokenExchange
	te.ClientSecret = "rotated"
	other.TokenExchange = &te
	if s.Equal(&other) {
		t.Error("a server whose client secret changed is Equal to the old one: a reload would keep the old secret")
	}
}
