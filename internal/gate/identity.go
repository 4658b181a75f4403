package gate

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/limits"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/policy"
)

// gateway is the gateway block of the last Apply, as the gate decides with
// it: who each identity is and what it may see and use.
type gateway struct {
	path  string                           // the config file, for error texts
	rules map[string]*limits.IdentityRules // by identity name
	// byUID and groups are how Identify finds a peer's identity: by uid,
	// else by the unix_groups (names or gids, as written) of each.
	byUID  map[int]string
	groups map[string][]string
	// byToken is how IdentifyToken finds an HTTP client's identity: by
	// the name of the gateway token it presented.
	byToken map[string]string
	// bySubject, oidcGroups and oidcScopes are how IdentifyOIDC finds a
	// JWT bearer's identity: by its sub, else by its groups or scopes.
	bySubject  map[string]string
	oidcGroups map[string][]string
	oidcScopes map[string][]string
	// implicit is set when the config has no identities: rules then hold
	// one, the gateway's own user, with no restriction.
	implicit bool
}

// osAccounts reads the host's users and groups (os/user) for Identify;
// tests replace it.
type osAccounts struct {
	uid       func() int
	userName  func(uid int) (string, error)
	groupIDs  func(uid int) ([]string, error) // supplementary groups, as gids
	lookupGID func(name string) (string, error)
}

var hostAccounts = osAccounts{
	uid: os.Getuid,
	userName: func(uid int) (string, error) {
		u, err := user.LookupId(strconv.Itoa(uid))
		if err != nil {
			return "", err
		}
		return u.Username, nil
	},
	groupIDs: func(uid int) ([]string, error) {
		u, err := user.LookupId(strconv.Itoa(uid))
		if err != nil {
			return nil, err
		}
		return u.GroupIds()
	},
	lookupGID: func(name string) (string, error) {
		g, err := user.LookupGroup(name)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	},
}

// newGateway builds the gate's view of cfg.Gateway, parsing each
// identity's policy; an error names the identity.
func newGateway(cfg *config.Config, acct osAccounts) (*gateway, map[string]*policy.Policy, error) {
	gw := &gateway{path: cfg.Path, rules: map[string]*limits.IdentityRules{}, byUID: map[int]string{}, groups: map[string][]string{}, byToken: map[string]string{},
		bySubject: map[string]string{}, oidcGroups: map[string][]string{}, oidcScopes: map[string][]string{}}
	pols := map[string]*policy.Policy{}
	for name, id := range cfg.Gateway.Identities {
		r := &limits.IdentityRules{Name: name, Servers: slices.Clone(id.Servers)}
		if len(id.Policy) > 0 {
			p, err := policy.ParseIdentity(id.Policy)
			if err != nil {
				return nil, nil, fmt.Errorf("config: gateway.identities.%s.policy: %w", name, err)
			}
			r.Policy, pols[name] = p, p
		}
		gw.rules[name] = r
		for _, uid := range id.UIDs {
			if other, dup := gw.byUID[uid]; dup && other != name {
				return nil, nil, fmt.Errorf("config: uid %d is listed under identities %s and %s", uid, min(other, name), max(other, name))
			}
			gw.byUID[uid] = name
		}
		if len(id.Groups) > 0 {
			gw.groups[name] = slices.Clone(id.Groups)
		}
		for _, tok := range id.Tokens {
			if other, dup := gw.byToken[tok]; dup && other != name {
				return nil, nil, fmt.Errorf("config: token %s is listed under identities %s and %s", tok, min(other, name), max(other, name))
			}
			gw.byToken[tok] = name
		}
		if o := id.OIDC; o != nil {
			for _, sub := range o.Subjects {
				if other, dup := gw.bySubject[sub]; dup && other != name {
					return nil, nil, fmt.Errorf("config: OIDC subject %q is listed under identities %s and %s", sub, min(other, name), max(other, name))
				}
				gw.bySubject[sub] = name
			}
			if len(o.Groups) > 0 {
				gw.oidcGroups[name] = slices.Clone(o.Groups)
			}
			if len(o.Scopes) > 0 {
				gw.oidcScopes[name] = slices.Clone(o.Scopes)
			}
		}
	}
	if len(gw.rules) == 0 {
		uid := acct.uid()
		name := ownName(acct, uid)
		gw.implicit = true
		gw.rules[name] = &limits.IdentityRules{Name: name}
		gw.byUID[uid] = name
	}
	return gw, pols, nil
}

