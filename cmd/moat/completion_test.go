package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/testutil"
)

// completionScript runs `moat completion SHELL` with the real binary and
// saves the script.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	out, err := exec.Command(testutil.BuildMoat(t), "completion", shell).Output()
	if err != nil {
		t.Fatalf("moat completion %s: %v", shell, err)
	}
	path := filepath.Join(t.TempDir(), "moat."+shell)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// requireShell returns the shell's path. zsh and fish are optional on a
// development machine (scripts/test-deps.sh does not install them), so
// their tests skip loudly when the shell is missing; bash must be there.
func requireShell(t *testing.T, shell string) string {
	t.Helper()
	p, err := exec.LookPath(shell)
	if err != nil {
		if shell == "bash" || os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (make test-deps installs it): %v", shell, err)
		}
		t.Skipf("SKIP (missing real part): %s is not installed, so its completion script is not checked (apt-get install %s)", shell, shell)
	}
	return p
}

// TestCompletionScriptsParse: each shell accepts its script.
func TestCompletionScriptsParse(t *testing.T) {
	for _, tt := range []struct {
		shell string
		check []string
	}{
		{"bash", []string{"-n"}},
		{"zsh", []string{"-n"}},
		{"fish", []string{"--no-execute"}},
	} {
		t.Run(tt.shell, func(t *testing.T) {
			sh := requireShell(t, tt.shell)
			script := completionScript(t, tt.shell)
			if out, err := exec.Command(sh, append(tt.check, script)...).CombinedOutput(); err != nil {
				t.Errorf("%s %v rejects `moat completion %s`: %v\n%s", tt.shell, tt.check, tt.shell, err, out)
			}
		})
	}
}

// TestBashCompletion completes words as bash would, through the function
// the script registers.
func TestBashCompletion(t *testing.T) {
	sh := requireShell(t, "bash")
	script := completionScript(t, "bash")
	for _, tt := range []struct {
		line []string // the words typed, the last one being completed
		want []string
	}{
		{[]string{"moat", "sec"}, []string{"secret"}},
		{[]string{"moat", "d"}, []string{"doctor"}},
		{[]string{"moat", "secret", ""}, []string{"set", "rm", "list", "migrate", "encrypt", "decrypt", "unlock", "lock", "--backend", "--dir", "--yes", "--for"}},
		{[]string{"moat", "secret", "--backend", ""}, []string{"auto", "keychain", "file"}},
		{[]string{"moat", "doctor", "--j"}, []string{"--json"}},
		{[]string{"moat", "completion", "f"}, []string{"fish"}},
		{[]string{"moat", "help", "aud"}, []string{"audit"}},
	} {
		words := make([]string, len(tt.line))
		for i, w := range tt.line {
			words[i] = "'" + w + "'"
		}
		prog := "source " + script + "\nCOMP_WORDS=(" + strings.Join(words, " ") + ")\nCOMP_CWORD=" +
			strconv.Itoa(len(tt.line)-1) + "\n_moat\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command(sh, "--norc", "--noprofile")
		cmd.Stdin = strings.NewReader(prog)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		got := strings.Fields(string(bytes.TrimSpace(out)))
		if !slices.Equal(got, tt.want) {
			t.Errorf("completing %q: got %q, want %q", tt.line, got, tt.want)
		}
	}
}

// TestFishCompletion asks fish itself what it would offer.
func TestFishCompletion(t *testing.T) {
	sh := requireShell(t, "fish")
	script := completionScript(t, "fish")
	for _, tt := range []struct {
		line string
		want string // one of the offered completions
	}{
		{"moat doc", "doctor"},
		{"moat secret ", "migrate"},
		{"moat secret --backend ", "keychain"},
		{"moat doctor --", "--json"},
	} {
		out, err := exec.Command(sh, "--no-config", "-c", "source "+script+"; complete -C '"+tt.line+"'").CombinedOutput()
		if err != nil {
			t.Fatalf("fish: %v\n%s", err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			w, _, _ := strings.Cut(l, "\t")
			got = append(got, w)
		}
		if !slices.Contains(got, tt.want) {
			t.Errorf("fish completing %q offers %q, want %q among them", tt.line, got, tt.want)
		}
	}
}

// TestCompletionCoversCommands: every command has a completion entry, and
// every script names every command.
func TestCompletionCoversCommands(t *testing.T) {
	for _, c := range commands() {
		if _, ok := cliSpec[c.name]; !ok {
			t.Errorf("command %q has no entry in cliSpec: its subcommands and flags are not completed", c.name)
		}
	}
	for _, script := range map[string]string{"bash": bashCompletion(), "zsh": zshCompletion(), "fish": fishCompletion()} {
		for _, c := range commands() {
			if !strings.Contains(script, c.name) {
				t.Errorf("a completion script does not name command %q", c.name)
			}
		}
	}
}

func TestCompletionUsage(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, exitUsage, "takes one SHELL"},
		{[]string{"bsh"}, exitUsage, `did you mean "bash"?`},
		{[]string{"powershell"}, exitUsage, `no completion for shell "powershell"`},
		{[]string{"--help"}, exitOK, ""},
	} {
		var stdout, stderr bytes.Buffer
		code := completionCommand(tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
			t.Errorf("moat completion %q: exit %d, stderr %q; want %d and %q", tt.args, code, stderr.String(), tt.code, tt.stderr)
		}
	}
}

func TestSuggestFlag(t *testing.T) {
	for _, tt := range []struct{ err, want string }{
		{"flag provided but not defined: -jsno", "--json"},
		{"flag provided but not defined: --jsn", "--json"},
		{"flag provided but not defined: -x", ""},
		{"flag provided but not defined: -verbose", ""},
		{"flag needs an argument: -o", ""},
	} {
		if got := suggestFlag(errString(tt.err), doctorFlags); got != tt.want {
			t.Errorf("suggestFlag(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestZshCompletionRegisters: sourced after compinit, as the usage says,
// the script registers its function for moat.
func TestZshCompletionRegisters(t *testing.T) {
	sh := requireShell(t, "zsh")
	script := completionScript(t, "zsh")
	prog := "autoload -U compinit; compinit -u -d " + filepath.Join(t.TempDir(), "zcompdump") + "; source " + script + "; print -r -- ${_comps[moat]}"
	out, err := exec.Command(sh, "-f", "-c", prog).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_moat" {
		t.Errorf("zsh: completion function for moat is %q (err %v), want _moat", out, err)
	}
}
