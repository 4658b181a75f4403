package testutil

import "syscall"

// GroupAttr puts a helper process in its own process group, killed with the
// test binary even when that is killed with SIGKILL.
func GroupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