// ownName is the login name of uid, else "uid-N".
func ownName(acct osAccounts, uid int) string {
	if n, err := acct.userName(uid); err == nil && n != "" {
		return n
	}
	return "uid-" + strconv.Itoa(uid)
}

// identityRules is the limits.IdentityFunc: the rules of the identity
// named name as of the last Apply, nil when it has none.
func (g *Gate) identityRules(name string) *limits.IdentityRules {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.gateway == nil {
		return nil
	}
	return g.gateway.rules[name]
}

// Identify maps a Unix-socket peer (its uid, primary gid and pid, as
// SO_PEERCRED gives them) to its identity by the config of the last Apply:
// the identity whose uids hold uid; else the one whose unix_groups hold
// one of the peer's groups (gid, and the user's supplementary groups from
// the host's user database). Two or more identities matching by group only
// is an error naming them. With no identities configured, only the
// gateway's own uid is accepted, as an identity named by its login name
// ("uid-N" when it has none). An error's text names the uid and the fix,
// and is fit to show the peer.
func (g *Gate) Identify(uid, gid, pid int) (*guard.Identity, error) {
	g.mu.RLock()
	gw := g.gateway
	g.mu.RUnlock()
	if gw == nil {
		return nil, errors.New("gateway: no config is loaded yet; retry once moat has started")
	}
	// The uid is who within an identity of several uids or groups: a
	// per-user server runs once per person.
	id := &guard.Identity{UID: uid, GID: gid, PID: pid, Principal: "uid " + strconv.Itoa(uid)}
	if name, ok := gw.byUID[uid]; ok {
		id.Name = name
		return id, nil
	}
	if gw.implicit {
		return nil, fmt.Errorf("gateway: uid %d may not connect: with no gateway.identities in %s only the gateway's own user (uid %d) may; to let uid %d in, add it to gateway.identities.NAME.uids in %s",
			uid, gw.path, g.accounts.uid(), uid, gw.path)
	}
	matched := gw.byGroup(g.accounts, uid, gid)
	switch len(matched) {
	case 1:
		id.Name = matched[0]
		return id, nil
	case 0:
		return nil, fmt.Errorf("gateway: uid %d (gid %d) is no identity of gateway.identities in %s; add it to gateway.identities.NAME.uids in %s, or one of its groups to gateway.identities.NAME.unix_groups",
			uid, gid, gw.path, gw.path)
	}
	return nil, fmt.Errorf("gateway: uid %d is in the unix_groups of several identities (%s), so which it is is ambiguous; add it to gateway.identities.NAME.uids of one of them in %s",
		uid, strings.Join(matched, ", "), gw.path)
}

// IdentifyToken maps the name of the gateway token an HTTP client
// presented (already verified against its stored hash) to the identity
// whose tokens list it, by the config of the last Apply. The identity has
// no uid, gid or pid (-1 each). An error's text names the token and the
// fix, and is fit for the gateway's log; the client is told less.
func (g *Gate) IdentifyToken(name string) (*guard.Identity, error) {
	g.mu.RLock()
	gw := g.gateway
	g.mu.RUnlock()
	if gw == nil {
		return nil, errors.New("gateway: no config is loaded yet; retry once moat has started")
	}
	id, ok := gw.byToken[name]
	if !ok {
		return nil, fmt.Errorf("gateway: token %q is no identity's; add it to gateway.identities.NAME.tokens in %s", name, gw.path)
	}
	return &guard.Identity{Name: id, Principal: "token " + name, UID: -1, GID: -1, PID: -1}, nil
}

// OIDCClaims are what IdentifyOIDC reads of a verified JWT access token.
type OIDCClaims struct {
	Issuer  string
	Subject string
	Groups  []string // the values of gateway.oidc.groups_claim
	Scopes  []string // of the scope (space-separated) or scp claim
}

