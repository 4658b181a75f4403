// Command moat is a security-hardened MCP proxy: an LLM client starts it as
// one stdio MCP server, and it fronts every upstream MCP server in its
// config behind two tools, get_dynamic_tools and call_dynamic_tool.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/sandbox"

	"github.com/moatmcp/moat/internal/suggest"
)

// Set by the linker (see Makefile).
var (
	version = "dev"
	commit  = "unknown"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // usage or config error
)

// command is one `moat NAME` subcommand.
type command struct {
	name    string
	summary string
	example string
	run     func(ctx context.Context, args []string) int
	// usage is the full help of a command whose run does not print its own
	// on --help; `moat help NAME` and `moat NAME --help` show the same.
	usage string
}

// Full help of the commands that do not print their own.
const (
	serveUsage = `usage: moat [serve] [--listen unix:SOCKET|HOST:PORT]... [CONFIG | --config FILE]
  runs the proxy on stdio: an MCP client starts it as one server, and it
  fronts every server of the config behind get_dynamic_tools and
  call_dynamic_tool; it reloads the config when the file changes
  --listen unix:SOCKET  serve as a gateway instead: every client that
                        connects to SOCKET (through moat connect) is a
                        session of its own, identified by its uid and
                        shown what the config's gateway.identities allow;
                        "unix:" alone is $XDG_RUNTIME_DIR/moat/gateway.sock
  --listen HOST:PORT    serve the gateway over Streamable HTTP at /mcp:
                        each client presents a token (moat token create)
                        that gateway.identities.NAME.tokens names; HTTPS
                        with gateway.tls, plain HTTP on loopback only
  CONFIG defaults to $MOAT_CONFIG, else $DYNAMIC_MCP_CONFIG
exit status: 0 ok, 1 runtime failure, 2 usage or config error`
	configUsage = `usage:
  moat config validate [CONFIG | --config FILE]   check a config: every problem, with its JSON path, line and column
  moat config schema                              print the config's JSON Schema (config-schema.json)
exit status: 0 ok, 2 usage or config error`
	toolsUsage = `usage: moat tools [CONFIG] [GROUP]
  lists what the model sees of each group (or one), as a table, through
  the full guard: held, denied and failing tools show why
  CONFIG (--config FILE, or a first argument ending in .json or .jsonc)
  defaults to $MOAT_CONFIG, else $DYNAMIC_MCP_CONFIG
exit status: 0 ok, 1 a group failed, 2 usage or config error`
	callUsage = `usage: moat call [CONFIG] GROUP TOOL ['{"json": "arguments"}']
  runs one tool call through the full guard (policy, pins, validation,
  limits, redaction, audit) and prints the result as JSON, for debugging
  CONFIG (--config FILE, or a first argument ending in .json or .jsonc)
  defaults to $MOAT_CONFIG, else $DYNAMIC_MCP_CONFIG
exit status: 0 ok, 1 the call failed, 2 usage or config error`
	policyUsage = `usage: moat policy check [CONFIG | --config FILE]
  explains the effective policy of every tool of every group: allowed or
  denied and by which rule, argument constraints, sizes, the timeout a call
  gets, rate and concurrency limits, pin and redaction modes
  CONFIG defaults to $MOAT_CONFIG, else $DYNAMIC_MCP_CONFIG
exit status: 0 ok, 2 usage or config error`
	versionUsage = `usage: moat version
  prints the version, commit and Go version (also: moat --version, -V)`
	helpUsage = `usage: moat help [COMMAND]
  shows the commands, or one command's full help (as moat COMMAND --help)`
)

