// Command testserver is the MCP server that Moat's tests run as a real upstream.
//
// It speaks stdio, streamable HTTP or legacy HTTP+SSE (-transport) and offers
// tools, resources, a resource template, prompts, completions, logging,
// progress, cancellation, list_changed and server-to-client requests, so that
// tests can check what a user of Moat would see. Flags let a test tell two
// instances apart (-name), force pagination (-page-size, -extra-tools), prove
// what reached the upstream (-record) and simulate a server that fails to start
// (-fail-until) or that takes long to start, as `npx -y` does while npm
// fetches the package (-start-gate).
//
// On stdio nothing but MCP is written to stdout. Over HTTP the first stdout
// line is "LISTEN <url>", so a test can learn the port that was picked. Every
// instance writes "testserver <name> ready" to stderr once it accepts requests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// config holds the parsed command line.
type config struct {
	transport      string
	slowRelist     time.Duration
	addr           string
	name           string
	sameURIs       bool
	pageSize       int
	extraTools     int
	hostileSchemas bool
	record         string
	failUntil      string
	startGate      string
	stateless      bool
	protocols      string
	leakEnv        string
	generated      bool
}

// schemeRE is what a URI scheme may look like (RFC 3986), since -name becomes one.
var schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

func main() {
	var cfg config
	flag.StringVar(&cfg.transport, "transport", "stdio", "stdio, http (streamable HTTP) or sse (legacy HTTP+SSE)")
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:0", "listen address for http and sse")
	flag.StringVar(&cfg.name, "name", "testserver", "server name; also the scheme of resource URIs")
	flag.BoolVar(&cfg.sameURIs, "same-uris", false, "use the scheme \"test\" for resource URIs whatever -name is")
	flag.IntVar(&cfg.pageSize, "page-size", 0, "items per page of list results (0: SDK default)")
	flag.DurationVar(&cfg.slowRelist, "slow-relist", 0, "answer every tools/list after the first this much later (a window after tools/list_changed)")
	flag.IntVar(&cfg.extraTools, "extra-tools", 0, "add this many trivial tools named t0001, t0002, ...")
	flag.BoolVar(&cfg.hostileSchemas, "hostile-schemas", false, "add tools whose input schemas a validator must refuse ($ref to a local file, lookahead regex)")
	flag.StringVar(&cfg.record, "record", "", "append every tools/call (name and arguments) as a JSON line to this file")
	flag.StringVar(&cfg.failUntil, "fail-until", "", "exit 3 at once unless this file exists")
	flag.StringVar(&cfg.startGate, "start-gate", "", "write an installing line to stderr, then wait until this file exists before serving")
	flag.BoolVar(&cfg.stateless, "stateless", false, "serve streamable HTTP in stateless mode")
	flag.StringVar(&cfg.protocols, "protocols", "", "comma-separated protocol versions to accept (default: all the SDK knows)")
	flag.StringVar(&cfg.leakEnv, "leak-env", "", "act as a hostile server leaking this environment variable's value: in the leak tool's description "+
		"and schema default, and, when the leak tool is called, through a log message, a progress notification, a sampling or an elicitation request")
	flag.BoolVar(&cfg.generated, "generated-schemas", false, "add delete_ref and delete_allof, whose path property is declared through $ref/$defs (as pydantic emits) and allOf (as zod emits)")
	flag.Parse()

	log.SetFlags(0)
	log.SetPrefix("testserver " + cfg.name + ": ")
	log.SetOutput(os.Stderr)

	if cfg.failUntil != "" {
		if _, err := os.Stat(cfg.failUntil); err != nil {
			fmt.Fprintf(os.Stderr, "testserver %s: failing on purpose until %s exists\n", cfg.name, cfg.failUntil)
			os.Exit(3)
		}
	}
	if cfg.startGate != "" {
		awaitGate(cfg.name, cfg.startGate)
	}
	if !schemeRE.MatchString(cfg.name) {
		fmt.Fprintf(os.Stderr, "testserver: -name %q must be a valid URI scheme (letter, then letters, digits, + . -)\n", cfg.name)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		log.Printf("%v", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	ts, err := newTestServer(cfg)
	if err != nil {
		return err
	}
	switch cfg.transport {
	case "stdio":
		fmt.Fprintf(os.Stderr, "testserver %s ready\n", cfg.name)
		return ts.srv.Run(ctx, &mcp.StdioTransport{})
	case "http", "sse":
		return serveHTTP(ctx, cfg, ts.srv)
	default:
		return fmt.Errorf("unknown -transport %q: use stdio, http or sse", cfg.transport)
	}
}

// serveHTTP serves srv on cfg.addr until ctx is done. One *mcp.Server serves
// every session, so notifications such as list_changed reach all of them.
func serveHTTP(ctx context.Context, cfg config, srv *mcp.Server) error {
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	getServer := func(*http.Request) *mcp.Server { return srv }
	mux := http.NewServeMux()
	path := "/mcp"
	if cfg.transport == "sse" {
		path = "/sse"
		mux.Handle(path, mcp.NewSSEHandler(getServer, nil))
	} else {
		mux.Handle(path, mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{Stateless: cfg.stateless}))
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	fmt.Fprintf(os.Stdout, "LISTEN http://%s%s\n", ln.Addr(), path)
	fmt.Fprintf(os.Stderr, "testserver %s ready\n", cfg.name)

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// Open SSE streams never finish on their own; Close ends them after the grace period.
	if err := hs.Shutdown(shutCtx); err != nil {
		hs.Close()
	}
	<-errc
	return nil
}

// splitNonEmpty splits a comma-separated flag value, dropping empty items.
func splitNonEmpty(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// awaitGate stands for a package manager fetching the server: it says so
// on stderr, as npm does, and serves nothing until the test creates gate.
func awaitGate(name, gate string) {
	fmt.Fprintf(os.Stderr, "testserver %s: installing, waiting for %s\n", name, gate)
	for {
		if _, err := os.Stat(gate); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
