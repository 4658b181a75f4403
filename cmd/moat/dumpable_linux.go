package main

import "golang.org/x/sys/unix"

// nonDumpable keeps other processes of this user from reading moat's memory
// or environ through /proc or ptrace; children are not affected (execve
// resets it).
func nonDumpable() error {
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}
