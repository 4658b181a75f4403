package config

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/moatmcp/moat/internal/lazyregexp"
	"github.com/moatmcp/moat/internal/suggest"
)

var (
	gatewayKeys    = []string{"socket_mode", "socket_group", "identities", "tls", "allowed_origins", "oidc", "per_user_idle"}
	identityKeys   = []string{"uids", "unix_groups", "tokens", "oidc", "servers", "policy"}
	gatewayTLSKeys = []string{"cert_file", "key_file", "min_version"}
	// unixGroup is a group name (as useradd accepts it) or a numeric gid.
	unixGroup  = lazyregexp.New(`^([A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10})$`)
	socketMode = lazyregexp.New(`^0?[0-7]{3}$`)
)

// maxID is the largest uid or gid: uid_t is 32 bits and (uid_t)-1 means
// "no uid".
const maxID = 1<<32 - 2

// gateway reads the "gateway" block. servers are the configured servers
// ("servers" lists must name them); nil when mcpServers did not load, so
// those names are not checked.
func (c *checker) gateway(m *member, servers map[string]*Server) Gateway {
	g := Gateway{SocketMode: DefaultSocketMode, PerUserIdle: DefaultPerUserIdle}
	if m == nil || !c.object(m, "/gateway", `"gateway"`, gatewayKeys, `"gateway": {"socket_mode": "0660", "identities": {"alice": {"uids": [1000]}}}`) {
		return g
	}
	n := m.val
	if f := n.get("socket_mode"); f != nil {
		g.SocketMode = c.socketMode(f)
	}
	if f := n.get("socket_group"); f != nil {
		if v, ok := c.str(f, "/gateway"); ok {
			if !unixGroup.MatchString(v) {
				c.ps.add("/gateway/socket_group", f.val.off, fmt.Sprintf("gateway.socket_group %q is not a group name or gid", v),
					`write a group name such as "moat" or a numeric gid such as "1500"`)
			} else {
				g.SocketGroup = v
			}
		}
	}
	if f := n.get("tls"); f != nil {
		g.TLS = c.gatewayTLS(f)
	}
	if f := n.get("per_user_idle"); f != nil {
		if d := c.duration(f, "/gateway/per_user_idle"); d > 0 {
			g.PerUserIdle = d
		}
	}
	if f := n.get("allowed_origins"); f != nil {
		g.AllowedOrigins = []string{}
		c.stringList(f, "/gateway/allowed_origins", "gateway.allowed_origins", `"allowed_origins": ["https://app.example.com"]`, func(i int, it *node, p string) {
			if !validOrigin(it.str) {
				c.ps.add(p, it.off, fmt.Sprintf("gateway.allowed_origins[%d] %q is not an origin", i, it.str),
					`write scheme://host[:port] exactly as a browser sends it in Origin, such as "https://app.example.com" (no path, no trailing /)`)
				return
			}
			g.AllowedOrigins = append(g.AllowedOrigins, it.str)
		})
	}
	if f := n.get("oidc"); f != nil {
		g.OIDC = c.gatewayOIDC(f)
	}
	f := n.get("identities")
	if f == nil {
		return g
	}
	if f.val.kind != kindObject {
		c.ps.add("/gateway/identities", f.val.off, fmt.Sprintf(`gateway.identities is %s, not an object`, f.val.kind),
			`write "identities": {"alice": {"uids": [1000], "servers": ["files"]}}`)
		return g
	}
	owners := &owners{uid: map[int]string{}, token: map[string]string{}, subject: oidcOwners{}}
	for _, im := range f.val.members {
		if id := c.identity(im, servers, owners); id != nil {
			if id.OIDC != nil && g.OIDC == nil && n.get("oidc") == nil {
				c.ps.add(pointer("gateway", "identities", im.key, "oidc"), im.val.off, fmt.Sprintf("identity %q has oidc, but gateway.oidc names no issuer whose tokens could match it", im.key),
					`add "gateway": {"oidc": {"issuer": "https://login.example.com", "audience": "https://moat.example.com/mcp"}}, or remove the identity's oidc`)
			}
			if g.Identities == nil {
				g.Identities = map[string]*Identity{}
			}
			g.Identities[im.key] = id
		}
	}
	return g
}

