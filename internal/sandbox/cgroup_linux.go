package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Per-server cgroups.
//
// Every child gets its own cgroup with a memory limit (Limits.Memory: the
// cgroup bounds the resident memory of the whole tree, while RLIMIT_AS,
// MinAddressSpace or more, only stops runaway address space) and a pids limit
// (Limits.MaxProcs, or DefaultPidsMax when it is zero: unlike RLIMIT_NPROC
// it counts only this server's processes and threads, and applies to root).
//
// cgroup v2 is used when Moat's own cgroup has the memory and pids
// controllers and Moat may write there (delegation). v2 forbids processes in
// a cgroup that hands controllers to its children, so when Moat's cgroup
// holds Moat and nothing else, Moat first moves itself into a leaf
// <own>/moat; children live in <own>/moat-children/<server>-<moat pid>-<n>.
// If Moat's cgroup holds other processes too, v2 cannot be used.
//
// cgroup v1 is the fallback when the v1 memory and pids hierarchies are
// mounted and writable (root, on a hybrid or legacy host): the child's
// cgroups are <hierarchy>/<Moat's cgroup there>/moat/<server>-<moat pid>-<n>,
// nested under Moat's own so limits set on Moat still apply.
//
// The parent creates the cgroup before starting the launcher; the launcher
// writes the target's pid into cgroup.procs while the target is still
// stopped after exec (before its first instruction), so every process the
// target ever forks is counted. The parent removes the cgroup once the
// launcher has reaped the whole tree.

// mountInfoPath and procCgroupPath are where the cgroup hierarchies are
// found; tests point them at files that describe a machine without cgroups.
var (
	mountInfoPath  = "/proc/self/mountinfo"
	procCgroupPath = "/proc/self/cgroup"
)

// cgroup is one child's cgroup: one directory (v2) or one per hierarchy (v1).
type cgroup struct {
	version int
	dirs    []string // created directories, removed by remove
	procs   []string // the cgroup.procs files the target's pid goes into
	detail  string   // for the Report
}

// cgroupSeq makes the cgroup names of one Moat process unique: a restarted
// server must not collide with its predecessor's cgroup being removed.
var cgroupSeq atomic.Uint64

// newCgroup creates the cgroup for one child of server name, or says why it
// cannot.
func newCgroup(name string, memory, pids uint64) (*cgroup, error) {
	h, err := findHierarchies()
	if err != nil {
		return nil, err
	}
	leaf := fmt.Sprintf("%s-%d-%d", cgroupName(name), os.Getpid(), cgroupSeq.Add(1))
	var v2err error
	if h.v2 != "" {
		cg, err := newCgroupV2(h, leaf, memory, pids)
		if err == nil {
			return cg, nil
		}
		v2err = err
	}
	if h.v1Memory != "" && h.v1Pids != "" {
		cg, err := newCgroupV1(h, leaf, memory, pids)
		if err == nil {
			return cg, nil
		}
		return nil, errors.Join(v2err, err)
	}
	if v2err != nil {
		return nil, fmt.Errorf("%w; no cgroup v1 memory+pids hierarchies either", v2err)
	}
	return nil, errors.New("no cgroup v2 hierarchy with the memory and pids controllers, and no cgroup v1 memory+pids hierarchies")
}

// hierarchies are the directories of Moat's own cgroups ("" = none), and
// where cgroup2 is mounted (its mount point, and the cgroup shown there).
type hierarchies struct {
	v2, v1Memory, v1Pids string
	v2Mount, v2Root      string
}

// mountedDir is the directory of cgroup rel (a path from /proc/self/cgroup)
// in a hierarchy that shows cgroup root at mount point mnt, or "" if rel is
// not below root.
func mountedDir(mnt, root, rel string) string {
	r, ok := strings.CutPrefix(rel, strings.TrimSuffix(root, "/"))
	if !ok {
		return ""
	}
	return filepath.Join(mnt, r)
}

