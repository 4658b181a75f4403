package config

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Error reports every problem found in one config file. Its text never
// holds a value that came from the environment or the secret store.
type Error struct {
	File     string
	Problems []Problem
}

// Problem is one thing wrong with a config file.
type Problem struct {
	Path string // JSON pointer to the value or key, e.g. /mcpServers/files/timeout/tools; "" for the whole file
	Line int    // 1-based; 0 when the problem is about the file, not a place in it
	Col  int    // 1-based, in characters
	Msg  string // what is wrong
	Hint string // how to fix it; may be empty
}

// Error lists every problem, one per line, each as
// "config: FILE: PATH (line L, col C): MSG: HINT".
func (e *Error) Error() string {
	if len(e.Problems) == 0 {
		return "config: " + e.File + ": invalid"
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = "config: " + e.File + ": " + p.String()
	}
	return strings.Join(lines, "\n")
}

// String formats p without the file name.
func (p Problem) String() string {
	var sb strings.Builder
	if p.Path != "" {
		// A key may hold any character; keep one problem on one line.
		if strings.ContainsFunc(p.Path, func(r rune) bool { return !unicode.IsPrint(r) }) {
			sb.WriteString(strconv.Quote(p.Path))
		} else {
			sb.WriteString(p.Path)
		}
		sb.WriteByte(' ')
	}
	if p.Line > 0 {
		fmt.Fprintf(&sb, "(line %d, col %d)", p.Line, p.Col)
	}
	s := strings.TrimSpace(sb.String())
	if s != "" {
		s += ": "
	}
	s += p.Msg
	if p.Hint != "" {
		s += ": " + p.Hint
	}
	return s
}

// problems collects Problems for one file, each placed by its byte offset.
type problems struct {
	data []byte
	list []Problem
}

func (ps *problems) add(path string, off int, msg, hint string) {
	line, col := position(ps.data, off)
	ps.list = append(ps.list, Problem{Path: path, Line: line, Col: col, Msg: msg, Hint: hint})
}

// sorted returns the problems in file order.
func (ps *problems) sorted() []Problem {
	slices.SortStableFunc(ps.list, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return ps.list
}

// quoteList renders keys as "a", "b", "c" for hints.
func quoteList(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = fmt.Sprintf("%q", k)
	}
	return strings.Join(q, ", ")
}
