package config

import (
	"fmt"
	"math"
	"slices"

	"github.com/moatmcp/moat/internal/lazyregexp"
)

// Sandbox modes.
const (
	SandboxBestEffort = "best-effort"
	SandboxStrict     = "strict"
)

// MinMaxFiles is the smallest max_files accepted: below it even a shell
// cannot start (stdin, stdout, stderr, its libraries).
const MinMaxFiles = 16

var (
	sandboxKeys = []string{"mode", "memory", "cpu", "max_files", "max_procs", "max_file_size", "fs", "net", "network", "namespaces"}
	fsKeys      = []string{"read", "write"}
	netKeys     = []string{"connect"}

	// inheritName is a variable name, or a prefix of one ending in '*'.
	// A lone "*" is refused: it would hand the child Moat's whole
	// environment, which is what the allow-list exists to prevent.
	inheritName = lazyregexp.New(`^[A-Za-z_][A-Za-z0-9_]*\*?$`)
)

func (c *checker) inheritEnv(s *Server, m *member, path string) {
	if m == nil {
		return
	}
	s.InheritEnv = []string{}
	c.stringList(m, path, "inherit_env", `"inherit_env": ["LANG", "NODE_*"]`, func(i int, it *node, p string) {
		if !inheritName.MatchString(it.str) {
			c.ps.add(p, it.off, fmt.Sprintf("inherit_env[%d] %q is not a variable name or a NAME_* prefix", i, it.str),
				`write a name such as "LANG" or a prefix such as "NODE_*" (letters, digits and '_', not starting with a digit; '*' only at the end, never alone)`)
			return
		}
		s.InheritEnv = append(s.InheritEnv, it.str)
	})
}

// sandbox reads a "sandbox" block at path; where names its owner in
// messages (`server "files"` or "defaults").
func (c *checker) sandbox(m *member, path, where string) Sandbox {
	var sb Sandbox
	if m == nil || !c.object(m, path, `"sandbox"`, sandboxKeys, `"sandbox": {"memory": "1GiB", "fs": {"read": ["~/project"]}}`) {
		return sb
	}
	n := m.val
	if f := n.get("mode"); f != nil {
		sb.Mode = c.enum(f, path+"/mode", "sandbox.mode", []string{SandboxBestEffort, SandboxStrict},
			`use "best-effort" (the default: start the server and report what cannot be enforced) or "strict" (refuse to start it then)`)
	}
	if f := n.get("memory"); f != nil {
		sb.Memory = c.size(f, path+"/memory", "sandbox.memory")
	}
	if f := n.get("cpu"); f != nil {
		sb.CPU = c.duration(f, path+"/cpu")
	}
	if f := n.get("max_files"); f != nil {
		sb.MaxFiles, _ = c.integer(f, path+"/max_files", "sandbox.max_files", MinMaxFiles, math.MaxInt64)
	}
	if f := n.get("max_procs"); f != nil {
		sb.MaxProcs, _ = c.integer(f, path+"/max_procs", "sandbox.max_procs", 1, math.MaxInt64)
	}
	if f := n.get("max_file_size"); f != nil {
		sb.MaxFileSize = c.size(f, path+"/max_file_size", "sandbox.max_file_size")
	}
	if f := n.get("fs"); f != nil && c.object(f, path+"/fs", `"sandbox.fs"`, fsKeys, `"fs": {"read": ["~/project"], "write": []}`) {
		// Given "fs", an absent list means "nothing": a read-only sandbox
		// must not become writable because "write" was left out.
		sb.FSRead, sb.FSWrite = []string{}, []string{}
		for _, l := range []struct {
			key string
			dst *[]string
		}{{"read", &sb.FSRead}, {"write", &sb.FSWrite}} {
			lm := f.val.get(l.key)
			if lm == nil {
				continue
			}
			name := "sandbox.fs." + l.key
			c.stringList(lm, path+"/fs/"+l.key, name, fmt.Sprintf(`"%s": ["/home/me/project"]`, l.key), func(i int, it *node, p string) {
				if v, ok := c.filePath(it.str, expansion{p, it.off, fmt.Sprintf("%s %s[%d]", where, name, i), nil, false, false}); ok {
					*l.dst = append(*l.dst, v)
				}
			})
		}
	}
	if f := n.get("net"); f != nil && c.object(f, path+"/net", `"sandbox.net"`, netKeys, `"net": {"connect": [443]}`) {
		if cm := f.val.get("connect"); cm != nil {
			p := path + "/net/connect"
			if cm.val.kind != kindArray {
				c.ps.add(p, cm.val.off, fmt.Sprintf("sandbox.net.connect is %s, not an array of port numbers", cm.val.kind), `write "connect": [443, 8080]`)
			} else {
				sb.NetConnect = []uint16{}
				for i, it := range cm.val.items {
					port, ok := c.integer(&member{val: it}, p+fmt.Sprintf("/%d", i), fmt.Sprintf("sandbox.net.connect[%d]", i), 1, math.MaxUint16)
					if ok {
						sb.NetConnect = append(sb.NetConnect, uint16(port))
					}
				}
			}
		} else {
			sb.NetConnect = []uint16{}
		}
	}
	if f := n.get("network"); f != nil {
		b := c.boolean(f, path+"/network", "sandbox.network")
		sb.Network = &b
	}
	if f := n.get("namespaces"); f != nil {
		b := c.boolean(f, path+"/namespaces", "sandbox.namespaces")
		sb.Namespaces = &b
	}
	return sb
}

