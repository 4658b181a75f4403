package proxy

import (
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/upstream"
)

// A Catalog decides what the model may see of a group's tools, with the
// same decisions (pins, policy, schema checks) the call chain applies, so
// nothing is listed that cannot be called. Tools it leaves out are not
// listed; held ones are listed by name with a note and without their text.
// It is called once per version of a group's tool list (and again after
// Invalidate), before any call to that group runs.
type Catalog func(g *upstream.Group, tools []*mcp.Tool) []Entry

// Entry is one tool as get_dynamic_tools shows it.
type Entry struct {
	Tool *mcp.Tool // what the model sees (may be a cleaned copy)
	Held string    // non-empty: not callable; shown as this note instead of the tool
}

func allTools(_ *upstream.Group, tools []*mcp.Tool) []Entry {
	out := make([]Entry, len(tools))
	for i, t := range tools {
		out[i] = Entry{Tool: t}
	}
	return out
}

// catalogCache remembers each group's entries for the list version and
// epoch they were computed at.
type catalogCache struct {
	mu      sync.Mutex
	epoch   uint64
	entries map[string]cachedEntries
}

type cachedEntries struct {
	version, epoch uint64
	entries        []Entry
}

// catalog returns g's entries for its current tools, as this session may
// see them: a gateway computes a group's catalog once for all its sessions
// (the pin checks and their audit records happen once), and narrows it to
// each session's identity.
func (p *Server) catalog(g *upstream.Group) []Entry {
	if p.gw == nil {
		return p.cat.get(g, p.catalogFn, "")
	}
	entries := p.gw.cat.get(g, p.gw.catalogFn, p.ownerOf(g.Name()))
	if p.narrow != nil {
		entries = p.narrow(g.Name(), entries, g.Lists().Tools)
	}
	return entries
}

// get returns g's entries, computed by fn once per version of its tool
// list and epoch. owner names the tenant (by key) whose own session of
// the group g is ("" when shared): each tenant's copy of a per-user server
// has lists of its own.
func (c *catalogCache) get(g *upstream.Group, fn Catalog, owner string) []Entry {
	l := g.Lists()
	key := g.Name()
	if owner != "" {
		key += "\x00" + owner
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok && e.version == l.Version && e.epoch == c.epoch {
		return e.entries
	}
	// Computed under the lock: the catalog may write the pin store, and two
	// concurrent first calls must not both do it.
	entries := fn(g, l.Tools)
	if c.entries == nil {
		c.entries = map[string]cachedEntries{}
	}
	c.entries[key] = cachedEntries{version: l.Version, epoch: c.epoch, entries: entries}
	return entries
}

// invalidate drops every cached entry.
func (c *catalogCache) invalidate() {
	c.mu.Lock()
	c.epoch++
	c.mu.Unlock()
}

// Invalidate drops every cached catalog entry (after pins were approved or
// the policy changed) and tells the client the tools may have changed.
func (p *Server) Invalidate() {
	p.cat.invalidate()
	p.changed()
}
