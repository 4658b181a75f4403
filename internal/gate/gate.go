// Package gate decides what crosses Moat, in one place for calls and
// listings alike: the effective policy of every group (the user's, the
// server's and the administrator's managed policy, merged), the rate and
// concurrency limiters, the order of the guard chain's layers and the
// layers themselves, the catalog of tools each group shows the model (the
// same pin, policy and schema decisions a call meets), the resources and
// prompts the policy lets a listing show, and the treatment of what an
// upstream sends the client outside a result. As a gateway it also maps a
// socket peer to its identity (Identify) and answers each question per
// identity (Visible, ForIdentity, PermitFor), by the identities of the last
// Apply. cmd/moat only wires it to the audit log, the secret store and the
// proxy.
package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/hygiene"
	"github.com/moatmcp/moat/internal/limits"
	"github.com/moatmcp/moat/internal/pin"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/redact"
	"github.com/moatmcp/moat/internal/upstream"
	"github.com/moatmcp/moat/internal/validate"
	"github.com/moatmcp/moat/policy"
)

// A Gate holds what the call chain and the catalog decide with. Policies
// are replaced on every accepted config reload (Apply); limiter state
// survives for unchanged settings. Set Audit and Pins before the first
// call or listing.
type Gate struct {
	// Redactor holds the secrets Moat resolved; the chain's redact layer,
	// the relay and the listings use it, and so may the caller's logs.
	Redactor *redact.Redactor
	// Audit, if set, records a security event of the guard (a first-seen
	// pin store, a held tool, a suspicious description, a schema let
	// through unvalidated).
	Audit func(event, group string, detail map[string]string)
	// Pins opens the pin store (once; later calls return the same store or
	// error). Without it every tool call is refused and no tool is listed.
	Pins func() (*pin.Store, error)

	// Wrap, if set, wraps each layer Layers returns, by its name: the
	// tracer's span per layer (tracing.Tracer.Layer), and in tests a
	// record of the order calls pass through them.
	Wrap func(name guard.LayerName, l guard.Layer) guard.Layer

	log    *slog.Logger
	limits *policy.Limits
	// One validator per on_invalid_schema mode; argument size is the size
	// layer's job (it runs first), so the validators' own cap is only a
	// backstop.
	validators map[string]*validate.Validator

	// accounts reads the host's users and groups for Identify.
	accounts osAccounts

	mu         sync.RWMutex
	policies   map[string]*policy.Policy
	identities map[string]string // pin identity of each group's server
	gateway    *gateway

	// toolNames remembers each group's tool names (from its last catalog),
	// to spot descriptions that mention another group's tools.
	namesMu   sync.Mutex
	toolNames map[string][]string
	// suspected holds, per group and tool, the description and findings
	// last warned about, so a listing refresh does not warn again.
	suspected map[[2]string]string
}

// New returns a Gate with no policies (every call refused until Apply)
// that logs to log and redacts with r.
func New(log *slog.Logger, r *redact.Redactor) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Gate{
		log:      log,
		accounts: hostAccounts,
		limits:   policy.NewLimits(),
		Redactor: r,
		validators: map[string]*validate.Validator{
			validate.Reject:      validate.New(validate.Options{OnInvalidSchema: validate.Reject, MaxArgsBytes: maxValidatedArgs}),
			validate.Passthrough: validate.New(validate.Options{OnInvalidSchema: validate.Passthrough, MaxArgsBytes: maxValidatedArgs}),
		},
	}
}

// maxValidatedArgs backs up the size layer, which applies the policy's
// max_args_bytes before validation.
const maxValidatedArgs = 64 << 20

// maxDescription cuts the descriptions the model is shown (runes).
const maxDescription = 2000

func (g *Gate) validator(group string) *validate.Validator {
	mode := validate.Reject
	if p := g.Policy(group); p != nil && p.InvalidSchemaMode() == policy.InvalidSchemaPassthrough {
		mode = validate.Passthrough
	}
	return g.validators[mode]
}

