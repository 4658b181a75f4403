package main

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// moatCLI runs the real binary with args and no config in the environment.
func moatCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return moatCLIEnv(t, append(testutil.MoatEnv(t), "MOAT_CONFIG=", "DYNAMIC_MCP_CONFIG="), args...)
}

// moatCLIEnv runs the real binary with args in the environment env.
func moatCLIEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testutil.BuildMoat(t), args...)
	cmd.Env = env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("moat %q: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// TestEveryCommandHasHelp walks the command table: each command has a
// summary and an example that runs it, `moat help NAME` shows both, and
// `moat --help` lists them all.
func TestEveryCommandHasHelp(t *testing.T) {
	all, _, code := moatCLI(t, "--help")
	if code != exitOK {
		t.Fatalf("moat --help: exit %d", code)
	}
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			if c.summary == "" {
				t.Errorf("command %q has no summary", c.name)
			}
			if !strings.Contains(c.example, "moat "+c.name) {
				t.Errorf("command %q: example %q does not show `moat %s`", c.name, c.example, c.name)
			}
			// Issue 20: `moat help NAME` showed one line; it is the
			// command's full help, exactly what `moat NAME --help` shows.
			out, stderr, code := moatCLI(t, "help", c.name)
			if code != exitOK || !strings.HasPrefix(out, "usage:") || strings.Count(out, "\n") < 2 {
				t.Errorf("moat help %s: exit %d, stdout %q, stderr %q; want 0 and the command's full usage", c.name, code, out, stderr)
			}
			if own, _, code := moatCLI(t, c.name, "--help"); code != exitOK || own != out {
				t.Errorf("moat %s --help: exit %d, %q; want 0 and what moat help %s shows, %q", c.name, code, own, c.name, out)
			}
			if !strings.Contains(all, c.name) || !strings.Contains(all, c.example) {
				t.Errorf("moat --help does not list %q with its example %q", c.name, c.example)
			}
		})
	}
	for _, want := range []string{"Exit status: 0 ok, 1 runtime failure, 2 usage or config error"} {
		if !strings.Contains(all, want) {
			t.Errorf("moat --help does not say %q", want)
		}
	}
}

// TestTyposGetSuggestions: a mistyped command, or a mistyped flag of the
// commands that know their flags, is answered with the right spelling.
func TestTyposGetSuggestions(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"doctr"}, `did you mean "doctor"?`},
		{[]string{"secrte"}, `did you mean "secret"?`},
		{[]string{"complteion"}, `did you mean "completion"?`},
		{[]string{"completion", "zhs"}, `did you mean "zsh"?`},
		{[]string{"doctor", "--jsn"}, `did you mean --json?`},
	} {
		_, stderr, code := moatCLI(t, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("moat %q: exit %d, stderr %q; want exit 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, code := moatCLI(t, "version")
	if code != exitOK || !regexp.MustCompile(`^moat \S+ \(commit \S+, go1\.\d+`).MatchString(out) {
		t.Errorf("moat version: exit %d, %q; want version, commit and Go version", code, out)
	}
}

// TestHelpListsTheEnvironment pins issue 20: --help listed only MOAT_LOG.
// Every variable that Moat's own code reads by name (os.Getenv,
// os.LookupEnv, or a "MOAT_…"/"XDG_…" name passed to a lookup function)
// outside tests and test fixtures is listed with a line of its own.
func TestHelpListsTheEnvironment(t *testing.T) {
	out, _, code := moatCLI(t, "--help")
	if code != exitOK {
		t.Fatalf("moat --help: exit %d", code)
	}
	_, env, ok := strings.Cut(out, "\nEnvironment:\n")
	if !ok {
		t.Fatalf("moat --help has no Environment section:\n%s", out)
	}
	env, _, _ = strings.Cut(env, "\n\n")
	read := regexp.MustCompile(`(?:Getenv|LookupEnv)\("([A-Z_]+)"\)|"((?:MOAT|XDG|DYNAMIC_MCP)_[A-Z_]+)"`)
	root := testutil.RepoRoot(t)
	seen := map[string]bool{}
	for _, dir := range []string{"cmd", "internal", "audit", "policy"} {
		filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() && (d.Name() == "testutil" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range read.FindAllStringSubmatch(string(b), -1) {
				seen[m[1]+m[2]] = true
			}
			return nil
		})
	}
	if len(seen) < 8 {
		t.Fatalf("found only %v in the source; is the scan broken?", seen)
	}
	for name := range seen {
		if !regexp.MustCompile(`(?m)^  (?:\S+ )*` + name + `\b`).MatchString(env) {
			t.Errorf("moat --help does not list %s, which Moat reads:\n%s", name, env)
		}
	}
}
