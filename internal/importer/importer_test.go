package importer

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatmcp/moat/internal/secrets"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/import")

const (
	fixtures   = "../../testdata/import"
	projectDir = "/home/user/src/app" // the project the Claude Code fixture has local servers for
)

// canaries are the literal credentials planted in the fixtures.
var canaries = []string{
	"ghp_MoatCanary0123456789abcdefghijklmnop", "ctx7sk-MoatCanary-5b1f0e2a9c3d4e7f8a6b",
	"github_pat_11MOATCANARY0123456789_abcdefghijklmnopqrstuvwxyz", "Canary-Pa55word",
	"sntrys_MoatCanaryeyJpYXQiOjE3MDAwMDAwMDB9_abcdef0123", "BSAMoatCanaryQ7x9Lk2Pz8Wm4Rt6Yv1Nb3",
	"AKIAMOATCANARY012345", "sk-MoatCanaryCodex0123456789abcdef", "ghp_MoatCanaryGemini0123456789abcdefghij",
}

// report is the human part of an import, in a stable form for golden files.
func report(im *Imported) string {
	var b strings.Builder
	fmt.Fprintf(&b, "format: %s\nservers: %s\n", im.Format, strings.Join(slices.Sorted(maps.Keys(im.Servers)), ", "))
	for _, d := range im.Dropped {
		fmt.Fprintf(&b, "dropped: %s %s: %s\n", d.Server, d.Field, d.Why)
	}
	for _, l := range im.Literals {
		fmt.Fprintf(&b, "literal: %s %s: %s\n", l.Server, l.Where, l.Reason)
	}
	for _, in := range im.Inputs {
		fmt.Fprintf(&b, "input: %s\n", in)
	}
	return b.String()
}

type fixture struct {
	tool  *Tool
	scope string // "project" or "global"
	path  string
}

func allFixtures(t *testing.T) []fixture {
	t.Helper()
	var out []fixture
	for _, tool := range Tools() {
		files, err := filepath.Glob(filepath.Join(fixtures, tool.Name, "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.Contains(filepath.Base(f), ".golden") {
				continue
			}
			scope, _, _ := strings.Cut(strings.TrimSuffix(filepath.Base(f), filepath.Ext(f)), "-")
			out = append(out, fixture{tool, scope, f})
		}
	}
	return out
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/importer -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; run with -update if the change is intended):\n%s", path, diff)
	}
}

// TestGolden converts every fixture and compares the Moat config and the
// report (dropped fields, literals, inputs) with the golden files.
func TestGolden(t *testing.T) {
	for _, fx := range allFixtures(t) {
		t.Run(fx.tool.Name+"/"+filepath.Base(fx.path), func(t *testing.T) {
			im, err := ReadProject(fx.tool.Format, fx.path, projectDir)
			if err != nil {
				t.Fatalf("ReadProject: %v", err)
			}
			out, err := Render(im)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			base := strings.TrimSuffix(fx.path, filepath.Ext(fx.path))
			golden(t, base+".golden.json", out)
			rep := report(im)
			golden(t, base+".report.golden", []byte(rep))
			for _, c := range canaries {
				if strings.Contains(rep, c) {
					t.Errorf("the report holds the literal credential %q", c)
				}
			}
		})
	}
}

// TestEveryScopeHasAFixture fails when a tool's supported scope has no
// fixture, so a new tool or path cannot go untested.
func TestEveryScopeHasAFixture(t *testing.T) {
	have := map[string]bool{}
	for _, fx := range allFixtures(t) {
		have[fx.tool.Name+"/"+fx.scope] = true
	}
	for _, tool := range Tools() {
		for scope, f := range map[string]func(string, string) (string, error){"project": tool.ProjectPath, "global": tool.GlobalPath} {
			if _, err := f("/home/u", "linux"); err == nil && !have[tool.Name+"/"+scope] {
				t.Errorf("%s supports the %s scope but testdata/import/%s has no %s*.* fixture", tool.Name, scope, tool.Name, scope)
			}
		}
	}
}