// findHierarchies reads the mounted cgroup hierarchies and Moat's place in
// each.
func findHierarchies() (hierarchies, error) {
	var h hierarchies
	own, err := os.ReadFile(procCgroupPath)
	if err != nil {
		return h, fmt.Errorf("cannot read %s: %w", procCgroupPath, err)
	}
	// "id:controllers:path"; v2 is "0::path".
	paths := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			paths["cgroup2"] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			paths[c] = parts[2]
		}
	}
	f, err := os.Open(mountInfoPath)
	if err != nil {
		return h, fmt.Errorf("cannot read %s: %w", mountInfoPath, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent dev root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		// The mount shows the hierarchy from root on: Moat's path is
		// relative to the hierarchy (or cgroup namespace) root.
		root, mnt := pf[3], unescapeMount(pf[4])
		dir := func(rel string) string { return mountedDir(mnt, root, rel) }
		switch qf[0] {
		case "cgroup2":
			if rel, ok := paths["cgroup2"]; ok && h.v2 == "" {
				h.v2, h.v2Mount, h.v2Root = dir(rel), mnt, root
			}
		case "cgroup":
			for _, opt := range strings.Split(qf[2], ",") {
				if rel, ok := paths[opt]; ok && opt == "memory" && h.v1Memory == "" {
					h.v1Memory = dir(rel)
				}
				if rel, ok := paths[opt]; ok && opt == "pids" && h.v1Pids == "" {
					h.v1Pids = dir(rel)
				}
			}
		}
	}
	return h, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// v2Base is the parent of every child's v2 cgroup, prepared once per Moat
// process (preparing it may move Moat itself).
var v2Base struct {
	once sync.Once
	dir  string
	err  error
}

func newCgroupV2(h hierarchies, leaf string, memory, pids uint64) (*cgroup, error) {
	v2Base.once.Do(func() {
		v2Base.dir, v2Base.err = prepareV2(h.v2)
		if v2Base.err == nil || os.Geteuid() == 0 || h.v2Mount == "" {
			return
		}
		// Moat's own cgroup will not do; the user's systemd can give it
		// one that will (root's cgroups are left alone).
		scope, err := moveToDelegatedScope(h)
		if err != nil {
			v2Base.err = fmt.Errorf("%w; %v", v2Base.err, err)
			return
		}
		v2Base.dir, v2Base.err = prepareV2(scope)
		if v2Base.err == nil {
			slog.Info("sandbox: moat moved into a delegated systemd scope, so that each stdio server gets its own cgroup", "scope", scope)
		}
	})
	if v2Base.err != nil {
		return nil, v2Base.err
	}
	sweepStale(v2Base.dir)
	dir := filepath.Join(v2Base.dir, leaf)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup v2: %w", err)
	}
	cg := &cgroup{version: 2, dirs: []string{dir}, procs: []string{filepath.Join(dir, "cgroup.procs")}}
	mem := strconv.FormatUint(memory, 10)
	pm := strconv.FormatUint(pids, 10)
	for _, w := range [][2]string{{"memory.max", mem}, {"pids.max", pm}} {
		if err := writeFile(filepath.Join(dir, w[0]), w[1]); err != nil {
			cg.remove()
			return nil, fmt.Errorf("cgroup v2: %w", err)
		}
	}
	// Without this the tree could push its memory out to swap instead of
	// meeting memory.max; absent when the kernel has no swap accounting.
	_ = writeFile(filepath.Join(dir, "memory.swap.max"), "0")
	cg.detail = fmt.Sprintf("cgroup v2 %s: memory.max=%s pids.max=%s", dir, mem, pm)
	return cg, nil
}

// prepareV2 returns <own>/moat-children with memory and pids enabled for
// its children, moving Moat into <own>/moat first when it must; or, when Moat
// already is in such a <parent>/moat, <parent>/moat-children.
func prepareV2(own string) (string, error) {
	ctrl, err := os.ReadFile(filepath.Join(own, "cgroup.controllers"))
	if err != nil {
		return "", fmt.Errorf("cgroup v2: %w", err)
	}
	if !hasControllers(string(ctrl)) {
		return "", fmt.Errorf("cgroup v2 %s has no memory+pids controllers (controllers: %q); delegate them, e.g. systemd-run --user -p Delegate=yes", own, strings.TrimSpace(string(ctrl)))
	}
	enable := func(dir string) error {
		sub, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		if err == nil && hasControllers(string(sub)) {
			return nil
		}
		return writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+memory +pids")
	}
	// Another moat already made this layout and this process started in
	// its leaf (a moat started by a moat, or a second one in the same
	// delegated cgroup): share its moat-children.
	if filepath.Base(own) == "moat" {
		sibling := filepath.Join(filepath.Dir(own), "moat-children")
		if sub, err := os.ReadFile(filepath.Join(sibling, "cgroup.subtree_control")); err == nil && hasControllers(string(sub)) {
			return sibling, nil
		}
	}
	if err := enable(own); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return "", fmt.Errorf("cgroup v2 %s: cannot enable memory+pids for its children: %w; delegate the cgroup to this user", own, err)
		}
		// "No internal processes": own holds processes. If Moat is the
		// only one, it moves into a leaf of its own.
		procs, _ := os.ReadFile(filepath.Join(own, "cgroup.procs"))
		if strings.TrimSpace(string(procs)) != strconv.Itoa(os.Getpid()) {
			return "", fmt.Errorf("cgroup v2 %s holds other processes besides moat, so it cannot give children their own cgroups; start moat in a cgroup of its own, e.g. systemd-run --user --scope -p Delegate=yes moat CONFIG", own)
		}
		self := filepath.Join(own, "moat")
		if err := os.Mkdir(self, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("cgroup v2: %w", err)
		}
		if err := writeFile(filepath.Join(self, "cgroup.procs"), strconv.Itoa(os.Getpid())); err != nil {
			return "", fmt.Errorf("cgroup v2: moving moat into %s: %w", self, err)
		}
		if err := enable(own); err != nil {
			return "", fmt.Errorf("cgroup v2 %s: cannot enable memory+pids for its children: %w", own, err)
		}
	}
	base := filepath.Join(own, "moat-children")
	if err := os.Mkdir(base, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("cgroup v2: %w", err)
	}
	if err := enable(base); err != nil {
		return "", fmt.Errorf("cgroup v2 %s: %w", base, err)
	}
	return base, nil
}

