package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/limits"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/policy"
)

// client starts the configured proxy in this process and connects a go-sdk
// client to it: what `moat tools` and `moat call` see is exactly what the
// model sees, through the full guard (the audit log included).
func client(ctx context.Context, m *instance) (*mcp.ClientSession, func(), error) {
	m.p = proxy.New(m.opts)
	m.p.Apply(m.cfg)
	ct, st := mcp.NewInMemoryTransports()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.p.Run(ctx, st)
	}()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "moat-cli", Version: version}, nil).Connect(ctx, ct, nil)
	if err != nil {
		cancel()
		<-done
		return nil, nil, err
	}
	return cs, func() {
		cs.Close()
		cancel()
		<-done
		m.auditLog.Close()
	}, nil
}

// session sets up the configured proxy (see setup) and connects a client
// to it; on failure it has printed why and returns the exit code.
func session(ctx context.Context, cfgArgs []string, name string) (*instance, *mcp.ClientSession, func(), int) {
	m, code := setup(cfgArgs, name, false)
	if m == nil {
		return nil, nil, nil, code
	}
	cs, stop, err := client(ctx, m)
	if err != nil {
		m.auditLog.Close()
		printError(os.Stderr, err)
		return nil, nil, nil, exitFailure
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		reportStarts(ctx, m, os.Stderr)
	}()
	return m, cs, func() { cancel(); <-done; stop() }, exitOK
}

// startReportEvery is how often a one-shot command says which servers it
// is still waiting for.
const startReportEvery = 5 * time.Second

// reportStarts tells the user, on stderr, which servers are still starting
// and what their stderr last said, every startReportEvery until ctx ends:
// a first start may take minutes (a package manager installing the
// server), and a silent wait looks like a hang.
func reportStarts(ctx context.Context, m *instance, w io.Writer) {
	t := time.NewTicker(startReportEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, name := range sortedServerNames(m.cfg) {
				g, ok := m.p.Manager().Group(name)
				if !ok {
					continue
				}
				if st := g.Status(); st.State.Pending() {
					fmt.Fprintf(w, "moat: waiting for %s: %s\n", name, st.Summary(now))
				}
			}
		}
	}
}

func runTools(ctx context.Context, args []string) int {
	cfgArgs, rest := configArg(args)
	if len(rest) > 1 {
		return usageError("usage: moat tools [CONFIG] [GROUP]")
	}
	m, cs, stop, code := session(ctx, cfgArgs, "tools")
	if m == nil {
		return code
	}
	defer stop()
	groups := sortedServerNames(m.cfg)
	if len(rest) == 1 {
		groups = rest
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "GROUP\tTOOL\tDESCRIPTION")
	failed := false
	for _, g := range groups {
		if s := m.cfg.Servers[g]; s != nil && !s.Enabled {
			continue
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": g}})
		if err != nil {
			printError(os.Stderr, err)
			return exitUsage
		}
		if res.IsError {
			fmt.Fprintf(w, "%s\t-\t%s\n", g, textOf(res))
			failed = true
			continue
		}
		var tools []struct{ Name, Description, Status string }
		if err := json.Unmarshal([]byte(textOf(res)), &tools); err != nil {
			printError(os.Stderr, fmt.Errorf("group %s: %w", g, err))
			return exitFailure
		}
		for _, t := range tools {
			d := t.Description
			if t.Status != "" {
				d = "[" + t.Status + "]"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\n", g, t.Name, oneLine(d, 90))
		}
	}
	w.Flush()
	if failed {
		return exitFailure
	}
	return exitOK
}

func runCall(ctx context.Context, args []string) int {
	cfgArgs, rest := configArg(args)
	if len(rest) < 2 || len(rest) > 3 {
		return usageError("usage: moat call [CONFIG] GROUP TOOL ['{\"json\": \"arguments\"}']")
	}
	var callArgs json.RawMessage = []byte("{}")
	if len(rest) == 3 {
		callArgs = json.RawMessage(rest[2])
		if !json.Valid(callArgs) {
			return usageError("the arguments are not valid JSON: %s", rest[2])
		}
	}
	m, cs, stop, code := session(ctx, cfgArgs, "call")
	if m == nil {
		return code
	}
	defer stop()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": rest[0], "name": rest[1], "args": callArgs}})
	if err != nil {
		printError(os.Stderr, err)
		return exitUsage
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	if res.IsError {
		return exitFailure
	}
	return exitOK
}

func textOf(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

// runPolicy is `moat policy check [CONFIG]`: every tool of every server,
// with the effective policy's verdict and the rule that decides it.
// callPolicy is pol as a call meets it: a call is bounded both by its
// policy's timeout (the limits layer) and by the server's timeout.tools
// (the upstream), so the shorter one is the timeout it really gets.
func callPolicy(pol *policy.Policy, toolsTimeout time.Duration) *policy.Policy {
	t := pol.Group.Timeout
	if t == 0 {
		t = policy.DefaultTimeout
	}
	if toolsTimeout <= 0 || toolsTimeout >= t {
		return pol
	}
	shown := *pol
	shown.Group.Timeout = toolsTimeout
	return &shown
}

func runPolicy(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] != "check" {
		return usageError("usage: moat policy check [CONFIG]")
	}
	cfgArgs, rest := configArg(args[1:])
	if len(cfgArgs) == 0 {
		cfgArgs, rest = rest, nil // its one argument is the config, whatever its name
	}
	if len(rest) > 0 {
		return usageError("usage: moat policy check [CONFIG]")
	}
	m, cs, stop, code := session(ctx, cfgArgs, "policy check")
	if m == nil {
		return code
	}
	defer stop()
	for _, name := range sortedServerNames(m.cfg) {
		s := m.cfg.Servers[name]
		if !s.Enabled {
			continue
		}
		pol := callPolicy(m.gs.Policy(name), s.Timeout.Tools)
		fmt.Printf("== %s (pins: %s, redact: %s, on_invalid_schema: %s, timeout.tools: %s)\n", name, pol.PinMode(), pol.RedactMode(), pol.InvalidSchemaMode(), s.Timeout.Tools)
		// get_dynamic_tools waits for the group to start (see cliStartWait).
		cs.CallTool(ctx, &mcp.CallToolParams{Name: "get_dynamic_tools", Arguments: map[string]any{"group": name}})
		g, ok := m.p.Manager().Group(name)
		if !ok {
			continue
		}
		if st := g.Status(); st.Reason != "" {
			fmt.Printf("   (not connected: %s)\n", st.Reason)
		}
		for _, t := range g.Lists().Tools {
			fmt.Print("   " + strings.ReplaceAll(strings.TrimRight(policy.Explain(pol, t.Name, limits.Annotations(t)), "\n"), "\n", "\n   ") + "\n")
		}
	}
	return exitOK
}
