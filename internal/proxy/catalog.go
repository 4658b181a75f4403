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

// catalog returns g's entries for its current tools.
func (p *Server) catalog(g *upstream.Group) []Entry {
	l := g.Lists()
	p.cat.mu.Lock()
	defer p.cat.mu.Unlock()
	c, ok := p.cat.entries[g.Name()]
	if ok && c.version == l.Version && c.epoch == p.cat.epoch {
		return c.entries
	}
	// Computed under the lock: the catalog may write the pin store, and two
	// concurrent first calls must not both do it.
	entries := p.catalogFn(g, l.Tools)
	if p.cat.entries == nil {
		p.cat.entries = map[string]cachedEntries{}
	}
	p.cat.entries[g.Name()] = cachedEntries{version: l.Version, epoch: p.cat.epoch, entries: entries}
	return entries
}

// Invalidate drops every cached catalog entry (after pins were approved or
// the policy changed) and tells the client the tools may have changed.
func (p *Server) Invalidate() {
	p.cat.mu.Lock()
	p.cat.epoch++
	p.cat.mu.Unlock()
	p.changed()
}
