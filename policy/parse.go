package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moatmcp/moat/internal/suggest"
)

// maxDepth bounds the nesting of any JSON Moat decodes here; a policy needs
// five levels, tool arguments get the 64.
const (
	maxPolicyDepth = 16
	maxArgsDepth   = 64
	maxRegexLen    = 1024
	maxRate        = 1_000_000
)

// A Problem is one thing wrong with a policy, at a JSON pointer path.
type Problem struct {
	Path string // JSON pointer, e.g. "/tools/search_files/rate"
	Msg  string
	Hint string // how to fix it, e.g. `did you mean "deny"?`; may be empty
	Key  bool   // the problem is the key at Path (unknown), not its value
}

// Error lists every problem found in a policy. A policy with any problem is
// refused as a whole: Moat never runs with part of a policy.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("policy: invalid")
	for _, p := range e.Problems {
		path := p.Path
		if path == "" {
			path = "/"
		}
		fmt.Fprintf(&b, "\n  at %s: %s", path, p.Msg)
		if p.Hint != "" {
			b.WriteString(": " + p.Hint)
		}
	}
	return b.String()
}

// Parse reads one "policy" block. It is strict: unknown and duplicate keys,
// wrong types, bad globs, regexes, sizes, rates and durations are all
// reported, each with its JSON path, in one *Error.
func Parse(data []byte) (*Policy, error) {
	return parse(data, "", true)
}

// ParseServer is Parse for a server's own policy, where "global" is refused:
// a limit over all groups belongs in "defaults.policy".
func ParseServer(data []byte) (*Policy, error) {
	return parse(data, "", false)
}

// identityKeys are the keys of an identity's policy: the rules that decide
// access, and "global", its limits over all its calls.
var identityKeys = []string{"allow", "deny", "destructive", "read_only_only", "args", "resources", "prompts", "global"}

// ParseIdentity reads the policy of a gateway identity (the config's
// gateway.identities.NAME.policy). It holds only what restricts that
// identity: the decision rules (allow, deny, destructive, read_only_only,
// args, resources, prompts), judged beside the group's own, and "global",
// whose rate, burst and max_concurrent bound the identity's calls over all
// its groups. Anything else (pin, redact, on_invalid_schema, per-tool and
// group settings) is refused: it belongs to the group's policy. Its
// refusals name "this identity's policy".
func ParseIdentity(data []byte) (*Policy, error) {
	v, err := decodeStrict(data, maxPolicyDepth)
	if err != nil {
		return nil, &Error{Problems: []Problem{{Msg: err.Error()}}}
	}
	ps := parser{keys: identityKeys}
	if obj, ok := v.(map[string]any); ok {
		for _, k := range sortedKeys(obj) {
			if slices.Contains(identityKeys, k) || !slices.Contains(policyKeys, k) {
				continue // an unknown key is reported by ps.policy, with its did-you-mean
			}
			hint := fmt.Sprintf("remove %q here; the group's own policy (the server's \"policy\" or \"defaults.policy\") keeps it", k)
			if k == "rate" || k == "burst" || k == "max_concurrent" {
				hint = fmt.Sprintf(`to bound this identity's calls over all its groups, write "global": {%q: ...}`, k)
			}
			ps.problems = append(ps.problems, Problem{Path: pointer("", k), Key: true,
				Msg:  fmt.Sprintf("%q is not allowed in an identity's policy: identity policies only restrict access and limits (allowed keys: %s)", k, strings.Join(identityKeys, ", ")),
				Hint: hint})
			delete(obj, k)
		}
	}
	p := ps.policy("", v, true)
	if len(ps.problems) > 0 {
		return nil, &Error{Problems: ps.problems}
	}
	p.identity = true
	return p, nil
}

// cmpOr returns a unless it is nil, else b.
func cmpOr(a, b []string) []string {
	if a != nil {
		return a
	}
	return b
}

func parse(data []byte, at string, allowGlobal bool) (*Policy, error) {
	v, err := decodeStrict(data, maxPolicyDepth)
	if err != nil {
		return nil, &Error{Problems: []Problem{{Path: at, Msg: err.Error()}}}
	}
	var ps parser
	p := ps.policy(at, v, allowGlobal)
	if len(ps.problems) > 0 {
		return nil, &Error{Problems: ps.problems}
	}
	return p, nil
}

type parser struct {
	problems []Problem
	// keys, when set, are the top-level keys a policy may have (an
	// identity's); nil means policyKeys.
	keys []string
}

func (ps *parser) add(path, format string, a ...any) {
	ps.problems = append(ps.problems, Problem{Path: path, Msg: fmt.Sprintf(format, a...)})
}

