//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// statusVMFailure is the exit status reported when the init itself fails
// before or while starting the program; vm-run.sh uses it for VM failures too.
const statusVMFailure = 125

// delegated is the cgroup a non-root program runs in, made the way systemd
// makes a Delegate=yes unit's cgroup.
const delegated = "/sys/fs/cgroup/user.slice/deleg"

func initMain() {
	status, err := runInit()
	if err != nil {
		fmt.Fprintf(os.Stdout, "\nvminit: %v\n", err)
		status = statusVMFailure
	}
	fmt.Fprintf(os.Stdout, "VM-EXIT-STATUS=%d\n", status)
	unix.Sync()
	// Returning from PID 1 would panic the kernel, which vm-run.sh reports
	// as a VM failure: the right outcome if even power-off fails.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintf(os.Stdout, "vminit: power off: %v\n", err)
	}
}

func runInit() (int, error) {
	// vm-run.sh hides the console's BIOS and kernel lines before this one
	// (it shows them when this line never comes).
	fmt.Fprintln(os.Stdout, "VM-INIT-STARTED")
	// The console is a serial tty: without this, every "\n" the program
	// writes would reach the host as "\r\n".
	if t, err := unix.IoctlGetTermios(1, unix.TCGETS); err == nil {
		t.Oflag &^= unix.OPOST
		_ = unix.IoctlSetTermios(1, unix.TCSETS, t)
	}
	raw, err := os.ReadFile("/spec.json")
	if err != nil {
		return 0, fmt.Errorf("read the run spec: %w", err)
	}
	var sp spec
	if err := json.Unmarshal(raw, &sp); err != nil {
		return 0, fmt.Errorf("parse the run spec: %w", err)
	}
	if len(sp.Argv) == 0 {
		return 0, errors.New("the run spec has no program")
	}
	if err := loadModules("/modules"); err != nil {
		return 0, err
	}
	if err := setupRoot(sp.Copy); err != nil {
		return 0, err
	}
	cgroup, err := setupCgroups(sp.UID)
	if err != nil {
		return 0, err
	}
	return runProgram(sp, cgroup)
}