func hasControllers(list string) bool {
	f := strings.Fields(list)
	return slices.Contains(f, "memory") && slices.Contains(f, "pids")
}

func newCgroupV1(h hierarchies, leaf string, memory, pids uint64) (*cgroup, error) {
	cg := &cgroup{version: 1}
	mem := strconv.FormatUint(memory, 10)
	pm := strconv.FormatUint(pids, 10)
	for _, x := range []struct{ hier, file, value string }{
		{h.v1Memory, "memory.limit_in_bytes", mem},
		{h.v1Pids, "pids.max", pm},
	} {
		parent := filepath.Join(x.hier, "moat")
		if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			cg.remove()
			return nil, fmt.Errorf("cgroup v1: %w (needs root, or a %s writable by this user)", err, x.hier)
		}
		sweepStale(parent)
		dir := filepath.Join(parent, leaf)
		if err := os.Mkdir(dir, 0o755); err != nil {
			cg.remove()
			return nil, fmt.Errorf("cgroup v1: %w", err)
		}
		cg.dirs = append(cg.dirs, dir)
		cg.procs = append(cg.procs, filepath.Join(dir, "cgroup.procs"))
		if err := writeFile(filepath.Join(dir, x.file), x.value); err != nil {
			cg.remove()
			return nil, fmt.Errorf("cgroup v1: %w", err)
		}
	}
	cg.detail = fmt.Sprintf("cgroup v1 %s, %s: memory.limit_in_bytes=%s pids.max=%s", cg.dirs[0], cg.dirs[1], mem, pm)
	return cg, nil
}

// cgroupRemoveTries bounds how long remove waits for killed stragglers to
// leave the cgroup (the kernel takes them out asynchronously).
const cgroupRemoveTries = 2000

// remove kills whatever is still in the cgroup (nothing, normally: the
// launcher has reaped the whole tree) and removes its directories.
func (c *cgroup) remove() error {
	var errs []error
	for _, dir := range c.dirs {
		var err error
		for range cgroupRemoveTries {
			if err = unix.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			if !errors.Is(err, syscall.EBUSY) {
				break
			}
			if writeFile(filepath.Join(dir, "cgroup.kill"), "1") != nil {
				killProcs(filepath.Join(dir, "cgroup.procs"))
			}
			time.Sleep(time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

func killProcs(procsFile string) {
	b, err := os.ReadFile(procsFile)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// sweepStale removes the empty cgroups that a Moat process left behind when
// it and its launcher were both killed: names end in -<moat pid>-<n>, and
// that Moat no longer runs. rmdir refuses a cgroup that still has
// processes, so nothing live is touched.
func sweepStale(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		rest, _, ok := cutLast(e.Name(), "-")
		if !ok {
			continue
		}
		_, pidStr, ok := cutLast(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = unix.Rmdir(filepath.Join(parent, e.Name()))
		}
	}
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// joinCgroup moves pid into every cgroup.procs file. The launcher calls it
// while the target is stopped after exec.
func joinCgroup(pid int, procs []string) error {
	for _, p := range procs {
		if err := writeFile(p, strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, path, err)
	}
	return nil
}

// cgroupName makes a server name usable as one cgroup directory name.
func cgroupName(name string) string {
	s := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, name)
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" || s[0] == '.' {
		s = "_" + s
	}
	return s
}

// pidsMax is the pids.max for a child.
func pidsMax(l Limits) uint64 {
	if l.MaxProcs != 0 {
		return l.MaxProcs
	}
	return DefaultPidsMax
}

// cgroupStatus is Probe's cgroup line: it creates and removes one cgroup,
// the same way Start does. With cgroup v2 this may move the calling
// process into a leaf of its cgroup (see prepareV2).
func cgroupStatus() (bool, string) {
	cg, err := newCgroup("probe", DefaultMemory, DefaultPidsMax)
	if err != nil {
		return false, err.Error() + ": only rlimits apply (RLIMIT_NPROC is per user, not per server, and not applied to root)"
	}
	version := cg.version
	if err := cg.remove(); err != nil {
		return false, fmt.Sprintf("cgroup v%d: created a test cgroup but cannot remove it: %v", version, err)
	}
	return true, fmt.Sprintf("cgroup v%d per server: memory.max (= sandbox.memory) and pids.max (sandbox.max_procs, default %d)", version, DefaultPidsMax)
}