// unknownKey reports key at path as unknown among known, with the closest
// known key as a hint.
func (ps *parser) unknownKey(path, key, where string, known []string) {
	msg := fmt.Sprintf("unknown key %q%s; known keys: %s", key, where, strings.Join(known, ", "))
	ps.problems = append(ps.problems, Problem{Path: path, Msg: msg, Hint: suggest.Hint(key, known), Key: true})
}

func pointer(base, key string) string {
	key = strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
	return base + "/" + key
}

var (
	settingKeys = []string{"rate", "burst", "max_concurrent", "max_args_bytes", "max_result_bytes", "timeout", "kill_on_timeout"}
	policyKeys  = append([]string{"allow", "deny", "destructive", "read_only_only", "args", "tools", "resources", "prompts", "global", "pin", "redact", "on_invalid_schema"}, settingKeys...)
	argRuleKeys = []string{"prefix", "regex", "max_length"}
)

func (ps *parser) policy(at string, v any, allowGlobal bool) *Policy {
	obj, ok := v.(map[string]any)
	if !ok {
		ps.add(at, "a policy must be a JSON object, got %s", kind(v))
		return nil
	}
	p := &Policy{}
	for k, val := range obj {
		path := pointer(at, k)
		switch k {
		case "allow":
			p.Allow = ps.globs(path, val)
			if p.Allow == nil {
				p.Allow = []string{}
			}
		case "deny":
			p.Deny = ps.globs(path, val)
		case "destructive":
			p.Destructive = ps.enum(path, val, DestructiveAllow, DestructiveDeny)
		case "read_only_only":
			if b, ok := val.(bool); ok {
				p.ReadOnlyOnly = &b
			} else {
				ps.add(path, "must be true or false, got %s", kind(val))
			}
		case "args":
			p.Args = ps.args(path, val)
		case "tools":
			p.Tools = ps.tools(path, val)
		case "resources":
			p.Resources = ps.access(path, val, "resource URIs")
		case "prompts":
			p.Prompts = ps.access(path, val, "prompt names")
		case "global":
			if !allowGlobal {
				ps.add(path, `"global" limits all groups together, so it belongs in "defaults.policy" (or the managed file's "defaults"), not in one server's policy`)
				continue
			}
			p.Global = ps.settings(path, val, "rate", "burst", "max_concurrent")
		case "pin":
			p.Pin = ps.enum(path, val, PinStrict, PinAutoAdd, PinOff)
		case "redact":
			p.Redact = ps.enum(path, val, RedactRedact, RedactBlock, RedactOff)
		case "on_invalid_schema":
			p.OnInvalidSchema = ps.enum(path, val, InvalidSchemaReject, InvalidSchemaPassthrough)
		default:
			if !slices.Contains(settingKeys, k) {
				ps.unknownKey(path, k, "", cmpOr(ps.keys, policyKeys))
			}
		}
	}
	p.Group = ps.settingsOf(at, obj, settingKeys...)
	return p
}

func (ps *parser) settings(at string, v any, keys ...string) Settings {
	obj, ok := v.(map[string]any)
	if !ok {
		ps.add(at, "must be a JSON object, got %s", kind(v))
		return Settings{}
	}
	for k := range obj {
		if !slices.Contains(keys, k) {
			ps.unknownKey(pointer(at, k), k, " here", keys)
		}
	}
	return ps.settingsOf(at, obj, keys...)
}

// settingsOf reads the numeric keys among keys that obj has.
func (ps *parser) settingsOf(at string, obj map[string]any, keys ...string) Settings {
	var s Settings
	for _, k := range keys {
		val, ok := obj[k]
		if !ok {
			continue
		}
		path := pointer(at, k)
		switch k {
		case "rate":
			s.Rate = ps.rate(path, val)
		case "burst":
			s.Burst = ps.count(path, val)
		case "max_concurrent":
			s.MaxConcurrent = ps.count(path, val)
		case "max_args_bytes":
			s.MaxArgsBytes = ps.size(path, val)
		case "max_result_bytes":
			s.MaxResultBytes = ps.size(path, val)
		case "timeout":
			s.Timeout = ps.duration(path, val)
		case "kill_on_timeout":
			b, ok := val.(bool)
			if !ok {
				ps.add(path, "must be true or false, got %s", kind(val))
			}
			s.KillOnTimeout = b
		}
	}
	if _, ok := obj["burst"]; ok && s.Rate.IsZero() {
		if _, hasRate := obj["rate"]; !hasRate {
			ps.add(pointer(at, "burst"), `"burst" needs a "rate" beside it`)
		}
	}
	return s
}