// socketMode reads "socket_mode": an octal string from 0600 to 0777 that
// does not let every user connect.
func (c *checker) socketMode(m *member) os.FileMode {
	const path = "/gateway/socket_mode"
	const fix = `use "0660" (the gateway's user and socket_group may connect) or "0600" (its user only)`
	if m.val.kind != kindString {
		hint := fix
		if m.val.kind == kindNumber {
			hint = "write the mode as an octal string, quoted: " + fix
		}
		c.ps.add(path, m.val.off, fmt.Sprintf("gateway.socket_mode is %s, not a string", m.val.kind), hint)
		return DefaultSocketMode
	}
	v := m.val.str
	if !socketMode.MatchString(v) {
		c.ps.add(path, m.val.off, fmt.Sprintf("gateway.socket_mode %q is not an octal mode such as \"0660\"", v), fix)
		return DefaultSocketMode
	}
	n, _ := strconv.ParseUint(v, 8, 32) // the pattern admits only octal digits
	mode := os.FileMode(n)
	switch {
	case mode < 0o600:
		c.ps.add(path, m.val.off, fmt.Sprintf("gateway.socket_mode %q does not let the gateway's own user read and write its socket (it must be from 0600 to 0777)", v), fix)
	case mode&0o002 != 0:
		c.ps.add(path, m.val.off, fmt.Sprintf("gateway.socket_mode %q lets every user of the host connect (o+w)", v),
			`use "0660" and set "socket_group" to the group of the users who may connect, or "0600"`)
	default:
		return mode
	}
	return DefaultSocketMode
}

// owners map each uid and token name seen so far to its identity, so that
// one under two identities is reported.
type owners struct {
	uid     map[int]string
	token   map[string]string
	subject oidcOwners
}

// identity reads one member of gateway.identities.
func (c *checker) identity(im member, servers map[string]*Server, own *owners) *Identity {
	name, n := im.key, im.val
	path := pointer("gateway", "identities", name)
	if name == "." || name == ".." || !serverName.MatchString(name) {
		c.ps.add(path, im.keyOff, fmt.Sprintf("invalid identity name %q", name),
			"use 1 to 64 letters, digits, '_', '.' or '-' (not \".\" or \"..\")")
	}
	where := fmt.Sprintf("identity %q", name)
	if !c.object(&im, path, where, identityKeys, `{"uids": [1000], "servers": ["files"]}`) {
		return nil
	}
	id := &Identity{Name: name}
	if m := n.get("uids"); m != nil {
		for i, it := range c.list(m, path+"/uids", where+" uids", `write "uids": [1000, 1001]`) {
			p := path + "/uids/" + strconv.Itoa(i)
			v, ok := c.integer(&member{key: "uids", val: it}, p, fmt.Sprintf("%s uids[%d]", where, i), 0, maxID)
			if !ok {
				continue
			}
			uid := int(v)
			if other, dup := own.uid[uid]; dup {
				msg := fmt.Sprintf("uid %d is listed under identities %q and %q; a peer must be exactly one identity", uid, other, name)
				if other == name {
					msg = fmt.Sprintf("uid %d is listed twice under identity %q", uid, name)
				}
				c.ps.add(p, it.off, msg, "remove one of them")
				continue
			}
			own.uid[uid] = name
			id.UIDs = append(id.UIDs, uid)
		}
	}
	if m := n.get("unix_groups"); m != nil {
		for i, it := range c.list(m, path+"/unix_groups", where+" unix_groups", `write "unix_groups": ["devs"]`) {
			p := path + "/unix_groups/" + strconv.Itoa(i)
			switch {
			case it.kind != kindString:
				c.ps.add(p, it.off, fmt.Sprintf("%s unix_groups[%d] is %s, not a string", where, i, it.kind), `quote it: a group name such as "devs" or a gid such as "1500"`)
			case !unixGroup.MatchString(it.str):
				c.ps.add(p, it.off, fmt.Sprintf("%s unix_groups[%d] %q is not a group name or gid", where, i, it.str), `write a group name such as "devs" or a gid such as "1500"`)
			default:
				id.Groups = append(id.Groups, it.str)
			}
		}
	}
	if m := n.get("tokens"); m != nil {
		c.stringList(m, path+"/tokens", where+" tokens", `"tokens": ["laptop"]`, func(i int, it *node, p string) {
			switch other, dup := own.token[it.str]; {
			case !ValidTokenName(it.str):
				c.ps.add(p, it.off, fmt.Sprintf("%s tokens[%d] %q is not a token name", where, i, it.str),
					"a token name is 1 to 64 letters, digits, '_', '.' or '-', as given to `moat token create NAME`")
			case dup && other == name:
				c.ps.add(p, it.off, fmt.Sprintf("token %q is listed twice under identity %q", it.str, name), "remove one of them")
			case dup:
				c.ps.add(p, it.off, fmt.Sprintf("token %q is listed under identities %q and %q; a token's bearer must be exactly one identity", it.str, other, name), "remove one of them")
			default:
				own.token[it.str] = name
				id.Tokens = append(id.Tokens, it.str)
			}
		})
	}
	hasOIDC := n.get("oidc") != nil
	if hasOIDC {
		id.OIDC = c.identityOIDC(n.get("oidc"), path+"/oidc", name, own.subject)
	}
	if len(id.UIDs) == 0 && len(id.Groups) == 0 && len(id.Tokens) == 0 && !hasOIDC &&
		!c.listHasItems(n, "uids") && !c.listHasItems(n, "unix_groups") && !c.listHasItems(n, "tokens") {
		c.ps.add(path, n.off, fmt.Sprintf("%s has no uids, unix_groups, tokens or oidc, so no peer can ever be it", where),
			`add "uids": [1000], "unix_groups": ["devs"], "tokens": ["laptop"] or "oidc": {"subjects": ["user-123"]}, or remove the identity`)
	}
	if m := n.get("servers"); m != nil {
		id.Servers = []string{}
		for i, it := range c.list(m, path+"/servers", where+" servers", `write "servers": ["files"]`) {
			p := path + "/servers/" + strconv.Itoa(i)
			if it.kind != kindString {
				c.ps.add(p, it.off, fmt.Sprintf("%s servers[%d] is %s, not a string", where, i, it.kind), "write a server name from mcpServers, quoted")
				continue
			}
			if servers != nil && servers[it.str] == nil {
				names := make([]string, 0, len(servers))
				for s := range servers {
					names = append(names, s)
				}
				slices.Sort(names)
				hint := "list servers by their name in mcpServers: " + quoteList(names)
				if s := suggest.Hint(it.str, names); s != "" {
					hint = s + "; " + hint
				}
				c.ps.add(p, it.off, fmt.Sprintf("%s lists server %q, which is not in mcpServers", where, it.str), hint)
				continue
			}
			id.Servers = append(id.Servers, it.str)
		}
	}
	id.Policy = c.policy(n.get("policy"), path+"/policy", where+" policy")
	return id
}

