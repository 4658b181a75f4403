package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/pin"
)

const pinsUsage = `usage:
  moat pins diff [GROUP]            what changed in each held tool (default: every group of the config)
  moat pins approve GROUP [TOOL...] approve held tools (all of GROUP's when none is named)
  moat pins reset --yes             forget every pin: the next start trusts every tool as first seen
exit status: 0 ok, 1 runtime failure, 2 usage`

func pinsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		printError(stderr, err)
		return exitFailure
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "moat: error: "+format+"\n%s\n", append(a, pinsUsage)...)
		return exitUsage
	}
	if len(args) == 0 {
		return usageErr("moat pins needs a subcommand: diff, approve or reset")
	}
	path, err := pinsPath()
	if err != nil {
		return fail(err)
	}
	switch args[0] {
	case "reset":
		if len(args) != 2 || args[1] != "--yes" {
			return usageErr("moat pins reset forgets every approval; run it as `moat pins reset --yes`")
		}
		if err := pin.Reset(path); err != nil {
			return fail(err)
		}
		commandEvent(ctx, stderr, "pins_reset", "", nil)
		fmt.Fprintln(stdout, "pins forgotten: the next start pins every tool as first seen")
		return exitOK
	case "diff", "approve":
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, pinsUsage)
		return exitOK
	default:
		return usageErr("unknown pins subcommand %q", args[0])
	}
	gs := newGuardState(nil)
	store, err := gs.pinStore()
	if err != nil {
		return fail(err)
	}
	if args[0] == "approve" {
		if len(args) < 2 {
			return usageErr("moat pins approve needs a GROUP")
		}
		group, tools := args[1], args[2:]
		if len(store.Diff(group)) == 0 {
			fmt.Fprintf(stdout, "group %s has no held tools\n", group)
			return exitOK
		}
		if err := store.Approve(group, tools...); err != nil {
			return fail(err)
		}
		commandEvent(ctx, stderr, "pins_approve", group, map[string]string{"tools": strings.Join(tools, ",")})
		what := "every held tool"
		if len(tools) > 0 {
			what = strings.Join(tools, ", ")
		}
		fmt.Fprintf(stdout, "approved in group %s: %s (a running moat picks this up at once)\n", group, what)
		return exitOK
	}

	var groups []string
	if len(args) > 1 {
		groups = args[1:]
	} else {
		cfgPath, _, err := config.ResolvePath("", os.LookupEnv)
		if err != nil {
			return usageErr("name a GROUP, or set MOAT_CONFIG so moat knows the groups: %v", err)
		}
		cfg, err := config.Load(cfgPath, loadOptions())
		if err != nil {
			return fail(err)
		}
		groups = sortedServerNames(cfg)
	}
	held := 0
	for _, g := range groups {
		for _, c := range store.Diff(g) {
			held++
			fmt.Fprintf(stdout, "== %s %s: %s\n", g, c.Tool, c.Reason)
			writeLineDiff(stdout, c.Old, c.New)
			fmt.Fprintf(stdout, "approve with: moat pins approve %s %s\n\n", g, c.Tool)
		}
	}
	if held == 0 {
		fmt.Fprintln(stdout, "no tool is held: every listed tool matches its approved definition")
	}
	return exitOK
}

// writeLineDiff prints old and new line by line: "-" only in old, "+" only
// in new, " " in both (longest common subsequence; definitions are small).
func writeLineDiff(w io.Writer, old, new string) {
	a, b := strings.Split(old, "\n"), strings.Split(new, "\n")
	if old == "" {
		a = nil
	}
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			fmt.Fprintf(w, "  %s\n", a[i])
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(w, "+ %s\n", b[j])
			j++
		default:
			fmt.Fprintf(w, "- %s\n", a[i])
			i++
		}
	}
}