// TestReadFileDetects checks that `moat import FILE` tells each tool's
// format from the file under its real name, with the same result as
// naming the tool.
func TestReadFileDetects(t *testing.T) {
	for _, fx := range allFixtures(t) {
		t.Run(fx.tool.Name+"/"+filepath.Base(fx.path), func(t *testing.T) {
			pathFn := fx.tool.ProjectPath
			if fx.scope == "global" {
				pathFn = fx.tool.GlobalPath
			}
			real, err := pathFn("/home/u", "linux")
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(fx.path)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			copied := filepath.Join(dir, filepath.Base(real))
			if err := os.WriteFile(copied, data, 0o600); err != nil {
				t.Fatal(err)
			}
			want, err := ReadProject(fx.tool.Format, fx.path, projectDir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ReadFileProject(copied, projectDir)
			if err != nil {
				t.Fatalf("ReadFile(%s): %v", filepath.Base(real), err)
			}
			wantOut, _ := Render(want)
			gotOut, err := Render(got)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(wantOut), string(gotOut)); diff != "" {
				t.Errorf("ReadFile(%s) read it as %s, not %s (-want +got):\n%s", filepath.Base(real), got.Format, fx.tool.Format, diff)
			}
		})
	}
}

func TestClaudeProjects(t *testing.T) {
	path := filepath.Join(fixtures, "claude", "global.json")
	for _, tt := range []struct {
		dir  string
		want []string
	}{
		{projectDir, []string{"playwright", "sentry", "sqlite"}},
		{projectDir + "/", []string{"playwright", "sentry", "sqlite"}},
		{"/home/user/src/other", []string{"not-this-project", "sentry", "sqlite"}},
		{"/elsewhere", []string{"sentry", "sqlite"}},
	} {
		im, err := ReadProject(FormatClaude, path, tt.dir)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, slices.Sorted(maps.Keys(im.Servers))); diff != "" {
			t.Errorf("servers of ~/.claude.json in %s (-want +got):\n%s", tt.dir, diff)
		}
	}
	im, err := ReadProject(FormatClaude, path, projectDir)
	if err != nil {
		t.Fatal(err)
	}
	if h := im.Servers["sentry"].Headers; h["X-Api-Key"] == "" {
		t.Errorf("the project's local-scope sentry entry should win over the user-scope one; headers = %v", slices.Collect(maps.Keys(h)))
	}
}

