package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/lazyregexp"
	"github.com/moatmcp/moat/internal/pin"
)

const pinsUsage = `usage:
  moat pins diff [CONFIG] [GROUP...] what changed in each held tool, and whether the server's command or URL
                                     changed (default: every group of the config, else every group pinned)
  moat pins approve GROUP [TOOL...]  approve held tools (all of GROUP's when none is named)
  moat pins reset --yes              forget every pin: the next start trusts every tool as first seen
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
		// The anchor lives in the secret store; a store that cannot be
		// opened has none to clear, and reset must still work.
		var anchor pin.Anchor
		if store, err := processStore.get(ctx); err == nil {
			anchor = pinAnchor{s: store}
		}
		if err := pin.Reset(path, anchor); err != nil {
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
	store, err := openPins(nil)()
	if err != nil {
		return fail(err)
	}
	if args[0] == "approve" {
		if len(args) < 2 {
			return usageErr("moat pins approve needs a GROUP")
		}
		group, tools := args[1], args[2:]
		if known := store.Groups(); !slices.Contains(known, group) {
			// A configured group that was never listed has no pins yet.
			if p, _, err := config.ResolvePath("", os.LookupEnv); err == nil {
				if cfg, err := loadForCommand(p); err == nil {
					known = append(known, sortedServerNames(cfg)...)
				}
			}
			if !slices.Contains(known, group) {
				return usageErr("%s", unknownGroup(group, known))
			}
		}
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

	cfgArgs, groups := configArg(args[1:])
	known := store.Groups()
	cfgPath := ""
	if len(cfgArgs) == 1 {
		cfgPath = cfgArgs[0]
	}
	if p, _, err := config.ResolvePath(cfgPath, os.LookupEnv); err == nil {
		cfg, err := loadForCommand(p)
		if err != nil {
			printError(stderr, err)
			return exitUsage
		}
		names := sortedServerNames(cfg)
		if len(groups) == 0 {
			groups = names
		}
		known = append(known, names...)
	} else if cfgPath != "" || !errors.Is(err, config.ErrNoConfig) {
		printError(stderr, err)
		return exitUsage
	} else if len(groups) == 0 {
		groups = known
	}
	for _, g := range groups {
		if !slices.Contains(known, g) {
			return usageErr("%s", unknownGroup(g, known))
		}
	}
	held := 0
	for _, g := range groups {
		changes := store.Diff(g)
		held += len(changes)
		writeGroupDiff(stdout, g, changes)
	}
	if held == 0 {
		fmt.Fprintln(stdout, "no tool is held: every listed tool matches its approved definition")
	}
	return exitOK
}

// unknownGroup says that group is neither in the config nor in the pin
// store, and which groups are.
func unknownGroup(group string, known []string) string {
	slices.Sort(known)
	known = slices.Compact(known)
	if len(known) == 0 {
		return fmt.Sprintf("unknown group %q (no group is configured or pinned yet)", group)
	}
	return fmt.Sprintf("unknown group %q (groups: %s)", group, strings.Join(known, ", "))
}

// writeGroupDiff prints the held tools of group: first whether the server's
// identity (command and arguments, or URL) changed since its tools were
// approved, and which tools are held for that alone; then, per tool whose
// definition changed, only what changed.
func writeGroupDiff(w io.Writer, group string, changes []pin.Change) {
	if len(changes) == 0 {
		return
	}
	var same, differ []string
	oldID, newID := "", changes[0].NewIdentity
	for _, c := range changes {
		if c.OldIdentity != "" && c.OldIdentity != c.NewIdentity {
			oldID = c.OldIdentity
		}
		if c.Old != "" && c.Old == c.New {
			same = append(same, c.Tool)
		} else {
			differ = append(differ, c.Tool)
		}
	}
	switch {
	case oldID != "":
		fmt.Fprintf(w, "== %s: the server's identity changed since its tools were approved\n", group)
		fmt.Fprintf(w, "   before: %s\n   after:  %s\n", describeIdentity(oldID), describeIdentity(newID))
		fmt.Fprintln(w, "   a pin holds a tool of one server: every tool is held until you approve it for the new one")
	case len(same) > 0:
		fmt.Fprintf(w, "== %s: the server's command, arguments or URL changed since its tools were approved\n", group)
		fmt.Fprintf(w, "   now:    %s\n", describeIdentity(newID))
	}
	if len(same) > 0 {
		fmt.Fprintf(w, "   %d held with an unchanged definition: %s\n", len(same), strings.Join(same, ", "))
	}
	if oldID != "" || len(same) > 0 {
		if len(differ) == 0 {
			fmt.Fprintf(w, "   approve with: moat pins approve %s   (once you know the new server is the one you meant)\n", group)
		} else {
			fmt.Fprintf(w, "   approve those with: moat pins approve %s %s\n", group, strings.Join(same, " "))
		}
		fmt.Fprintln(w)
	}
	for _, c := range changes {
		if c.Old != "" && c.Old == c.New {
			continue
		}
		fmt.Fprintf(w, "== %s %s: %s\n", group, c.Tool, c.Reason)
		writeDefinitionDiff(w, c.Old, c.New)
		fmt.Fprintf(w, "   approve with: moat pins approve %s %s\n\n", group, c.Tool)
	}
}

// describeIdentity shows a pin identity (see pin.Identity) as
// `command "…" args "…" "…"` or `url "…"`.
func describeIdentity(id string) string {
	var v struct {
		Command string   `json:"command"`
		Args    []string `json:"args"`
		URL     string   `json:"url"`
	}
	if json.Unmarshal([]byte(id), &v) != nil {
		return visible(strconv.Quote(id))
	}
	if v.URL != "" {
		return "url " + visible(strconv.Quote(v.URL))
	}
	var b strings.Builder
	b.WriteString("command " + visible(strconv.Quote(v.Command)))
	if len(v.Args) > 0 {
		b.WriteString(" args")
		for _, a := range v.Args {
			b.WriteString(" " + visible(strconv.Quote(a)))
		}
	}
	return b.String()
}

// writeDefinitionDiff prints what differs between two tool definitions
// (JSON; old is "" for an added tool), one line per changed value: its path
// ("inputSchema.properties.path.description") with "-" for the approved
// value and "+" for the new one. Values are JSON, with every invisible
// character escaped, so nothing hides from the reviewer.
func writeDefinitionDiff(w io.Writer, old, new string) {
	a, b := map[string]string{}, map[string]string{}
	if old != "" {
		flattenJSON(old, a)
	}
	flattenJSON(new, b)
	paths := slices.Collect(maps.Keys(a))
	for p := range b {
		if _, ok := a[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	for _, p := range paths {
		av, inA := a[p]
		bv, inB := b[p]
		if inA && inB && av == bv {
			continue
		}
		if inA {
			fmt.Fprintf(w, "   - %s: %s\n", p, av)
		}
		if inB {
			fmt.Fprintf(w, "   + %s: %s\n", p, bv)
		}
	}
}

// flattenJSON puts each leaf of the JSON document doc into out, keyed by
// its dotted path; arrays are leaves.
func flattenJSON(doc string, out map[string]string) {
	var v any
	if json.Unmarshal([]byte(doc), &v) != nil {
		out["(definition)"] = visible(strconv.Quote(doc))
		return
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			for k, x := range m {
				if !simpleKey.MatchString(k) {
					k = "[" + visible(strconv.Quote(k)) + "]"
				} else if path != "" {
					k = "." + k
				}
				walk(path+k, x)
			}
			return
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(v)
		out[path] = visible(strings.TrimSpace(buf.String()))
	}
	walk("", v)
}

var simpleKey = lazyregexp.New(`^[A-Za-z0-9_$-]+$`)

// visible escapes, as \uXXXX, every rune of s a terminal would not show:
// control, format (bidi, zero-width, tag) and unassigned characters.
func visible(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsGraphic(r) && !unicode.Is(unicode.Cf, r) {
			b.WriteRune(r)
		} else if r > 0xFFFF {
			fmt.Fprintf(&b, "\\U%08X", r)
		} else {
			fmt.Fprintf(&b, "\\u%04X", r)
		}
	}
	return b.String()
}
