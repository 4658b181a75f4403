package config

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustParse(t *testing.T, src string, vars map[string]string) *Config {
	t.Helper()
	cfg, err := Parse("/cfg/moat.json", []byte(src), &LoadOptions{
		Getenv: env(vars),
		Secret: func(name string) (string, error) {
			if name == "empty" {
				return "", nil
			}
			return "secret-" + name, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSandboxDefaultsMerge(t *testing.T) {
	cfg := mustParse(t, `{
  "defaults": {"sandbox": {"mode": "strict", "memory": "2GiB", "cpu": 60, "max_files": 64,
    "fs": {"read": ["/a"], "write": ["/w0"]}, "net": {"connect": [1]}, "network": false}},
  "mcpServers": {
    "own": {"description": "d", "command": "x", "sandbox": {"memory": "1GiB", "max_procs": 5, "fs": {"write": ["/w"]}, "network": true}},
    "one": {"description": "d", "command": "x"},
    "two": {"description": "d", "command": "x"},
    "web": {"description": "d", "url": "https://h/"}
  }
}`, nil)
	no := false
	yes := true
	inherited := Sandbox{Mode: "strict", Memory: 2 << 30, CPU: time.Minute, MaxFiles: 64,
		FSRead: []string{"/a"}, FSWrite: []string{"/w0"}, NetConnect: []uint16{1}, Network: &no}
	for name, want := range map[string]Sandbox{
		// The server's own fs replaces the default's as a whole: its missing
		// "read" means nothing is readable, not the default's /a.
		"own": {Mode: "strict", Memory: 1 << 30, CPU: time.Minute, MaxFiles: 64, MaxProcs: 5,
			FSRead: []string{}, FSWrite: []string{"/w"}, NetConnect: []uint16{1}, Network: &yes},
		"one": inherited,
		"two": inherited,
		"web": {},
	} {
		if diff := cmp.Diff(want, cfg.Servers[name].Sandbox); diff != "" {
			t.Errorf("server %s sandbox (-want +got):\n%s", name, diff)
		}
	}
	// Servers never share the default's lists or flag.
	one, two := cfg.Servers["one"].Sandbox, cfg.Servers["two"].Sandbox
	one.FSRead[0], one.NetConnect[0], *one.Network = "/changed", 9, true
	if two.FSRead[0] != "/a" || two.NetConnect[0] != 1 || *two.Network || cfg.Defaults.Sandbox.FSRead[0] != "/a" {
		t.Error("changing one server's sandbox changed another's or the defaults")
	}

	plain := mustParse(t, `{"mcpServers": {"s": {"description": "d", "command": "x"}}}`, nil).Servers["s"].Sandbox
	if diff := cmp.Diff(Sandbox{Mode: "best-effort"}, plain); diff != "" {
		t.Errorf("a stdio server without any sandbox keys (-want +got):\n%s", diff)
	}

	// Equal sees the effective sandbox, so a defaults edit restarts servers.
	a := mustParse(t, `{"defaults": {"sandbox": {"memory": "1GiB"}}, "mcpServers": {"s": {"description": "d", "command": "x"}}}`, nil)
	b := mustParse(t, `{"defaults": {"sandbox": {"memory": "2GiB"}}, "mcpServers": {"s": {"description": "d", "command": "x"}}}`, nil)
	if a.Servers["s"].Equal(b.Servers["s"]) {
		t.Error("Equal ignores a change of defaults.sandbox")
	}
}

func TestInheritEnvAndPaths(t *testing.T) {
	vars := map[string]string{"HOME": "/home/u/${NOT_AGAIN}", "D": "/srv/data"}
	cfg := mustParse(t, srv(`"description": "d", "command": "x", "inherit_env": ["LANG", "NODE_*", "_x", "a1*"], "cwd": "~/p/../q/",
		"sandbox": {"fs": {"read": ["~", "${D}/in", "/a//b/"], "write": ["${D}"]}}`), vars)
	s := cfg.Servers["s"]
	if diff := cmp.Diff([]string{"LANG", "NODE_*", "_x", "a1*"}, s.InheritEnv); diff != "" {
		t.Errorf("InheritEnv (-want +got):\n%s", diff)
	}
	// ~ takes HOME as it is: its "${...}" is not expanded a second time.
	if s.Cwd != "/home/u/${NOT_AGAIN}/q" {
		t.Errorf("Cwd = %q", s.Cwd)
	}
	if diff := cmp.Diff([]string{"/home/u/${NOT_AGAIN}", "/srv/data/in", "/a/b"}, s.Sandbox.FSRead); diff != "" {
		t.Errorf("FSRead (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/srv/data"}, s.Sandbox.FSWrite); diff != "" {
		t.Errorf("FSWrite (-want +got):\n%s", diff)
	}

	none := mustParse(t, srv(`"description": "d", "command": "x"`), nil).Servers["s"]
	empty := mustParse(t, srv(`"description": "d", "command": "x", "inherit_env": []`), nil).Servers["s"]
	if none.InheritEnv != nil || empty.InheritEnv == nil || len(empty.InheritEnv) != 0 {
		t.Errorf("InheritEnv absent = %#v, [] = %#v; want nil and empty non-nil", none.InheritEnv, empty.InheritEnv)
	}
	if none.Cwd != "" || none.Sandbox.FSRead != nil || none.Sandbox.FSWrite != nil || none.Sandbox.NetConnect != nil || none.Sandbox.Network != nil {
		t.Errorf("absent keys must stay unset: %+v", none)
	}
}

func TestPlainHTTPOnlyToLoopbackOrOptIn(t *testing.T) {
	for _, u := range []string{
		"http://127.0.0.1:1/mcp", "http://127.9.9.9/", "http://[::1]:8080/mcp", "http://localhost:3000/",
		"http://LOCALHOST./mcp", "http://[::ffff:127.0.0.1]/", "https://example.com/mcp", "https://10.0.0.1/",
	} {
		if _, err := Parse("/cfg/moat.json", []byte(srv(`"description": "d", "url": "`+u+`"`)), nil); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	cfg := mustParse(t, srv(`"description": "d", "url": "http://example.com/mcp", "allow_insecure_http": true`), nil)
	if s := cfg.Servers["s"]; !s.AllowInsecureHTTP || s.URL != "http://example.com/mcp" {
		t.Errorf("opt-in server = %+v", s)
	}
}

func TestSecretHeaders(t *testing.T) {
	cfg := mustParse(t, srv(`"description": "d", "url": "https://h/", "headers": {
		"Authorization": "Bearer ${secret:tok}", "X-Plain": "v ${V}", "X-Empty": "${secret:empty}", "X-Lit": "secret-tok"}`),
		map[string]string{"V": "1"})
	s := cfg.Servers["s"]
	if diff := cmp.Diff([]string{"Authorization", "X-Empty"}, s.SecretHeaders); diff != "" {
		t.Errorf("SecretHeaders (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"secret-tok"}, s.SecretValues); diff != "" {
		t.Errorf("SecretValues (-want +got):\n%s", diff)
	}
	if s := mustParse(t, srv(`"description": "d", "url": "https://h/", "headers": {"A": "b"}`), nil).Servers["s"]; s.SecretHeaders != nil {
		t.Errorf("SecretHeaders without secrets = %#v, want nil", s.SecretHeaders)
	}
}

func TestPolicyKeptRawAndExpanded(t *testing.T) {
	cfg := mustParse(t, `{"defaults": {"policy": {"rate": "1/s"}}, "mcpServers": {"s": {"description": "d", "command": "x",
		"policy": {"deny": ["<${V}> & \"q\" \u00e9"], "max_args_bytes": 1000, "read_only_only": false, "allow": [], "args": {"t": {"${KEY}": {"max_length": 5}}}}}}}`,
		map[string]string{"V": "v"})
	want := `{"deny":["<v> & \"q\" é"],"max_args_bytes":1000,"read_only_only":false,"allow":[],"args":{"t":{"${KEY}":{"max_length":5}}}}`
	if got := string(cfg.Servers["s"].Policy); got != want {
		t.Errorf("Policy =\n %s\nwant\n %s", got, want)
	}
	if got := string(cfg.Defaults.Policy); got != `{"rate":"1/s"}` {
		t.Errorf("Defaults.Policy = %s", got)
	}
	var v any
	if err := json.Unmarshal(cfg.Servers["s"].Policy, &v); err != nil {
		t.Errorf("Policy does not decode: %v", err)
	}
	if p := mustParse(t, srv(`"description": "d", "command": "x"`), nil); p.Servers["s"].Policy != nil || p.Defaults.Policy != nil {
		t.Error("an absent policy must be nil")
	}
}

func TestTopLevelDefaults(t *testing.T) {
	cfg := mustParse(t, `{"mcpServers": {"r": {"description": "d", "url": "https://h/"}}}`, nil)
	want := Config{Audit: Audit{Fsync: "batch", OnFailure: "deny", Rotate: DefaultRotate, SyslogFormat: "json"}, Secrets: Secrets{Backend: "auto"},
		Gateway: Gateway{SocketMode: 0o660, PerUserIdle: DefaultPerUserIdle}}
	got := Config{Audit: cfg.Audit, Secrets: cfg.Secrets, Defaults: cfg.Defaults, Gateway: cfg.Gateway}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults of absent blocks (-want +got):\n%s", diff)
	}
	if tls := cfg.Servers["r"].TLS; tls.MinVersion != "1.2" || tls.Pins != nil {
		t.Errorf("TLS default = %+v, want MinVersion 1.2", tls)
	}
	cfg = mustParse(t, `{"mcpServers": {}, "audit": {"path": "", "rotate": {"keep": 0, "max_age": null}}}`, nil)
	if cfg.Audit.Path != "" || cfg.Audit.Rotate != (Rotate{}) {
		t.Errorf("empty audit.path and zero rotate = %+v", cfg.Audit)
	}
}

func TestAllProblemsReportedNewKeys(t *testing.T) {
	src := `{
  "defaults": {"sandbox": {"memory": "1GB"}},
  "mcpServers": {
    "a": {"description": "d", "command": "x", "cwd": "rel", "sandbox": {"max_files": 1}},
    "b": {"description": "d", "url": "http://example.com/", "tls": {"pins": ["x"]}, "policy": {"p": "${NOPE}"}}
  },
  "audit": {"fsync": "never"},
  "secrets": {"backend": "vault"}
}`
	err := parseErr(t, src, &LoadOptions{Getenv: env(nil)})
	var got []string
	for _, p := range err.Problems {
		got = append(got, p.Path)
	}
	want := []string{
		"/defaults/sandbox/memory",
		"/mcpServers/a/cwd",
		"/mcpServers/a/sandbox/max_files",
		"/mcpServers/b/url",
		"/mcpServers/b/tls/pins/0",
		"/mcpServers/b/policy/p",
		"/audit/fsync",
		"/secrets/backend",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problem paths (-want +got):\n%s\nerror:\n%v", diff, err)
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   any
		want uint64
	}{
		{"0", 0}, {"100", 100}, {"100B", 100}, {"100b", 100}, {"64KiB", 64 << 10}, {"64kib", 64 << 10},
		{"512MiB", 512 << 20}, {"512MIB", 512 << 20}, {"1GiB", 1 << 30}, {"007KiB", 7 << 10},
		{jsonNumber("1048576"), 1 << 20}, {float64(4096), 4096}, {7, 7}, {int64(8), 8}, {uint64(9), 9},
		{"8589934591GiB", 8589934591 << 30}, {jsonNumber("9223372036854775807"), 1<<63 - 1},
	} {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%#v) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		in   any
		frag string
	}{
		{"1GB", `write 1GiB: units are B, KiB, MiB and GiB`}, {"10mb", "write 10MiB"}, {"5K", "write 5KiB"}, {"2g", "write 2GiB"},
		{"1TiB", sizeForms}, {"1.5GiB", sizeForms}, {"1 GiB", sizeForms}, {" 1GiB", sizeForms}, {"GiB", sizeForms},
		{"", sizeForms}, {"-1", sizeForms}, {"+1", sizeForms}, {"１KiB", sizeForms}, {"1KiBB", sizeForms},
		{"8589934592GiB", "too large"}, {jsonNumber("9223372036854775808"), "too large"}, {"99999999999999999999", "too large"},
		{jsonNumber("-1"), "cannot be negative"}, {-1, "cannot be negative"}, {jsonNumber("1e3"), "whole number"},
		{1.5, "whole number"}, {nil, "no size given"}, {true, "of type bool"},
	} {
		if n, err := ParseSize(tt.in); err == nil {
			t.Errorf("ParseSize(%#v) = %d, want an error", tt.in, n)
		} else if !strings.Contains(err.Error(), tt.frag) {
			t.Errorf("ParseSize(%#v) error %q, want it to contain %q", tt.in, err, tt.frag)
		}
	}
}
