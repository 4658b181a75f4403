// Package redact keeps secrets out of what leaves Moat: tool results,
// resource contents, prompt messages and error texts on their way to the
// client, and log and audit records.
//
// Two kinds of text are replaced. Known secrets, the values Moat itself
// resolved (${secret:NAME}, OAuth tokens, secret env values), are registered
// with [Redactor.Add] and always replaced by "[REDACTED:<name>]", in the
// encodings an upstream is likely to echo them in. Credential patterns
// (private keys, AWS, GitHub, Slack, OpenAI-style keys, Google API keys,
// JWTs) are recognised by conservative regular expressions and, per group,
// replaced by "[REDACTED:<pattern>]" (Mode "redact", the default), make the
// whole result a refusal (Mode "block"), or are left alone (Mode "off").
//
// Known secrets are found in one pass whatever their number (an Aho-Corasick
// automaton); patterns run only when a literal they need is present.
package redact

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf16"
)

// Mode is what a group's policy does with credential patterns.
type Mode string

const (
	ModeRedact Mode = "redact" // replace the match (the default)
	ModeBlock  Mode = "block"  // refuse the whole result
	ModeOff    Mode = "off"    // leave patterns alone; known secrets are still redacted
)

const (
	// MinSecretLen is the shortest value Add accepts: shorter ones would
	// match ordinary text everywhere.
	MinSecretLen = 6
	// maxValuesPerName bounds what a refreshed token leaves behind: older
	// values of a name are still redacted, up to this many.
	maxValuesPerName = 8
	// fallbackName marks text replaced whole because it kept recombining.
	fallbackName = "recombined"
)

// A Redactor replaces known secrets and credential patterns. It is safe for
// concurrent use; secrets can be added while others redact.
type Redactor struct {
	mu      sync.Mutex // serialises Add
	secrets []secret   // registration order
	auto    atomic.Pointer[automaton]
}

type secret struct{ name, value string }

// New returns a Redactor with no known secrets.
func New() *Redactor {
	r := &Redactor{}
	r.auto.Store(build(nil, nil))
	return r
}

// Add registers a known secret under name. Besides the value itself, these
// forms are registered, since an upstream may echo a value encoded: its JSON
// string escaping, standard and URL-safe base64 (unpadded, which also covers
// the padded form's prefix), URL query and path escaping, hexadecimal (lower
// and upper case), and every character written as a \uXXXX escape (as text,
// which a model reads back at once), each also as JSON escapes it on the
// wire. A value shorter
// than MinSecretLen bytes, or one that occurs inside a redaction marker, is
// refused with a warning in the log: it would match ordinary text.
func (r *Redactor) Add(name, value string) {
	name = cleanName(name)
	if len(value) < MinSecretLen {
		slog.Warn("redact: secret too short to redact safely; use a longer value", "name", name, "min_bytes", MinSecretLen)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.secrets {
		if s.value == value {
			return
		}
		if inMarker(s.value, nil, name) {
			slog.Warn("redact: secret name would reveal another secret in its marker; rename it", "name", name)
			return
		}
	}
	if inMarker(value, r.secrets, name) {
		slog.Warn("redact: secret value occurs in a redaction marker and cannot be redacted; use a longer value", "name", name)
		return
	}
	secrets := append([]secret(nil), r.secrets...)
	n := 0
	for _, s := range secrets {
		if s.name == name {
			n++
		}
	}
	if n >= maxValuesPerName {
		for i, s := range secrets {
			if s.name == name {
				secrets = append(secrets[:i], secrets[i+1:]...)
				break
			}
		}
	}
	secrets = append(secrets, secret{name, value})
	r.secrets = secrets
	r.auto.Store(compile(secrets))
}

// Forget stops redacting the values registered under name: the holder of
// a secret that no longer exists anywhere (a retired per-user copy's
// exchanged token) drops it, so a gateway that people come and go from
// keeps no growing list.
func (r *Redactor) Forget(name string) {
	name = cleanName(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := slices.DeleteFunc(slices.Clone(r.secrets), func(s secret) bool { return s.name == name })
	if len(kept) == len(r.secrets) {
		return
	}
	r.secrets = kept
	r.auto.Store(compile(kept))
}

// inMarker reports whether a form of value occurs in the marker of name,
// of a registered secret or of a pattern: redacting it would then put it
// back.
func inMarker(value string, secrets []secret, name string) bool {
	markers := []string{"[REDACTED:" + name + "]", "[REDACTED:" + fallbackName + "]"}
	for _, s := range secrets {
		markers = append(markers, "[REDACTED:"+s.name+"]")
	}
	for _, p := range patterns {
		markers = append(markers, "[REDACTED:"+p.name+"]")
	}
	for _, f := range encodings(value) {
		for _, m := range markers {
			if len(f) >= MinSecretLen && strings.Contains(m, f) {
				return true
			}
		}
	}
	return false
}

func compile(secrets []secret) *automaton {
	var forms []form
	var names []string
	for i, s := range secrets {
		names = append(names, s.name)
		for _, f := range encodings(s.value) {
			if len(f) >= MinSecretLen {
				forms = append(forms, form{f, i})
			}
		}
	}
	return build(forms, names)
}

func encodings(v string) []string {
	h := hex.EncodeToString([]byte(v))
	forms := []string{
		v,
		base64.RawStdEncoding.EncodeToString([]byte(v)),
		base64.RawURLEncoding.EncodeToString([]byte(v)),
		url.QueryEscape(v),
		url.PathEscape(v),
		h,
		strings.ToUpper(h),
		unicodeEscaped(v, "\\u%04x"),
		unicodeEscaped(v, "\\u%04X"),
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range forms {
		j, _ := json.Marshal(f) // never fails for a string
		for _, g := range []string{f, string(j[1 : len(j)-1])} {
			if !seen[g] {
				seen[g] = true
				out = append(out, g)
			}
		}
	}
	return out
}

// unicodeEscaped writes every UTF-16 unit of v in format ("\u%04x").
func unicodeEscaped(v, format string) string {
	var b strings.Builder
	for _, u := range utf16.Encode([]rune(v)) {
		fmt.Fprintf(&b, format, u)
	}
	return b.String()
}

// cleanName keeps a name fit for a marker: no brackets or spaces.
func cleanName(name string) string {
	name = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.', r == ':', r == '/':
			return r
		}
		return '_'
	}, name)
	if name == "" {
		name = "secret"
	}
	return name
}

