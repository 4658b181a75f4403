package policy

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/moatmcp/moat/internal/strictjson"
)

// An ArgRule constrains one string argument of a tool. A call whose
// argument is absent passes (schema validation decides whether it is
// required); one whose argument is present but not a string is refused,
// because it cannot be checked.
type ArgRule struct {
	// Prefix lists absolute directories. The value must be an absolute
	// path that, after filepath.Clean, equals one of them or lies under one
	// on a path boundary ("/a/b" admits "/a/b/c", never "/a/bc"). Relative
	// paths and NUL bytes are refused. The check is lexical: symlinks are the
	// sandbox's business.
	Prefix []string
	// Regex is an RE2 expression the whole value must match.
	Regex string
	// MaxLength is the largest value length in bytes (UTF-8).
	MaxLength int

	re *regexp.Regexp
}

// Annotations are the MCP tool annotations the policy's tiers read. A nil
// *Annotations means the tool has none, which the MCP specification reads
// as "not read-only, may be destructive".
type Annotations struct {
	ReadOnlyHint    bool
	DestructiveHint *bool // nil: not stated, which MCP reads as true
}

// destructive reports whether a tool with these annotations may be
// destructive, with MCP's defaults.
func (a *Annotations) destructive() bool {
	switch {
	case a == nil:
		return true
	case a.ReadOnlyHint:
		return false
	case a.DestructiveHint == nil:
		return true
	}
	return *a.DestructiveHint
}

// A Decision is the answer to "may this tool be listed" or "may this call go
// through". Rule names the rule that decided ("deny:write_*", "allow",
// "destructive", "read_only_only", "args:read_file.path:prefix", "default");
// Reason is safe to show to the model: it never contains argument values.
type Decision struct {
	Allow  bool
	Rule   string
	Reason string
}

// Decide is the one decision function for listing and calling. With args
// nil it judges the tool by name and annotations (listing); with args (the
// decoded call arguments, see [DecodeArgs]) it also checks the argument
// constraints. Deny wins over allow; every merged policy must allow.
func (p *Policy) Decide(tool string, ann *Annotations, args map[string]any) Decision {
	if p == nil {
		return Decision{Rule: "no-policy", Reason: "no policy is loaded for this group, so Moat refuses every call (fail closed); check the config and the managed policy"}
	}
	if d := p.decideOwn(tool, ann, args); !d.Allow {
		return d
	}
	for _, o := range p.also {
		if d := o.decideOwn(tool, ann, args); !d.Allow {
			d.Reason += " (set by the managed policy, which the user's config cannot loosen)"
			return d
		}
	}
	if p.Allow != nil {
		return Decision{Allow: true, Rule: "allow", Reason: fmt.Sprintf("tool %q is in the allow list", tool)}
	}
	return Decision{Allow: true, Rule: "default", Reason: "no rule refuses this tool"}
}

func (p *Policy) decideOwn(tool string, ann *Annotations, args map[string]any) Decision {
	for _, pat := range p.Deny {
		if matchGlob(pat, tool) {
			return Decision{Rule: "deny:" + pat, Reason: fmt.Sprintf("tool %q matches the deny rule %q of this %s's policy; do not retry: ask the user to change the policy if the call is needed", tool, pat, p.scope())}
		}
	}
	if p.Allow != nil && !slices.ContainsFunc(p.Allow, func(pat string) bool { return matchGlob(pat, tool) }) {
		return Decision{Rule: "allow", Reason: fmt.Sprintf("tool %q is not in this %s's allow list; do not retry: ask the user to add it to the policy's allow list if it is needed", tool, p.scope())}
	}
	if p.ReadOnlyOnly != nil && *p.ReadOnlyOnly && (ann == nil || !ann.ReadOnlyHint) {
		return Decision{Rule: "read_only_only", Reason: fmt.Sprintf("this %s allows only read-only tools and %q is not annotated readOnlyHint; do not retry", p.scope(), tool)}
	}
	if p.Destructive == DestructiveDeny && ann.destructive() && !slices.Contains(p.Allow, tool) {
		return Decision{Rule: "destructive", Reason: fmt.Sprintf("tool %q may be destructive (by its MCP annotations) and this %s's policy denies destructive tools; do not retry: the user can allow it by naming it exactly in the policy's allow list", tool, p.scope())}
	}
	if args == nil {
		return Decision{Allow: true}
	}
	for pat, rules := range p.Args {
		if !matchGlob(pat, tool) {
			continue
		}
		for _, name := range sortedKeys(rules) {
			if d := rules[name].check(tool, name, args[name]); !d.Allow {
				return d
			}
		}
	}
	return Decision{Allow: true}
}

