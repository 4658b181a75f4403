// Package sandbox is the only way Moat starts a stdio upstream: it re-executes
// Moat as a small launcher ("moat sandbox-exec") that applies resource limits,
// no_new_privs and Landlock to itself, then starts the real command with a
// clean environment, in its own process group, and tears the whole process
// tree down when Moat stops it or dies.
//
// # How a child starts
//
// Go cannot run code between fork and exec, so Start runs
//
//	moat (parent) ── moat sandbox-exec (launcher, process group leader) ── target
//
// The parent sends the launcher its configuration as JSON on an extra pipe
// (fd 3), never in argv or the environment. The launcher locks its OS thread,
// sets PR_SET_NO_NEW_PRIVS and Landlock on that thread (Landlock is per
// thread), marks every fd above 2 close-on-exec, and forks+execs the target
// from the same locked thread, so the target inherits all of it. The target
// starts traced and stops right after execve: the launcher sets its RLIMIT_*
// with prlimit and puts it in its cgroup (or clones it straight into it, on
// cgroup v2) before it runs one instruction of its own, then detaches. The
// launcher then stays as a tiny supervisor: it is a child subreaper, it
// reports the target's pid, exit status and rusage on a second pipe (fd 4),
// and when the parent goes away (fd 3 reaches EOF, which happens when the Moat
// process dies for any reason, including kill -9) it SIGKILLs the target's
// process group and every descendant that was re-parented to it. This is why
// Moat does not rely on Pdeathsig for the launcher: Pdeathsig fires when the
// parent *thread* exits (golang/go#27505), and a pipe closes only when the
// process dies. The target itself gets Pdeathsig=SIGKILL from the launcher's
// locked thread, which lives as long as the launcher waits for it.
//
// A launcher is the whole moat binary, whose start-up (package init) costs
// several milliseconds; in serve mode (KeepWarm) one launcher is started
// ahead of need and waits, knowing nothing, for the configuration of the
// next child.
//
// # Isolation
//
// Unless Limits.Namespaces is false, the launcher is created in user, PID,
// mount and IPC namespaces of its own (its uid and gid mapped to
// themselves, so a server keeps its usual uid and files) and is PID 1 there.
// Before starting the target it mounts a /proc that shows only that
// namespace, covers Spec.Hide and the other servers' private directories
// with empty read-only mounts, gives a private /dev/shm, makes itself
// non-dumpable and drops every capability: the target cannot see another
// server, signal or trace it, or uncover what was hidden. Where the kernel
// does not allow it (Namespaces says why), Strict refuses and BestEffort
// starts the server in Moat's namespaces. Spec.RunAs (root only) runs the
// target as another user.
//
// # Environment
//
// The target's environment is exactly: PATH (the clean one, or the server's
// own env PATH), HOME, USER, LOGNAME, LANG, LC_*, TMPDIR taken from Moat's
// environment, the variables matched by Spec.InheritEnv, and Spec.Env (which
// wins). TERM is not passed: a stdio MCP server has no terminal. Nothing else
// from Moat's environment ever reaches a child.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Mode says what Start does when a protection cannot be enforced.
type Mode int

const (
	// BestEffort starts the child anyway; the Report (and a warn log) say
	// what is not enforced.
	BestEffort Mode = iota
	// Strict refuses to start the child if anything asked cannot be enforced.
	Strict
)

func (m Mode) String() string {
	if m == Strict {
		return "strict"
	}
	return "best-effort"
}

// Defaults used when a Limits field is zero. A zero value never means
// "unlimited". Every limit is also clamped to Moat's own hard limit, which an
// unprivileged process cannot raise.
const (
	// DefaultMemory is the memory limit of a server's process tree (the
	// cgroup's, where Moat can make one): 2 GiB.
	DefaultMemory uint64 = 2 << 30
	// MinAddressSpace is the RLIMIT_AS of a process whose memory a cgroup
	// bounds, or whose memory limit is the default: 16 GiB of address space,
	// not memory. Runtimes reserve far more address space than they use:
	// V8 reserves about 10 GiB for each WebAssembly memory (Node's fetch
	// parses HTTP with one), so an RLIMIT_AS of 2 GiB crashed Node servers
	// on their second fetch. Only a memory limit set in the config, where no
	// cgroup can enforce it, becomes the RLIMIT_AS itself.
	MinAddressSpace uint64 = 16 << 30
	// DefaultCPU is RLIMIT_CPU, CPU time over the whole life of the child
	// (not a rate): one hour. A restarted child starts from zero.
	DefaultCPU = time.Hour
	// DefaultMaxFiles is RLIMIT_NOFILE.
	DefaultMaxFiles uint64 = 1024
	// DefaultMaxProcs is RLIMIT_NPROC. The kernel counts every process and
	// thread of the *user* (not of this child) against it, so the default is
	// high enough for a desktop session; the per-server fork-bomb defence is
	// the cgroup's pids.max (DefaultPidsMax), where a cgroup can be made (see
	// cgroup_linux.go: v2 when delegated, else v1 as root).
	DefaultMaxProcs uint64 = 8192
	// DefaultPidsMax is the cgroup pids.max when MaxProcs is zero: the
	// processes and threads of this one server, ample for a Node.js or
	// Python MCP server (a Node.js process alone has about 11 threads), and
	// low enough that a fork bomb stops long before the machine notices.
	DefaultPidsMax uint64 = 256
	// DefaultMaxFileSize is RLIMIT_FSIZE: 1 GiB.
	DefaultMaxFileSize uint64 = 1 << 30
)

