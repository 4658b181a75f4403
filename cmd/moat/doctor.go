package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/doctor"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/secrets"
	"github.com/moatmcp/moat/internal/upstream"
)

const doctorUsage = `usage: moat doctor [--json] [CONFIG | --config FILE]
  checks the config, the secret store, every server (command, connection,
  protocol, tools, sandbox protections, HTTPS/TLS, OAuth), the audit log and
  what this machine can enforce; each line is ✓ ok, ⚠ warning or ✗ problem,
  with the fix
  CONFIG defaults to $MOAT_CONFIG, else $DYNAMIC_MCP_CONFIG
flags:
  --json    print the checks as JSON (for scripts)
exit status: 0 nothing failed (warnings allowed), 1 something failed, 2 usage or no config`

// doctorFlags are the flags `moat doctor` accepts, for completion and
// "did you mean".
var doctorFlags = []string{"--json", "--help"}

// doctorCommand runs `moat doctor ARGS...` (args excludes "doctor").
// Progress goes to stderr when it is a terminal; the report goes to stdout.
func doctorCommand(ctx context.Context, args []string, stdout, stderr io.Writer, stderrIsTerminal bool) int {
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "moat: error: "+format+"\n", a...)
		fmt.Fprintln(stderr, doctorUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("moat doctor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "")
	cfg, rest := configArg(args)
	pos, err := parseInterspersed(fs, rest)
	pos = append(cfg, pos...)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, doctorUsage)
		return exitOK
	}
	if err != nil {
		if s := suggestFlag(err, doctorFlags); s != "" {
			return usageErr("%v; did you mean %s?", err, s)
		}
		return usageErr("%v", err)
	}
	if len(pos) > 1 {
		return usageErr("moat doctor takes at most one CONFIG, got %d", len(pos))
	}
	arg := ""
	if len(pos) == 1 {
		arg = pos[0]
	}
	path, _, err := config.ResolvePath(arg, os.LookupEnv)
	if err != nil {
		if errors.Is(err, config.ErrNoConfig) {
			fmt.Fprintln(stderr, "moat: error: no config file given")
			fmt.Fprintln(stderr, "moat: hint: run `moat doctor path/to/moat.json`, or set MOAT_CONFIG (DYNAMIC_MCP_CONFIG also works)")
			return exitUsage
		}
		printError(stderr, err)
		return exitUsage
	}
	if _, err := os.Stat(path); err != nil {
		printError(stderr, fmt.Errorf("config %s: %w", path, err))
		return exitUsage
	}

	// Library code logs through slog's default (sandbox, netguard) on
	// stderr. The report already says what those warnings would, so only
	// errors are logged unless MOAT_LOG asks for more.
	if os.Getenv("MOAT_LOG") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	} else if log, err := newLogger(); err == nil {
		slog.SetDefault(log)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	upstream.Version = version
	home, _ := os.UserHomeDir()
	opts := doctor.Options{
		ConfigPath: path,
		Getenv:     os.LookupEnv,
		Home:       home,
		// One store for the config's secrets, the audit keys and OAuth,
		// so a passphrase is derived once.
		OpenStore: func(ctx context.Context, backend string) (*secrets.Store, error) {
			processStore.backend = backend
			_, processStore.require = peekSecrets(path)
			return processStore.get(ctx)
		},
		HTTPClient: httpClientFor,
		OAuth:      oauthFor(slog.Default(), ""),
		OAuthClient: func(s *config.Server) (*http.Client, error) {
			return netguard.NewOAuthClient(netOptions(s))
		},
		AuditPath: auditLogPathOfDefault(),
		Tokens: func(ctx context.Context, s *secrets.Store) ([]string, error) {
			stored, err := readTokens(ctx, s)
			var names []string
			for _, t := range stored {
				names = append(names, t.Name)
			}
			return names, err
		},
	}
	if stderrIsTerminal {
		fmt.Fprintln(stderr, "moat doctor: checking the config, the secret store and every server...")
		opts.Progress = func(server string, done, total int) {
			fmt.Fprintf(stderr, "  [%d/%d] %s checked\n", done, total, server)
		}
	}
	rep := doctor.Run(ctx, opts)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			printError(stderr, err)
			return exitFailure
		}
	} else if err := doctor.WriteText(stdout, rep); err != nil {
		printError(stderr, err)
		return exitFailure
	}
	if rep.Failed() {
		return exitFailure
	}
	return exitOK
}

// auditLogPathOfDefault is the audit log's path when the config sets none.
func auditLogPathOfDefault() string {
	return auditLogPathOf(&config.Config{})
}

// runDoctor is the commands() entry of `moat doctor`.
func runDoctor(ctx context.Context, args []string) int {
	return doctorCommand(ctx, args, os.Stdout, os.Stderr, term.IsTerminal(int(os.Stderr.Fd())))
}