// ManagedPolicyPath is where the administrator's policy is:
// MOAT_MANAGED_POLICY, else policy.DefaultManagedPath.
func ManagedPolicyPath() string {
	if path := os.Getenv("MOAT_MANAGED_POLICY"); path != "" {
		return path
	}
	return policy.DefaultManagedPath
}

// ReadManaged reads the administrator's policy once, for one load:
// MOAT_MANAGED_POLICY, else /etc/moat/policy.json when it exists (nil when
// it does not). Any error fails closed. A load passes the one reading to
// EffectivePolicies, Apply and its policy_load record alike.
func ReadManaged() (*config.Managed, error) {
	path := ManagedPolicyPath()
	if os.Getenv("MOAT_MANAGED_POLICY") == "" {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
	}
	m, err := config.LoadManaged(path)
	var ce *config.Error
	if errors.As(err, &ce) {
		return nil, err // names the file, each problem's place and its fix
	}
	if err != nil {
		return nil, fmt.Errorf("managed policy %s: %w", path, err)
	}
	return m, nil
}

// EffectivePolicies computes every enabled server's policy from the config
// and the managed policy (nil: none); the second result is the policy of
// the global limits.
func EffectivePolicies(cfg *config.Config, managed *config.Managed) (map[string]*policy.Policy, *policy.Policy, error) {
	var err error
	var defaults *policy.Policy
	if len(cfg.Defaults.Policy) > 0 {
		if defaults, err = policy.Parse(cfg.Defaults.Policy); err != nil {
			return nil, nil, fmt.Errorf("config: defaults.policy: %w", err)
		}
	}
	var mDefaults *policy.Policy
	if managed != nil {
		mDefaults, _ = managed.Policy.For("")
	}
	out := map[string]*policy.Policy{}
	for name, s := range cfg.Servers {
		var own *policy.Policy
		if len(s.Policy) > 0 {
			if own, err = policy.ParseServer(s.Policy); err != nil {
				return nil, nil, fmt.Errorf("config: server %q: policy: %w", name, err)
			}
		}
		var mServer *policy.Policy
		if managed != nil {
			mDefaults, mServer = managed.Policy.For(name)
		}
		out[name] = policy.Effective(defaults, own, mDefaults, mServer)
	}
	return out, policy.Effective(defaults, nil, mDefaults, nil), nil
}

// Apply takes the policies of a newly loaded config and managed policy
// (ReadManaged's one reading), and the gateway identities of the config
// with their policies. On error nothing changes: the caller refuses the
// config. Sessions of the gateway are judged by the identities of the
// latest Apply: one a reload removed is refused everything.
func (g *Gate) Apply(cfg *config.Config, managed *config.Managed) error {
	next, err := g.Prepare(cfg, managed)
	if err != nil {
		return err
	}
	g.Commit(next)
	return nil
}

// Prepared is a config's policies, checked and built by Prepare, that
// Commit puts in force.
type Prepared struct {
	policies   map[string]*policy.Policy
	global     *policy.Policy
	identities map[string]string
	gateway    *gateway
	idPolicies map[string]*policy.Policy
}

// Prepare checks and builds what Apply would put in force, changing
// nothing: so that a reload can be recorded before its policy judges a
// call.
func (g *Gate) Prepare(cfg *config.Config, managed *config.Managed) (*Prepared, error) {
	policies, global, err := EffectivePolicies(cfg, managed)
	if err != nil {
		return nil, err
	}
	gw, idPolicies, err := newGateway(cfg, g.accounts)
	if err != nil {
		return nil, err
	}
	ids := map[string]string{}
	for name, s := range cfg.Servers {
		ids[name] = pin.Identity(s.Command, s.Args, s.URL)
	}
	return &Prepared{policies: policies, global: global, identities: ids, gateway: gw, idPolicies: idPolicies}, nil
}

