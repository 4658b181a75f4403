//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// specMain writes the per-run archive: /spec.json built from its flags and
// the program's argv after them, so that vm-run.sh never quotes JSON itself.
func specMain(args []string) error {
	fl := flag.NewFlagSet("spec", flag.ContinueOnError)
	out := fl.String("o", "", "output archive (uncompressed cpio)")
	var sp spec
	fl.IntVar(&sp.UID, "uid", 0, "user to run the program as")
	fl.StringVar(&sp.Dir, "dir", "", "working directory")
	var env, copies listFlag
	fl.Var(&env, "env", "KEY=VALUE in the program's environment (repeatable)")
	fl.Var(&copies, "copy", "host path under /tmp to copy into the VM (repeatable)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" || fl.NArg() == 0 {
		return errors.New("usage: vminit spec -o OUT [flags] PROGRAM [ARGS...]")
	}
	sp.Argv, sp.Env, sp.Copy = fl.Args(), env, copies
	data, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	return writeArchive(*out, []cpioEntry{{name: "spec.json", mode: 0o100644, data: data}})
}

// kvmOK succeeds when /dev/kvm can create a virtual machine: the device can
// exist where nested virtualization is off, and then qemu -enable-kvm fails.
func kvmOK([]string) error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const kvmGetAPIVersion, kvmCreateVM = 0xAE00, 0xAE01
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 || v != 12 {
		return fmt.Errorf("KVM_GET_API_VERSION: %d, %v", v, errno)
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("KVM_CREATE_VM: %v", errno)
	}
	return unix.Close(int(vm))
}
