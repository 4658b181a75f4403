package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MarshalJSON writes p in the form Parse reads, so Parse(Marshal(p))
// gives p back. A merged policy (from Merge or Effective with a managed
// side) holds rules of several sources and cannot be written as one block;
// use Explain for it.
func (p *Policy) MarshalJSON() ([]byte, error) {
	if len(p.also) > 0 {
		return nil, errors.New("policy: a merged policy cannot be written as one policy block; use Explain")
	}
	m := map[string]any{}
	if p.Allow != nil {
		m["allow"] = p.Allow
	}
	if p.Deny != nil {
		m["deny"] = p.Deny
	}
	putString(m, "destructive", p.Destructive)
	if p.ReadOnlyOnly != nil {
		m["read_only_only"] = *p.ReadOnlyOnly
	}
	if p.Args != nil {
		args := map[string]map[string]any{}
		for tool, rules := range p.Args {
			args[tool] = map[string]any{}
			for name, r := range rules {
				args[tool][name] = r.wire()
			}
		}
		m["args"] = args
	}
	if w := p.Resources.wire(); w != nil {
		m["resources"] = w
	}
	if w := p.Prompts.wire(); w != nil {
		m["prompts"] = w
	}
	p.Group.put(m)
	if p.Tools != nil {
		tools := map[string]any{}
		for name, s := range p.Tools {
			tm := map[string]any{}
			s.put(tm)
			tools[name] = tm
		}
		m["tools"] = tools
	}
	if p.Global != (Settings{}) {
		g := map[string]any{}
		p.Global.put(g)
		m["global"] = g
	}
	putString(m, "pin", p.Pin)
	putString(m, "redact", p.Redact)
	putString(m, "on_invalid_schema", p.OnInvalidSchema)
	return json.Marshal(m)
}

func putString(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

func (r *ArgRule) wire() map[string]any {
	m := map[string]any{}
	if r.Prefix != nil {
		m["prefix"] = r.Prefix
	}
	if r.Regex != "" {
		m["regex"] = r.Regex
	}
	if r.MaxLength != 0 {
		m["max_length"] = r.MaxLength
	}
	return m
}

func (s Settings) put(m map[string]any) {
	if !s.Rate.IsZero() {
		m["rate"] = s.Rate.String()
	}
	if s.Burst != 0 {
		m["burst"] = s.Burst
	}
	if s.MaxConcurrent != 0 {
		m["max_concurrent"] = s.MaxConcurrent
	}
	if s.MaxArgsBytes != 0 {
		m["max_args_bytes"] = s.MaxArgsBytes
	}
	if s.MaxResultBytes != 0 {
		m["max_result_bytes"] = s.MaxResultBytes
	}
	if s.Timeout != 0 {
		m["timeout"] = formatDuration(s.Timeout)
	}
	if s.KillOnTimeout {
		m["kill_on_timeout"] = true
	}
}

// formatDuration writes d in the largest unit of Parse's forms that
// divides it exactly.
func formatDuration(d time.Duration) string {
	for _, u := range []struct {
		unit   time.Duration
		suffix string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d%u.unit == 0 {
			return strconv.FormatInt(int64(d/u.unit), 10) + u.suffix
		}
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

func formatSize(n int64) string {
	for _, u := range []struct {
		unit   int64
		suffix string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n%u.unit == 0 {
			return fmt.Sprintf("%d%s", n/u.unit, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// Explain says, for `moat policy check`, whether tool (with annotations
// ann) is listed and callable under p, by which rule, and which limits
// apply to its calls.
func Explain(p *Policy, tool string, ann *Annotations) string {
	var b strings.Builder
	d := p.Decide(tool, ann, nil)
	if d.Allow {
		fmt.Fprintf(&b, "%s: allowed (rule %s: %s)\n", tool, d.Rule, d.Reason)
	} else {
		fmt.Fprintf(&b, "%s: DENIED (rule %s): %s\n", tool, d.Rule, d.Reason)
		return b.String()
	}
	for _, q := range append([]*Policy{p}, p.also...) {
		for pat, rules := range q.Args {
			if !matchGlob(pat, tool) {
				continue
			}
			for _, name := range sortedKeys(rules) {
				r := rules[name]
				var parts []string
				if r.Prefix != nil {
					parts = append(parts, "under "+strings.Join(r.Prefix, ", "))
				}
				if r.Regex != "" {
					parts = append(parts, "matching "+r.Regex)
				}
				if r.MaxLength != 0 {
					parts = append(parts, fmt.Sprintf("at most %d bytes", r.MaxLength))
				}
				fmt.Fprintf(&b, "  argument %q: %s\n", name, strings.Join(parts, "; "))
			}
		}
	}
	ts, gs, glob := p.ToolSettings(tool), p.GroupSettings(), p.GlobalSettings()
	kill := ""
	if ts.KillOnTimeout {
		kill = " (the server is restarted when it passes)"
	}
	fmt.Fprintf(&b, "  arguments up to %s, results up to %s, timeout %s%s\n", formatSize(ts.MaxArgsBytes), formatSize(ts.MaxResultBytes), formatDuration(ts.Timeout), kill)
	if !ts.Rate.IsZero() || ts.MaxConcurrent != 0 {
		fmt.Fprintf(&b, "  tool limits: %s\n", limitText(ts))
	}
	fmt.Fprintf(&b, "  group limits: %s\n", limitText(gs))
	fmt.Fprintf(&b, "  global limits: %s\n", limitText(glob))
	fmt.Fprintf(&b, "  pin %s, redact %s, on_invalid_schema %s\n", p.PinMode(), p.RedactMode(), p.InvalidSchemaMode())
	return b.String()
}

func limitText(s Settings) string {
	var parts []string
	if s.Rate.IsZero() {
		parts = append(parts, "no rate limit")
	} else {
		parts = append(parts, fmt.Sprintf("rate %s (burst %d)", s.Rate, s.burst()))
	}
	if s.MaxConcurrent != 0 {
		parts = append(parts, fmt.Sprintf("at most %d at once", s.MaxConcurrent))
	}
	return strings.Join(parts, ", ")
}