// IdentifyOIDC maps a verified JWT access token to its identity by the
// config of the last Apply, as Identify does a peer (uids, then groups):
// the identity whose oidc.subjects lists its sub; else the one identity
// whose oidc.groups holds one of its groups or whose oidc.scopes it all
// carries. Several of those is an error naming them: which is ambiguous,
// and no identity is chosen for it. The identity has no uid, gid or pid.
// An error's text is fit for the gateway's log and audit log.
func (g *Gate) IdentifyOIDC(c OIDCClaims) (*guard.Identity, error) {
	g.mu.RLock()
	gw := g.gateway
	g.mu.RUnlock()
	if gw == nil {
		return nil, errors.New("gateway: no config is loaded yet; retry once moat has started")
	}
	id := &guard.Identity{UID: -1, GID: -1, PID: -1}
	if name, ok := gw.bySubject[c.Subject]; ok && c.Subject != "" {
		id.Name = name
		return id, nil
	}
	var matched []string
	for name, groups := range gw.oidcGroups {
		if slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(c.Groups, g) }) {
			matched = append(matched, name)
		}
	}
	for name, scopes := range gw.oidcScopes {
		if !slices.Contains(matched, name) && !slices.ContainsFunc(scopes, func(s string) bool { return !slices.Contains(c.Scopes, s) }) {
			matched = append(matched, name)
		}
	}
	slices.Sort(matched)
	switch len(matched) {
	case 1:
		id.Name = matched[0]
		return id, nil
	case 0:
		return nil, fmt.Errorf("gateway: the token of subject %q is no identity's; list it under gateway.identities.NAME.oidc.subjects in %s, or one of its groups under oidc.groups", c.Subject, gw.path)
	}
	return nil, fmt.Errorf("gateway: the token of subject %q matches the oidc groups or scopes of several identities (%s), so which it is is ambiguous; list the subject under gateway.identities.NAME.oidc.subjects of one of them in %s",
		c.Subject, strings.Join(matched, ", "), gw.path)
}

// byGroup returns, sorted, the identities whose unix_groups hold one of
// the peer's groups: gid and the supplementary groups of uid's user.
func (gw *gateway) byGroup(acct osAccounts, uid, gid int) []string {
	if len(gw.groups) == 0 {
		return nil
	}
	peer := map[string]bool{strconv.Itoa(gid): true}
	if ids, err := acct.groupIDs(uid); err == nil { // a uid without a passwd entry has its primary group only
		for _, g := range ids {
			peer[g] = true
		}
	}
	gids := map[string]string{} // a group name, resolved once per call
	var out []string
	for name, groups := range gw.groups {
		for _, grp := range groups {
			want := grp
			if _, err := strconv.Atoi(grp); err != nil {
				v, seen := gids[grp]
				if !seen {
					v, _ = acct.lookupGID(grp) // an unknown group holds nobody
					gids[grp] = v
				}
				want = v
			}
			if want != "" && peer[want] {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// Visible reports whether the identity id may see and use group: always
// for nil (the stdio client), never for an identity the last Apply does
// not have.
func (g *Gate) Visible(id *guard.Identity, group string) bool {
	if id == nil {
		return true
	}
	r := g.identityRules(id.Name)
	return r != nil && r.Visible(group)
}

// ForIdentity narrows entries, the Catalog of group for its tools, to what
// the identity id may see: the policy layer's decision for each entry's
// tool (by its definition in tools), nothing when it may not see group.
func (g *Gate) ForIdentity(id *guard.Identity, group string, entries []proxy.Entry, tools []*mcp.Tool) []proxy.Entry {
	if id == nil {
		return entries
	}
	p := g.Policy(group)
	byName := make(map[string]*mcp.Tool, len(tools))
	for _, t := range tools {
		byName[t.Name] = t
	}
	var out []proxy.Entry
	for _, e := range entries {
		t := byName[e.Tool.Name]
		if t == nil {
			t = e.Tool
		}
		c := &guard.Call{Kind: guard.KindTool, Group: group, Name: t.Name, Tool: t, Identity: id}
		if limits.Decide(p, g.identityRules, c, nil) == nil {
			out = append(out, e)
		}
	}
	return out
}

// PermitFor is Permit for the identity id: the resources and prompts the
// policy layer would let it request, in groups it may see. nil id: Permit.
func (g *Gate) PermitFor(id *guard.Identity) func(group string, kind guard.Kind, name string) bool {
	if id == nil {
		return g.Permit
	}
	return func(group string, kind guard.Kind, name string) bool {
		return g.permit(id, group, kind, name)
	}
}