// loadModules loads the modules listed, dependencies first, in order.
func loadModules(dir string) error {
	order, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		return fmt.Errorf("read module list: %w", err)
	}
	for _, name := range strings.Fields(string(order)) {
		f, err := os.Open(filepath.Join(dir, name+".ko"))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("load module %s: %w", name, err)
		}
	}
	return nil
}

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func mountAll(ms []mountSpec) error {
	for _, m := range ms {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// setupRoot makes the host's root filesystem (read-only, over 9p) the root,
// with fresh kernel filesystems and a writable /tmp holding copies of the
// host paths the program needs from the host's /tmp.
func setupRoot(copies []string) error {
	const nosuid = unix.MS_NOSUID | unix.MS_NODEV
	err := mountAll([]mountSpec{
		{"hostroot", "/newroot", "9p", unix.MS_RDONLY, "trans=virtio,version=9p2000.L,msize=524288,cache=loose"},
		{"/newroot/tmp", "/hosttmp", "", unix.MS_BIND, ""},
		{"tmpfs", "/newroot/tmp", "tmpfs", nosuid, "mode=1777"},
	})
	if err != nil {
		return err
	}
	for _, p := range copies {
		rel, ok := strings.CutPrefix(filepath.Clean(p), "/tmp/")
		if !ok {
			return fmt.Errorf("copy %s: only paths under /tmp are copied (the rest of the host is visible as it is)", p)
		}
		if err := copyTree(filepath.Join("/hosttmp", rel), filepath.Join("/newroot/tmp", rel)); err != nil {
			return fmt.Errorf("copy %s into the VM's /tmp: %w", p, err)
		}
	}
	if err := unix.Unmount("/hosttmp", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the host's /tmp: %w", err)
	}
	// switch_root: the initramfs cannot be pivoted away, so move the new
	// root over it and chroot into it.
	if err := os.Chdir("/newroot"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the host root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return mountAll([]mountSpec{
		{"proc", "/proc", "proc", nosuid | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", nosuid | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"},
		{"tmpfs", "/dev/shm", "tmpfs", nosuid, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", nosuid, "mode=0755"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid | unix.MS_NOEXEC, "nsdelegate,memory_recursiveprot"},
	})
}

// copyTree copies a file, symlink or directory tree, keeping permission bits.
func copyTree(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(p, target, info.Mode().Perm())
		}
		return nil // sockets, fifos and devices are not worth carrying over
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// setupCgroups enables every controller the kernel has in the root's
// subtree, and makes the cgroup the program starts in: /sys/fs/cgroup/test
// for root, or a delegated cgroup owned by uid, with every controller
// enabled in each ancestor and the same files chowned as systemd chowns for
// Delegate=yes. The cgroup is left empty with no controllers of its own
// enabled, so the program may create children and enable them itself.
func setupCgroups(uid int) (string, error) {
	raw, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil {
		return "", err
	}
	controllers := strings.Fields(string(raw))
	for _, want := range []string{"memory", "pids"} {
		if !slices.Contains(controllers, want) {
			return "", fmt.Errorf("the kernel has no %s cgroup controller (has %q)", want, controllers)
		}
	}
	enable := func(dir string) error {
		for _, c := range controllers {
			err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0)
			if err != nil && (c == "memory" || c == "pids") {
				return fmt.Errorf("enable the %s controller in %s: %w", c, dir, err)
			}
		}
		return nil
	}
	if err := enable("/sys/fs/cgroup"); err != nil {
		return "", err
	}
	if uid == 0 {
		dir := "/sys/fs/cgroup/test"
		return dir, os.Mkdir(dir, 0o755)
	}
	parent := filepath.Dir(delegated)
	if err := os.Mkdir(parent, 0o755); err != nil {
		return "", err
	}
	if err := enable(parent); err != nil {
		return "", err
	}
	if err := os.Mkdir(delegated, 0o755); err != nil {
		return "", err
	}
	for _, name := range []string{"", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"} {
		if err := os.Chown(filepath.Join(delegated, name), uid, uid); err != nil {
			return "", fmt.Errorf("delegate %s to uid %d: %w", delegated, uid, err)
		}
	}
	return delegated, nil
}

// runProgram starts the program inside cgroup (born there through clone3,
// so that init never enters it and it stays a leaf the program owns alone),
// copies its output to the console, and reaps every process until it exits.
func runProgram(sp spec, cgroup string) (int, error) {
	cg, err := os.Open(cgroup)
	if err != nil {
		return 0, err
	}
	defer cg.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	// A pipe rather than the console itself: the program sees what a test
	// harness gives it (not a tty), and init knows how the output ended.
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	sys := &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if sp.UID != 0 {
		id := uint32(sp.UID)
		sys.Credential = &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}}
	}
	dir := sp.Dir
	if dir == "" || !canEnter(dir, sp.UID) {
		dir = "/tmp"
	}
	proc, err := os.StartProcess(sp.Argv[0], sp.Argv, &os.ProcAttr{
		Dir:   dir,
		Env:   sp.Env,
		Files: []*os.File{devnull, w, w},
		Sys:   sys,
	})
	w.Close()
	if err != nil {
		r.Close()
		return 0, fmt.Errorf("start %s: %w", sp.Argv[0], err)
	}
	done := make(chan byte)
	go func() {
		last := byte('\n')
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				os.Stdout.Write(buf[:n])
				last = buf[n-1]
			}
			if err != nil {
				break
			}
		}
		done <- last
	}()
	status := reap(proc.Pid)
	// Processes the program left behind may hold the pipe open: give them a
	// moment to flush, then stop reading.
	r.SetReadDeadline(time.Now().Add(2 * time.Second))
	if last := <-done; last != '\n' {
		os.Stdout.WriteString("\n")
	}
	r.Close()
	return status, nil
}

// reap waits for every child (PID 1 inherits orphans) until pid exits, and
// returns its exit status the way a shell reports it.
func reap(pid int) int {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return statusVMFailure
		}
		if got != pid {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// canEnter reports whether uid (with gid = uid and no other groups) may
// search every directory on the way to dir, so that the program starts in
// the caller's directory when it can and in /tmp otherwise.
func canEnter(dir string, uid int) bool {
	p := "/"
	for _, part := range append([]string{""}, strings.Split(strings.Trim(dir, "/"), "/")...) {
		p = filepath.Join(p, part)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return false
		}
		if uid == 0 {
			continue
		}
		bit := uint32(0o001)
		switch {
		case int(st.Uid) == uid:
			bit = 0o100
		case int(st.Gid) == uid:
			bit = 0o010
		}
		if st.Mode&bit == 0 {
			return false
		}
	}
	return true
}
