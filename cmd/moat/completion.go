package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/moatmcp/moat/internal/suggest"
)

const completionUsage = `usage: moat completion bash|zsh|fish
  prints a completion script for the shell; load it with
    bash:  source <(moat completion bash)          (or save it in ~/.local/share/bash-completion/completions/moat)
    zsh:   source <(moat completion zsh)           (after compinit; or save it as _moat in a directory of $fpath)
    fish:  moat completion fish | source           (or save it as ~/.config/fish/completions/moat.fish)`

// cliFlag is one flag of a command, for completion and "did you mean".
type cliFlag struct {
	name   string   // "--backend", "-o"
	values []string // the values it takes, when they are a fixed set
	arg    bool     // it takes a value (a file, unless values are given)
}

// cliArgs are what a command accepts after its name.
type cliArgs struct {
	subcommands []string
	flags       []cliFlag
	files       bool // positional arguments are files (a config, a log)
}

var backendFlag = cliFlag{name: "--backend", values: []string{"auto", "keychain", "file"}, arg: true}

// cliSpec lists each command's subcommands and flags. It must follow the
// commands' own flag sets; TestCompletionCoversCommands checks that every
// command has an entry.
var cliSpec = map[string]cliArgs{
	"serve":   {files: true, flags: []cliFlag{{name: "--listen", arg: true}}},
	"connect": {files: true},
	"config":  {subcommands: []string{"validate", "schema"}, files: true},
	"secret": {subcommands: []string{"set", "rm", "list", "migrate", "encrypt", "decrypt", "unlock", "lock"},
		flags: []cliFlag{backendFlag, {name: "--dir", arg: true}, {name: "--yes"}, {name: "--for", arg: true}}},
	"unlock": {flags: []cliFlag{backendFlag, {name: "--dir", arg: true}, {name: "--for", arg: true}}},
	"lock":   {flags: []cliFlag{{name: "--dir", arg: true}}},
	"auth": {subcommands: []string{"login", "logout", "status"}, flags: []cliFlag{
		{name: "--config", arg: true}, backendFlag, {name: "--dir", arg: true}, {name: "--adopt-dynamic-mcp"}}},
	"token": {subcommands: []string{"create", "list", "revoke"}},
	"pins":  {subcommands: []string{"diff", "approve", "reset"}, flags: []cliFlag{{name: "--yes"}}},
	"audit": {subcommands: []string{"verify", "tail", "pubkey"}, files: true, flags: []cliFlag{
		{name: "--pubkey", arg: true}, {name: "--key-from-store"}, {name: "--allow-unsealed"}, {name: "-f"}}},
	"import": {subcommands: []string{"cursor", "opencode", "claude-desktop", "claude", "vscode", "cline", "kilocode", "codex", "gemini", "antigravity"},
		files: true, flags: []cliFlag{
			{name: "--global"}, {name: "--force"}, {name: "--yes"}, {name: "-o", arg: true},
			{name: "--secrets", values: []string{"keychain", "keep"}, arg: true}}},
	"doctor":     {files: true, flags: []cliFlag{{name: "--json"}}},
	"tools":      {flags: []cliFlag{{name: "--config", arg: true}}},
	"call":       {flags: []cliFlag{{name: "--config", arg: true}}},
	"policy":     {subcommands: []string{"check"}, files: true},
	"completion": {subcommands: []string{"bash", "zsh", "fish"}},
	"version":    {},
	"help":       {}, // its subcommands are the command names, filled in by specOf
}

// specOf returns what command name accepts.
func specOf(name string) cliArgs {
	s := cliSpec[name]
	if name == "help" {
		for _, c := range commands() {
			s.subcommands = append(s.subcommands, c.name)
		}
	}
	return s
}

// runCompletion is the commands() entry of `moat completion SHELL`.
func runCompletion(_ context.Context, args []string) int {
	return completionCommand(args, os.Stdout, os.Stderr)
}

func completionCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, completionUsage)
		return exitOK
	}
	if len(args) != 1 {
		fmt.Fprintln(stderr, "moat: error: moat completion takes one SHELL: bash, zsh or fish")
		fmt.Fprintln(stderr, completionUsage)
		return exitUsage
	}
	var script string
	switch args[0] {
	case "bash":
		script = bashCompletion()
	case "zsh":
		script = zshCompletion()
	case "fish":
		script = fishCompletion()
	default:
		msg := fmt.Sprintf("no completion for shell %q", args[0])
		if s := suggest.Closest(args[0], []string{"bash", "zsh", "fish"}); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		fmt.Fprintln(stderr, "moat: error: "+msg)
		fmt.Fprintln(stderr, completionUsage)
		return exitUsage
	}
	fmt.Fprint(stdout, script)
	return exitOK
}