// Limits are the per-server sandbox settings. Zero values take the defaults
// above.
type Limits struct {
	Mode        Mode
	Memory      uint64        // the cgroup's memory limit for the whole tree; RLIMIT_AS per process where no cgroup can be made (see MinAddressSpace)
	CPU         time.Duration // RLIMIT_CPU, rounded up to whole seconds
	MaxFiles    uint64        // RLIMIT_NOFILE
	MaxProcs    uint64        // RLIMIT_NPROC (per user!) and cgroup pids.max (DefaultPidsMax when 0)
	MaxFileSize uint64        // RLIMIT_FSIZE
	// FSRead and FSWrite are Landlock allow-lists (paths beneath which the
	// child may read / write). nil both = no Landlock filesystem restriction.
	// When either is non-nil the child may also read what any process needs
	// (see baseReadPaths), the resolved binary, and its working directory.
	FSRead, FSWrite []string
	// NetConnect is a Landlock (ABI >= 4) allow-list of TCP ports the child
	// may connect to; nil = unrestricted, empty non-nil = no TCP connect.
	NetConnect []uint16
	// Network false = a new network namespace with only loopback; nil or
	// true = the host network.
	Network *bool
	// Namespaces false = the child shares Moat's user, PID, mount and IPC
	// namespaces (see Isolation); nil or true = its own, where the kernel
	// allows them.
	Namespaces *bool
}

// Spec describes one child.
type Spec struct {
	Name       string            // server name, for logs and errors
	Command    string            // absolute path (from Resolve) or as configured
	Args       []string          // arguments, without argv[0]
	Env        map[string]string // the server's env, already expanded; wins over inherited values
	InheritEnv []string          // allow-list of Moat's variables: exact names or PREFIX_* globs
	// Dir is the working directory; "" = a private empty 0700 directory
	// created for this child and removed when it has been reaped.
	Dir string
	// Stderr receives the child's stderr; required (the caller bounds and
	// logs it). Moat never discards a child's stderr.
	Stderr io.Writer
	Limits Limits
	// Hide are files and directories the child must not see: Moat's config,
	// audit log and stores, the other servers' working directories. In the
	// child's own mount namespace each is covered by an empty read-only
	// directory (or /dev/null for a file). A path that is, or holds, the
	// child's own working directory, or a path its environment names, is
	// left visible. Without namespaces Hide has no effect.
	Hide []string
	// RunAs is the user the child runs as ("name", "uid", optionally
	// ":group"), with no supplementary groups and HOME, USER and LOGNAME
	// of that user; "" = Moat's own user. Only root can do this.
	RunAs string
}

// Protection is one line of a Report.
type Protection struct {
	Name     string `json:"name"`
	Enforced bool   `json:"enforced"`
	Detail   string `json:"detail,omitempty"`
}

// Report says which protections are enforced (for one child, or on this
// machine for Probe).
type Report struct {
	Protections []Protection `json:"protections"`
}

// Names of the protections in a Report.
const (
	PRlimits       = "rlimits"
	PNProc         = "rlimit_nproc"
	PNoNewPrivs    = "no_new_privs"
	PLandlockFS    = "landlock_fs"
	PLandlockNet   = "landlock_net"
	PNetNS         = "network_namespace"
	PCgroup        = "cgroup"
	PTreeTeardown  = "tree_teardown"
	PCleanEnv      = "clean_env"
	PProcessGroup  = "process_group"
	PNoInheritedFD = "no_inherited_fds"
	PNamespaces    = "namespaces"
	PRunAs         = "run_as"
)

// Get returns the protection with that name.
func (r Report) Get(name string) (Protection, bool) {
	for _, p := range r.Protections {
		if p.Name == name {
			return p, true
		}
	}
	return Protection{}, false
}

// NotEnforced lists the protections that are not enforced.
func (r Report) NotEnforced() []Protection {
	var out []Protection
	for _, p := range r.Protections {
		if !p.Enforced {
			out = append(out, p)
		}
	}
	return out
}

func (r *Report) set(name string, enforced bool, format string, args ...any) {
	p := Protection{Name: name, Enforced: enforced, Detail: fmt.Sprintf(format, args...)}
	for i := range r.Protections {
		if r.Protections[i].Name == name {
			r.Protections[i] = p
			return
		}
	}
	r.Protections = append(r.Protections, p)
}

