package proxy

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/yosida95/uritemplate/v3"

	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/hygiene"
	"github.com/moatmcp/moat/internal/upstream"
)

// metaGroupKey names the group in a request's or item's _meta. A client may
// also pass dynamic-mcp's params.group, which groupParamTransport moves here.
const metaGroupKey = "group"

func metaGroup(m mcp.Meta) string {
	s, _ := m[metaGroupKey].(string)
	return s
}

// route is receiving middleware: it takes over the methods whose answer
// depends on which group owns a URI or name, and passes the rest to go-sdk.
// Clients may omit params where the protocol makes them optional (the
// TypeScript SDK lists without them), so none is read through a nil.
func (p *Server) route(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		// A client of 2026-07-28 has no handshake: server/discover (which
		// go-sdk answers) or else its first request opens the upstreams.
		if ss, ok := req.GetSession().(*mcp.ServerSession); ok && !p.opened.Load() {
			if method == "server/discover" {
				res, err := next(ctx, method, req)
				if speaksNewProtocol(ss) {
					p.open(ctx, ss)
				}
				return res, err
			}
			if speaksNewProtocol(ss) {
				p.open(ctx, ss)
			}
		}
		if needsParams[method] && noParams(req) {
			return nil, invalidParams("%s: params are required", method)
		}
		switch r := req.(type) {
		case *mcp.ReadResourceRequest:
			return p.readResource(ctx, r)
		case *mcp.GetPromptRequest:
			return p.getPrompt(ctx, r)
		case *mcp.ListResourcesRequest:
			if name := groupOf(r.Params); name != "" {
				return p.listResourcesOf(ctx, name)
			}
			p.await(ctx, resourcesOn)
		case *mcp.ListResourceTemplatesRequest:
			if name := groupOf(r.Params); name != "" {
				return p.listTemplatesOf(ctx, name)
			}
			p.await(ctx, resourcesOn)
		case *mcp.ListPromptsRequest:
			if name := groupOf(r.Params); name != "" {
				return p.listPromptsOf(ctx, name)
			}
			p.await(ctx, promptsOn)
		case *mcp.ServerRequest[*mcp.SetLoggingLevelParams]:
			res, err := next(ctx, method, req)
			switch {
			case err != nil:
			case p.gw != nil:
				// Shared upstreams: one client asking for fewer messages
				// must not silence them for the others (go-sdk filters
				// each session's messages by its own level).
				p.logLevels.raise(ctx, r.Params.Level, p.managers)
			default:
				p.m.SetLoggingLevel(ctx, r.Params.Level)
			}
			return res, err
		}
		return next(ctx, method, req)
	}
}

// needsParams lists the client requests that mean nothing without params.
var needsParams = map[string]bool{
	"tools/call": true, "resources/read": true, "prompts/get": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
	"completion/complete": true, "logging/setLevel": true,
}