func (ps *parser) tools(at string, v any) map[string]Settings {
	obj, ok := v.(map[string]any)
	if !ok {
		ps.add(at, "must be an object of tool name or glob to settings, got %s", kind(v))
		return nil
	}
	out := make(map[string]Settings, len(obj))
	for name, val := range obj {
		path := pointer(at, name)
		if msg := checkGlob(name); msg != "" {
			ps.add(path, "%s", msg)
		}
		out[name] = ps.settings(path, val, settingKeys...)
	}
	return out
}

func (ps *parser) args(at string, v any) map[string]map[string]*ArgRule {
	obj, ok := v.(map[string]any)
	if !ok {
		ps.add(at, "must be an object of tool name or glob to argument constraints, got %s", kind(v))
		return nil
	}
	out := make(map[string]map[string]*ArgRule, len(obj))
	for tool, tv := range obj {
		tpath := pointer(at, tool)
		if msg := checkGlob(tool); msg != "" {
			ps.add(tpath, "%s", msg)
		}
		targs, ok := tv.(map[string]any)
		if !ok {
			ps.add(tpath, "must be an object of argument name to constraint, got %s", kind(tv))
			continue
		}
		rules := make(map[string]*ArgRule, len(targs))
		for arg, av := range targs {
			if r := ps.argRule(pointer(tpath, arg), av); r != nil {
				rules[arg] = r
			}
		}
		out[tool] = rules
	}
	return out
}

func (ps *parser) argRule(at string, v any) *ArgRule {
	obj, ok := v.(map[string]any)
	if !ok {
		ps.add(at, "must be an object with prefix, regex and/or max_length, got %s", kind(v))
		return nil
	}
	r := &ArgRule{}
	for k, val := range obj {
		path := pointer(at, k)
		switch k {
		case "prefix":
			list, ok := val.([]any)
			if !ok {
				ps.add(path, "must be a list of absolute paths, got %s", kind(val))
				continue
			}
			r.Prefix = []string{}
			for i, e := range list {
				s, ok := e.(string)
				epath := pointer(path, strconv.Itoa(i))
				switch {
				case !ok:
					ps.add(epath, "must be a string, got %s", kind(e))
				case !filepath.IsAbs(s) || strings.ContainsRune(s, 0):
					ps.add(epath, "%q is not an absolute path; write the full path (${HOME} is expanded)", s)
				default:
					r.Prefix = append(r.Prefix, filepath.Clean(s))
				}
			}
		case "regex":
			s, ok := val.(string)
			if !ok {
				ps.add(path, "must be a string, got %s", kind(val))
				continue
			}
			if len(s) > maxRegexLen {
				ps.add(path, "regex is %d bytes; the limit is %d", len(s), maxRegexLen)
				continue
			}
			re, err := regexp.Compile(`^(?:` + s + `)$`)
			if err != nil {
				ps.add(path, "invalid RE2 regex: %v", err)
				continue
			}
			r.Regex, r.re = s, re
		case "max_length":
			r.MaxLength = ps.count(path, val)
		default:
			ps.unknownKey(path, k, "", argRuleKeys)
		}
	}
	if r.Prefix == nil && r.Regex == "" && r.MaxLength == 0 {
		ps.add(at, "an argument constraint needs prefix, regex or max_length")
	}
	return r
}

func (ps *parser) globs(at string, v any) []string { return ps.globsOf(at, v, "tool names") }

// globsOf parses a list of what (names or URIs) or globs.
func (ps *parser) globsOf(at string, v any, what string) []string {
	list, ok := v.([]any)
	if !ok {
		ps.add(at, "must be a list of %s or globs, got %s", what, kind(v))
		return nil
	}
	var out []string
	for i, e := range list {
		path := pointer(at, strconv.Itoa(i))
		s, ok := e.(string)
		if !ok {
			ps.add(path, "must be a string, got %s", kind(e))
			continue
		}
		if msg := checkGlob(s); msg != "" {
			ps.add(path, "%s", msg)
			continue
		}
		out = append(out, s)
	}
	return out
}

func (ps *parser) enum(at string, v any, values ...string) string {
	s, ok := v.(string)
	if !ok || !slices.Contains(values, s) {
		hint := ""
		if ok {
			hint = suggest.Hint(s, values)
		}
		ps.problems = append(ps.problems, Problem{Path: at, Msg: fmt.Sprintf("must be one of %q, got %s", values, shown(v)), Hint: hint})
		return ""
	}
	return s
}

