package conformance

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// baselineEntry is one expected failure of baseline.yaml.
type baselineEntry struct {
	Scenario string
	// Reason says why the scenario cannot pass (printed with it).
	Reason string
	// Expect, if set, must occur in the scenario's failure messages: a
	// baselined scenario that fails for another reason (a crash, a timeout)
	// is reported like any other failure.
	Expect string
	line   int
}

// baseline is baseline.yaml: expected failures by section.
type baseline struct {
	// Direct lists server scenarios the fixture cannot pass even without
	// Moat (they test the HTTP server, which is the bridge's).
	Direct map[string]baselineEntry
	// Moat lists server scenarios that pass directly but cannot pass behind
	// Moat by design.
	Moat map[string]baselineEntry
	// Client lists client scenarios Moat is expected to fail.
	Client map[string]baselineEntry
}

var baselineSections = []string{"direct", "moat", "client"}

// loadBaseline reads and checks baseline.yaml.
func loadBaseline(t *testing.T) baseline {
	t.Helper()
	b, err := os.ReadFile("baseline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bl, err := parseBaseline(string(b))
	if err != nil {
		t.Fatalf("baseline.yaml: %v", err)
	}
	return bl
}

// parseBaseline reads the small YAML subset baseline.yaml is written in:
// comments, the top-level keys direct, moat and client (each a list, or []),
// list items "- scenario: NAME" with the keys reason and expect, and values
// that are plain, "double-quoted" or folded (>-) over more-indented lines.
// Anything else is an error, so the file cannot silently mean something else
// than it seems to.
func parseBaseline(src string) (baseline, error) {
	bl := baseline{Direct: map[string]baselineEntry{}, Moat: map[string]baselineEntry{}, Client: map[string]baselineEntry{}}
	sections := map[string]map[string]baselineEntry{"direct": bl.Direct, "moat": bl.Moat, "client": bl.Client}
	seen := map[string]bool{}
	var section map[string]baselineEntry
	var sectionName string
	var cur *baselineEntry
	lines := strings.Split(src, "\n")

	flush := func() error {
		if cur == nil {
			return nil
		}
		if cur.Scenario == "" || cur.Reason == "" {
			return fmt.Errorf("line %d: an entry needs both scenario and reason", cur.line)
		}
		if _, dup := section[cur.Scenario]; dup {
			return fmt.Errorf("line %d: %s is listed twice under %s", cur.line, cur.Scenario, sectionName)
		}
		section[cur.Scenario] = *cur
		cur = nil
		return nil
	}

	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], " \t\r")
		trimmed := strings.TrimLeft(line, " ")
		indent := len(line) - len(trimmed)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.Contains(line, "\t") {
			return bl, fmt.Errorf("line %d: tabs are not allowed", i+1)
		}
		key, value, ok := strings.Cut(strings.TrimPrefix(trimmed, "- "), ":")
		if !ok {
			return bl, fmt.Errorf("line %d: expected \"key: value\", got %q", i+1, trimmed)
		}
		value = strings.TrimSpace(value)
		switch {
		case indent == 0:
			if err := flush(); err != nil {
				return bl, err
			}
			s, known := sections[key]
			if !known {
				return bl, fmt.Errorf("line %d: unknown section %q (want one of %v)", i+1, key, baselineSections)
			}
			if seen[key] {
				return bl, fmt.Errorf("line %d: section %s appears twice", i+1, key)
			}
			if value != "" && value != "[]" {
				return bl, fmt.Errorf("line %d: section %s must be a list of entries, or []", i+1, key)
			}
			seen[key], section, sectionName = true, s, key
		case section == nil:
			return bl, fmt.Errorf("line %d: entry outside a section", i+1)
		default:
			if strings.HasPrefix(trimmed, "- ") {
				if err := flush(); err != nil {
					return bl, err
				}
				if key != "scenario" {
					return bl, fmt.Errorf("line %d: an entry starts with \"- scenario: NAME\"", i+1)
				}
				cur = &baselineEntry{line: i + 1}
				indent += 2
			} else if cur == nil {
				return bl, fmt.Errorf("line %d: %q is not inside an entry", i+1, trimmed)
			}
			// The value may go on over lines indented deeper than its key.
			var more []string
			for i+1 < len(lines) {
				next := strings.TrimRight(lines[i+1], " \t\r")
				nt := strings.TrimLeft(next, " ")
				if nt == "" || len(next)-len(nt) <= indent {
					break
				}
				more = append(more, nt)
				i++
			}
			v, err := scalar(value, more)
			if err != nil {
				return bl, fmt.Errorf("line %d: %s: %v", i+1, key, err)
			}
			switch key {
			case "scenario":
				if cur.Scenario != "" {
					return bl, fmt.Errorf("line %d: scenario given twice", i+1)
				}
				cur.Scenario = v
			case "reason":
				cur.Reason = v
			case "expect":
				cur.Expect = v
			default:
				return bl, fmt.Errorf("line %d: unknown key %q (want scenario, reason or expect)", i+1, key)
			}
		}
	}
	if err := flush(); err != nil {
		return bl, err
	}
	for _, s := range baselineSections {
		if !seen[s] {
			return bl, fmt.Errorf("section %s is missing (write \"%s: []\" if it is empty)", s, s)
		}
	}
	return bl, nil
}

