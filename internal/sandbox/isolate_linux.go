package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// spaces are the namespaces a launcher is created in; they cannot be added
// after the fact.
type spaces struct {
	isolated bool  // user, PID, mount and IPC namespaces of its own
	net      bool  // a network namespace with only loopback
	runAs    runAs // also mapped in the user namespace when not zero (Moat is root)
}

// sysProcAttr returns the attributes that create a launcher in sp. The
// launcher keeps the caller's uid and gid (mapped to themselves, so a server
// sees its usual uid and owns its usual files) and gets, through ambient
// capabilities, exactly what it needs inside its new user namespace to set
// up the target's view: mounts, bringing loopback up, and dropping every
// capability before the target starts.
func (sp spaces) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if !sp.isolated && !sp.net {
		return attr
	}
	attr.Cloneflags = syscall.CLONE_NEWUSER
	if sp.isolated {
		attr.Cloneflags |= syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC
	}
	if sp.net {
		attr.Cloneflags |= syscall.CLONE_NEWNET
	}
	uid, gid := os.Getuid(), os.Getgid()
	attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
	attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	if sp.runAs != (runAs{}) {
		// Root maps the target's ids too, and lets the launcher drop the
		// supplementary groups it would otherwise pass on.
		if u := int(sp.runAs.Uid); u != uid {
			attr.UidMappings = append(attr.UidMappings, syscall.SysProcIDMap{ContainerID: u, HostID: u, Size: 1})
		}
		if g := int(sp.runAs.Gid); g != gid {
			attr.GidMappings = append(attr.GidMappings, syscall.SysProcIDMap{ContainerID: g, HostID: g, Size: 1})
		}
		attr.GidMappingsEnableSetgroups = true
	}
	attr.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SETPCAP}
	return attr
}

