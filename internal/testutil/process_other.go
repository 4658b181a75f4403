//go:build unix && !linux

package testutil

import "syscall"

// GroupAttr puts a helper process in its own process group (no Pdeathsig
// outside Linux: the test's cleanup stops the group).
func GroupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
