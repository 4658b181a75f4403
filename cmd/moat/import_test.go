package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moatmcp/moat/internal/secrets"
)

const importFixtures = "../../testdata/import"

// importCanaries are the literal credentials in the fixtures these tests use.
var importCanaries = []string{"ghp_MoatCanary0123456789abcdefghijklmnop", "ctx7sk-MoatCanary-5b1f0e2a9c3d4e7f8a6b", "sk-MoatCanaryCodex0123456789abcdef"}

type importEnv struct {
	dir, home, store string
}

// newImportEnv runs the test in a fresh project directory with a fresh
// home, and points the secret store at an encrypted file store (no
// keychain answers: the session bus is disabled).
func newImportEnv(t *testing.T) *importEnv {
	t.Helper()
	root := t.TempDir()
	e := &importEnv{dir: filepath.Join(root, "project"), home: filepath.Join(root, "home")}
	for _, d := range []string{e.dir, e.home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("HOME", e.home)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "disabled:")
	t.Setenv("MOAT_PASSPHRASE", "import-test-passphrase")
	t.Setenv("XDG_DATA_HOME", filepath.Join(root, "data"))
	e.store = filepath.Join(root, "data", "moat", "secrets")
	t.Chdir(e.dir)
	return e
}

// place copies a fixture to rel under base.
func place(t *testing.T, fixture, base, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(origDir, importFixtures, fixture))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(base, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runImport runs `moat import ARGS` with stdin holding in, and fails the
// test if a canary credential reaches stdout or stderr.
func runImport(t *testing.T, in string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = importCommand(t.Context(), args, strings.NewReader(in), &out, &errb)
	for _, c := range importCanaries {
		if strings.Contains(out.String()+errb.String(), c) {
			t.Errorf("moat import %v printed the literal credential %q", args, c)
		}
	}
	return code, out.String(), errb.String()
}

func readConfig(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func server(t *testing.T, cfg map[string]any, name string) map[string]any {
	t.Helper()
	s, ok := cfg["mcpServers"].(map[string]any)[name].(map[string]any)
	if !ok {
		t.Fatalf("no server %q in the written config", name)
	}
	return s
}

func TestImportYesKeepMatchesGolden(t *testing.T) {
	e := newImportEnv(t)
	place(t, "cursor/project.json", e.dir, ".cursor/mcp.json")
	code, out, errs := runImport(t, "", "cursor", "--yes", "--secrets", "keep")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
	got, err := os.ReadFile(filepath.Join(e.dir, "moat.json"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(origDir, importFixtures, "cursor", "project.golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("moat.json differs from the golden file (-want +got):\n%s", diff)
	}
	for _, s := range []string{
		"github env GITHUB_PERSONAL_ACCESS_TOKEN: looks like a GitHub token", // which literal stays, by place
		"templates envFile: Moat does not read env files",                    // what was dropped
		"moat doctor " + filepath.Join(e.dir, "moat.json"),                   // what to run next
	} {
		if !strings.Contains(out, s) {
			t.Errorf("the summary lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(errs, "Description for") {
		t.Errorf("--yes must not prompt:\n%s", errs)
	}
}

func TestImportMovesSecretsIntoTheStore(t *testing.T) {
	e := newImportEnv(t)
	place(t, "cursor/global.json", e.home, ".cursor/mcp.json")
	code, out, errs := runImport(t, "", "cursor", "--global", "--yes")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, errs)
	}
	data, err := os.ReadFile(filepath.Join(e.dir, "moat.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), importCanaries[1]) {
		t.Errorf("the literal credential is still in moat.json:\n%s", data)
	}
	h := server(t, readConfig(t, filepath.Join(e.dir, "moat.json")), "context7")["headers"].(map[string]any)
	if h["CONTEXT7_API_KEY"] != "${secret:context7-context7_api_key}" {
		t.Errorf("header = %v, want a ${secret:context7-context7_api_key} reference", h["CONTEXT7_API_KEY"])
	}
	store, err := secrets.Open(t.Context(), &secrets.Options{Backend: secrets.BackendFile, Dir: e.store})
	if err != nil {
		t.Fatal(err)
	}
	v, err := store.Get(t.Context(), "context7-context7_api_key")
	if err != nil || v.Reveal() != importCanaries[1] {
		t.Errorf("the store does not hold the moved value (err %v)", err)
	}
	if !strings.Contains(out, "context7 header CONTEXT7_API_KEY -> ${secret:context7-context7_api_key}") {
		t.Errorf("the summary does not say what moved:\n%s", out)
	}

	// A second import reuses the same secret; a different value under the
	// same name is never overwritten.
	if err := store.Set(t.Context(), "context7-context7_api_key", secrets.NewSecret("someone-elses-value")); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runImport(t, "", "cursor", "--global", "--yes", "--force"); code != exitOK {
		t.Fatalf("second import: exit %d:\n%s", code, errs)
	}
	h = server(t, readConfig(t, filepath.Join(e.dir, "moat.json")), "context7")["headers"].(map[string]any)
	if h["CONTEXT7_API_KEY"] != "${secret:context7-context7_api_key-2}" {
		t.Errorf("header = %v, want the -2 name since the first is taken by another value", h["CONTEXT7_API_KEY"])
	}
	if v, _ := store.Get(t.Context(), "context7-context7_api_key"); v.Reveal() != "someone-elses-value" {
		t.Error("an existing secret was overwritten")
	}
}

func TestImportInteractive(t *testing.T) {
	for _, tt := range []struct {
		name, stdin string
		want        map[string]string // server -> description
		features    map[string]any    // the filesystem server's features, nil for none
	}{
		{"answers", "Project files\nn\n\nn\n\nGitHub issues\n\n\n\n\n\n",
			map[string]string{"filesystem": "Project files", "github": "GitHub issues", "linear": "Linear tools (at mcp.linear.app)"},
			map[string]any{"resources": false}},
		// Issue 20: "maybe" was taken as yes. Only y/yes/n/no answer; anything
		// else is asked again, and end of input takes the default.
		{"maybe is asked again", "Project files\nmaybe\nN\nYES\nno\ny\nGitHub issues\n\n\n\n\n\n",
			map[string]string{"filesystem": "Project files", "github": "GitHub issues", "linear": "Linear tools (at mcp.linear.app)"},
			map[string]any{"resources": false}},
		{"maybe then EOF takes the default", "Project files\nmaybe",
			map[string]string{"filesystem": "Project files"}, nil},
		{"empty answers take defaults", "\n\n\n\n\n\n\n\n",
			map[string]string{"filesystem": "Filesystem tools (from @modelcontextprotocol/server-filesystem)", "linear": "Linear tools (at mcp.linear.app)"}, nil},
		{"EOF mid-way takes defaults", "Project files",
			map[string]string{"filesystem": "Project files", "github": "Github tools (from ghcr.io/github/github-mcp-server)"}, nil},
		{"no input at all", "",
			map[string]string{"templates": "Templates tools (from mcp-server-templates)"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newImportEnv(t)
			place(t, "cursor/project.json", e.dir, ".cursor/mcp.json")
			code, _, errs := runImport(t, tt.stdin, "cursor", "--secrets", "keep")
			if code != exitOK {
				t.Fatalf("exit %d, stderr:\n%s", code, errs)
			}
			if !strings.Contains(errs, `Description for "filesystem" [Filesystem tools (from @modelcontextprotocol/server-filesystem)]: `) {
				t.Errorf("no description prompt with the default on stderr:\n%s", errs)
			}
			if strings.Contains(tt.stdin, "maybe") != strings.Contains(errs, `Please answer y or n ("maybe" is neither).`) {
				t.Errorf("an answer other than y/yes/n/no was not asked again, or one was:\n%s", errs)
			}
			if !strings.Contains(errs, "Keep all features (tools, resources, prompts)? [Y/n] ") && strings.Contains(tt.stdin, "\n") {
				t.Errorf("the features question does not show its default as [Y/n]:\n%s", errs)
			}
			cfg := readConfig(t, filepath.Join(e.dir, "moat.json"))
			for name, want := range tt.want {
				if got := server(t, cfg, name)["description"]; got != want {
					t.Errorf("%s: description %q, want %q", name, got, want)
				}
			}
			got, _ := server(t, cfg, "filesystem")["features"].(map[string]any)
			if diff := cmp.Diff(tt.features, got); diff != "" {
				t.Errorf("filesystem features (-want +got):\n%s", diff)
			}
		})
	}
}

func TestImportWritesMode0600UnderUmask0(t *testing.T) {
	e := newImportEnv(t)
	place(t, "codex/global.toml", e.home, ".codex/config.toml")
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	if code, _, errs := runImport(t, "", "codex", "--global", "--yes", "-o", "out/../moat-codex.json"); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, errs)
	}
	fi, err := os.Stat(filepath.Join(e.dir, "moat-codex.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(e.dir, ".moat-import-*"))
	if len(left) > 0 {
		t.Errorf("temp files left behind: %v", left)
	}
}

func TestImportNeverOverwritesSilently(t *testing.T) {
	for _, tt := range []struct {
		name, stdin string
		args        []string
		code        int
		replaced    bool
	}{
		{"--yes without --force", "", []string{"--yes"}, exitFailure, false},
		{"answer no", "n\n", nil, exitFailure, false},
		{"empty answer is no", "\n", nil, exitFailure, false},
		{"EOF is no", "", nil, exitFailure, false},
		{"answer yes", "y\n", nil, exitOK, true},
		{"--force", "", []string{"--force", "--yes"}, exitOK, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newImportEnv(t)
			place(t, "gemini/project.json", e.dir, ".gemini/settings.json")
			out := filepath.Join(e.dir, "moat.json")
			if err := os.WriteFile(out, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, errs := runImport(t, tt.stdin, append([]string{"gemini"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errs)
			}
			data, _ := os.ReadFile(out)
			if replaced := string(data) != "keep me"; replaced != tt.replaced {
				t.Errorf("replaced = %v, want %v; stderr:\n%s", replaced, tt.replaced, errs)
			}
		})
	}
}

func TestImportErrors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"syntax error names file and line", []string{filepath.Join(importFixtures, "invalid", "syntax.json"), "--yes"}, exitFailure,
			[]string{"syntax.json:5:"}},
		{"TOML syntax error names file and line", []string{filepath.Join(importFixtures, "invalid", "syntax.toml"), "--yes"}, exitFailure,
			[]string{"syntax.toml:3:"}},
		{"unknown tool", []string{"curser"}, exitUsage, []string{`unknown tool "curser"; did you mean "cursor"?`, "supported tools: cursor, opencode"}},
		{"missing file", []string{"./nope.json"}, exitFailure, []string{"nope.json"}},
		{"no config where the tool keeps it", []string{"gemini"}, exitFailure, []string{"no Gemini CLI config at", "try --global"}},
		{"unsupported scope", []string{"claude-desktop"}, exitUsage, []string{"Claude Desktop has no project config; use --global"}},
		{"no server usable", []string{filepath.Join(importFixtures, "invalid", "no-command.json")}, exitFailure,
			[]string{"no server in", `no-command *: skipped: it has neither a "command" nor a "url"`}},
		{"bad --secrets", []string{"cursor", "--secrets", "plain"}, exitUsage, []string{`--secrets "plain": use keychain or keep`}},
		{"two sources", []string{"cursor", "vscode"}, exitUsage, []string{"one TOOL or FILE"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			newImportEnv(t)
			for i, a := range tt.args { // fixture paths are relative to the package, not the test's directory
				if strings.HasPrefix(a, importFixtures) {
					tt.args[i] = filepath.Join(origDir, a)
				}
			}
			code, _, errs := runImport(t, "", tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errs, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errs)
				}
			}
			if _, err := os.Stat("moat.json"); err == nil {
				t.Error("moat.json was written after an error")
			}
		})
	}
}

// origDir is the package directory, where relative fixture paths start.
var origDir, _ = os.Getwd()