// privateRoot is the directory under which the private working directories
// of the servers of every Moat of this user are made. An isolated server
// sees only its own there: the launcher covers the rest.
var privateRoot = sync.OnceValue(func() string {
	dir := filepath.Join(os.TempDir(), "moat-"+strconv.Itoa(os.Getuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return ""
	}
	// Another user may have made it first, in a shared /tmp: use it only
	// if it is ours, a real directory, and closed to everyone else.
	if fi, err := os.Lstat(dir); err != nil || !privateDir(fi) {
		if dir, err = os.MkdirTemp("", "moat-servers-"); err != nil {
			return ""
		}
	}
	return dir
})

func privateDir(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.IsDir() && fi.Mode().Perm()&0o077 == 0 && int(st.Uid) == os.Geteuid()
}

// nsStatus is what Namespaces found, once per process.
var nsStatus = sync.OnceValues(probeNamespaces)

// Namespaces reports whether this machine lets Moat give a server its own
// user, PID, mount and IPC namespaces with a /proc of its own, and if not,
// why and what would allow it. It starts one launcher the first time and
// remembers the answer.
func Namespaces() (bool, string) {
	return nsStatus()
}

func probeNamespaces() (bool, string) {
	path, err := launcherPath()
	if err != nil {
		return false, err.Error()
	}
	l, err := startLauncher(path, spaces{isolated: true})
	if err != nil {
		// The launcher's path says nothing to the user; the errno does.
		var errno syscall.Errno
		if errors.As(err, &errno) {
			err = errno
		}
		return false, explainNS("creating user, PID and mount namespaces: " + err.Error())
	}
	defer l.discard()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	st, err := l.exchange(ctx, &launchConfig{Name: "probe", Isolated: true, Probe: true})
	if err != nil {
		return false, "starting a launcher in new namespaces: " + err.Error()
	}
	if st.Error != "" {
		return false, explainNS(st.Error)
	}
	return true, "user, PID, mount and IPC namespaces per server"
}

// exchange sends cfg to a launcher and returns its first status after Ready.
func (l *launcherProc) exchange(ctx context.Context, cfg *launchConfig) (launchStatus, error) {
	if err := json.NewEncoder(l.control).Encode(cfg); err != nil {
		return launchStatus{}, err
	}
	got := make(chan error, 1)
	var st launchStatus
	go func() {
		for {
			var err error
			if st, err = l.next(); err != nil || !st.Ready {
				got <- err
				return
			}
		}
	}()
	select {
	case err := <-got:
		return st, err
	case <-ctx.Done():
		l.discard()
		<-got
		return launchStatus{}, ctx.Err()
	}
}

// explainNS puts first the setting that stops user namespaces on this
// machine, if one does, then what failed: the fix must survive a cut.
func explainNS(failed string) string {
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	hint := ""
	switch {
	case read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
		hint = "AppArmor restricts unprivileged user namespaces here (Ubuntu 23.10 and later): " +
			"allow them for moat with an AppArmor profile that has the \"userns\" permission (see SECURITY.md), " +
			"or set sysctl kernel.apparmor_restrict_unprivileged_userns=0"
	case read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
		hint = "this kernel forbids unprivileged user namespaces: set sysctl kernel.unprivileged_userns_clone=1"
	case read("/proc/sys/user/max_user_namespaces") == "0":
		hint = "user namespaces are disabled: set sysctl user.max_user_namespaces to a positive number"
	case os.Getenv("container") != "" || fileExists("/.dockerenv"):
		hint = "in a container, the runtime's seccomp profile or a masked /proc may forbid them (Docker: --security-opt seccomp=unconfined, or run moat outside)"
	}
	if hint == "" {
		return failed
	}
	return hint + " (" + failed + ")"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// hideList is what a child is to have covered: hide without duplicates,
// without what is below another entry, and without any path that is or holds
// one of need (its working directory, the paths its environment names):
// covering those would break the server, so they are returned as kept.
func hideList(hide, need []string) (out, kept []string) {
	list := slices.Clone(hide)
	for i, p := range list {
		list[i] = filepath.Clean(p)
	}
	slices.Sort(list)
	list = slices.Compact(list)
	for _, p := range list {
		if !filepath.IsAbs(p) {
			continue
		}
		if slices.ContainsFunc(need, func(n string) bool { return within(n, p) }) {
			kept = append(kept, p)
			continue
		}
		if slices.ContainsFunc(out, func(q string) bool { return within(p, q) }) {
			continue
		}
		out = append(out, p)
	}
	return out, kept
}

// envPaths are the absolute paths named by the values of env (KEY=VALUE),
// lists such as PATH split at colons.
func envPaths(env []string) []string {
	var out []string
	for _, kv := range env {
		_, v, _ := strings.Cut(kv, "=")
		for _, p := range strings.Split(v, ":") {
			if filepath.IsAbs(p) {
				out = append(out, filepath.Clean(p))
			}
		}
	}
	return out
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// setupView runs in the launcher, in its new mount namespace, before
// Landlock (which forbids mounting): it gives the target a /proc that shows
// only its own PID namespace, covers what it must not see, and a private
// /dev/shm. It returns the report's detail.
func setupView(cfg *launchConfig) (string, error) {
	// Nothing done here may reach the parent's mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("making the mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("mounting a /proc of its own: %w", err)
	}
	var hidden []string
	if cfg.PrivateRoot != "" {
		if err := coverPrivateRoot(cfg.PrivateRoot, cfg.Dir); err != nil {
			return "", err
		}
		hidden = append(hidden, cfg.PrivateRoot)
	}
	var missing []string
	for _, p := range cfg.Hide {
		err := cover(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			missing = append(missing, p)
		case err != nil:
			return "", fmt.Errorf("hiding %s: %w", p, err)
		default:
			hidden = append(hidden, p)
		}
	}
	if fileExists("/dev/shm") {
		if err := unix.Mount("tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777"); err != nil {
			return "", fmt.Errorf("mounting a /dev/shm of its own: %w", err)
		}
	}
	d := "own user, PID, mount and IPC namespaces: /proc shows only this server's processes; hidden: " + strings.Join(hidden, ", ")
	if len(missing) > 0 {
		d += "; not there to hide: " + strings.Join(missing, ", ")
	}
	return d, nil
}

// coverOpts are the flags of the empty, read-only filesystem put over a
// hidden directory.
const coverOpts = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// cover puts an empty read-only directory over p, or /dev/null over a file.
func cover(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	}
	return unix.Mount("tmpfs", p, "tmpfs", coverOpts|unix.MS_RDONLY, "size=4k,nr_inodes=4,mode=0555")
}

// coverPrivateRoot covers root and, when dir (the target's working
// directory) is one of the private directories in it, puts that one back at
// its place.
func coverPrivateRoot(root, dir string) error {
	own := -1
	if filepath.Dir(dir) == root {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening the working directory %s: %w", dir, err)
		}
		defer unix.Close(fd)
		own = fd
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", coverOpts, "size=4k,nr_inodes=8,mode=0700"); err != nil {
		return fmt.Errorf("hiding the other servers' directories in %s: %w", root, err)
	}
	if own >= 0 {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("restoring the working directory %s: %w", dir, err)
		}
		if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(own), dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("restoring the working directory %s: %w", dir, err)
		}
	}
	return unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY|coverOpts, "")
}

// dropCapabilities empties the bounding, ambient and inheritable sets, so
// that the target, whatever its uid in the namespace, gets no capability at
// execve: with one, it could uncover what setupView hid.
func dropCapabilities() error {
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("dropping capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clearing the ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading the capabilities: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clearing the inheritable capabilities: %w", err)
	}
	return nil
}

// outerPid finds, as Moat sees it, the pid of the launcher's child whose pid
// in the launcher's PID namespace is inner; 0 if it is gone already (the pid
// is only for logs and the audit log).
func outerPid(launcher, inner int) int {
	var children []string
	dir := "/proc/" + strconv.Itoa(launcher) + "/task/"
	tasks, _ := os.ReadDir(dir)
	for _, t := range tasks {
		b, _ := os.ReadFile(dir + t.Name() + "/children")
		children = append(children, strings.Fields(string(b))...)
	}
	for _, f := range children {
		if pid, _ := strconv.Atoi(f); pid > 0 && lastNSpid(pid) == inner {
			return pid
		}
	}
	return 0
}

// lastNSpid is pid's pid in its innermost PID namespace, or 0.
func lastNSpid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[len(f)-1])
				return n
			}
		}
	}
	return 0
}