// Commit puts next in force.
func (g *Gate) Commit(next *Prepared) {
	g.mu.Lock()
	g.policies, g.identities, g.gateway = next.policies, next.identities, next.gateway
	g.mu.Unlock()
	g.limits.Update(next.global, next.policies)
	g.limits.UpdateIdentities(next.idPolicies)
}

// Policy is the limits.PolicyFunc: nil (refuse) for an unknown group.
func (g *Gate) Policy(group string) *policy.Policy {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.policies[group]
}

// Permit is proxy.Options.Permit: the policy layer's decision for a
// request of that resource or prompt.
func (g *Gate) Permit(group string, kind guard.Kind, name string) bool {
	return g.permit(nil, group, kind, name)
}

// permit is the policy layer's decision (limits.Decide) for a request of
// that resource or prompt made for the identity id (nil: none).
func (g *Gate) permit(id *guard.Identity, group string, kind guard.Kind, name string) bool {
	c := &guard.Call{Kind: kind, Group: group, Name: name, Identity: id}
	if kind != guard.KindPrompt {
		c.Name, c.URI = "", name
	}
	return limits.Decide(g.Policy(group), g.identityRules, c, nil) == nil
}

// pinStore is Pins, or the refusal when it is not set.
func (g *Gate) pinStore() (*pin.Store, error) {
	if g.Pins == nil {
		return nil, errors.New("no pin store configured (a Moat wiring bug)")
	}
	return g.Pins()
}

// firstSuspicion reports whether findings about tool t of group are new:
// not warned about yet for this description. No findings forget the tool,
// so a suspicious description that comes back is reported again.
func (g *Gate) firstSuspicion(group string, t *mcp.Tool, findings []string) bool {
	g.namesMu.Lock()
	defer g.namesMu.Unlock()
	key := [2]string{group, t.Name}
	if len(findings) == 0 {
		delete(g.suspected, key)
		return false
	}
	seen := t.Description + "\x00" + strings.Join(findings, "\x00")
	if g.suspected[key] == seen {
		return false
	}
	if g.suspected == nil {
		g.suspected = map[[2]string]string{}
	}
	g.suspected[key] = seen
	return true
}

// others records group's tool names and returns the other groups' names
// and tool names, for hygiene.Suspicious.
func (g *Gate) others(group string, tools []*mcp.Tool) (groups, names []string) {
	g.namesMu.Lock()
	defer g.namesMu.Unlock()
	if g.toolNames == nil {
		g.toolNames = map[string][]string{}
	}
	own := make([]string, len(tools))
	for i, t := range tools {
		own[i] = t.Name
	}
	g.toolNames[group] = own
	g.mu.RLock()
	for name := range g.policies {
		if name != group {
			groups = append(groups, name)
		}
	}
	g.mu.RUnlock()
	for name, ts := range g.toolNames {
		if name != group {
			names = append(names, ts...)
		}
	}
	return groups, names
}

// layerOrder is the one place the order of the call chain is decided (see
// ARCHITECTURE.md, "The path of one call"); config may tune a layer, never move
// one. audit is outermost so every refusal below it is recorded; argument
// size comes first, before anything parses the arguments; then policy and
// concurrency caps; pins; schema validation against the pinned definition;
// rate limits after every other refusal, so only calls that will really
// reach the upstream spend tokens; then the audit log's intent record, after
// every refusal (a refused call needs only its outcome) and before anything
// can leave; the policy's timeout around the forward; redact innermost, so
// the audit log and the client only see redacted results. TestLayerOrder
// traces a call through the chain to lock this.
var layerOrder = []guard.LayerName{
	guard.LayerAudit, guard.LayerSize, guard.LayerPolicy, guard.LayerConcurrency, guard.LayerPin,
	guard.LayerValidate, guard.LayerRate, guard.LayerIntent, guard.LayerTimeout, guard.LayerRedact,
}