// noParams reports whether req came without params (or with "params":
// null), which go-sdk decodes as a nil pointer.
func noParams(req mcp.Request) bool {
	p := req.GetParams()
	if p == nil {
		return true
	}
	v := reflect.ValueOf(p)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// groupOf is the group a request names in _meta, if it has params at all.
func groupOf[P any, PP interface {
	*P
	GetMeta() map[string]any
}](params PP) string {
	if params == nil {
		return ""
	}
	return metaGroup(params.GetMeta())
}

// await waits while groups with a feature on are still connecting, so that
// a client that asks right after start gets the answer it would get a
// minute later. Each wait is bounded by the group's own connect limit and
// the request's context; a group that fails is left out, as it would be
// later.
func (p *Server) await(ctx context.Context, on func(*upstream.Group) bool) {
	if !p.opened.Load() {
		return // the upstreams connect only once the client is initialized
	}
	var wg sync.WaitGroup
	for _, g := range p.groups() {
		if on(g) && g.Status().State.Pending() {
			wg.Go(func() { p.awaitGroup(ctx, g) })
		}
	}
	wg.Wait()
	p.refresh()
}

// awaitGroup waits while g is connecting (see await).
func (p *Server) awaitGroup(ctx context.Context, g *upstream.Group) {
	if p.opened.Load() {
		_, _ = g.Session(ctx)
	}
}

// groupFor returns the group that must serve a request: the one the client
// named, else the only one offering the item. Two offering groups is an
// error naming both: Moat never guesses, so no group can shadow another.
func (p *Server) groupFor(named, what, item string, offers func(*upstream.Group) bool, enabled func(*upstream.Group) bool) (*upstream.Group, error) {
	if named != "" {
		g, err := p.lookupGroup(named)
		if err != nil {
			return nil, err
		}
		if !enabled(g) {
			return nil, invalidParams("group %q has %ss turned off in the config", named, what)
		}
		return g, nil
	}
	var owners []*upstream.Group
	for _, g := range p.groups() {
		if enabled(g) && offers(g) {
			owners = append(owners, g)
		}
	}
	switch len(owners) {
	case 0:
		return nil, nil
	case 1:
		return owners[0], nil
	}
	names := make([]string, len(owners))
	for i, g := range owners {
		names[i] = g.Name()
	}
	return nil, invalidParams("%s %q is offered by groups %s; say which with _meta.group (or params.group)", what, item, strings.Join(names, " and "))
}

// owner is groupFor for one item: when no group offers it yet but groups
// that could are still connecting, it waits for them and asks again.
func (p *Server) owner(ctx context.Context, named, what, item string, offers func(*upstream.Group) bool, enabled func(*upstream.Group) bool) (*upstream.Group, error) {
	g, err := p.groupFor(named, what, item, offers, enabled)
	if g != nil || err != nil || named != "" {
		return g, err
	}
	p.await(ctx, enabled)
	return p.groupFor(named, what, item, offers, enabled)
}

func resourcesOn(g *upstream.Group) bool { return g.Config().Features.Resources }
func promptsOn(g *upstream.Group) bool   { return g.Config().Features.Prompts }

// offersURI reports whether g lists uri or has a template matching it. A
// completion's ref/resource names the template itself
// ("demo://item/{id}"), which equals its URITemplate.
func offersURI(uri string) func(*upstream.Group) bool {
	return func(g *upstream.Group) bool {
		l := g.Lists()
		for _, r := range l.Resources {
			if r.URI == uri {
				return true
			}
		}
		for _, t := range l.Templates {
			if t.URITemplate == uri || templateMatches(t.URITemplate, uri) {
				return true
			}
		}
		return false
	}
}

// offersPrompt reports whether g lists a prompt of that name.
func offersPrompt(name string) func(*upstream.Group) bool {
	return func(g *upstream.Group) bool {
		for _, pr := range g.Lists().Prompts {
			if pr.Name == name {
				return true
			}
		}
		return false
	}
}

var templateCache sync.Map // URI template → *regexp.Regexp or error

func templateMatches(tmpl, uri string) bool {
	v, ok := templateCache.Load(tmpl)
	if !ok {
		t, err := uritemplate.New(tmpl)
		if err != nil {
			v = err
		} else {
			v = t.Regexp()
		}
		templateCache.Store(tmpl, v)
	}
	re, ok := v.(interface{ MatchString(string) bool })
	return ok && re.MatchString(uri)
}

func (p *Server) readResource(ctx context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	uri := r.Params.URI
	if uri == "" {
		return nil, invalidParams("resources/read: missing uri")
	}
	g, err := p.owner(ctx, metaGroup(r.Params.Meta), "resource", uri, offersURI(uri), resourcesOn)
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, mcp.ResourceNotFoundError(uri)
	}
	res, err := p.handler(ctx, &guard.Call{Kind: guard.KindResource, Group: g.Name(), URI: uri, Session: p.sessionID(r.Session), Identity: p.identity})
	if err != nil {
		return nil, protocolError("reading resource", g.Name(), err)
	}
	if res.Resource == nil {
		return nil, protocolError("reading resource", g.Name(), errors.New("the server sent no result"))
	}
	out := *res.Resource
	out.Cacheable = privateCache
	return &out, nil
}