// parseInterspersed parses fs from args, letting flags come before, between
// or after the positional arguments, which it returns. Its error is
// fs.Parse's (flag.ErrHelp for -h).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// suggestFlag returns the flag of known closest to the one a flag.FlagSet
// error names ("flag provided but not defined: -jsno"), or "".
func suggestFlag(err error, known []string) string {
	_, bad, ok := strings.Cut(err.Error(), "flag provided but not defined: ")
	if !ok {
		return ""
	}
	bare := strings.TrimLeft(bad, "-")
	names := make([]string, len(known))
	for i, k := range known {
		names[i] = strings.TrimLeft(k, "-")
	}
	if s := suggest.Closest(bare, names); s != "" {
		return known[slices.Index(names, s)]
	}
	return ""
}

// shellWords joins words for a shell script; every word in cliSpec is a
// plain [a-z0-9-] word, so no quoting is needed.
func shellWords(w []string) string { return strings.Join(w, " ") }

func flagNames(fs []cliFlag) []string {
	var n []string
	for _, f := range fs {
		n = append(n, f.name)
	}
	return n
}

// valueFlags maps each flag with a fixed set of values to them, across all
// commands (the same name always takes the same values).
func valueFlags() map[string][]string {
	m := map[string][]string{}
	for _, s := range cliSpec {
		for _, f := range s.flags {
			if len(f.values) > 0 {
				m[f.name] = f.values
			}
		}
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}

func commandNames() []string {
	var n []string
	for _, c := range commands() {
		n = append(n, c.name)
	}
	return n
}

func bashCompletion() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# bash completion for moat (moat completion bash)
# Load it with: source <(moat completion bash)
_moat() {
    local cur prev cmd words
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    cmd="${COMP_WORDS[1]}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "%s --help --version" -- "$cur"))
        return
    fi
    case "$prev" in
`, shellWords(commandNames()))
	vf := valueFlags()
	for _, f := range sortedKeys(vf) {
		fmt.Fprintf(&b, "        %s) COMPREPLY=($(compgen -W \"%s\" -- \"$cur\")); return ;;\n", f, shellWords(vf[f]))
	}
	b.WriteString("    esac\n    case \"$cmd\" in\n")
	for _, name := range commandNames() {
		s := specOf(name)
		words := append(slices.Clone(s.subcommands), flagNames(s.flags)...)
		fmt.Fprintf(&b, "        %s) words=\"%s\" ;;\n", name, shellWords(words))
	}
	b.WriteString(`        *) words="" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -o bashdefault -F _moat moat
`)
	return b.String()
}

func zshCompletion() string {
	var b strings.Builder
	b.WriteString(`#compdef moat
# zsh completion for moat (moat completion zsh)
# Load it with: source <(moat completion zsh)   (after compinit)
_moat() {
    local -a cmds words_
    cmds=(
`)
	for _, c := range commands() {
		fmt.Fprintf(&b, "        %s\n", zshQuote(c.name+":"+c.summary))
	}
	b.WriteString(`    )
    if (( CURRENT == 2 )); then
        _describe -t commands 'moat command' cmds
        _files
        return
    fi
    case ${words[CURRENT-1]} in
`)
	vf := valueFlags()
	for _, f := range sortedKeys(vf) {
		fmt.Fprintf(&b, "        %s) compadd -- %s; return ;;\n", f, shellWords(vf[f]))
	}
	b.WriteString("    esac\n    case ${words[2]} in\n")
	for _, name := range commandNames() {
		s := specOf(name)
		words := append(slices.Clone(s.subcommands), flagNames(s.flags)...)
		fmt.Fprintf(&b, "        %s) words_=(%s) ;;\n", name, shellWords(words))
	}
	b.WriteString(`        *) words_=() ;;
    esac
    compadd -a words_
    _files
}
if [[ "${funcstack[1]}" == "_moat" ]]; then
    _moat "$@"
else
    compdef _moat moat
fi
`)
	return b.String()
}

// zshQuote single-quotes s for zsh.
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func fishCompletion() string {
	var b strings.Builder
	b.WriteString("# fish completion for moat (moat completion fish)\n# Load it with: moat completion fish | source\ncomplete -c moat -f\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "complete -c moat -n __fish_use_subcommand -a %s -d %s\n", c.name, zshQuote(c.summary))
	}
	b.WriteString("complete -c moat -n __fish_use_subcommand -F\n")
	for _, name := range commandNames() {
		s := specOf(name)
		cond := zshQuote("__fish_seen_subcommand_from " + name)
		if len(s.subcommands) > 0 {
			fmt.Fprintf(&b, "complete -c moat -n %s -a %s\n", cond, zshQuote(shellWords(s.subcommands)))
		}
		if s.files {
			fmt.Fprintf(&b, "complete -c moat -n %s -F\n", cond)
		}
		for _, f := range s.flags {
			opt := "-l " + strings.TrimPrefix(f.name, "--")
			if !strings.HasPrefix(f.name, "--") {
				opt = "-s " + strings.TrimPrefix(f.name, "-")
			}
			switch {
			case len(f.values) > 0:
				opt += " -x -a " + zshQuote(shellWords(f.values))
			case f.arg:
				opt += " -r -F"
			}
			fmt.Fprintf(&b, "complete -c moat -n %s %s\n", cond, opt)
		}
	}
	return b.String()
}
