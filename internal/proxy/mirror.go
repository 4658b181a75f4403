package proxy

import (
	"context"
	"encoding/json"
	"net/url"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/yosida95/uritemplate/v3"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/upstream"
)

// registered is what refresh last put on the go-sdk server, as JSON, so a
// refresh changes (and notifies the client about) only what changed.
type registered struct {
	get, call string
	resources map[string]string // URI → JSON
	templates map[string]string // URI template → JSON
	prompts   map[string]string // name → JSON
}

// metaGroupsKey lists the groups of an item that several groups offer.
const metaGroupsKey = "groups"

// refresh makes the server's tools, resources, templates and prompts match
// the groups' current states. go-sdk sends the list_changed notifications
// (debounced) when something is added or removed.
func (p *Server) refresh() {
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()
	get, call := p.toolDefs()
	if j := mustJSON(get); j != p.reg.get {
		p.srv.AddTool(get, p.getDynamicTools)
		p.reg.get = j
	}
	if j := mustJSON(call); j != p.reg.call {
		p.srv.AddTool(call, p.callDynamicTool)
		p.reg.call = j
	}

	resources := map[string]*mcp.Resource{}
	templates := map[string]*mcp.ResourceTemplate{}
	prompts := map[string]*mcp.Prompt{}
	for _, g := range p.groups() {
		if g.Status().State != upstream.Ready {
			continue
		}
		l := g.Lists()
		if resourcesOn(g) {
			for _, r := range l.Resources {
				if r, ok := listable(p.shared, g.Name(), r, resourceKey); ok && p.permit(g.Name(), guard.KindResource, r.URI) {
					resources[r.URI] = tagged(resources[r.URI], r, g.Name(), resourceMeta)
				}
			}
			for _, t := range l.Templates {
				if t, ok := listable(p.shared, g.Name(), t, templateKey); ok && p.permit(g.Name(), guard.KindResource, t.URITemplate) {
					templates[t.URITemplate] = tagged(templates[t.URITemplate], t, g.Name(), templateMeta)
				}
			}
		}
		if promptsOn(g) {
			for _, pr := range l.Prompts {
				if pr, ok := listable(p.shared, g.Name(), pr, promptKey); ok && p.permit(g.Name(), guard.KindPrompt, pr.Name) {
					prompts[pr.Name] = tagged(prompts[pr.Name], pr, g.Name(), promptMeta)
				}
			}
		}
	}
	p.reg.resources = syncRegistered(p.reg.resources, resources, p.srv.RemoveResources, func(r *mcp.Resource) {
		if _, err := url.Parse(r.URI); err != nil {
			p.log.Warn("skipped a resource with an invalid URI", "group", r.Meta[metaGroupKey], "err", err)
			return
		}
		p.srv.AddResource(r, p.readMirrored)
	})
	p.reg.templates = syncRegistered(p.reg.templates, templates, p.srv.RemoveResourceTemplates, func(t *mcp.ResourceTemplate) {
		if _, err := uritemplate.New(t.URITemplate); err != nil {
			p.log.Warn("skipped a resource template with an invalid URI template", "group", t.Meta[metaGroupKey], "err", err)
			return
		}
		p.srv.AddResourceTemplate(t, p.readMirrored)
	})
	p.reg.prompts = syncRegistered(p.reg.prompts, prompts, p.srv.RemovePrompts, func(pr *mcp.Prompt) {
		p.srv.AddPrompt(pr, p.getPrompt)
	})
	p.log.Debug("lists offered to the client", "resources", len(p.reg.resources), "templates", len(p.reg.templates), "prompts", len(p.reg.prompts))
}

// readMirrored serves reads that reach go-sdk's own lookup; route normally
// takes them first, so both paths apply the same routing.
func (p *Server) readMirrored(ctx context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	return p.readResource(ctx, r)
}

// syncRegistered registers want, removing what is gone and (re)adding what is new or
// changed, and returns the new registered set.
func syncRegistered[T any](have map[string]string, want map[string]T, remove func(...string), add func(T)) map[string]string {
	var gone []string
	for k := range have {
		if _, ok := want[k]; !ok {
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		remove(gone...)
	}
	now := make(map[string]string, len(want))
	for k, v := range want {
		j := mustJSON(v)
		if have[k] != j {
			add(v)
		}
		now[k] = j
	}
	return now
}

// tagged returns a copy of item whose _meta names its group. With prev (the
// tagged copy of another group's item under the same key), the copy lists
// every group under "groups" and drops "group", so reads of it must name a
// group. Items from upstreams are shared with the cache: never modified.
func tagged[T any](prev, item *T, group string, meta func(*T) *mcp.Meta) *T {
	if prev == nil {
		c := *item
		*meta(&c) = metaWith(*meta(item), metaGroupKey, group)
		return &c
	}
	c := *prev
	*meta(&c) = addGroup(*meta(prev), group)
	return &c
}

// listable returns item as the client may see it listed: through
// Options.Relay, like everything else an upstream sends toward the client
// (hidden characters removed from its names, titles and descriptions,
// credentials redacted). It is not listed when Relay refuses it, or when
// that would change its key (URI, URI template or prompt name): the client
// could not name it back, and a key that hides characters is an attack.
func listable[T any](p *shared, group string, item *T, key func(*T) string) (*T, bool) {
	c, err := relayParams(p, group, item)
	if err != nil {
		p.log.Warn("an item of a listing is not listed", "group", group, "err", err)
		return nil, false
	}
	if key(c) != key(item) {
		p.log.Warn("an item of a listing is not listed: its URI or name holds hidden characters or a credential", "group", group, "key", key(c))
		return nil, false
	}
	return c, true
}

func resourceKey(r *mcp.Resource) string         { return r.URI }
func templateKey(t *mcp.ResourceTemplate) string { return t.URITemplate }
func promptKey(p *mcp.Prompt) string             { return p.Name }

func resourceMeta(r *mcp.Resource) *mcp.Meta         { return &r.Meta }
func templateMeta(t *mcp.ResourceTemplate) *mcp.Meta { return &t.Meta }
func promptMeta(p *mcp.Prompt) *mcp.Meta             { return &p.Meta }

func addGroup(m mcp.Meta, group string) mcp.Meta {
	var groups []string
	if g, ok := m[metaGroupKey].(string); ok {
		groups = []string{g}
	} else if gs, ok := m[metaGroupsKey].([]string); ok {
		groups = append(groups, gs...)
	}
	groups = append(groups, group)
	c := metaWith(m, metaGroupsKey, groups)
	delete(c, metaGroupKey)
	return c
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value here came from JSON; failing to re-encode is a bug.
		panic(err)
	}
	return string(b)
}
