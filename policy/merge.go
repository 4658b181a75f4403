package policy

import (
	"maps"
	"slices"
)

// Merge combines a managed policy with a user's so that the user can only
// tighten it. A setting the managed policy leaves unset counts as its
// built-in default (so on a managed host "pin": "off" needs the
// administrator's consent). Each setting takes the stricter value: deny lists are joined;
// both allow lists must admit a tool; "deny" beats "allow" for destructive;
// read_only_only true beats false; the lower rate, burst, cap, size and
// timeout win (a set value beats an unset one); strict beats auto-add beats
// off; block beats redact beats off; reject beats passthrough. Argument
// constraints of both apply. Either argument may be nil.
func Merge(managed, user *Policy) *Policy {
	switch {
	case managed == nil && user == nil:
		return &Policy{}
	case managed == nil:
		return user.clone()
	case user == nil:
		return managed.clone()
	}
	out := &Policy{
		// The user's allow list and argument rules are this policy's own;
		// the managed ones stay whole in also, where they must allow too.
		Allow:        slices.Clone(user.Allow),
		Deny:         union(managed.Deny, user.Deny),
		Destructive:  stricterMode(managed.Destructive, user.Destructive, DestructiveDeny, DestructiveAllow),
		ReadOnlyOnly: stricterBool(managed.ReadOnlyOnly, user.ReadOnlyOnly),
		Args:         user.Args,
		Resources:    Access{Allow: slices.Clone(user.Resources.Allow), Deny: union(managed.Resources.Deny, user.Resources.Deny)},
		Prompts:      Access{Allow: slices.Clone(user.Prompts.Allow), Deny: union(managed.Prompts.Deny, user.Prompts.Deny)},
		Group:        stricterSettings(withDefaults(managed.Group, groupDefaults), user.Group),
		Global:       stricterSettings(withDefaults(managed.Global, globalDefaults), user.Global),
		Tools:        mergeTools(managed.Tools, user.Tools),
		// An unset managed mode means its default, which the user cannot loosen.
		Pin:             stricterMode(managed.PinMode(), user.Pin, PinStrict, PinAutoAdd, PinOff),
		Redact:          stricterMode(managed.RedactMode(), user.Redact, RedactBlock, RedactRedact, RedactOff),
		OnInvalidSchema: stricterMode(managed.InvalidSchemaMode(), user.OnInvalidSchema, InvalidSchemaReject, InvalidSchemaPassthrough),
	}
	out.also = append(out.also, managed.rulesOnly())
	out.also = append(out.also, managed.also...)
	out.also = append(out.also, user.also...)
	return out
}

// Effective is the policy for one server: the user's "defaults.policy"
// overlaid with the server's own "policy" (a key the server sets replaces
// the default's; deny lists are joined), the managed defaults overlaid with
// the managed server block the same way, and the two merged so the user's
// side can only tighten the managed side. Any argument may be nil.
func Effective(defaults, server, managedDefaults, managedServer *Policy) *Policy {
	user := overlay(defaults, server)
	managed := overlay(managedDefaults, managedServer)
	if managed == nil {
		if user == nil {
			return &Policy{}
		}
		return user
	}
	return Merge(managed, user)
}

// overlay lays top over base: within one source a server's policy may
// replace its defaults' values, except that deny lists are joined.
func overlay(base, top *Policy) *Policy {
	switch {
	case base == nil && top == nil:
		return nil
	case base == nil:
		return top.clone()
	case top == nil:
		return base.clone()
	}
	out := base.clone()
	if top.Allow != nil {
		out.Allow = slices.Clone(top.Allow)
	}
	out.Deny = union(base.Deny, top.Deny)
	out.Destructive = orDefault(top.Destructive, base.Destructive)
	if top.ReadOnlyOnly != nil {
		out.ReadOnlyOnly = top.ReadOnlyOnly
	}
	if top.Args != nil {
		out.Args = maps.Clone(base.Args)
		if out.Args == nil {
			out.Args = map[string]map[string]*ArgRule{}
		}
		maps.Copy(out.Args, top.Args)
	}
	if top.Tools != nil {
		out.Tools = maps.Clone(base.Tools)
		if out.Tools == nil {
			out.Tools = map[string]Settings{}
		}
		maps.Copy(out.Tools, top.Tools)
	}
	out.Resources = base.Resources.overlay(top.Resources)
	out.Prompts = base.Prompts.overlay(top.Prompts)
	out.Group = overlaySettings(base.Group, top.Group)
	out.Global = overlaySettings(base.Global, top.Global)
	out.Pin = orDefault(top.Pin, base.Pin)
	out.Redact = orDefault(top.Redact, base.Redact)
	out.OnInvalidSchema = orDefault(top.OnInvalidSchema, base.OnInvalidSchema)
	out.also = append(slices.Clone(base.also), top.also...)
	return out
}

