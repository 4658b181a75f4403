package policy

import (
	"slices"
	"strings"
)

// Where the managed policy lives: DefaultManagedPath, unless the
// environment variable ManagedPolicyEnv names another file.
const (
	DefaultManagedPath = "/etc/moat/policy.json"
	ManagedPolicyEnv   = "MOAT_MANAGED_POLICY"
)

// A ManagedPolicy is the administrator's policy file: defaults for every
// server and blocks for servers by name. Users can only tighten it.
type ManagedPolicy struct {
	Defaults *Policy
	Servers  map[string]*Policy
	// RequireEncryption ("secrets": {"require_encryption": true}) makes
	// every moat on the host refuse a secret store protected by file
	// permissions only, whatever the user's config says.
	RequireEncryption bool
}

// For returns the managed policy for server, for Effective: the defaults
// and the server's own block (either may be nil). m may be nil.
func (m *ManagedPolicy) For(server string) (defaults, serverPolicy *Policy) {
	if m == nil {
		return nil, nil
	}
	return m.Defaults, m.Servers[server]
}

// ParseManaged reads a managed policy file's contents:
// {"defaults": {policy}, "servers": {"NAME": {policy}},
// "secrets": {"require_encryption": true}}, each optional.
// "global" is accepted only in "defaults".
func ParseManaged(data []byte) (*ManagedPolicy, error) {
	v, err := decodeStrict(data, maxPolicyDepth)
	if err != nil {
		return nil, &Error{Problems: []Problem{{Msg: err.Error()}}}
	}
	var ps parser
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, &Error{Problems: []Problem{{Msg: `the managed policy must be an object {"defaults": {...}, "servers": {...}}`}}}
	}
	m := &ManagedPolicy{}
	for _, k := range sortedKeys(obj) {
		switch k {
		case "defaults":
			m.Defaults = ps.policy("/defaults", obj[k], true)
		case "servers":
			servers, ok := obj[k].(map[string]any)
			if !ok {
				ps.add("/servers", "must be an object of server name to policy, got %s", kind(obj[k]))
				continue
			}
			m.Servers = map[string]*Policy{}
			for name, sv := range servers {
				m.Servers[name] = ps.policy(pointer("/servers", name), sv, false)
			}
		case "secrets":
			m.RequireEncryption = ps.managedSecrets(obj[k])
		default:
			ps.unknownKey(pointer("", k), k, " in a managed policy", []string{"defaults", "secrets", "servers"})
		}
	}
	if len(ps.problems) > 0 {
		slices.SortFunc(ps.problems, func(a, b Problem) int { return strings.Compare(a.Path, b.Path) })
		return nil, &Error{Problems: ps.problems}
	}
	return m, nil
}

// managedSecrets reads the managed policy's "secrets" block.
func (ps *parser) managedSecrets(v any) bool {
	obj, ok := v.(map[string]any)
	if !ok {
		ps.add("/secrets", `must be an object such as {"require_encryption": true}, got %s`, kind(v))
		return false
	}
	require := false
	for _, k := range sortedKeys(obj) {
		switch k {
		case "require_encryption":
			b, ok := obj[k].(bool)
			if !ok {
				ps.add("/secrets/require_encryption", "must be true or false, got %s", kind(obj[k]))
			}
			require = b
		default:
			ps.unknownKey(pointer("/secrets", k), k, " in a managed policy's secrets", []string{"require_encryption"})
		}
	}
	return require
}
