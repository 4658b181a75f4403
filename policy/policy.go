// Package policy is Moat's policy model: which tools of an upstream group may
// be listed and called, with which arguments, how often, how many at once and
// how large their arguments and results may be.
//
// One decision function, [Policy.Decide], answers both questions Moat asks:
// "may this tool be shown?" (called without arguments, from the tool's name
// and annotations) and "may this call go through?" (with the arguments). So a
// tool is listed exactly when it can be called at all.
//
// # Sources and merging
//
// A policy comes from the user's config ("defaults.policy" and each server's
// "policy") and, on multi-user hosts, from a managed file that the user can
// only tighten (see [ParseManaged], [Merge] and [Effective]). Every setting
// merges to the stricter of the two values, and the allow/deny/tier/argument
// rules of every merged policy must all allow a call, so a merged policy is
// never looser than any of its parts.
//
// A gateway identity's policy ([ParseIdentity]) holds only decision rules
// and "global" limits; Moat judges it beside the group's policy, and both
// must allow.
//
// # Limits
//
// [Limits] holds rate limiters (golang.org/x/time/rate) and concurrency
// counters per tool, per group, per gateway identity and globally, in
// process. It survives config reloads: a limiter whose settings did not
// change keeps its state.
//
// The package imports nothing of Moat's internals and does no I/O: Moat's
// config loader reads the managed policy file, after checking that no other
// user can change it or any directory on its path, and parses it with
// [ParseManaged].
package policy