// TestCarriedOver pins the fields dynamic-mcp lost, one per source tool.
func TestCarriedOver(t *testing.T) {
	read := func(tool, file string) *Imported {
		t.Helper()
		tl, err := Lookup(tool)
		if err != nil {
			t.Fatal(err)
		}
		im, err := ReadProject(tl.Format, filepath.Join(fixtures, tool, file), projectDir)
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
	for _, tt := range []struct {
		what      string
		got, want any
	}{
		{"Cline disabled:true stays disabled", read("cline", "project.json").Servers["memory"].Enabled, false},
		{"Kilo Code disabled:true stays disabled", read("kilocode", "project.json").Servers["sqlite"].Enabled, false},
		{"OpenCode enabled:false stays disabled", read("opencode", "project.jsonc").Servers["postgres"].Enabled, false},
		{"OpenCode environment is the env", read("opencode", "project.jsonc").Servers["postgres"].Env,
			map[string]string{"PGAPPNAME": "opencode", "PGPASSWORD": "${PGPASSWORD}"}},
		{"OpenCode array command", read("opencode", "project.jsonc").Servers["postgres"].Args, []string{"mcp-server-postgres", "--url", "${DATABASE_URL}"}},
		{"Gemini httpUrl is streamable HTTP", read("gemini", "project.json").Servers["deepwiki"].Type, "http"},
		{"Gemini url is SSE", read("gemini", "project.json").Servers["events"].Type, "sse"},
		{"Gemini timeout is milliseconds", read("gemini", "project.json").Servers["gram"].Timeout.Tools, "30s"},
		{"Gemini $VAR", read("gemini", "project.json").Servers["gram"].Env["GRAM_API_KEY"], "${GRAM_API_KEY}"},
		{"Gemini description", read("gemini", "project.json").Servers["deepwiki"].Description, "Ask questions about public GitHub repositories"},
		{"Cline timeout is seconds", read("cline", "project.json").Servers["filesystem"].Timeout.Tools, "120s"},
		{"${env:X} in args", read("cursor", "project.json").Servers["filesystem"].Args[2], "${WORKSPACE_ROOT}"},
		{"no }} corruption", read("cursor", "project.json").Servers["templates"].Args[1], "--pattern={{name}}"},
		{"${env:X} in headers", read("cursor", "project.json").Servers["linear"].Headers["Authorization"], "Bearer ${LINEAR_API_KEY}"},
		{"Codex [mcp_servers] env", read("codex", "global.toml").Servers["github"].Env, map[string]string{"GITHUB_TOOLSETS": "repos,issues"}},
		{"Codex env_vars is inherit_env", read("codex", "global.toml").Servers["github"].InheritEnv, []string{"GITHUB_PERSONAL_ACCESS_TOKEN"}},
		{"Codex cwd", read("codex", "global.toml").Servers["filesystem"].Cwd, "/home/user"},
		{"Gemini relative cwd is in the project", read("gemini", "project.json").Servers["gram"].Cwd, projectDir + "/tools"},
		{"plain http to a LAN host keeps working, flagged", read("kilocode", "global.json").Servers["lan"].AllowInsecureHTTP, true},
		{"a private IP keeps working, flagged", read("kilocode", "global.json").Servers["lan"].AllowPrivateNetwork, true},
		{"loopback http needs no flag", read("cline", "global.json").Servers["weather"].AllowInsecureHTTP, false},
		{"Codex headers", read("codex", "global.toml").Servers["figma"].Headers,
			map[string]string{"Authorization": "Bearer ${FIGMA_OAUTH_TOKEN}", "X-Figma-Region": "us-east-1", "X-Team-Id": "${FIGMA_TEAM_ID}"}},
		{"Codex enabled=false", read("codex", "global.toml").Servers["docs"].Enabled, false},
		{"Codex tool_timeout_sec", read("codex", "global.toml").Servers["filesystem"].Timeout.Tools, "90s"},
		{"dynamic-mcp's [mcp.NAME]", slices.Sorted(maps.Keys(read("codex", "global-dynamic-mcp.toml").Servers)), []string{"filesystem", "github"}},
		{"VS Code ${input:ID} becomes a secret", read("vscode", "project.json").Servers["github"].Headers["Authorization"], "Bearer ${secret:github-token}"},
		{"VS Code inputs listed", read("vscode", "project.json").Inputs, []string{"github-token", "perplexity-key"}},
		{"VS Code ${workspaceFolder}", read("vscode", "project.json").Servers["filesystem"].Args[2], projectDir},
		{"streamable-http", read("cursor", "global.json").Servers["context7"].Type, "http"},
		{"Antigravity serverUrl", read("antigravity", "global.json").Servers["linear"].URL, "https://mcp.linear.app/mcp"},
		{"Claude ${VAR:-default}", read("claude", "project.json").Servers["internal-api"].URL, "${API_BASE_URL}/mcp"},
		{"url without type is probed", read("cursor", "project.json").Servers["linear"].Type, ""},
	} {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.what, diff)
		}
	}
	dropped := map[string]bool{}
	for _, d := range read("gemini", "project.json").Dropped {
		dropped[d.Server+" "+d.Field] = true
	}
	for _, want := range []string{"gram cwd", "gram trust", "events includeTools", "events excludeTools"} {
		if !dropped[want] {
			t.Errorf("Gemini: %q is not listed as dropped; got %v", want, slices.Sorted(maps.Keys(dropped)))
		}
	}
}

