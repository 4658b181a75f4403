package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/moatmcp/moat/internal/importer"
	"github.com/moatmcp/moat/internal/secrets"
)

const importUsage = `usage: moat import TOOL|FILE [flags]
  TOOL is one of: cursor, opencode, claude-desktop, claude, vscode, cline, kilocode, codex, gemini, antigravity
  FILE is any config file in one of these tools' formats
flags:
  --global               the tool's user-wide config instead of the current project's
  -o PATH                where to write the Moat config (default moat.json)
  --force                overwrite PATH without asking
  --yes                  take every default without asking (for scripts)
  --secrets keychain|keep  move literal credentials into the secret store (the default
                         when it opens), or keep them in the file and say where they are`

// importCommand runs `moat import ARGS...` (args excludes "import"). Prompts
// and progress go to stderr, answers come from stdin, the summary goes to
// stdout. It returns 0 ok, 1 runtime failure, 2 usage error.
func importCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	usageErr := func(err error) int {
		printError(stderr, err)
		fmt.Fprintln(stderr, importUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("moat import", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	global := fs.Bool("global", false, "")
	force := fs.Bool("force", false, "")
	yes := fs.Bool("yes", false, "")
	out := fs.String("o", "moat.json", "")
	secretMode := fs.String("secrets", "", "")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, importUsage)
		return exitOK
	}
	if err != nil {
		return usageErr(err)
	}
	if len(pos) != 1 {
		return usageErr(errors.New("moat import takes one TOOL or FILE"))
	}
	if *secretMode != "" && *secretMode != "keychain" && *secretMode != "keep" {
		return usageErr(fmt.Errorf("--secrets %q: use keychain or keep", *secretMode))
	}

	im, code := importSource(pos[0], *global, stderr)
	if im == nil {
		return code
	}
	outPath, err := filepath.Abs(*out)
	if err != nil {
		printError(stderr, err)
		return exitFailure
	}
	p := &prompter{in: bufio.NewReader(stdin), out: stderr, yes: *yes}
	if _, err := os.Lstat(outPath); err == nil && !*force {
		if *yes {
			printError(stderr, &hintError{fmt.Errorf("%s exists", outPath), []string{"pass --force to replace it, or -o to write elsewhere"}})
			return exitFailure
		}
		if !p.confirm(fmt.Sprintf("Overwrite %s?", outPath)) {
			fmt.Fprintln(stderr, "moat: import cancelled; nothing was written")
			return exitFailure
		}
	}

	names := slices.Sorted(maps.Keys(im.Servers))
	fmt.Fprintf(stderr, "Found %d MCP server(s).\n", len(names))
	for _, name := range names {
		describe(stderr, im, name)
		s := im.Servers[name]
		s.Description = p.ask(fmt.Sprintf("Description for %q", name), s.Description)
		if !p.yesNo("Keep all features (tools, resources, prompts)?") {
			s.Features.Tools = p.yesNo("  Enable tools?")
			s.Features.Resources = p.yesNo("  Enable resources?")
			s.Features.Prompts = p.yesNo("  Enable prompts?")
		}
	}

	moved, code := moveSecrets(ctx, im, *secretMode, stderr)
	if code != exitOK {
		return code
	}
	data, err := importer.Render(im)
	if err != nil {
		printError(stderr, err)
		return exitFailure
	}
	if err := writeAtomic(outPath, data, *force || p.confirmedOverwrite); err != nil {
		printError(stderr, err)
		return exitFailure
	}
	summarize(stdout, im, moved, outPath)
	return exitOK
}