func (r Report) String() string {
	var b strings.Builder
	for _, p := range r.Protections {
		mark := "no "
		if p.Enforced {
			mark = "yes"
		}
		fmt.Fprintf(&b, "%-18s %s  %s\n", p.Name, mark, p.Detail)
	}
	return b.String()
}

// CleanPath is the fixed PATH used to resolve commands and given to children,
// whatever Moat's own PATH is.
const CleanPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Resolve returns the absolute path of command, searched in CleanPath (or in
// env["PATH"] when the server's config sets PATH explicitly). A command with a
// slash is taken as given (made absolute). The result is refused when it lies
// in a world-writable directory without the sticky bit, or when it, or any
// directory above it, is world-writable (anyone could replace it).
func Resolve(command string, env map[string]string) (string, error) {
	if command == "" {
		return "", errors.New("sandbox: empty command; set \"command\" in the server's config")
	}
	var path string
	if strings.ContainsRune(command, '/') {
		p, err := filepath.Abs(command)
		if err != nil {
			return "", fmt.Errorf("sandbox: command %q: %w", command, err)
		}
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("sandbox: command %q: %w", command, err)
		}
		path = p
	} else {
		search := CleanPath
		if v, ok := env["PATH"]; ok {
			search = v
		}
		for _, dir := range filepath.SplitList(search) {
			if dir == "" || !filepath.IsAbs(dir) {
				continue // a relative PATH entry would depend on the cwd
			}
			p := filepath.Join(dir, command)
			if checkExecutable(p) == nil {
				path = p
				break
			}
		}
		if path == "" {
			return "", fmt.Errorf("sandbox: command %q not found in PATH %q; give an absolute path in \"command\" or set PATH in the server's \"env\"", command, search)
		}
	}
	if err := checkNotWorldWritable(path); err != nil {
		return "", fmt.Errorf("sandbox: refusing command %q resolved to %s: %w; move the program to a directory only its owner can write", command, path, err)
	}
	return path, nil
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

// checkNotWorldWritable refuses a path that someone else could replace: the
// file itself or its directory is world-writable (a sticky, root-owned /tmp
// included: anyone may plant a program there), or a directory higher up is
// world-writable without the sticky bit, or is sticky but the entry below it
// belongs to another user. Both the given path and its symlink target are
// checked.
func checkNotWorldWritable(p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	for _, start := range []string{p, real} {
		if err := checkChain(start); err != nil {
			return err
		}
	}
	return nil
}

func checkChain(p string) error {
	below := ""
	for cur := p; ; cur = filepath.Dir(cur) {
		fi, err := os.Lstat(cur)
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink == 0 && fi.Mode().Perm()&0o002 != 0 {
			switch {
			case cur == p || cur == filepath.Dir(p):
				return fmt.Errorf("%s is world-writable", cur)
			case fi.Mode()&os.ModeSticky == 0:
				return fmt.Errorf("%s is world-writable", cur)
			case !ownedBySelfOrRoot(below):
				return fmt.Errorf("%s lies in the world-writable %s and belongs to another user", below, cur)
			}
		}
		if cur == "/" || cur == "." {
			return nil
		}
		below = cur
	}
}

// baseEnvNames are taken from Moat's environment for every child.
var baseEnvNames = []string{"HOME", "USER", "LOGNAME", "LANG", "TMPDIR"}

// buildEnv returns the child's environment, sorted, as NAME=value.
func buildEnv(parent []string, inherit []string, env map[string]string) []string {
	out := map[string]string{"PATH": CleanPath}
	for _, kv := range parent {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			continue
		}
		if slices.Contains(baseEnvNames, name) || strings.HasPrefix(name, "LC_") || matchInherit(inherit, name) {
			out[name] = val
		}
	}
	maps.Copy(out, env)
	list := make([]string, 0, len(out))
	for k, v := range out {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list
}

// matchInherit reports whether name matches an InheritEnv entry: an exact
// name, or PREFIX_* (a trailing * matches any suffix, including empty).
func matchInherit(patterns []string, name string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if prefix != "" && strings.HasPrefix(name, prefix) {
				return true
			}
		} else if p == name {
			return true
		}
	}
	return false
}

func (l Limits) withDefaults() Limits {
	if l.Memory == 0 {
		l.Memory = DefaultMemory
	}
	if l.CPU <= 0 {
		l.CPU = DefaultCPU
	}
	if l.MaxFiles == 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxFileSize == 0 {
		l.MaxFileSize = DefaultMaxFileSize
	}
	return l
}

// LauncherPath is the program Start re-executes as the launcher; "" means
// os.Executable(). Tests point it at the test binary.
var LauncherPath = ""

// LauncherArg is os.Args[1] of the launcher.
const LauncherArg = "sandbox-exec"

func launcherPath() (string, error) {
	if LauncherPath != "" {
		return LauncherPath, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("sandbox: cannot find moat's own executable to use as launcher: %w", err)
	}
	return p, nil
}