// withDefaults returns s with every field it leaves unset taken from d
// (copied, so servers never share a slice), and Mode filled in.
func (s Sandbox) withDefaults(d Sandbox) Sandbox {
	if s.Mode == "" {
		s.Mode = d.Mode
	}
	if s.Mode == "" {
		s.Mode = SandboxBestEffort
	}
	if s.Memory == 0 {
		s.Memory = d.Memory
	}
	if s.CPU == 0 {
		s.CPU = d.CPU
	}
	if s.MaxFiles == 0 {
		s.MaxFiles = d.MaxFiles
	}
	if s.MaxProcs == 0 {
		s.MaxProcs = d.MaxProcs
	}
	if s.MaxFileSize == 0 {
		s.MaxFileSize = d.MaxFileSize
	}
	// "fs" sets both lists or neither, so these move as a pair.
	if s.FSRead == nil {
		s.FSRead = slices.Clone(d.FSRead)
	}
	if s.FSWrite == nil {
		s.FSWrite = slices.Clone(d.FSWrite)
	}
	if s.NetConnect == nil {
		s.NetConnect = slices.Clone(d.NetConnect)
	}
	if s.Network == nil && d.Network != nil {
		b := *d.Network
		s.Network = &b
	}
	if s.Namespaces == nil && d.Namespaces != nil {
		b := *d.Namespaces
		s.Namespaces = &b
	}
	return s
}

// equal compares every field, telling nil lists (no restriction) from
// empty ones (nothing allowed).
func (s Sandbox) equal(o Sandbox) bool {
	return s.Mode == o.Mode && s.Memory == o.Memory && s.CPU == o.CPU &&
		s.MaxFiles == o.MaxFiles && s.MaxProcs == o.MaxProcs && s.MaxFileSize == o.MaxFileSize &&
		sameList(s.FSRead, o.FSRead) && sameList(s.FSWrite, o.FSWrite) && sameList(s.NetConnect, o.NetConnect) &&
		(s.Network == nil) == (o.Network == nil) && (s.Network == nil || *s.Network == *o.Network) &&
		(s.Namespaces == nil) == (o.Namespaces == nil) && (s.Namespaces == nil || *s.Namespaces == *o.Namespaces)
}

// sameList is slices.Equal that also tells nil from empty.
func sameList[T comparable](a, b []T) bool {
	return (a == nil) == (b == nil) && slices.Equal(a, b)
}