func (r *ArgRule) check(tool, name string, v any) Decision {
	if v == nil {
		return Decision{Allow: true}
	}
	rule := "args:" + tool + "." + name + ":"
	s, ok := v.(string)
	if !ok {
		return Decision{Rule: rule + "type", Reason: fmt.Sprintf("argument %q must be a string: the policy constrains it", name)}
	}
	if r.MaxLength > 0 && len(s) > r.MaxLength {
		return Decision{Rule: rule + "max_length", Reason: fmt.Sprintf("argument %q is %d bytes long; the policy allows at most %d", name, len(s), r.MaxLength)}
	}
	if r.Prefix != nil {
		if msg := pathUnder(s, r.Prefix); msg != "" {
			return Decision{Rule: rule + "prefix", Reason: fmt.Sprintf("argument %q %s; allowed: absolute paths under %s", name, msg, strings.Join(r.Prefix, ", "))}
		}
	}
	if r.re != nil && !r.re.MatchString(s) {
		return Decision{Rule: rule + "regex", Reason: fmt.Sprintf("argument %q does not match the pattern the policy requires (%s)", name, r.Regex)}
	}
	return Decision{Allow: true}
}

// pathUnder returns "" when p, cleaned, lies under one of prefixes (which are
// clean absolute paths), else what is wrong with it.
func pathUnder(p string, prefixes []string) string {
	if strings.ContainsRune(p, 0) {
		return "contains a NUL byte"
	}
	if !filepath.IsAbs(p) {
		return "is not an absolute path"
	}
	c := filepath.Clean(p)
	if slices.Contains(strings.Split(c, string(filepath.Separator)), "..") {
		return "still contains '..' after cleaning"
	}
	for _, pre := range prefixes {
		if within(c, pre) {
			return ""
		}
	}
	return "is outside the allowed directories"
}

// within reports whether clean path c is dir or lies under it.
func within(c, dir string) bool {
	if c == dir {
		return true
	}
	if !strings.HasSuffix(dir, string(filepath.Separator)) {
		dir += string(filepath.Separator)
	}
	return strings.HasPrefix(c, dir)
}

// PathAllowed reports whether p passes a prefix constraint with these
// prefixes (absolute, cleaned); exported for `moat policy check` and tests.
func PathAllowed(p string, prefixes []string) bool { return pathUnder(p, prefixes) == "" }

// matchGlob reports whether name matches pat, where '*' matches any run of
// characters (including none) and '?' exactly one; nothing else is special.
func matchGlob(pat, name string) bool {
	// Iterative wildcard matching with one backtrack point: linear in
	// practice, never exponential.
	pi, ni := 0, 0
	star, mark := -1, 0
	for ni < len(name) {
		if pi < len(pat) {
			switch c := pat[pi]; {
			case c == '*':
				star, mark = pi, ni
				pi++
				continue
			case c == '?':
				_, size := utf8.DecodeRuneInString(name[ni:])
				pi, ni = pi+1, ni+size
				continue
			case c == name[ni]:
				pi, ni = pi+1, ni+1
				continue
			}
		}
		if star < 0 {
			return false
		}
		pi = star + 1
		_, size := utf8.DecodeRuneInString(name[mark:])
		mark += size
		ni = mark
	}
	for pi < len(pat) && pat[pi] == '*' {
		pi++
	}
	return pi == len(pat)
}

// checkGlob returns "" for a usable tool name or glob, else why it is not.
func checkGlob(s string) string {
	if s == "" {
		return "a tool name or glob cannot be empty"
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return fmt.Sprintf("%q contains a control or invalid character", s)
		}
		if strings.ContainsRune(`[]{}\`, r) {
			return fmt.Sprintf("%q: only '*' and '?' are wildcards; character classes, braces and escapes are not supported", s)
		}
	}
	return ""
}

// DecodeArgs decodes a call's arguments for Decide as Moat's guard does
// (strictjson): a JSON object (or empty input), refusing duplicate keys
// and keys equal but for case, so that the policy and the upstream cannot
// read different values, with nesting bounded at 64 levels.
func DecodeArgs(raw []byte) (map[string]any, error) {
	m, err := strictjson.DecodeObject(raw, maxArgsDepth)
	if err != nil {
		return nil, fmt.Errorf("arguments: %w", err)
	}
	return m, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