func commands() []command {
	return []command{
		{"serve", "run the proxy on stdio (the default), or as a gateway on a socket", "moat serve ~/.config/moat/moat.json", runServe, serveUsage},
		{"connect", "bridge stdio to a running Moat gateway", "moat connect", runConnect, connectUsage},
		{"config", "check a config file, or print its JSON Schema", "moat config validate moat.json", runConfig, configUsage},
		{"import", "turn another AI tool's MCP config into a Moat config", "moat import cursor", func(ctx context.Context, args []string) int {
			return importCommand(ctx, args, os.Stdin, os.Stdout, os.Stderr)
		}, ""},
		{"secret", "store, remove and list secrets in the OS keychain", "moat secret set github-token", func(ctx context.Context, args []string) int {
			return secretCommand(ctx, args, os.Stdin, os.Stdout, os.Stderr)
		}, ""},
		{"unlock", "keep the encrypted secret store's key in the kernel keyring until reboot", "moat unlock", func(ctx context.Context, args []string) int {
			return secretCommand(ctx, append([]string{"unlock"}, args...), os.Stdin, os.Stdout, os.Stderr)
		}, ""},
		{"lock", "remove that key from the kernel keyring", "moat lock", func(ctx context.Context, args []string) int {
			return secretCommand(ctx, append([]string{"lock"}, args...), os.Stdin, os.Stdout, os.Stderr)
		}, ""},
		{"auth", "log in to OAuth servers, see tokens, log out", "moat auth login github", func(ctx context.Context, args []string) int {
			return authCommand(ctx, args, func() (string, error) {
				p, _, err := config.ResolvePath("", os.LookupEnv)
				return p, err
			}, os.Stdout, os.Stderr)
		}, ""},
		{"token", "create, list and revoke the gateway's HTTP bearer tokens", "moat token create laptop", func(ctx context.Context, args []string) int {
			return tokenCommand(ctx, args, os.Stdout, os.Stderr)
		}, ""},
		{"tools", "list what the model sees of each group (or one), as a table", "moat tools moat.json files", runTools, toolsUsage},
		{"call", "run one tool call through the full guard, for debugging", `moat call files read_file '{"path": "/tmp/x"}'`, runCall, callUsage},
		{"policy", "explain the effective policy of every tool", "moat policy check moat.json", runPolicy, policyUsage},
		{"pins", "show and approve tools that changed since they were approved", "moat pins diff files", func(ctx context.Context, args []string) int {
			return pinsCommand(ctx, args, os.Stdout, os.Stderr)
		}, ""},
		{"audit", "verify, follow or export the key of the audit log", "moat audit verify", func(ctx context.Context, args []string) int {
			return auditCommand(ctx, args, storedAudit{}, os.Stdout, os.Stderr)
		}, ""},
		{"doctor", "check that the setup is safe and working, with fixes", "moat doctor moat.json", runDoctor, ""},
		{"completion", "print a shell completion script (bash, zsh, fish)", "source <(moat completion bash)", runCompletion, ""},
		{"version", "print version, commit and Go version", "moat version", runVersion, versionUsage},
		{"help", "show help for a command", "moat help secret", runHelp, helpUsage},
	}
}

func main() {
	// The sandbox launcher is moat re-executed; it must run before anything
	// else touches the process (threads, signals, files).
	sandbox.MaybeRunLauncher()
	os.Exit(run(context.Background(), os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "-h" || a == "--help":
			usage(os.Stdout)
			return exitOK
		case a == "-V" || a == "--version":
			return runVersion(ctx, nil)
		case a == "--config" || strings.HasPrefix(a, "--config="):
			return runServe(ctx, args)
		case strings.HasPrefix(a, "-"):
			if f := suggest.Closest(a, []string{"--help", "--version"}); f != "" {
				return usageError("unknown flag %q; did you mean %q?", a, f)
			}
			return usageError("unknown flag %q", a)
		}
		for _, c := range commands() {
			if c.name == args[0] {
				if c.usage != "" && wantsHelp(args[1:]) {
					fmt.Println(c.usage)
					return exitOK
				}
				return c.run(ctx, args[1:])
			}
		}
		// A positional argument that is not a command is the config path,
		// as in dynamic-mcp: `moat path/to/dynamic-mcp.json`.
		if _, err := os.Stat(args[0]); err != nil && !strings.ContainsAny(args[0], "./") {
			if s := suggestCommand(args[0]); s != "" {
				return usageError("unknown command %q; did you mean %q?", args[0], s)
			}
			return usageError("unknown command %q, and no file of that name", args[0])
		}
	}
	return runServe(ctx, args)
}