import (
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// Built-in values used when no policy sets a key. Zero never means
// "unlimited": a key that is not set takes these values.
const (
	DefaultMaxArgsBytes   = 1 << 20  // 1 MiB of JSON arguments per call
	DefaultMaxResultBytes = 16 << 20 // 16 MiB per result
	DefaultTimeout        = 60 * time.Second
	DefaultMaxConcurrent  = 16 // calls in flight per group
	DefaultGlobalMaxConc  = 64 // calls in flight over all groups
)

// DefaultGlobalRate is the ceiling on calls per second over all groups when
// "global.rate" is not set.
var DefaultGlobalRate = Rate{N: 100, Per: time.Second}

// Values of the mode keys. The empty string means "not set": the default
// (the first of each list) applies.
const (
	DestructiveAllow = "allow"
	DestructiveDeny  = "deny"

	PinStrict  = "strict"
	PinAutoAdd = "auto-add"
	PinOff     = "off"

	RedactRedact = "redact"
	RedactBlock  = "block"
	RedactOff    = "off"

	InvalidSchemaReject      = "reject"
	InvalidSchemaPassthrough = "passthrough"
)

// A Policy is one parsed "policy" block, or the merge of several.
// The zero value (and an empty JSON object) allows every tool with the
// built-in limits.
type Policy struct {
	// Allow lists tool names or globs ('*' any run, '?' one character).
	// nil means no allow list (every tool is allowed unless denied); an
	// empty, non-nil list allows nothing.
	Allow []string
	// Deny lists tool names or globs; deny wins over allow.
	Deny []string
	// Destructive is DestructiveDeny to refuse tools that may be
	// destructive by their annotations, unless the tool's exact name (not a
	// glob) is in Allow. "" or DestructiveAllow leaves them to Allow/Deny.
	Destructive string
	// ReadOnlyOnly, when true, refuses every tool not annotated readOnlyHint.
	// nil means not set.
	ReadOnlyOnly *bool
	// Args holds constraints on string arguments: tool name or glob, then
	// argument name.
	Args map[string]map[string]*ArgRule

	// Group holds the group-wide settings: Rate, Burst and MaxConcurrent
	// count all calls to the group together; the sizes and Timeout apply to
	// each call.
	Group Settings
	// Tools holds per-tool settings by tool name or glob. They can only
	// tighten Group: a size or timeout is the smaller of the two, a rate or
	// concurrency cap is an extra limiter for that tool alone.
	Tools map[string]Settings
	// Resources and Prompts say which of the group's resources (by URI;
	// templates by their URI template when listed) and prompts (by name)
	// are listed and served: read, subscribed, got and completed.
	Resources Access
	Prompts   Access

	// Global holds Rate, Burst and MaxConcurrent over all groups together.
	// Only meaningful in "defaults.policy" and the managed defaults.
	Global Settings

	Pin             string // PinStrict (default), PinAutoAdd or PinOff
	Redact          string // RedactRedact (default), RedactBlock or RedactOff
	OnInvalidSchema string // InvalidSchemaReject (default) or InvalidSchemaPassthrough

	// also holds the allow/deny/tier/argument rules of policies merged into
	// this one; each of them must allow a call too.
	also []*Policy
	// identity is set by ParseIdentity: the policy of a gateway identity,
	// whose refusals say so.
	identity bool
}

// scope is what p is the policy of, as its refusals name it.
func (p *Policy) scope() string {
	if p.identity {
		return "identity"
	}
	return "group"
}

// Settings are the numeric limits of one scope. Zero values are "not set".
type Settings struct {
	Rate           Rate
	Burst          int
	MaxConcurrent  int
	MaxArgsBytes   int64
	MaxResultBytes int64
	Timeout        time.Duration
	// KillOnTimeout restarts the server when a call times out: a call that
	// hangs may leave the server in a state no later call should meet.
	KillOnTimeout bool
}

// A Rate is N events per Per. The zero Rate is "not set".
type Rate struct {
	N   int
	Per time.Duration // time.Second, time.Minute or time.Hour
}

// IsZero reports whether r is unset.
func (r Rate) IsZero() bool { return r.N == 0 || r.Per == 0 }

// Limit is r as a golang.org/x/time/rate limit (events per second).
func (r Rate) Limit() rate.Limit {
	if r.IsZero() {
		return rate.Inf
	}
	return rate.Limit(float64(r.N) / r.Per.Seconds())
}

// String is r in the config's form: "10/s", "100/m", "1000/h".
func (r Rate) String() string {
	if r.IsZero() {
		return ""
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[r.Per]
	return fmt.Sprintf("%d/%s", r.N, unit)
}

// slower reports whether r allows fewer events per second than o.
func (r Rate) slower(o Rate) bool { return float64(r.Limit()) < float64(o.Limit()) }

// burst is the effective burst of s: Burst, else the rate's N, at least 1.
func (s Settings) burst() int {
	if s.Burst > 0 {
		return s.Burst
	}
	return max(s.Rate.N, 1)
}

// PinMode is the effective pin mode.
func (p *Policy) PinMode() string { return orDefault(p.Pin, PinStrict) }

// RedactMode is the effective redaction mode.
func (p *Policy) RedactMode() string { return orDefault(p.Redact, RedactRedact) }

// InvalidSchemaMode is the effective on_invalid_schema mode.
func (p *Policy) InvalidSchemaMode() string { return orDefault(p.OnInvalidSchema, InvalidSchemaReject) }

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// ToolSettings is what applies to one call of tool: MaxArgsBytes,
// MaxResultBytes and Timeout are the effective values (the smallest set by
// the group or any matching "tools" entry, else the built-in default); Rate,
// Burst and MaxConcurrent are the tool's own limiter, zero when no "tools"
// entry sets one (the group and global limiters still apply).
func (p *Policy) ToolSettings(tool string) Settings {
	s := Settings{
		MaxArgsBytes:   p.Group.MaxArgsBytes,
		MaxResultBytes: p.Group.MaxResultBytes,
		Timeout:        p.Group.Timeout,
		KillOnTimeout:  p.Group.KillOnTimeout,
	}
	for pat, t := range p.Tools {
		if matchGlob(pat, tool) {
			s = stricterSettings(s, t)
		}
	}
	if s.MaxArgsBytes == 0 {
		s.MaxArgsBytes = DefaultMaxArgsBytes
	}
	if s.MaxResultBytes == 0 {
		s.MaxResultBytes = DefaultMaxResultBytes
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if !s.Rate.IsZero() {
		s.Burst = s.burst()
	}
	return s
}

// GroupSettings is the group's limiter: Rate (zero when not set), Burst and
// MaxConcurrent (DefaultMaxConcurrent when not set).
func (p *Policy) GroupSettings() Settings {
	s := Settings{Rate: p.Group.Rate, MaxConcurrent: p.Group.MaxConcurrent}
	if !s.Rate.IsZero() {
		s.Burst = p.Group.burst()
	}
	if s.MaxConcurrent == 0 {
		s.MaxConcurrent = DefaultMaxConcurrent
	}
	return s
}

// IdentitySettings is the limiter of a gateway identity's policy over all
// its calls, from its "global" block: Rate and Burst (zero when no rate is
// set) and MaxConcurrent (zero when not set). Zero means no limiter of the
// identity's own; the group and global limiters still apply.
func (p *Policy) IdentitySettings() Settings {
	s := Settings{Rate: p.Global.Rate, MaxConcurrent: p.Global.MaxConcurrent}
	if !s.Rate.IsZero() {
		s.Burst = p.Global.burst()
	}
	return s
}

// GlobalSettings is the limiter over all groups: Rate (DefaultGlobalRate
// when not set), Burst and MaxConcurrent (DefaultGlobalMaxConc when not set).
func (p *Policy) GlobalSettings() Settings {
	s := Settings{Rate: p.Global.Rate, Burst: p.Global.Burst, MaxConcurrent: p.Global.MaxConcurrent}
	if s.Rate.IsZero() {
		s.Rate, s.Burst = DefaultGlobalRate, 0
	}
	s.Burst = s.burst()
	if s.MaxConcurrent == 0 {
		s.MaxConcurrent = DefaultGlobalMaxConc
	}
	return s
}