func (p *Server) getPrompt(ctx context.Context, r *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	name := r.Params.Name
	if name == "" {
		return nil, invalidParams("prompts/get: missing name")
	}
	g, err := p.owner(ctx, metaGroup(r.Params.Meta), "prompt", name, offersPrompt(name), promptsOn)
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, invalidParams("unknown prompt %q; prompts/list shows the prompts of every group", name)
	}
	res, err := p.handler(ctx, &guard.Call{Kind: guard.KindPrompt, Group: g.Name(), Name: name, Strings: r.Params.Arguments, Session: p.sessionID(r.Session), Identity: p.identity})
	if err != nil {
		return nil, protocolError("getting prompt", g.Name(), err)
	}
	return res.Prompt, nil
}

// protocolError turns a failed resource read or prompt get into a JSON-RPC
// error: these methods have no tool-style error result.
func protocolError(what, group string, err error) error {
	var d *guard.Denial
	if errors.As(err, &d) {
		return invalidParams("%s", d.Error())
	}
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		return &jsonrpc.Error{Code: we.Code, Message: "group " + group + ": " + hygiene.Line(we.Message, 1000), Data: we.Data}
	}
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: what + " from group " + group + " failed: " + failureText(err)}
}

func (p *Server) listResourcesOf(ctx context.Context, name string) (*mcp.ListResourcesResult, error) {
	g, err := p.groupFor(name, "resource", "", nil, resourcesOn)
	if err != nil {
		return nil, err
	}
	p.awaitGroup(ctx, g)
	res := &mcp.ListResourcesResult{Cacheable: privateCache, Resources: []*mcp.Resource{}}
	for _, r := range g.Lists().Resources {
		if p.permit(name, guard.KindResource, r.URI) {
			res.Resources = append(res.Resources, tagged(nil, r, name, resourceMeta))
		}
	}
	return res, nil
}

func (p *Server) listTemplatesOf(ctx context.Context, name string) (*mcp.ListResourceTemplatesResult, error) {
	g, err := p.groupFor(name, "resource", "", nil, resourcesOn)
	if err != nil {
		return nil, err
	}
	p.awaitGroup(ctx, g)
	res := &mcp.ListResourceTemplatesResult{Cacheable: privateCache, ResourceTemplates: []*mcp.ResourceTemplate{}}
	for _, t := range g.Lists().Templates {
		if p.permit(name, guard.KindResource, t.URITemplate) {
			res.ResourceTemplates = append(res.ResourceTemplates, tagged(nil, t, name, templateMeta))
		}
	}
	return res, nil
}

func (p *Server) listPromptsOf(ctx context.Context, name string) (*mcp.ListPromptsResult, error) {
	g, err := p.groupFor(name, "prompt", "", nil, promptsOn)
	if err != nil {
		return nil, err
	}
	p.awaitGroup(ctx, g)
	res := &mcp.ListPromptsResult{Cacheable: privateCache, Prompts: []*mcp.Prompt{}}
	for _, pr := range g.Lists().Prompts {
		if p.permit(name, guard.KindPrompt, pr.Name) {
			res.Prompts = append(res.Prompts, tagged(nil, pr, name, promptMeta))
		}
	}
	return res, nil
}

// privateCache is what Moat tells clients of 2026-07-28 about caching its
// answers: they show one user's servers through that user's policy, so no
// intermediary may share them (cacheScope private), and they change
// whenever a server or the policy does (ttlMs 0: fetch again; Moat sends
// list_changed).
var privateCache = mcp.Cacheable{CacheScope: "private"}

// setPrivateCache is ServerOptions.SetCacheable: privateCache for every
// answer go-sdk builds (server/discover, the merged lists).
func setPrivateCache(_ context.Context, _ mcp.Request, c *mcp.Cacheable) { *c = privateCache }