// The built-in values of the settings that have one. A managed policy that
// leaves such a setting unset still means its default, so a user cannot
// raise it past that.
var (
	groupDefaults  = Settings{MaxConcurrent: DefaultMaxConcurrent, MaxArgsBytes: DefaultMaxArgsBytes, MaxResultBytes: DefaultMaxResultBytes, Timeout: DefaultTimeout}
	globalDefaults = Settings{Rate: DefaultGlobalRate, MaxConcurrent: DefaultGlobalMaxConc}
)

func withDefaults(s, def Settings) Settings {
	if s.Rate.IsZero() {
		s.Rate, s.Burst = def.Rate, def.Burst
	}
	s.MaxConcurrent = orZero(s.MaxConcurrent, def.MaxConcurrent)
	s.MaxArgsBytes = orZero(s.MaxArgsBytes, def.MaxArgsBytes)
	s.MaxResultBytes = orZero(s.MaxResultBytes, def.MaxResultBytes)
	s.Timeout = orZero(s.Timeout, def.Timeout)
	return s
}

func overlaySettings(base, top Settings) Settings {
	if !top.Rate.IsZero() {
		base.Rate, base.Burst = top.Rate, 0
	}
	if top.Burst != 0 {
		base.Burst = top.Burst
	}
	base.MaxConcurrent = orZero(top.MaxConcurrent, base.MaxConcurrent)
	base.MaxArgsBytes = orZero(top.MaxArgsBytes, base.MaxArgsBytes)
	base.MaxResultBytes = orZero(top.MaxResultBytes, base.MaxResultBytes)
	base.Timeout = orZero(top.Timeout, base.Timeout)
	base.KillOnTimeout = base.KillOnTimeout || top.KillOnTimeout
	return base
}

func orZero[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// stricterSettings takes, field by field, the stricter of a and b, where a
// set value is stricter than an unset one.
func stricterSettings(a, b Settings) Settings {
	out := Settings{
		MaxConcurrent:  minSet(a.MaxConcurrent, b.MaxConcurrent),
		MaxArgsBytes:   minSet(a.MaxArgsBytes, b.MaxArgsBytes),
		MaxResultBytes: minSet(a.MaxResultBytes, b.MaxResultBytes),
		Timeout:        minSet(a.Timeout, b.Timeout),
		KillOnTimeout:  a.KillOnTimeout || b.KillOnTimeout,
	}
	switch {
	case a.Rate.IsZero():
		out.Rate = b.Rate
	case b.Rate.IsZero() || a.Rate.slower(b.Rate):
		out.Rate = a.Rate
	default:
		out.Rate = b.Rate
	}
	if !out.Rate.IsZero() {
		var ba, bb int
		if !a.Rate.IsZero() {
			ba = a.burst()
		}
		if !b.Rate.IsZero() {
			bb = b.burst()
		}
		out.Burst = minSet(ba, bb)
	}
	return out
}

func minSet[T int | ~int64](a, b T) T {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

func mergeTools(a, b map[string]Settings) map[string]Settings {
	if a == nil && b == nil {
		return nil
	}
	out := maps.Clone(a)
	if out == nil {
		out = map[string]Settings{}
	}
	for k, v := range b {
		if old, ok := out[k]; ok {
			v = stricterSettings(old, v)
		}
		out[k] = v
	}
	return out
}

// stricterMode returns whichever of a and b comes first in order (strictest
// first); "" is unset and loses to any value.
func stricterMode(a, b string, order ...string) string {
	ia, ib := slices.Index(order, a), slices.Index(order, b)
	switch {
	case ia < 0:
		return b
	case ib < 0 || ia < ib:
		return a
	}
	return b
}

func stricterBool(a, b *bool) *bool {
	switch {
	case a == nil:
		return b
	case b == nil || *a:
		return a
	}
	return b
}

func union(a, b []string) []string {
	var out []string
	for _, s := range slices.Concat(a, b) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// rulesOnly is p's allow/deny/tier/argument rules without its limits.
func (p *Policy) rulesOnly() *Policy {
	return &Policy{Allow: p.Allow, Deny: p.Deny, Destructive: p.Destructive, ReadOnlyOnly: p.ReadOnlyOnly, Args: p.Args, Resources: p.Resources, Prompts: p.Prompts}
}

// clone copies p deeply enough that changing the copy's maps and lists
// leaves p alone (ArgRules are never modified, so they are shared).
func (p *Policy) clone() *Policy {
	out := *p
	out.Allow = slices.Clone(p.Allow)
	out.Deny = slices.Clone(p.Deny)
	out.Args = maps.Clone(p.Args)
	out.Tools = maps.Clone(p.Tools)
	out.Resources = p.Resources.clone()
	out.Prompts = p.Prompts.clone()
	out.also = slices.Clone(p.also)
	return &out
}