// String returns s with known secrets and credential patterns replaced.
func (r *Redactor) String(s string) string {
	out, _ := r.redact(s, ModeRedact)
	return out
}

// Contains reports whether any known secret, in any registered form, occurs
// in s.
func (r *Redactor) Contains(s string) bool {
	return len(find(r.auto.Load(), s)) > 0
}

// redact replaces known secrets, then applies mode to the patterns; hit is
// the name of the first pattern found (set in every mode but off).
//
// A marker can complete a secret or a pattern with the text beside it (a
// secret "]]zzzz" next to a marker's closing bracket), so rounds repeat
// while anything around a marker still matches; the result is then stable,
// which makes String idempotent. Text that keeps recombining is replaced
// whole.
func (r *Redactor) redact(s string, mode Mode) (out, hit string) {
	a := r.auto.Load()
	out = s
	for range 4 {
		before := out
		out = replace(out, a)
		if mode != ModeOff {
			var h string
			out, h = applyPatterns(out, mode)
			if hit == "" {
				hit = h
			}
		}
		if out == before || !r.nearMarker(out, a, mode) {
			return out, hit
		}
	}
	return "[REDACTED:" + fallbackName + "]", hit
}

// applyPatterns replaces (or, in block mode, only finds) credential patterns.
func applyPatterns(s string, mode Mode) (out, hit string) {
	out = s
	for _, p := range patterns {
		locs := p.findAll(out)
		if len(locs) == 0 {
			continue
		}
		if hit == "" {
			hit = p.name
		}
		if mode == ModeBlock {
			continue
		}
		var b strings.Builder
		last := 0
		for _, l := range locs {
			b.WriteString(out[last:l[0]])
			b.WriteString("[REDACTED:" + p.name + "]")
			last = l[1]
		}
		b.WriteString(out[last:])
		out = b.String()
	}
	return out, hit
}

func replace(s string, a *automaton) string {
	spans := find(a, s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	last := 0
	for _, sp := range spans {
		b.WriteString(s[last:sp.start])
		b.WriteString("[REDACTED:" + a.names[sp.label] + "]")
		last = sp.end
	}
	b.WriteString(s[last:])
	return b.String()
}

// nearMarker reports whether a known secret or (unless mode is block or
// off, where patterns are not replaced) a pattern overlaps the text around
// a marker in s. Only there can a replacement have formed a new match, so
// only those windows are scanned.
func (r *Redactor) nearMarker(s string, a *automaton, mode Mode) bool {
	reach := max(a.maxLen, maxPatternLen)
	hit := func(w string) bool {
		if len(find(a, w)) > 0 {
			return true
		}
		if mode == ModeRedact {
			for _, p := range patterns {
				if len(p.findAll(w)) > 0 {
					return true
				}
			}
		}
		return false
	}
	ws, we := -1, -1 // current window; overlapping windows are merged
	for i := 0; ; {
		k := strings.Index(s[i:], "[REDACTED:")
		if k < 0 {
			break
		}
		start := i + k
		end := start + len("[REDACTED:")
		if e := strings.IndexByte(s[end:], ']'); e >= 0 {
			end += e + 1
		}
		lo, hi := max(0, start-reach+1), min(len(s), end+reach-1)
		if ws >= 0 && lo > we {
			if hit(s[ws:we]) {
				return true
			}
			ws = -1
		}
		if ws < 0 {
			ws = lo
		}
		we = hi
		i = end
	}
	return ws >= 0 && hit(s[ws:we])
}