// Layers builds the chain's layers in layerOrder, with the audit log's two.
func (g *Gate) Layers(auditLayer, intentLayer guard.Layer) []guard.Layer {
	byName := map[guard.LayerName]guard.Layer{
		guard.LayerAudit:       auditLayer,
		guard.LayerIntent:      intentLayer,
		guard.LayerSize:        limits.Size(g.Policy),
		guard.LayerPolicy:      limits.Policy(g.Policy, g.identityRules),
		guard.LayerConcurrency: limits.Concurrency(g.limits),
		guard.LayerPin:         g.pinLayer(),
		guard.LayerValidate:    g.validateLayer(),
		guard.LayerRate:        limits.Rate(g.limits),
		guard.LayerTimeout:     limits.Timeout(g.Policy),
		guard.LayerRedact:      g.Redactor.Layer(g.redactMode),
	}
	out := make([]guard.Layer, len(layerOrder))
	for i, name := range layerOrder {
		l := byName[name]
		if g.Wrap != nil {
			l = g.Wrap(name, l)
		}
		out[i] = l
	}
	return out
}

// validateLayer validates each call with its group's validator.
func (g *Gate) validateLayer() guard.Layer {
	return func(next guard.Handler) guard.Handler {
		byMode := map[*validate.Validator]guard.Handler{}
		for _, v := range g.validators {
			byMode[v] = v.Layer()(next)
		}
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			return byMode[g.validator(c.Group)](ctx, c)
		}
	}
}

func (g *Gate) redactMode(group string) redact.Mode {
	if p := g.Policy(group); p != nil {
		switch p.RedactMode() {
		case policy.RedactBlock:
			return redact.ModeBlock
		case policy.RedactOff:
			return redact.ModeOff
		}
	}
	return redact.ModeRedact
}

// redactListed redacts t, a cleaned copy of a tool about to be listed, as
// a call's result is: known secrets and credential patterns in its titles,
// description and schemas. Under redact: block a listing is redacted, not
// refused: the tool stays callable and its results are blocked.
func (g *Gate) redactListed(group string, t *mcp.Tool) {
	mode := g.redactMode(group)
	if mode == redact.ModeBlock {
		mode = redact.ModeRedact
	}
	str := func(s string) string {
		v, _ := g.Redactor.Value(s, mode)
		return v.(string)
	}
	t.Title, t.Description = str(t.Title), str(t.Description)
	if t.Annotations != nil {
		t.Annotations.Title = str(t.Annotations.Title)
	}
	t.InputSchema, _ = g.Redactor.Value(t.InputSchema, mode)
	t.OutputSchema, _ = g.Redactor.Value(t.OutputSchema, mode)
}

// Relay treats what group sends toward the client outside a call's result
// (log messages, progress, sampling and elicitation requests, listed
// resources and prompts) as the chain treats results: at most the group's
// max_result_bytes, credential patterns by its redact mode (under block
// the message is kept from the client), then hidden characters removed
// from every string.
func (g *Gate) Relay(group string, v any, size int) (any, error) {
	if p := g.Policy(group); p != nil {
		if max := p.ToolSettings("").MaxResultBytes; int64(size) > max {
			return nil, fmt.Errorf("what group %s sent is %d bytes, over its max_result_bytes of %d", group, size, max)
		}
	}
	mode := g.redactMode(group)
	v, hit := g.Redactor.Value(v, mode)
	if hit != "" && mode == redact.ModeBlock {
		return nil, fmt.Errorf("what group %s sent holds what looks like a credential (%s), and its policy blocks such messages (redact: block)", group, hit)
	}
	return hygiene.Value(v), nil
}

// pinLayer refuses every tool call when the pin store cannot be opened
// (fail closed); otherwise it is pin.Layer.
func (g *Gate) pinLayer() guard.Layer {
	return func(next guard.Handler) guard.Handler {
		var inner guard.Handler
		var once sync.Once
		return func(ctx context.Context, c *guard.Call) (*guard.Result, error) {
			if c.Kind != guard.KindTool {
				return next(ctx, c)
			}
			store, err := g.pinStore()
			if err != nil {
				return nil, &guard.Denial{Layer: guard.LayerPin, Rule: "store", Reason: "the tool pin store cannot be opened, so no tool can be checked against its approved definition; do not retry, tell the user: " + err.Error(), Cause: err}
			}
			once.Do(func() { inner = pin.Layer(store)(next) })
			return inner(ctx, c)
		}
	}
}