// list returns m's items when it is an array, and reports it otherwise.
func (c *checker) list(m *member, path, where, example string) []*node {
	if m.val.kind != kindArray {
		c.ps.add(path, m.val.off, fmt.Sprintf("%s is %s, not an array", where, m.val.kind), example)
		return nil
	}
	return m.val.items
}

// listHasItems reports whether n's member key is a non-empty array (whose
// items were reported if they were unusable).
func (c *checker) listHasItems(n *node, key string) bool {
	m := n.get(key)
	return m != nil && m.val.kind == kindArray && len(m.val.items) > 0
}

// tokenName is the form of a gateway token's name (`moat token create`).
var tokenName = lazyregexp.New(`^[A-Za-z0-9_.-]{1,64}$`)

// ValidTokenName reports whether name may name a gateway token.
func ValidTokenName(name string) bool {
	return tokenName.MatchString(name) && name != "." && name != ".."
}

// gatewayTLS reads gateway.tls: a certificate and its key, both absolute
// paths, and the lowest TLS version served.
func (c *checker) gatewayTLS(m *member) *GatewayTLS {
	const path = "/gateway/tls"
	t := &GatewayTLS{MinVersion: "1.2"}
	if !c.object(m, path, `"gateway.tls"`, gatewayTLSKeys, `"tls": {"cert_file": "/etc/moat/cert.pem", "key_file": "/etc/moat/key.pem"}`) {
		return nil
	}
	n := m.val
	if f := n.get("min_version"); f != nil {
		if v := c.enum(f, path+"/min_version", "gateway.tls.min_version", []string{"1.2", "1.3"}, `use "1.2" (the default) or "1.3", as a string`); v != "" {
			t.MinVersion = v
		}
	}
	for _, k := range []struct {
		key string
		dst *string
	}{{"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
		f := n.get(k.key)
		if f == nil {
			c.ps.add(path, n.off, fmt.Sprintf("gateway.tls has no %q", k.key),
				`give both: "tls": {"cert_file": "/etc/moat/cert.pem", "key_file": "/etc/moat/key.pem"}`)
			continue
		}
		raw, ok := c.str(f, path)
		if !ok {
			continue
		}
		if raw == "" {
			c.ps.add(path+"/"+k.key, f.val.off, fmt.Sprintf("gateway.tls.%s is empty", k.key), "give the absolute path of a PEM file")
			continue
		}
		if v, ok := c.filePath(raw, expansion{path + "/" + k.key, f.val.off, "gateway.tls." + k.key, nil, false, false}); ok {
			*k.dst = v
		}
	}
	return t
}

// validOrigin reports whether o is an origin as browsers send it:
// http or https, a host, an optional port, nothing else.
func validOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.User == nil && u.Path == "" && u.RawQuery == "" && u.Fragment == "" && !strings.HasSuffix(o, "/") &&
		u.Scheme+"://"+u.Host == o
}
