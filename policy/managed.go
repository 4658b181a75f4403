package policy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Where the managed policy lives: DefaultManagedPath, unless the
// environment variable ManagedPolicyEnv names another file.
const (
	DefaultManagedPath = "/etc/moat/policy.json"
	ManagedPolicyEnv   = "MOAT_MANAGED_POLICY"
	maxManagedSize     = 4 << 20
)

// A ManagedPolicy is the administrator's policy file: defaults for every
// server and blocks for servers by name. Users can only tighten it.
type ManagedPolicy struct {
	Defaults *Policy
	Servers  map[string]*Policy
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
// {"defaults": {policy}, "servers": {"NAME": {policy}}}, both optional.
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
		default:
			ps.unknownKey(pointer("", k), k, " in a managed policy", []string{"defaults", "servers"})
		}
	}
	if len(ps.problems) > 0 {
		slices.SortFunc(ps.problems, func(a, b Problem) int { return strings.Compare(a.Path, b.Path) })
		return nil, &Error{Problems: ps.problems}
	}
	return m, nil
}

// LoadManaged reads and parses the managed policy file at path. It fails
// closed: a file that cannot be read, is writable by group or others, is
// owned by someone other than root or the current user, sits in such a
// directory, or does not parse, is an error (saying how to fix it), never
// an empty policy. A missing file is an error wrapping fs.ErrNotExist: the
// caller decides whether that is fine (the default path on a host without
// managed policy) or not (a path named by MOAT_MANAGED_POLICY).
func LoadManaged(path string) (*ManagedPolicy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: managed policy %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("policy: managed policy %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("policy: managed policy %s is not a regular file", path)
	}
	if err := safeFile(path, fi); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("policy: managed policy directory %s: %w", dir, err)
	}
	if err := safeFile(dir, di); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxManagedSize+1))
	if err != nil {
		return nil, fmt.Errorf("policy: reading managed policy %s: %w", path, err)
	}
	if len(data) > maxManagedSize {
		return nil, fmt.Errorf("policy: managed policy %s is larger than %d bytes; Moat refuses it", path, maxManagedSize)
	}
	m, err := ParseManaged(data)
	if err != nil {
		var pe *Error
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("managed policy %s (Moat refuses to run with part of it; ask the administrator to fix it): %w", path, err)
		}
		return nil, err
	}
	return m, nil
}