// count reads a positive integer (a cap or burst); zero is refused because
// it would either mean "nothing" or be mistaken for "unlimited".
func (ps *parser) count(at string, v any) int {
	n, ok := v.(json.Number)
	if !ok {
		ps.add(at, "must be a whole number, got %s", kind(v))
		return 0
	}
	i, err := strconv.ParseInt(string(n), 10, 32)
	if err != nil || i < 1 {
		ps.add(at, "must be a whole number from 1 to %d, got %s", math.MaxInt32, n)
		return 0
	}
	return int(i)
}

var rateUnits = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "m": time.Minute, "min": time.Minute, "h": time.Hour,
}

func (ps *parser) rate(at string, v any) Rate {
	s, ok := v.(string)
	num, unit, found := strings.Cut(s, "/")
	per, known := rateUnits[unit]
	n, err := strconv.Atoi(num)
	if !ok || !found || !known || err != nil || !allDigits(num) || n < 1 || n > maxRate {
		ps.add(at, `must be a rate such as "10/s", "100/m" or "1000/h" (1 to %d calls per second, minute or hour), got %s`, maxRate, shown(v))
		return Rate{}
	}
	return Rate{N: n, Per: per}
}

// size reads bytes: a whole number, or a string with B, KiB, MiB or GiB.
func (ps *parser) size(at string, v any) int64 {
	const forms = `use a whole number of bytes, or a string such as "64KiB", "16MiB", "1GiB"`
	var digits string
	unit := int64(1)
	switch x := v.(type) {
	case json.Number:
		digits = string(x)
	case string:
		lower := strings.ToLower(x)
		for _, u := range []struct {
			suffix string
			n      int64
		}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"b", 1}} {
			if strings.HasSuffix(lower, u.suffix) {
				digits, unit = lower[:len(lower)-len(u.suffix)], u.n
				break
			}
		}
		if digits == "" {
			digits = lower
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if !allDigits(digits) || err != nil || n < 1 || n > math.MaxInt64/unit {
		ps.add(at, "invalid size %s: %s (at least 1 byte)", shown(v), forms)
		return 0
	}
	return n * unit
}

// duration reads "500ms", "30s", "2m", "1min", "1h", or whole seconds.
func (ps *parser) duration(at string, v any) time.Duration {
	const forms = "use a whole number of seconds or one of 500ms, 30s, 1min, 2m, 1h"
	var digits string
	unit := time.Second
	switch x := v.(type) {
	case json.Number:
		digits = string(x)
	case string:
		digits = x
		for _, u := range []struct {
			suffix string
			d      time.Duration
		}{{"min", time.Minute}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}} {
			if strings.HasSuffix(x, u.suffix) {
				digits, unit = x[:len(x)-len(u.suffix)], u.d
				break
			}
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if !allDigits(digits) || err != nil || n < 1 || n > math.MaxInt64/int64(unit) {
		ps.add(at, "invalid duration %s: %s (greater than zero)", shown(v), forms)
		return 0
	}
	return time.Duration(n) * unit
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func shown(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	if n, ok := v.(json.Number); ok {
		return string(n)
	}
	return kind(v)
}

// decodeStrict decodes one JSON value into map[string]any, []any, string,
// json.Number, bool or nil, refusing duplicate keys (which different JSON
// readers resolve differently), invalid UTF-8, nesting deeper than
// maxDepth and trailing data.
func decodeStrict(data []byte, maxDepth int) (any, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec, "", 0, maxDepth)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, at string, depth, maxDepth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	if depth >= maxDepth {
		return nil, fmt.Errorf("at %s: nested deeper than %d levels", orRoot(at), maxDepth)
	}
	switch d {
	case '[':
		list := []any{}
		for dec.More() {
			v, err := decodeValue(dec, pointer(at, strconv.Itoa(len(list))), depth+1, maxDepth)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.Token()
		return list, err
	case '{':
		obj := map[string]any{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, fmt.Errorf("invalid JSON: %w", err)
			}
			k := tok.(string)
			if _, dup := obj[k]; dup {
				return nil, fmt.Errorf("at %s: duplicate key %q", orRoot(at), k)
			}
			v, err := decodeValue(dec, pointer(at, k), depth+1, maxDepth)
			if err != nil {
				return nil, err
			}
			obj[k] = v
		}
		_, err := dec.Token()
		return obj, err
	}
	return nil, fmt.Errorf("invalid JSON at %s", orRoot(at))
}

func orRoot(at string) string {
	if at == "" {
		return "/"
	}
	return at
}