// metaWith returns a copy of m with extra set; items from upstreams are
// shared with the cache, so they are never modified in place.
func metaWith(m mcp.Meta, key string, value any) mcp.Meta {
	c := make(mcp.Meta, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	c[key] = value
	return c
}

func (p *Server) subscribe(ctx context.Context, r *mcp.SubscribeRequest) error {
	uri := r.Params.URI
	g, err := p.owner(ctx, metaGroup(r.Params.Meta), "resource", uri, offersURI(uri), resourcesOn)
	if err != nil {
		return err
	}
	if g == nil {
		return mcp.ResourceNotFoundError(uri)
	}
	if _, err := p.handler(ctx, &guard.Call{Kind: guard.KindSubscribe, Group: g.Name(), URI: uri, Session: p.sessionID(r.Session), Identity: p.identity}); err != nil {
		return protocolError("subscribing", g.Name(), err)
	}
	if p.subs.add(uri, g.Name()) && p.gw != nil {
		p.gw.subscribed(g.Name(), uri, p.ownerOf(g.Name()))
	}
	return nil
}

func (p *Server) unsubscribe(ctx context.Context, r *mcp.UnsubscribeRequest) error {
	uri := r.Params.URI
	group, ok := p.subs.remove(uri)
	if !ok {
		return nil
	}
	return p.endSubscription(ctx, group, uri)
}

// endSubscription unsubscribes group's upstream from uri, unless another
// session of a gateway still holds that subscription.
func (p *Server) endSubscription(ctx context.Context, group, uri string) error {
	if p.gw != nil && !p.gw.unsubscribed(group, uri, p.ownerOf(group)) {
		return nil
	}
	g, ok := p.group(group)
	if !ok {
		return nil
	}
	if err := g.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: uri}); err != nil {
		return protocolError("unsubscribing", group, err)
	}
	return nil
}

func (p *Server) forwardResourceUpdated(ctx context.Context, group string, u *mcp.ResourceUpdatedNotificationParams) {
	// Only the group the client subscribed through may say a URI changed.
	if owner, ok := p.subs.owner(u.URI); !ok || owner != group {
		p.log.Debug("dropped resources/updated for a URI this group was not subscribed for", "group", group)
		return
	}
	if err := p.srv.ResourceUpdated(ctx, u); err != nil {
		p.log.Debug("forwarding resources/updated failed", "err", err)
	}
}

// subscriptions maps each subscribed URI to the group serving it.
type subscriptions struct {
	mu    sync.Mutex
	byURI map[string]string
}

// add records a subscription, and reports whether it is new.
func (s *subscriptions) add(uri, group string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byURI == nil {
		s.byURI = map[string]string{}
	}
	prev, had := s.byURI[uri]
	s.byURI[uri] = group
	return !had || prev != group
}

// all returns every subscription, URI to group.
func (s *subscriptions) all() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.byURI)
}

func (s *subscriptions) remove(uri string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.byURI[uri]
	delete(s.byURI, uri)
	return g, ok
}

func (s *subscriptions) owner(uri string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.byURI[uri]
	return g, ok
}

func (p *Server) complete(ctx context.Context, r *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	ref := r.Params.Ref
	if ref == nil {
		return nil, invalidParams("completion/complete: missing ref")
	}
	var (
		g   *upstream.Group
		err error
	)
	switch ref.Type {
	case "ref/prompt":
		g, err = p.owner(ctx, metaGroup(r.Params.Meta), "prompt", ref.Name, offersPrompt(ref.Name), promptsOn)
	case "ref/resource":
		g, err = p.owner(ctx, metaGroup(r.Params.Meta), "resource", ref.URI, offersURI(ref.URI), resourcesOn)
	default:
		return nil, invalidParams("completion/complete: unknown ref type %q", ref.Type)
	}
	if err != nil {
		return nil, err
	}
	if g == nil {
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}, nil
	}
	if caps := g.Capabilities(); caps == nil || caps.Completions == nil {
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}, nil
	}
	c := &guard.Call{Kind: guard.KindComplete, Group: g.Name(), Complete: r.Params, Session: p.sessionID(r.Session), Identity: p.identity}
	if ref.Type == "ref/prompt" {
		c.Name = ref.Name
	} else {
		c.URI = ref.URI
	}
	res, err := p.handler(ctx, c)
	if err != nil {
		return nil, protocolError("completing", g.Name(), err)
	}
	if res == nil || res.Complete == nil {
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{}}}, nil
	}
	return res.Complete, nil
}
