package policy

import (
	"fmt"
	"slices"
)

// Access lists which resources (by URI) or prompts (by name) of a group
// Moat lists and serves. The zero value allows all of them.
type Access struct {
	// Allow lists URIs, prompt names or globs ('*' any run, '/' included;
	// '?' one character). nil means no allow list; an empty, non-nil list
	// allows nothing.
	Allow []string
	// Deny lists URIs, prompt names or globs; deny wins over allow.
	Deny []string
}

// IsZero reports whether a allows everything by itself.
func (a Access) IsZero() bool { return a.Allow == nil && a.Deny == nil }

func (a Access) clone() Access {
	return Access{Allow: slices.Clone(a.Allow), Deny: slices.Clone(a.Deny)}
}

// overlay lays top over a within one source: top's allow list replaces
// a's, deny lists are joined.
func (a Access) overlay(top Access) Access {
	out := a.clone()
	if top.Allow != nil {
		out.Allow = slices.Clone(top.Allow)
	}
	out.Deny = union(a.Deny, top.Deny)
	return out
}

// DecideResource answers "may this resource be listed and read" for a
// resource URI, or for a resource template's URI template when listing.
// Subscribing needs the same answer as reading. Every merged policy must
// allow, as for tools.
func (p *Policy) DecideResource(uri string) Decision {
	return p.decideAccess("resource", "resources", uri, func(q *Policy) Access { return q.Resources })
}

// DecidePrompt answers "may this prompt be listed, got and completed".
func (p *Policy) DecidePrompt(name string) Decision {
	return p.decideAccess("prompt", "prompts", name, func(q *Policy) Access { return q.Prompts })
}

func (p *Policy) decideAccess(what, key, name string, rules func(*Policy) Access) Decision {
	if p == nil {
		return Decision{Rule: "no-policy", Reason: "no policy is loaded for this group, so Moat refuses every request (fail closed); check the config and the managed policy"}
	}
	if d := rules(p).decide(p.scope(), what, key, name); !d.Allow {
		return d
	}
	for _, o := range p.also {
		if d := rules(o).decide(o.scope(), what, key, name); !d.Allow {
			d.Reason += " (set by the managed policy, which the user's config cannot loosen)"
			return d
		}
	}
	if rules(p).Allow != nil {
		return Decision{Allow: true, Rule: key + ".allow", Reason: fmt.Sprintf("%s %q is in the allow list", what, name)}
	}
	return Decision{Allow: true, Rule: "default", Reason: fmt.Sprintf("no rule refuses this %s", what)}
}

// decide judges name by a's lists; scope names whose policy a is in
// ("group" or "identity") for the reason.
func (a Access) decide(scope, what, key, name string) Decision {
	for _, pat := range a.Deny {
		if matchGlob(pat, name) {
			return Decision{Rule: key + ".deny:" + pat, Reason: fmt.Sprintf("%s %q matches the deny rule %q of this %s's policy (%s.deny); do not retry: ask the user to change the policy if it is needed", what, name, pat, scope, key)}
		}
	}
	if a.Allow != nil && !slices.ContainsFunc(a.Allow, func(pat string) bool { return matchGlob(pat, name) }) {
		return Decision{Rule: key + ".allow", Reason: fmt.Sprintf("%s %q is not in this %s's %s.allow list; do not retry: ask the user to add it to the policy if it is needed", what, name, scope, key)}
	}
	return Decision{Allow: true}
}

var accessKeys = []string{"allow", "deny"}

// access parses a "resources" or "prompts" block.
func (ps *parser) access(at string, v any, what string) Access {
	obj, ok := v.(map[string]any)
	if !ok {
		ps.add(at, `must be an object with "allow" and/or "deny" lists of %s or globs, got %s`, what, kind(v))
		return Access{}
	}
	var a Access
	for k, val := range obj {
		path := pointer(at, k)
		switch k {
		case "allow":
			a.Allow = ps.globsOf(path, val, what)
			if a.Allow == nil {
				a.Allow = []string{}
			}
		case "deny":
			a.Deny = ps.globsOf(path, val, what)
		default:
			ps.unknownKey(path, k, "", accessKeys)
		}
	}
	return a
}

// wire is a's form in a policy block, nil when it allows everything.
func (a Access) wire() map[string]any {
	if a.IsZero() {
		return nil
	}
	m := map[string]any{}
	if a.Allow != nil {
		m["allow"] = a.Allow
	}
	if a.Deny != nil {
		m["deny"] = a.Deny
	}
	return m
}