// environment lists every environment variable Moat itself reads, for
// --help (TestHelpListsTheEnvironment checks it against the source).
var environment = [][2]string{
	{"MOAT_CONFIG", "the config file when none is given"},
	{"DYNAMIC_MCP_CONFIG", "the config file when none is given and MOAT_CONFIG is unset (dynamic-mcp's)"},
	{"MOAT_LOG", "log level on stderr: debug, info, warn (default), error"},
	{"MOAT_PASSPHRASE", "passphrase of the encrypted secret file store, used when no OS keychain answers"},
	{"CREDENTIALS_DIRECTORY", "systemd's credentials: the file moat-passphrase in it is the passphrase when MOAT_PASSPHRASE is unset"},
	{"MOAT_NEW_PASSPHRASE", "the new passphrase for `moat secret encrypt` on an encrypted store (else it asks)"},
	{"MOAT_MANAGED_POLICY", "the managed policy file (default /etc/moat/policy.json)"},
	{"MOAT_CPUPROFILE", "write a CPU profile of a serving moat to this file (`make profile` sets it)"},
	{"XDG_STATE_HOME", "the audit log goes under it, in moat/ (default ~/.local/state)"},
	{"XDG_DATA_HOME", "the pin store and the secret file store go under it, in moat/ (default ~/.local/share)"},
	{"XDG_RUNTIME_DIR", "where the systemd user manager is asked for a cgroup scope per server, and the gateway's socket goes (moat/gateway.sock)"},
	{"LISTEN_PID LISTEN_FDS", "systemd socket activation: the sockets `moat serve --listen systemd` serves"},
	{"MOAT_GATEWAY_SOCKET", "the gateway's socket for `moat serve --listen unix:` and `moat connect` (default $XDG_RUNTIME_DIR/moat/gateway.sock)"},
	{"HOME", "~ in paths, and the defaults above"},
	{"DBUS_SESSION_BUS_ADDRESS", "the session bus of the OS keychain (Secret Service)"},
	{"HTTPS_PROXY HTTP_PROXY NO_PROXY", "proxy for remote (url) servers"},
	{"any ${VAR} in the config", "expanded when the config is loaded; servers get only inherit_env and env"},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Moat is a security-hardened MCP proxy.\n\nUsage:\n  moat [serve] [CONFIG]   (CONFIG, else $MOAT_CONFIG, else $DYNAMIC_MCP_CONFIG)\n  moat COMMAND [ARGS]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n             e.g. %s\n", c.name, c.summary, c.example)
	}
	fmt.Fprintf(w, "\nEnvironment:\n")
	for _, e := range environment {
		fmt.Fprintf(w, "  %-32s %s\n", e[0], e[1])
	}
	fmt.Fprintf(w, "\nExit status: 0 ok, 1 runtime failure, 2 usage or config error.\n")
}

func usageError(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "moat: error: "+format+"\n", args...)
	fmt.Fprintln(os.Stderr, "moat: hint: run `moat --help` for the commands")
	return exitUsage
}

// usageFailure prints a subcommand's usage error, its hints and its usage
// text, and returns the usage exit code.
func usageFailure(stderr io.Writer, usageText, msg string, hints ...string) int {
	fmt.Fprintf(stderr, "moat: error: %s\n", msg)
	for _, h := range hints {
		fmt.Fprintf(stderr, "moat: hint: %s\n", h)
	}
	fmt.Fprintln(stderr, usageText)
	return exitUsage
}

// suggestCommand returns the command closest to s, if any is close.
func suggestCommand(s string) string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return suggest.Closest(s, names)
}

func runVersion(context.Context, []string) int {
	fmt.Printf("moat %s (commit %s, %s)\n", version, commit, goVersion())
	return exitOK
}

// wantsHelp reports whether args ask for help: -h, --help or help among
// them (before a "--").
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "--help", "-help":
			return true
		}
	}
	return false
}

func runHelp(ctx context.Context, args []string) int {
	if len(args) == 0 {
		usage(os.Stdout)
		return exitOK
	}
	if wantsHelp(args) {
		fmt.Println(helpUsage)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			if c.usage != "" {
				fmt.Println(c.usage)
				return exitOK
			}
			return c.run(ctx, []string{"--help"})
		}
	}
	if s := suggestCommand(args[0]); s != "" {
		return usageError("no command %q; did you mean %q?", args[0], s)
	}
	return usageError("no command %q", args[0])
}

// newLogger logs to stderr (stdout carries MCP) at MOAT_LOG's level.
func newLogger() (*slog.Logger, error) {
	var level slog.Level
	switch v := strings.ToLower(os.Getenv("MOAT_LOG")); v {
	case "", "warn", "warning":
		level = slog.LevelWarn
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "error":
		level = slog.LevelError
	default:
		return nil, fmt.Errorf("MOAT_LOG=%q: use debug, info, warn or error", v)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})), nil
}

// printError prints err as `moat: error:` and its hints as `moat: hint:`.
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "moat: error: %v\n", err)
	var h interface{ Hints() []string }
	if errors.As(err, &h) {
		for _, hint := range h.Hints() {
			fmt.Fprintf(w, "moat: hint: %s\n", hint)
		}
	}
}
