package config

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moatmcp/moat/internal/suggest"
)

// The readers below report a problem at path (the member's value) and
// return the zero value when the value is unusable. name is how messages
// call the key, e.g. "sandbox.memory".

func (c *checker) boolean(m *member, path, name string) bool {
	if m.val.kind != kindBool {
		c.ps.add(path, m.val.off, fmt.Sprintf("%s is %s, not true or false", name, m.val.kind), "")
		return false
	}
	return m.val.b
}

// enum reads a string that must be one of allowed; hint says which.
func (c *checker) enum(m *member, path, name string, allowed []string, hint string) string {
	if m.val.kind != kindString {
		c.ps.add(path, m.val.off, fmt.Sprintf("%s is %s, not a string", name, m.val.kind), hint)
		return ""
	}
	v := m.val.str
	if slices.Contains(allowed, v) {
		return v
	}
	if sg := suggest.Hint(v, allowed); sg != "" {
		hint = sg + "; " + hint
	}
	c.ps.add(path, m.val.off, fmt.Sprintf("unknown %s %q", name, v), hint)
	return ""
}

// integer reads a whole number from lo to hi, written as plain digits.
func (c *checker) integer(m *member, path, name string, lo, hi uint64) (uint64, bool) {
	n := m.val
	if n.kind != kindNumber {
		c.ps.add(path, n.off, fmt.Sprintf("%s is %s, not a whole number", name, n.kind), "")
		return 0, false
	}
	if strings.HasPrefix(n.str, "-") {
		c.ps.add(path, n.off, fmt.Sprintf("%s is %s; it must be at least %d", name, n.str, lo), "")
		return 0, false
	}
	if !allDigits(n.str) {
		c.ps.add(path, n.off, fmt.Sprintf("%s is %s, not a whole number", name, n.str), "write it without a fraction or exponent")
		return 0, false
	}
	v, err := strconv.ParseUint(n.str, 10, 64)
	if err != nil || v > hi {
		c.ps.add(path, n.off, fmt.Sprintf("%s is %s; it must be at most %d", name, n.str, hi), "")
		return 0, false
	}
	if v < lo {
		c.ps.add(path, n.off, fmt.Sprintf("%s is %s; it must be at least %d", name, n.str, lo), "")
		return 0, false
	}
	return v, true
}

// duration reads a duration in dynamic-mcp's forms; null and "" give 0
// (the default).
func (c *checker) duration(m *member, path string) time.Duration {
	var d time.Duration
	var msg string
	switch m.val.kind {
	case kindNull, kindString, kindNumber:
		d, msg = parseDuration(m.val.toAny())
	default:
		msg = fmt.Sprintf("invalid duration: got %s", m.val.kind)
	}
	if msg != "" {
		c.ps.add(path, m.val.off, msg, durationForms)
		return 0
	}
	return d
}

// size reads a size greater than zero: zero would silently mean "the
// default", which is never what someone who writes 0 wants.
func (c *checker) size(m *member, path, name string) uint64 {
	var n uint64
	var msg, hint string
	switch m.val.kind {
	case kindString, kindNumber:
		n, msg, hint = parseSize(m.val.toAny())
	default:
		msg, hint = fmt.Sprintf("invalid size: got %s", m.val.kind), sizeForms
	}
	if msg == "" && n == 0 {
		msg, hint = name+" is 0", "give a size greater than zero, or remove the key for the default"
	}
	if msg != "" {
		c.ps.add(path, m.val.off, msg, hint)
		return 0
	}
	return n
}

// stringList reads an array of strings and calls each for every string item;
// it returns false when m is not an array.
func (c *checker) stringList(m *member, path, name, example string, each func(i int, it *node, p string)) bool {
	if m.val.kind != kindArray {
		c.ps.add(path, m.val.off, fmt.Sprintf("%s is %s, not an array of strings", name, m.val.kind), "write "+example)
		return false
	}
	for i, it := range m.val.items {
		p := path + "/" + strconv.Itoa(i)
		if it.kind != kindString {
			c.ps.add(p, it.off, fmt.Sprintf("%s[%d] is %s, not a string", name, i, it.kind), "quote it")
			continue
		}
		each(i, it, p)
	}
	return true
}

// object reports m unless it is an object, and lists its unknown keys.
func (c *checker) object(m *member, path, name string, keys []string, example string) bool {
	if m.val.kind != kindObject {
		c.ps.add(path, m.val.off, fmt.Sprintf("%s is %s, not an object", name, m.val.kind), "write "+example)
		return false
	}
	c.unknownKeys(m.val, path, keys, "in "+name)
	return true
}

// filePath expands a path: ${VAR} (never a secret) and then a leading "~"
// or "~/" to $HOME, so a HOME holding "${...}" is not expanded again. The
// result must be absolute; it is cleaned.
func (c *checker) filePath(raw string, at expansion) (string, bool) {
	v, ok := c.expand(raw, at)
	if !ok {
		return "", false
	}
	if raw == "~" || strings.HasPrefix(raw, "~/") {
		home, set := c.getenv("HOME")
		if !set || home == "" {
			c.ps.add(at.path, at.off, fmt.Sprintf("%s starts with ~ but HOME is not set", at.where), "set HOME, or write an absolute path")
			return "", false
		}
		v = home + v[1:]
	}
	if strings.ContainsRune(v, 0) {
		c.ps.add(at.path, at.off, fmt.Sprintf("%s holds a NUL byte", at.where), "a path cannot hold NUL")
		return "", false
	}
	if !filepath.IsAbs(v) {
		shown := strconv.Quote(raw)
		if v != raw {
			shown += " (after expansion)"
		}
		c.ps.add(at.path, at.off, fmt.Sprintf("%s %s is not an absolute path", at.where, shown),
			`write an absolute path such as "/home/me/project", or start it with ~/ for your home directory`)
		return "", false
	}
	return filepath.Clean(v), true
}

// maxInt is the largest count a config may give; it fits every Go int.
const maxInt = math.MaxInt32
