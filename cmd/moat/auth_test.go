package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/secrets"
)

// authEnv writes a config with an http server at url, an http server with a
// client id, and a stdio server, and returns its path and a store dir.
func authEnv(t *testing.T, url string) (cfg, dir string) {
	t.Helper()
	dir = secretEnv(t)
	cfg = filepath.Join(t.TempDir(), "moat.json")
	body := `{"mcpServers": {
  "remote": {"description": "remote", "url": "` + url + `"},
  "other": {"description": "other", "url": "https://mcp.example.com/mcp", "oauth_client_id": "cid"},
  "local": {"description": "local", "command": "true"}}}`
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

func runAuth(t *testing.T, cfg string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	path := func() (string, error) { return cfg, nil }
	code = authCommand(t.Context(), args, path, &out, &errb)
	return code, out.String(), errb.String()
}

func TestAuthUsage(t *testing.T) {
	cfg, dir := authEnv(t, "http://127.0.0.1:1/mcp")
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, exitUsage, "moat auth needs a subcommand"},
		{[]string{"login"}, exitUsage, "takes exactly one server NAME"},
		{[]string{"logout", "a", "b"}, exitUsage, "takes exactly one server NAME"},
		{[]string{"status", "x"}, exitUsage, "takes no arguments"},
		{[]string{"frob"}, exitUsage, `unknown subcommand "frob"`},
		{[]string{"logout", "--adopt-dynamic-mcp", "remote"}, exitUsage, "--adopt-dynamic-mcp goes with"},
		{[]string{"login", "--dir", dir, "--backend", "file", "nope"}, exitUsage, "moat: hint: the servers are: local, other, remote"},
		{[]string{"login", "--dir", dir, "--backend", "file", "local"}, exitUsage, "runs a command (stdio)"},
		{[]string{"status", "--identity", "alice"}, exitUsage, "--identity goes with `moat auth login NAME` or `moat auth logout NAME`"},
		{[]string{"login", "--dir", dir, "--backend", "file", "--identity", "alice", "remote"}, exitUsage, `no identity "alice" under gateway.identities`},
	} {
		code, _, errs := runAuth(t, cfg, tt.args...)
		if code != tt.code || !strings.Contains(errs, tt.stderr) {
			t.Errorf("moat auth %q: exit %d, stderr:\n%s\nwant exit %d and %q", tt.args, code, errs, tt.code, tt.stderr)
		}
	}
}

// TestAuthAdoptStatusLogout: a migrated dynamic-mcp token shows up for a
// server only after `login --adopt-dynamic-mcp`, which names the host it
// goes to; logout removes it; the value is never printed.
func TestAuthAdoptStatusLogout(t *testing.T) {
	cfg, dir := authEnv(t, "https://api.example.com/mcp")
	flags := []string{"--backend", "file", "--dir", dir}
	code, out, errs := runAuth(t, cfg, append([]string{"status"}, flags...)...)
	if code != exitOK || !strings.Contains(out, "remote  api.example.com") || strings.Contains(out, "local") {
		t.Fatalf("status on an empty store: exit %d\n%s%s", code, out, errs)
	}
	if strings.Contains(out, " yes ") {
		t.Errorf("status shows a token in an empty store:\n%s", out)
	}

	s, err := secrets.Open(t.Context(), &secrets.Options{Backend: secrets.BackendFile, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tok := `{"access_token":"` + secretCanary + `","expires_at":"2099-01-01T00:00:00Z"}`
	if err := s.Set(t.Context(), secrets.DynamicMCPPrefix+"remote", secrets.NewSecret(tok)); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runAuth(t, cfg, append([]string{"login", "remote", "--adopt-dynamic-mcp"}, flags...)...)
	if code != exitOK || !strings.Contains(errs, "Moat will send it to api.example.com only") {
		t.Fatalf("adopt: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = runAuth(t, cfg, append([]string{"status"}, flags...)...)
	line := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "remote ") {
			line = l
		}
	}
	if code != exitOK || !strings.Contains(line, " yes ") || !strings.Contains(line, " days ") || !strings.Contains(line, "encrypted file") {
		t.Errorf("status after adopt: exit %d, remote line %q; want a token, its expiry and the back end", code, line)
	}
	code, out, errs = runAuth(t, cfg, append([]string{"logout", "remote"}, flags...)...)
	if code != exitOK || !strings.Contains(out, `removed the token of "remote" (api.example.com)`) {
		t.Errorf("logout: exit %d\n%s%s", code, out, errs)
	}
	code, _, errs = runAuth(t, cfg, append([]string{"logout", "remote"}, flags...)...)
	if code != exitFailure || !strings.Contains(errs, "no token is stored") {
		t.Errorf("second logout: exit %d\n%s", code, errs)
	}
	code, _, errs = runAuth(t, cfg, append([]string{"login", "remote", "--adopt-dynamic-mcp"}, flags...)...)
	if code != exitFailure || !strings.Contains(errs, "moat: hint: run `moat secret migrate` first") {
		t.Errorf("adopt with nothing migrated: exit %d\n%s", code, errs)
	}
	if strings.Contains(out+errs, secretCanary) {
		t.Error("a token value was printed")
	}
}

// TestAuthLoginNoOAuth: a server that answers without a 401 needs no login,
// and the command says so instead of opening a browser.
func TestAuthLoginNoOAuth(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}`))
	}))
	defer srv.Close()
	cfg, dir := authEnv(t, srv.URL+"/mcp")
	authOpenBrowser = func(string) error {
		t.Error("a browser was opened for a server that needs no login")
		return nil
	}
	defer func() { authOpenBrowser = nil }()
	code, _, errs := runAuth(t, cfg, "login", "--backend", "file", "--dir", dir, "remote")
	if code != exitFailure || !strings.Contains(errs, "needs no OAuth token") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and that no token is needed", code, errs)
	}
}

// TestAuthLoginTokenExchange: a token_exchange server has nothing to log
// in to; `moat auth login` says so instead of storing a token nobody uses.
func TestAuthLoginTokenExchange(t *testing.T) {
	dir := secretEnv(t)
	cfg := filepath.Join(t.TempDir(), "moat.json")
	body := `{"mcpServers": {"tickets": {"description": "d", "url": "https://tickets.example.com/mcp", "per_user": true,
  "oauth_client_id": "moat-gw", "token_exchange": {"issuer": "https://auth.example.com"}}},
  "gateway": {"oidc": {"issuer": "https://idp.example.com", "audience": "https://moat.example.com/mcp"}, "identities": {"devs": {"oidc": {"groups": ["devs"]}}}}}`
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"login", "--backend", "file", "--dir", dir, "tickets"}, {"login", "--backend", "file", "--dir", dir, "--identity", "devs", "tickets"}} {
		code, _, errs := runAuth(t, cfg, args...)
		if code != exitUsage || !strings.Contains(errs, `server "tickets" gets each person's token by exchanging their OIDC sign-in token (token_exchange): there is nothing to log in to`) {
			t.Errorf("moat auth %q: exit %d, stderr:\n%s", args, code, errs)
		}
	}
}