// scalar is the value of a key: plain or folded text joined with spaces, or
// a double-quoted string.
func scalar(value string, more []string) (string, error) {
	switch {
	case value == ">-" || value == ">":
		if len(more) == 0 {
			return "", fmt.Errorf("folded value without text")
		}
		return strings.Join(more, " "), nil
	case strings.HasPrefix(value, `"`):
		if len(more) > 0 {
			return "", fmt.Errorf("a quoted value must fit on one line")
		}
		return strconv.Unquote(value)
	case strings.HasPrefix(value, "'") || strings.HasPrefix(value, "|") || strings.HasPrefix(value, "&") ||
		strings.HasPrefix(value, "*") || strings.HasPrefix(value, "[") || strings.HasPrefix(value, "{"):
		return "", fmt.Errorf("only plain, \"double-quoted\" and folded (>-) values are supported")
	case strings.Contains(value, " #"):
		return "", fmt.Errorf("a comment after a value is not supported")
	}
	return strings.Join(append([]string{value}, more...), " "), nil
}

// TestBaselineFile checks that baseline.yaml parses and that every entry
// says what it expects; it needs no Node, so a broken baseline shows even
// where the suite cannot run.
func TestBaselineFile(t *testing.T) {
	bl := loadBaseline(t)
	for name, sec := range map[string]map[string]baselineEntry{"direct": bl.Direct, "moat": bl.Moat} {
		for s, e := range sec {
			if e.Expect == "" {
				t.Errorf("baseline.yaml line %d: %s %s has no expect: say which failure message is the expected one", e.line, name, s)
			}
		}
	}
	for s := range bl.Moat {
		if _, both := bl.Direct[s]; both {
			t.Errorf("baseline.yaml: %s is under both direct and moat; a scenario that fails directly is not compared behind Moat", s)
		}
	}
}

func TestParseBaselineRefusesWhatItCannotRead(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unknown section", "other: []\n", "unknown section"},
		{"missing section", "direct: []\nmoat: []\n", "section client is missing"},
		{"entry without reason", "direct:\n  - scenario: x\nmoat: []\nclient: []\n", "needs both scenario and reason"},
		{"duplicate", "direct:\n  - scenario: x\n    reason: r\n  - scenario: x\n    reason: r\nmoat: []\nclient: []\n", "listed twice"},
		{"unknown key", "direct:\n  - scenario: x\n    why: r\nmoat: []\nclient: []\n", "unknown key"},
		{"single quotes", "direct:\n  - scenario: x\n    reason: 'r'\nmoat: []\nclient: []\n", "only plain"},
	} {
		if _, err := parseBaseline(tc.src); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	bl, err := parseBaseline("# c\ndirect:\n  - scenario: a\n    expect: \"x -1\"\n    reason: >-\n      one\n      two\nmoat:\n  - scenario: b\n    reason: plain\n      goes on\nclient: []\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := bl.Direct["a"]; got.Reason != "one two" || got.Expect != "x -1" {
		t.Errorf("direct a = %+v", got)
	}
	if got := bl.Moat["b"]; got.Reason != "plain goes on" {
		t.Errorf("moat b = %+v", got)
	}
}