func TestLiteralsNeverHoldValues(t *testing.T) {
	for _, fx := range allFixtures(t) {
		im, err := ReadProject(fx.tool.Format, fx.path, projectDir)
		if err != nil {
			t.Fatal(err)
		}
		dump := fmt.Sprintf("%+v %#v", im.Literals, im.Literals)
		for _, c := range canaries {
			if strings.Contains(dump, c) {
				t.Errorf("%s: Literals print the value %q", fx.path, c)
			}
		}
	}
}

func TestLookup(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"cursor", "cursor"}, {"Cursor", "cursor"}, {"open_code", "opencode"}, {"OPEN-CODE", "opencode"},
		{"claude-desktop", "claude-desktop"}, {"claude_desktop", "claude-desktop"},
		{"claude", "claude"}, {"claude-code", "claude"}, {"claude-cli", "claude"},
		{"vscode", "vscode"}, {"vs-code", "vscode"}, {"VisualStudioCode", "vscode"},
		{"antigravity", "antigravity"}, {"gemini", "gemini"}, {"gemini-cli", "gemini"},
		{"codex", "codex"}, {"codex_cli", "codex"}, {"cline", "cline"}, {"kilocode", "kilocode"}, {"kilo-code", "kilocode"},
	} {
		got, err := Lookup(tt.in)
		if err != nil || got.Name != tt.want {
			t.Errorf("Lookup(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	_, err := Lookup("curser")
	if err == nil || !strings.Contains(err.Error(), `did you mean "cursor"?`) {
		t.Errorf("Lookup(curser) error = %v, want a did-you-mean for cursor", err)
	}
	_, err = Lookup("notepad")
	le, ok := err.(*LookupError)
	if !ok || !slices.Contains(le.Supported, "kilocode") || le.Suggestion != "" {
		t.Errorf("Lookup(notepad) = %#v, want a LookupError listing every tool and no suggestion", err)
	}
}

// TestPaths pins the supported-paths table (the README's).
func TestPaths(t *testing.T) {
	var b bytes.Buffer
	for _, tool := range Tools() {
		for _, goos := range []string{"linux", "darwin", "windows"} {
			p, err := tool.ProjectPath("HOME", goos)
			if err != nil {
				p = "-"
			}
			g, err := tool.GlobalPath("HOME", goos)
			if err != nil {
				g = "-"
			}
			fmt.Fprintf(&b, "%s %s project=%s global=%s\n", tool.Name, goos, filepath.ToSlash(p), filepath.ToSlash(g))
		}
	}
	golden(t, filepath.Join(fixtures, "paths.golden"), b.Bytes())
}

func TestLocatePrefersExisting(t *testing.T) {
	dir := t.TempDir()
	oc, _ := Lookup("opencode")
	if got, _ := oc.Locate(dir, dir, "linux", false); got != filepath.Join(dir, "opencode.jsonc") {
		t.Errorf("with no file, Locate = %s, want the preferred opencode.jsonc", got)
	}
	if err := os.MkdirAll(filepath.Join(dir, ".opencode"), 0o700); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, ".opencode", "opencode.json")
	if err := os.WriteFile(want, []byte(`{"mcp":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := oc.Locate(dir, dir, "linux", false); got != want {
		t.Errorf("Locate = %s, want the existing %s", got, want)
	}
	cd, _ := Lookup("claude-desktop")
	if _, err := cd.Locate(dir, dir, "linux", false); err == nil || !strings.Contains(err.Error(), "use --global") {
		t.Errorf("Claude Desktop project scope: err = %v, want one saying to use --global", err)
	}
}

func TestSyntaxErrorsNameFileAndLine(t *testing.T) {
	for _, tt := range []struct {
		file, format string
		line         int
	}{
		{"syntax.json", FormatJSON, 5},
		{"syntax.toml", FormatCodex, 3},
	} {
		path := filepath.Join(fixtures, "invalid", tt.file)
		_, err := ReadProject(tt.format, path, projectDir)
		se, ok := err.(*SyntaxError)
		if !ok || se.Line != tt.line || !strings.Contains(err.Error(), fmt.Sprintf("%s:%d:", path, tt.line)) {
			t.Errorf("%s: err = %v, want a SyntaxError at line %d naming the file", tt.file, err, tt.line)
		}
	}
	_, err := ReadProject(FormatJSON, filepath.Join(fixtures, "invalid", "no-command.json"), projectDir)
	if err != nil {
		t.Fatalf("a server without command is dropped, not fatal: %v", err)
	}
}

func TestNormalize(t *testing.T) {
	for _, tt := range []struct {
		format, in, want string
		fails            bool
	}{
		{FormatVSCode, "${env:HOME}/x", "${HOME}/x", false},
		{FormatVSCode, "a}}b${env:X}}}", "a}}b${X}}}", false},
		{FormatVSCode, "${input:My Token}", "${secret:my-token}", false},
		{FormatVSCode, "${config:foo.bar}", "", true},
		{FormatVSCode, "${unterminated", "", true},
		{FormatOpenCode, "{env:A}-${B}", "${A}-${B}", false},
		{FormatOpenCode, "{file:~/.secrets/key}", "", true},
		{FormatGemini, "$A and ${B} and $", "${A} and ${B} and $", false},
		{FormatJSON, "$A stays", "$A stays", false},
		{FormatClaude, "${X:-def}/y", "${X}/y", false},
		{FormatJSON, "${secret:gh}", "${secret:gh}", false},
	} {
		n := &normalizer{format: tt.format, projectDir: projectDir, inputs: map[string]bool{}}
		got, _, err := n.value(tt.in)
		if (err != nil) != tt.fails || got != tt.want {
			t.Errorf("%s: value(%q) = %q, %v; want %q (fails=%v)", tt.format, tt.in, got, err, tt.want, tt.fails)
		}
	}
}

func TestDefaultDescription(t *testing.T) {
	for _, tt := range []struct {
		name string
		s    Server
		want string
	}{
		{"filesystem", Server{Command: "npx", Args: []string{"-y", "@modelcontextprotocol/server-filesystem", "/tmp"}},
			"Filesystem tools (from @modelcontextprotocol/server-filesystem)"},
		{"gh", Server{Command: "docker", Args: []string{"run", "-i", "--rm", "-e", "TOKEN", "ghcr.io/github/github-mcp-server:0.24.0"}},
			"Github tools (from ghcr.io/github/github-mcp-server:0.24.0)"},
		{"pg", Server{Command: "uvx", Args: []string{"mcp-server-postgres"}}, "Postgres tools (from mcp-server-postgres)"},
		{"dc", Server{Command: "npx", Args: []string{"-y", "@wonderwhy-er/desktop-commander@latest"}},
			"Desktop commander tools (from @wonderwhy-er/desktop-commander@latest)"},
		{"sentry", Server{URL: "https://mcp.sentry.dev/mcp"}, "Sentry tools (at mcp.sentry.dev)"},
		{"my-tool", Server{Command: "/opt/bin/my-tool"}, "My tool tools"},
	} {
		if got := DefaultDescription(tt.name, &tt.s); got != tt.want {
			t.Errorf("DefaultDescription(%s) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestCredentialReason(t *testing.T) {
	for _, tt := range []struct {
		key, val string
		secret   bool
	}{
		{"GITHUB_TOKEN", "${GITHUB_TOKEN}", false},
		{"GITHUB_TOKEN", "abc", true},
		{"Authorization", "Bearer ${T}", false},
		{"Authorization", "Bearer abcdefgh12345", true},
		{"X-Api-Key", "k", true},
		{"LOG_LEVEL", "debug", false},
		{"SSL_KEY_FILE", "/etc/ssl/key.pem", false},
		{"CACHE_KEY_ENABLED", "true", false},
		{"", "ghp_0123456789abcdefghijABCDEFGHIJ", true},
		{"", "xoxb-1234567890-abcdef", true},
		{"", "AKIAIOSFODNN7EXAMPLE", true},
		{"", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig", true},
		{"DATABASE_URL", "postgres://u:pw@h/db", true},
		{"DATABASE_URL", "postgres://u:${PGPASSWORD}@h/db", false},
		{"", "@modelcontextprotocol/server-filesystem", false},
		{"", "Q7x9Lk2Pz8Wm4Rt6Yv1Nb3Hj5Gf0Ds", true},
		{"", "/home/user/src/app/very/long/path/here", false},
		{"", "/tmp/TestImportInteractive3584178373/001/project", false},
		{"", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", true},
	} {
		if got := credentialReason(tt.key, tt.val) != ""; got != tt.secret {
			t.Errorf("credentialReason(%q, %q) = %v, want %v", tt.key, tt.val, got, tt.secret)
		}
	}
}

func TestMoveSecrets(t *testing.T) {
	store, err := secrets.Open(t.Context(), &secrets.Options{Backend: secrets.BackendFile, Dir: filepath.Join(t.TempDir(), "s"),
		Passphrase: func() ([]byte, error) { return []byte("test"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	tok := "ghp_0123456789abcdefghijABCDEFGHIJklmn"
	im := &Imported{Servers: map[string]*Server{
		"api": {Description: "d", Type: "http", URL: "https://api.example.com/mcp", Enabled: true, Features: Features{true, true, true},
			Headers: map[string]string{"Authorization": "Bearer " + tok}},
		"cli": {Description: "d", Type: "stdio", Command: "tool", Args: []string{"--api-key=" + tok}, Enabled: true, Features: Features{true, true, true}},
	}}
	im.Literals = findLiterals(im.Servers)
	moved, err := MoveSecrets(t.Context(), im, store)
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 1 || len(im.Literals) != 1 || im.Literals[0].Where != "args[0]" {
		t.Errorf("moved %v, left %v; want the header moved and the argument left", moved, im.Literals)
	}
	if got := im.Servers["api"].Headers["Authorization"]; got != "Bearer ${secret:api-authorization}" {
		t.Errorf("header = %q, want the scheme kept outside the secret", got)
	}
	// ${secret:NAME} on a command line would be refused by config.Parse
	// (every local user can read /proc/PID/cmdline): the argument stays,
	// and its Fix says why and what to do.
	if got := im.Servers["cli"].Args[0]; got != "--api-key="+tok {
		t.Errorf("arg = %q, want it left as it was", got)
	}
	if fix := im.Literals[0].Fix(); !strings.Contains(fix, "every local user") || !strings.Contains(fix, "env") {
		t.Errorf("the argument's fix = %q; want why it stays and the env alternative", fix)
	}
	for _, name := range []string{"api-authorization"} {
		if v, err := store.Get(t.Context(), name); err != nil || v.Reveal() != tok {
			t.Errorf("store %s: err %v, value matches: %v", name, err, v.Reveal() == tok)
		}
	}
	if _, err := Render(im); err != nil {
		t.Errorf("Render after MoveSecrets: %v", err)
	}
}

func TestRenderRefusesWhatMoatWouldNotLoad(t *testing.T) {
	im := &Imported{Servers: map[string]*Server{"x": {Description: "d", Type: "stdio", Enabled: true, Features: Features{true, true, true}}}}
	if _, err := Render(im); err == nil || !strings.Contains(err.Error(), `no "command"`) {
		t.Errorf("Render of a stdio server without command: err = %v, want config.Parse's problem", err)
	}
}
