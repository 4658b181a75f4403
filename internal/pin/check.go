package pin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/guard"
)

type seenTool struct {
	hash   string
	def    []byte
	reason string // set when the tool is held whatever the pins say
}

// Check compares a group's current tool list with its pins and records what
// it finds. On first sight of the group every tool is pinned and approved
// (trust on first use). Later, a tool whose definition changed, one that
// came back different after disappearing, and (unless mode is auto-add) a
// new one are held: not approved until Approve. A renamed tool is a removed
// one plus an added one. Mode off approves everything and records nothing.
//
// The approved map is what may be listed and called; held is what the
// listing should show as "changed, awaiting approval" (never with its new
// text). On error (the store could not be read or written) nothing is
// approved.
func (s *Store) Check(group, identity string, tools []*mcp.Tool, mode string) (approved map[string]bool, held []Held, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, hashes := s.hashAll(identity, tools)
	s.modes[group] = mode
	s.hashes[group] = hashes
	approved = map[string]bool{}
	if mode == ModeOff {
		for name := range cur {
			approved[name] = true
		}
		return approved, nil, nil
	}
	err = s.mutate(func(st *state) (bool, error) {
		clear(approved)
		held = nil
		g := st.Groups[group]
		if g == nil {
			g = newGroup(identity)
			st.Groups[group] = g
			for _, name := range sortedNames(cur) {
				if c := cur[name]; c.reason == "" {
					g.Pins[name] = &pinEntry{Hash: c.hash, Def: c.def}
					approved[name] = true
				} else {
					held = append(held, Held{Tool: name, Reason: c.reason})
				}
			}
			return true, nil
		}
		changed := g.Identity != identity
		if changed && g.PinnedIdentity == "" && len(g.Pins) > 0 {
			g.PinnedIdentity = g.Identity
		}
		g.Identity = identity
		for _, name := range sortedNames(cur) {
			c := cur[name]
			p := g.Pins[name]
			var reason string
			switch {
			case c.reason != "":
				held = append(held, Held{Tool: name, Reason: c.reason})
				continue
			case p != nil && p.Hash == c.hash:
				approved[name] = true
				if p.Removed || g.Pending[name] != nil {
					p.Removed = false
					delete(g.Pending, name)
					changed = true
				}
				continue
			case p != nil && p.Removed:
				reason = ReasonReadded
			case p != nil:
				reason = ReasonChanged
			case mode == ModeAutoAdd:
				g.Pins[name] = &pinEntry{Hash: c.hash, Def: c.def}
				delete(g.Pending, name)
				approved[name] = true
				changed = true
				continue
			default:
				reason = ReasonAdded
			}
			h := Held{Tool: name, Reason: reason, NewHash: c.hash}
			if p != nil {
				h.OldHash = p.Hash
			}
			held = append(held, h)
			if pe := g.Pending[name]; pe == nil || pe.Hash != c.hash || pe.Reason != reason {
				g.Pending[name] = &pendingEntry{Hash: c.hash, Def: c.def, Reason: reason}
				changed = true
			}
		}
		for name, p := range g.Pins {
			if _, ok := cur[name]; !ok && !p.Removed {
				p.Removed = true
				changed = true
			}
		}
		for name := range g.Pending {
			if c, ok := cur[name]; !ok || c.reason != "" {
				delete(g.Pending, name)
				changed = true
			}
		}
		if len(g.Pending) == 0 && g.PinnedIdentity != "" {
			g.PinnedIdentity = ""
			changed = true
		}
		return changed, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return approved, held, nil
}

func (s *Store) hashAll(identity string, tools []*mcp.Tool) (map[string]seenTool, map[*mcp.Tool]string) {
	cur := map[string]seenTool{}
	hashes := map[*mcp.Tool]string{}
	for _, t := range tools {
		if t == nil {
			continue
		}
		h, def, err := hashTool(identity, t)
		c := seenTool{hash: h, def: def}
		if err != nil {
			c.reason = ReasonBroken
		}
		if _, dup := cur[t.Name]; dup {
			c.reason = ReasonDuplicate
		}
		cur[t.Name] = c
		if err == nil {
			hashes[t] = h
		}
	}
	return cur, hashes
}

func sortedNames(m map[string]seenTool) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Approve pins the pending definitions of the named held tools of group,
// or of all its held tools when none are named. Naming a tool that is not
// held is an error and approves nothing.
func (s *Store) Approve(group string, tools ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mutate(func(st *state) (bool, error) {
		g := st.Groups[group]
		if g == nil {
			return false, fmt.Errorf("pin: group %q has no pins yet; Moat pins a group's tools when it first lists them", group)
		}
		names := tools
		if len(names) == 0 {
			for n := range g.Pending {
				names = append(names, n)
			}
		}
		for _, n := range names {
			if g.Pending[n] == nil {
				return false, fmt.Errorf("pin: tool %q of group %q is not awaiting approval; `moat pins diff %s` lists the held tools", n, group, group)
			}
		}
		for _, n := range names {
			pe := g.Pending[n]
			g.Pins[n] = &pinEntry{Hash: pe.Hash, Def: pe.Def}
			delete(g.Pending, n)
		}
		if len(g.Pending) == 0 {
			g.PinnedIdentity = ""
		}
		return len(names) > 0, nil
	})
}

// Diff lists the held tools of group with their approved and pending
// definitions, sorted by tool name.
func (s *Store) Diff(group string) []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.st.Groups[group]
	if g == nil {
		return nil
	}
	var out []Change
	for name, pe := range g.Pending {
		c := Change{Tool: name, Reason: pe.Reason, New: indent(pe.Def), NewIdentity: g.Identity}
		if p := g.Pins[name]; p != nil {
			c.Old = indent(p.Def)
			// The pin's hash says which identity it was approved under.
			for _, id := range []string{g.PinnedIdentity, g.Identity} {
				if h, err := hashDef(id, p.Def); err == nil && h == p.Hash {
					c.OldIdentity = id
					break
				}
			}
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Change) int { return strings.Compare(a.Tool, b.Tool) })
	return out
}

// Groups lists the groups the store holds pins for, sorted.
func (s *Store) Groups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.st.Groups))
	for n := range s.st.Groups {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func indent(def []byte) string {
	var b bytes.Buffer
	if json.Indent(&b, def, "", "  ") != nil {
		return string(def)
	}
	return b.String()
}

// callable reports whether a call with definition t of a tool of group may
// go through: pinning is off for the group, or t is exactly the approved
// definition and the upstream offers no other one awaiting approval.
func (s *Store) callable(group string, t *mcp.Tool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	mode, checked := s.modes[group]
	if mode == ModeOff {
		return true
	}
	if s.broken != nil {
		return false // the file was tampered with or removed: no pin is trusted
	}
	g := s.st.Groups[group]
	if !checked || g == nil || t == nil {
		return false
	}
	h, ok := s.hashes[group][t]
	if !ok {
		h = Hash(g.Identity, t)
	}
	p := g.Pins[t.Name]
	return p != nil && !p.Removed && h != "" && p.Hash == h && g.Pending[t.Name] == nil
}

// Layer refuses a tool call whose tool is not approved: held after a
// change, new and not yet approved, or of a group whose tools were never
// checked. Resource reads and prompts pass (they are not pinned).
func Layer(s *Store) guard.Layer {
	return func(next guard.Handler) guard.Handler {
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			if c.Kind == guard.KindTool && (c.Tool == nil || c.Tool.Name != c.Name || !s.callable(c.Group, c.Tool)) {
				return nil, &guard.Denial{
					Layer: guard.LayerPin,
					Rule:  "held",
					Reason: fmt.Sprintf("tool %s of group %s changed or appeared since it was approved, so Moat holds it back; do not retry: ask the user to run `moat pins diff %s` and `moat pins approve %s %s`",
						c.Name, c.Group, c.Group, c.Group, c.Name),
				}
			}
			return next(ctx, c)
		}
	}
}
