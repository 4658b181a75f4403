// Command conformanceclient is the client under test for the MCP conformance
// suite's client scenarios (`conformance client --command CMD --scenario S`),
// run by test/conformance. The client under test is Moat's upstream side: this
// driver writes a Moat config whose one upstream is the scenario's server,
// starts moat on it, and drives moat with a go-sdk client the way a model
// would (get_dynamic_tools, then call_dynamic_tool), so that moat is the
// client the scenario server sees.
//
// Usage (the suite appends the scenario server's URL as the last argument and
// names the scenario in $MCP_CONFORMANCE_SCENARIO):
//
//	conformanceclient -moat /path/to/moat -dir DIR URL
//
// Each run writes DIR/run-*/moat.json and gives moat a private HOME and XDG
// directories there, so that runs never share an audit log or a secret store;
// moat inherits the rest of the environment. Moat's stderr goes to this
// process's stderr (the suite saves it as stderr.txt). The exit status is 0
// when the scenario's actions succeeded as seen from moat's client, 1 when
// they did not, 2 on a usage error; the scenario server's own checks decide
// whether the scenario passed.
//
// Scenarios (conformance 0.1.13):
//
//   - initialize: moat connects to the server; get_dynamic_tools on its group
//     must answer (the server offers no tools).
//   - tools_call: call_dynamic_tool add_numbers {"a":5,"b":3}.
//   - elicitation-sep1034-client-defaults: call_dynamic_tool
//     test_client_elicitation_defaults; the elicitation reaches this client,
//     which accepts it with empty content, so the defaults the server checks
//     for must be filled in on the way (by moat or its SDK).
//   - sse-retry: call_dynamic_tool test_reconnection; the server closes the
//     call's SSE stream with "retry: 500" and answers on the GET stream that
//     a conforming client opens after that delay.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// group is the name of the scenario server in the Moat config.
const group = "scenario"

// deadline bounds one run; the test gives the suite a longer --timeout, so a
// hung moat is reported by this driver rather than killed silently.
const deadline = 75 * time.Second

func main() {
	moat := flag.String("moat", "", "path of the moat binary")
	dir := flag.String("dir", "", "directory for this run's config, HOME and XDG directories")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: MCP_CONFORMANCE_SCENARIO=S conformanceclient -moat BIN -dir DIR URL")
	}
	flag.Parse()
	scenario := os.Getenv("MCP_CONFORMANCE_SCENARIO")
	if *moat == "" || *dir == "" || flag.NArg() != 1 || scenario == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*moat, *dir, scenario, flag.Arg(0)); err != nil {
		fmt.Fprintf(os.Stderr, "conformanceclient %s: %v\n", scenario, err)
		os.Exit(1)
	}
	fmt.Printf("conformanceclient %s: done\n", scenario)
}

// loopbackURL names 127.0.0.1 where the suite says localhost: the test runs
// the suite's servers on 127.0.0.1 only, and localhost may resolve to ::1
// first.
func loopbackURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("the scenario server URL %q is not an absolute URL", raw)
	}
	if u.Hostname() == "localhost" {
		u.Host = net.JoinHostPort("127.0.0.1", u.Port())
	}
	return u.String(), nil
}

func run(moat, dir, scenario, rawURL string) error {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	serverURL, err := loopbackURL(rawURL)
	if err != nil {
		return err
	}
	runDir, err := os.MkdirTemp(dir, "run-")
	if err != nil {
		return err
	}
	cfg, err := writeConfig(runDir, serverURL)
	if err != nil {
		return err
	}

	cmd := exec.Command(moat, cfg)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(),
		"HOME="+filepath.Join(runDir, "home"),
		"XDG_STATE_HOME="+filepath.Join(runDir, "state"),
		"XDG_DATA_HOME="+filepath.Join(runDir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(runDir, "config"))

	client := mcp.NewClient(&mcp.Implementation{Name: "moat-conformance-driver", Version: "1.0.0"}, &mcp.ClientOptions{
		// Accept with no content: the scenario checks that the defaults of
		// the requested schema arrive at its server anyway.
		ElicitationHandler: func(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			fmt.Printf("elicitation/create reached the driver: %s\n", req.Params.Message)
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{}}, nil
		},
	})
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return fmt.Errorf("connect to moat: %w", err)
	}
	defer func() {
		if err := cs.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "close moat: %v\n", err)
		}
	}()

	switch scenario {
	case "initialize":
		_, err = tools(ctx, cs)
		return err
	case "tools_call":
		return callTool(ctx, cs, "add_numbers", map[string]any{"a": 5, "b": 3})
	case "elicitation-sep1034-client-defaults":
		return callTool(ctx, cs, "test_client_elicitation_defaults", map[string]any{})
	case "sse-retry":
		return callTool(ctx, cs, "test_reconnection", map[string]any{})
	default:
		return fmt.Errorf("unknown scenario %q (this driver knows initialize, tools_call, elicitation-sep1034-client-defaults, sse-retry)", scenario)
	}
}

// writeConfig writes runDir/moat.json with the scenario server as the one
// upstream, over streamable HTTP (the transport of every scenario server).
// A loopback http:// URL needs no opt-in (see internal/netguard).
func writeConfig(runDir, serverURL string) (string, error) {
	doc := map[string]any{"mcpServers": map[string]any{group: map[string]any{
		"description": "The MCP conformance suite's scenario server",
		"type":        "http",
		"url":         serverURL,
	}}}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(runDir, "moat.json")
	return p, os.WriteFile(p, b, 0o600)
}

// tools calls get_dynamic_tools for the scenario group, which waits while the
// upstream connects, and returns the names of its tools.
func tools(ctx context.Context, cs *mcp.ClientSession) ([]string, error) {
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": group}})
	if err != nil {
		return nil, fmt.Errorf("get_dynamic_tools: %w", err)
	}
	txt := textOf(res)
	if res.IsError {
		return nil, fmt.Errorf("get_dynamic_tools failed: %s", txt)
	}
	var list []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(txt), &list); err != nil {
		return nil, fmt.Errorf("get_dynamic_tools answered %q, not a JSON array of tools: %w", clip(txt), err)
	}
	names := make([]string, len(list))
	for i, t := range list {
		names[i] = t.Name
	}
	fmt.Printf("get_dynamic_tools %s: %v\n", group, names)
	return names, nil
}

// callTool runs tool through call_dynamic_tool, after checking, as a model
// would, that get_dynamic_tools lists it.
func callTool(ctx context.Context, cs *mcp.ClientSession, tool string, args map[string]any) error {
	names, err := tools(ctx, cs)
	if err != nil {
		return err
	}
	if !slices.Contains(names, tool) {
		return fmt.Errorf("get_dynamic_tools does not list %s (it lists %v)", tool, names)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{
		Name:      "call_dynamic_tool",
		Arguments: map[string]any{"group": group, "name": tool, "args": args},
	})
	if err != nil {
		return fmt.Errorf("call_dynamic_tool %s: %w", tool, err)
	}
	txt := textOf(res)
	if res.IsError {
		return fmt.Errorf("call_dynamic_tool %s failed: %s", tool, clip(txt))
	}
	fmt.Printf("call_dynamic_tool %s: %s\n", tool, clip(txt))
	return nil
}

func textOf(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, t.Text)
		}
	}
	if len(parts) == 0 && len(res.Content) > 0 {
		return fmt.Sprintf("(%d content items, none of them text)", len(res.Content))
	}
	return strings.Join(parts, "\n")
}

// clip bounds what a result adds to the suite's saved output.
func clip(s string) string {
	const max = 500
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
