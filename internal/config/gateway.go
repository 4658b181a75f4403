package config

import (
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/moatmcp/moat/internal/lazyregexp"
	"github.com/moatmcp/moat/internal/suggest"
)

var (
	gatewayKeys  = []string{"socket_mode", "socket_group", "identities"}
	identityKeys = []string{"uids", "unix_groups", "servers", "policy"}
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
	g := Gateway{SocketMode: DefaultSocketMode}
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
	f := n.get("identities")
	if f == nil {
		return g
	}
	if f.val.kind != kindObject {
		c.ps.add("/gateway/identities", f.val.off, fmt.Sprintf(`gateway.identities is %s, not an object`, f.val.kind),
			`write "identities": {"alice": {"uids": [1000], "servers": ["files"]}}`)
		return g
	}
	uidOwner := map[int]string{}
	for _, im := range f.val.members {
		if id := c.identity(im, servers, uidOwner); id != nil {
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

// identity reads one member of gateway.identities; uidOwner maps each uid
// seen so far to its identity, so a uid under two identities is reported.
func (c *checker) identity(im member, servers map[string]*Server, uidOwner map[int]string) *Identity {
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
			if other, dup := uidOwner[uid]; dup {
				msg := fmt.Sprintf("uid %d is listed under identities %q and %q; a peer must be exactly one identity", uid, other, name)
				if other == name {
					msg = fmt.Sprintf("uid %d is listed twice under identity %q", uid, name)
				}
				c.ps.add(p, it.off, msg, "remove one of them")
				continue
			}
			uidOwner[uid] = name
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
	if len(id.UIDs) == 0 && len(id.Groups) == 0 && !c.listHasItems(n, "uids") && !c.listHasItems(n, "unix_groups") {
		c.ps.add(path, n.off, fmt.Sprintf("%s has neither uids nor unix_groups, so no peer can ever be it", where),
			`add "uids": [1000] or "unix_groups": ["devs"], or remove the identity`)
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
