package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/term"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/upstream"
)

func goVersion() string { return runtime.Version() }

// reloadDebounce lets an editor finish a save before Moat reads the file.
const reloadDebounce = 250 * time.Millisecond

func runServe(ctx context.Context, args []string) int {
	if len(args) > 1 {
		return usageError("serve takes one config path, got %d arguments", len(args))
	}
	log, err := newLogger()
	if err != nil {
		printError(os.Stderr, err)
		return exitUsage
	}
	// Packages that log through slog's default (config.Watch, sandbox) must
	// reach the same handler: stderr, MOAT_LOG's level.
	slog.SetDefault(log)
	arg := ""
	if len(args) == 1 {
		arg = args[0]
	}
	path, source, err := config.ResolvePath(arg, os.LookupEnv)
	if err != nil {
		if errors.Is(err, config.ErrNoConfig) {
			fmt.Fprintln(os.Stderr, "moat: error: no config file given")
			fmt.Fprintln(os.Stderr, "moat: hint: run `moat path/to/moat.json`, or set MOAT_CONFIG (DYNAMIC_MCP_CONFIG also works)")
			fmt.Fprintln(os.Stderr)
			usage(os.Stderr)
			return exitUsage
		}
		printError(os.Stderr, err)
		return exitUsage
	}
	cfg, err := config.Load(path, loadOptions())
	if err != nil {
		printError(os.Stderr, err)
		return exitUsage
	}
	log.Info("config loaded", "path", path, "from", source, "servers", len(cfg.Servers))

	upstream.Version = version
	p := proxy.New(proxy.Options{
		Logger:  log,
		Version: version,
		Upstream: upstream.Options{
			HTTPClient: httpClientFor,
		},
	})
	p.Apply(cfg)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go watchConfig(ctx, log, path, p)

	if term.IsTerminal(int(os.Stdin.Fd())) {
		banner(cfg)
	}
	if err := p.Run(ctx, &mcp.StdioTransport{}); err != nil && ctx.Err() == nil && !isEOF(err) {
		log.Error("serving the client failed", "err", err)
		return exitFailure
	}
	return exitOK
}

func isEOF(err error) bool {
	return errors.Is(err, mcp.ErrConnectionClosed) || strings.Contains(err.Error(), "EOF")
}

// httpClientFor builds the guarded HTTP client of one remote server.
func httpClientFor(s *config.Server) (*http.Client, error) {
	// A response may take as long as the server's longest timeout: the
	// guard must not cut a slow tool call that the config allows.
	longest := max(s.Timeout.Tools, s.Timeout.Resources, s.Timeout.Prompts)
	return netguard.NewClient(s.URL, &netguard.Options{
		Headers:               s.Headers,
		ResponseHeaderTimeout: longest + 5*time.Second,
	})
}

// watchConfig reloads the config when its file changes. A file that does
// not load is reported and ignored: Moat keeps serving the last good one.
func watchConfig(ctx context.Context, log *slog.Logger, path string, p *proxy.Server) {
	err := config.Watch(ctx, path, reloadDebounce, func() {
		cfg, err := config.Load(path, loadOptions())
		if err != nil {
			log.Error("config reload rejected; still serving the previous config", "path", path, "err", err)
			return
		}
		log.Info("config reloaded", "path", path, "servers", len(cfg.Servers), "hash", cfg.Hash)
		p.Apply(cfg)
	})
	if err != nil && ctx.Err() == nil {
		log.Error("watching the config failed; live reload is off", "path", path, "err", err)
	}
}

// banner tells a person who started moat in a terminal what is going on:
// stdout is an MCP stream, so this goes to stderr.
func banner(cfg *config.Config) {
	w := os.Stderr
	fmt.Fprintf(w, "moat %s: serving MCP on stdin/stdout for an MCP client (this terminal is not a chat).\n", version)
	fmt.Fprintf(w, "Config: %s\n", cfg.Path)
	var on, off []string
	for _, name := range sortedServerNames(cfg) {
		s := cfg.Servers[name]
		if s.Enabled {
			on = append(on, fmt.Sprintf("  - %s (%s): %s", name, s.Type, oneLine(s.Description, 70)))
		} else {
			off = append(off, name)
		}
	}
	fmt.Fprintf(w, "Groups (%d):\n%s\n", len(on), strings.Join(on, "\n"))
	if len(off) > 0 {
		fmt.Fprintf(w, "Disabled: %s\n", strings.Join(off, ", "))
	}
	fmt.Fprintf(w, "Groups connect once a client has initialized the session.\n")
	fmt.Fprintf(w, "Connect a client, e.g. the MCP Inspector:\n  npx @modelcontextprotocol/inspector %s %s\n", selfPath(), cfg.Path)
	fmt.Fprintf(w, "or add {\"command\": %q, \"args\": [%q]} to Claude Desktop's mcpServers.\n", selfPath(), cfg.Path)
	fmt.Fprintf(w, "Press Ctrl-C (or Ctrl-D) to stop. Set MOAT_LOG=info to see groups connect.\n")
}

func selfPath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "moat"
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