// Catalog is what get_dynamic_tools shows: the tools the pins approve and
// the policy allows (the same decisions the chain applies to calls); held
// tools by name only.
func (g *Gate) Catalog(grp *upstream.Group, tools []*mcp.Tool) []proxy.Entry {
	name := grp.Name()
	pol := g.Policy(name)
	if pol == nil {
		return nil
	}
	store, err := g.pinStore()
	if err != nil {
		g.log.Error("tool pins unavailable: no tool is listed", "group", name, "err", err)
		return nil
	}
	g.mu.RLock()
	identity := g.identities[name]
	g.mu.RUnlock()
	approved, held, err := store.Check(name, identity, tools, pol.PinMode())
	if err != nil {
		g.log.Error("checking tool pins failed: no tool is listed", "group", name, "err", err)
		return nil
	}
	schemaErrs := g.validator(name).Prepare(tools)
	otherGroups, otherTools := g.others(name, tools)
	var out []proxy.Entry
	for _, t := range tools {
		if !approved[t.Name] {
			continue
		}
		if limits.Decide(pol, g.identityRules, &guard.Call{Kind: guard.KindTool, Group: name, Name: t.Name, Tool: t}, nil) != nil {
			continue
		}
		clean := hygiene.Tool(t, maxDescription)
		if clean.Name != t.Name {
			g.log.Warn("tool hidden: its name holds invisible or control characters", "group", name)
			continue
		}
		if err := schemaErrs[t.Name]; err != nil {
			if pol.InvalidSchemaMode() != policy.InvalidSchemaPassthrough {
				out = append(out, proxy.Entry{Tool: &mcp.Tool{Name: t.Name}, Held: fmt.Sprintf("unusable: its input schema is refused (%v); on_invalid_schema: passthrough in the server's policy accepts it unvalidated", err)})
				continue
			}
			if g.Audit != nil {
				g.Audit("schema_unvalidated", name, map[string]string{"tool": t.Name, "error": err.Error()})
			}
		}
		if g.Audit != nil {
			findings := hygiene.Suspicious(t.Description, otherGroups, otherTools)
			if g.firstSuspicion(name, t, findings) {
				g.Audit("suspicious_description", name, map[string]string{"tool": t.Name, "findings": strings.Join(findings, "; ")})
				g.log.Warn("a tool description looks like a prompt injection", "group", name, "tool", t.Name, "findings", findings)
			}
		}
		g.redactListed(name, clean)
		out = append(out, proxy.Entry{Tool: clean})
	}
	for _, h := range held {
		if g.Audit != nil {
			g.Audit("pin_held", name, map[string]string{"tool": hygiene.Name(h.Tool), "reason": h.Reason, "old_hash": h.OldHash, "new_hash": h.NewHash})
		}
		// A held tool is listed by its name alone, so that name must be
		// fit for the model: one hiding characters or running long would
		// carry its text in through the back door, in the list and in the
		// hold note. It is not listed at all (it could never be approved
		// by a name the user can type either).
		if hygiene.Name(h.Tool) != h.Tool {
			g.log.Warn("held tool hidden: its name holds invisible or control characters, or is longer than 128 characters", "group", name, "name", hygiene.Name(h.Tool))
			continue
		}
		out = append(out, proxy.Entry{
			Tool: &mcp.Tool{Name: h.Tool},
			Held: fmt.Sprintf("%s since it was approved, awaiting approval: ask the user to run `moat pins diff %s` and `moat pins approve %s %s`", h.Reason, name, name, h.Tool),
		})
	}
	return out
}