// importSource reads the named tool's config, or the file.
func importSource(arg string, global bool, stderr io.Writer) (*importer.Imported, int) {
	tool, lookupErr := importer.Lookup(arg)
	var path string
	if lookupErr != nil {
		if _, err := os.Stat(arg); err != nil {
			if strings.ContainsAny(arg, `./\`) {
				printError(stderr, fmt.Errorf("import: %w", err))
				return nil, exitFailure
			}
			printError(stderr, lookupErr)
			return nil, exitUsage
		}
		if global {
			printError(stderr, errors.New("import: --global goes with a TOOL name, not a FILE"))
			return nil, exitUsage
		}
		path = arg
	} else {
		home, err := os.UserHomeDir()
		if err != nil {
			printError(stderr, fmt.Errorf("import: cannot find your home directory: %w", err))
			return nil, exitFailure
		}
		wd, err := os.Getwd()
		if err != nil {
			printError(stderr, fmt.Errorf("import: %w", err))
			return nil, exitFailure
		}
		if path, err = tool.Locate(wd, home, runtime.GOOS, global); err != nil {
			printError(stderr, err)
			return nil, exitUsage
		}
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			other := "--global for your user-wide config"
			if global {
				other = "without --global for this project's config"
			}
			printError(stderr, &hintError{fmt.Errorf("import: no %s config at %s", tool.Display, path),
				[]string{"try " + other + ", or give the file: moat import PATH"}})
			return nil, exitFailure
		}
	}
	fmt.Fprintf(stderr, "Reading %s\n", path)
	var im *importer.Imported
	var err error
	if tool != nil {
		im, err = importer.Read(tool, path)
	} else {
		im, err = importer.ReadFile(path)
	}
	if err != nil {
		printError(stderr, err)
		return nil, exitFailure
	}
	if len(im.Servers) == 0 {
		printError(stderr, fmt.Errorf("import: no server in %s can be imported", path))
		printDropped(stderr, im.Dropped)
		return nil, exitFailure
	}
	return im, exitOK
}

// describe shows one server without any literal credential: env and header
// values are never shown, and flagged args and urls are masked.
func describe(w io.Writer, im *importer.Imported, name string) {
	s := im.Servers[name]
	state := ""
	if !s.Enabled {
		state = " (disabled)"
	}
	fmt.Fprintf(w, "\n%s%s\n", name, state)
	if s.Command != "" {
		args := make([]string, len(s.Args))
		for i, a := range s.Args {
			args[i] = im.Redacted(name, fmt.Sprintf("args[%d]", i), a)
		}
		fmt.Fprintf(w, "  runs   %s\n", strings.TrimSpace(s.Command+" "+strings.Join(args, " ")))
	} else {
		t := s.Type
		if t == "" {
			t = "http, falling back to sse"
		}
		fmt.Fprintf(w, "  url    %s (%s)\n", im.Redacted(name, "url", s.URL), t)
	}
	if len(s.Env) > 0 {
		fmt.Fprintf(w, "  env    %s\n", strings.Join(slices.Sorted(maps.Keys(s.Env)), ", "))
	}
	if len(s.Headers) > 0 {
		fmt.Fprintf(w, "  headers %s\n", strings.Join(slices.Sorted(maps.Keys(s.Headers)), ", "))
	}
}

// moveSecrets stores literal credentials unless mode is "keep". With no
// mode given, a store that does not open means keep, with a note.
func moveSecrets(ctx context.Context, im *importer.Imported, mode string, stderr io.Writer) ([]importer.Moved, int) {
	if mode == "keep" || !movable(im.Literals) {
		return nil, exitOK
	}
	// The config being written has no secrets block yet: the managed
	// policy alone can require encryption.
	_, require := peekSecrets("")
	store, err := secrets.Open(ctx, &secrets.Options{Backend: secrets.BackendAuto, RequireEncryption: require})
	if err != nil {
		if mode == "keychain" {
			printError(stderr, err)
			fmt.Fprintln(stderr, "moat: hint: or pass --secrets keep to leave them in the file")
			return nil, exitFailure
		}
		fmt.Fprintf(stderr, "moat: note: the secret store cannot be opened (%v); literal credentials stay in the file\n", err)
		return nil, exitOK
	}
	if why := store.Fallback(); why != nil {
		fmt.Fprintf(stderr, "moat: note: the keychain is not usable (%v); using the %s\n", why, store.Backend())
	}
	moved, err := importer.MoveSecrets(ctx, im, store)
	if err != nil {
		printError(stderr, err)
		return nil, exitFailure
	}
	for _, m := range moved {
		fmt.Fprintf(stderr, "Stored %s of %q in the %s as %q\n", m.Where, m.Server, store.Backend(), m.Name)
	}
	return moved, exitOK
}

func movable(ls []importer.Literal) bool {
	for _, l := range ls {
		if l.Movable() {
			return true
		}
	}
	return false
}

func summarize(w io.Writer, im *importer.Imported, moved []importer.Moved, outPath string) {
	fmt.Fprintf(w, "Wrote %s (mode 0600) from %s:\n", outPath, im.Source)
	for _, name := range slices.Sorted(maps.Keys(im.Servers)) {
		s := im.Servers[name]
		state := ""
		if !s.Enabled {
			state = " (disabled, as in the source)"
		}
		fmt.Fprintf(w, "  %s: %s%s\n", name, s.Description, state)
	}
	if len(moved) > 0 {
		fmt.Fprintln(w, "Moved into the secret store:")
		for _, m := range moved {
			fmt.Fprintf(w, "  %s %s -> ${secret:%s}\n", m.Server, m.Where, m.Name)
		}
	}
	printDropped(w, im.Dropped)
	if len(im.Literals) > 0 {
		fmt.Fprintln(w, "Literal credentials still in the file:")
		for _, l := range im.Literals {
			fmt.Fprintf(w, "  %s %s: %s; %s\n", l.Server, l.Where, l.Reason, l.Fix())
		}
	}
	if len(im.Inputs) > 0 {
		fmt.Fprintln(w, "VS Code inputs became secret references; store each one:")
		for _, in := range im.Inputs {
			fmt.Fprintf(w, "  moat secret set %s\n", in)
		}
	}
	fmt.Fprintf(w, "Next:\n  moat doctor %s\n  moat %s\n", outPath, outPath)
}

func printDropped(w io.Writer, ds []importer.Dropped) {
	if len(ds) == 0 {
		return
	}
	fmt.Fprintln(w, "Not carried over, or changed (check these):")
	for _, d := range ds {
		fmt.Fprintf(w, "  %s %s: %s\n", d.Server, d.Field, d.Why)
	}
}

// prompter asks on out and reads answers from in. At end of input every
// question takes its default; it never aborts.
type prompter struct {
	in                 *bufio.Reader
	out                io.Writer
	yes                bool // take every default without asking
	eof                bool
	confirmedOverwrite bool
}

func (p *prompter) line(prompt string) (string, bool) {
	if p.yes || p.eof {
		return "", false
	}
	fmt.Fprint(p.out, prompt)
	s, err := p.in.ReadString('\n')
	if err != nil {
		p.eof = true
		if s == "" {
			fmt.Fprintln(p.out)
			return "", false
		}
	}
	return strings.TrimSpace(s), true
}

// ask returns the answer, or def for an empty answer or end of input.
func (p *prompter) ask(question, def string) string {
	if a, ok := p.line(fmt.Sprintf("%s [%s]: ", question, def)); ok && a != "" {
		return a
	}
	return def
}

// yesNo asks question with the default yes ([Y/n]).
func (p *prompter) yesNo(question string) bool {
	return p.choose(question, true)
}

// confirm asks question with the default no ([y/N]).
func (p *prompter) confirm(question string) bool {
	p.confirmedOverwrite = p.choose(question, false)
	return p.confirmedOverwrite
}

// choose asks a yes/no question until the answer is y, yes, n or no (any
// case); an empty answer or end of input takes def, shown in capitals.
func (p *prompter) choose(question string, def bool) bool {
	hint := "[y/N]"
	if def {
		hint = "[Y/n]"
	}
	for {
		a, ok := p.line(question + " " + hint + " ")
		switch strings.ToLower(a) {
		case "y", "yes":
			return true
		case "n", "no":
			return false
		case "":
			return def
		}
		if !ok {
			return def
		}
		fmt.Fprintf(p.out, "Please answer y or n (%q is neither).\n", a)
	}
}

// writeAtomic writes data to path with mode 0600 whatever the umask: a
// temp file in the same directory, fsynced, then renamed over path (when
// replace) or linked to it (which fails if path appeared meanwhile).
func writeAtomic(path string, data []byte, replace bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".moat-import-*.tmp")
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("import: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("import: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("import: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("import: writing %s: %w", path, err)
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("import: %w", err)
		}
	} else {
		if err := os.Link(tmp, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return &hintError{fmt.Errorf("import: %s appeared while importing; nothing was written", path), []string{"run again with --force to replace it"}}
			}
			return fmt.Errorf("import: %w", err)
		}
		os.Remove(tmp)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename is durable once the directory is
		d.Close()
	}
	return nil
}

// hintError is an error with lines telling the user what to do.
type hintError struct {
	err   error
	hints []string
}

func (e *hintError) Error() string   { return e.err.Error() }
func (e *hintError) Unwrap() error   { return e.err }
func (e *hintError) Hints() []string { return e.hints }
