//go:build linux

// Command vminit is both halves of the test VM that scripts/vm-run.sh boots.
//
// As PID 1 inside the VM it is the init: it loads the 9p modules, mounts the
// host's root filesystem read-only, mounts a fresh proc, sysfs, devtmpfs, a
// tmpfs on /tmp and /run, and cgroup2 as the only cgroup hierarchy, runs the
// program described in /spec.json in its own cgroup (as root, or as a user in
// a delegated subtree the way systemd's Delegate=yes makes one), prints
// "VM-EXIT-STATUS=<n>" on the console and powers off.
//
// On the host, "vminit pack" writes the initramfs (cpio newc) that holds it:
//
//	vminit pack -o initramfs.cpio.gz -init vminit -modules /lib/modules/VER -module 9p -module 9pnet_virtio
//
// "vminit spec" writes the small per-run archive holding /spec.json, appended
// to the cached initramfs; "vminit kvm-ok" reports (by its exit status)
// whether this machine can create a KVM virtual machine.
package main

import (
	"fmt"
	"os"
)

// spec is what vm-run.sh asks the init to run, passed as /spec.json in the
// initramfs.
type spec struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"` // working directory; /tmp when it cannot be entered
	UID  int      `json:"uid"` // 0: root in /sys/fs/cgroup/test; else a delegated cgroup
	// Copy lists host paths under /tmp (files or directories) copied into
	// the guest's /tmp at the same path, since the guest's /tmp is a fresh
	// tmpfs that hides the host's.
	Copy []string `json:"copy"`
}

func main() {
	if os.Getpid() == 1 {
		initMain()
		return
	}
	commands := map[string]func([]string) error{"pack": packMain, "spec": specMain, "kvm-ok": kvmOK}
	if len(os.Args) > 1 && commands[os.Args[1]] != nil {
		if err := commands[os.Args[1]](os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "vminit %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintln(os.Stderr, "vminit: run as PID 1 inside the VM, or on the host as `vminit pack|spec|kvm-ok ...` (see scripts/vm-run.sh)")
	os.Exit(2)
}
