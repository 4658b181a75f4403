// Package safepath decides whether a file Moat trusts could be changed by
// another user: the config (whoever writes it runs commands as the user),
// the managed policy, and Moat's own state (secret store, pin store, audit
// log directory). It checks the file and every directory the system looks a
// name up in to reach it, following symbolic links as the kernel does, the
// way OpenSSH checks authorized_keys (safe_path in its misc.c) and sudo its
// sudoers files.
//
// A directory on the way is acceptable when it is owned by the user or root
// and no one else can write it. Two exceptions, each safe for a reason:
//
//   - A sticky directory that others can write (/tmp) is acceptable when the
//     entry Moat looks up in it is owned by the user or root: the sticky bit
//     stops other users from renaming or deleting that entry.
//   - A group-writable directory or file whose group is the user's private
//     group (the user is its one member, as primary group and in the member
//     list; the umask 002 setup of Debian, Ubuntu and Fedora) is acceptable:
//     no other user is in that group. Membership is read from /etc/passwd and
//     /etc/group; a group that is not there, or any other member, refuses.
//
// Every refusal is an *Error naming the offending file or directory and the
// command that fixes it. Callers MUST check the file they open with
// [CheckInfo] too (after [Check] on its path): Check proves nobody else can
// swap the path, CheckInfo proves the opened file is the one allowed.
package safepath

import (
	"fmt"
)

// Kind says what the file must be.
type Kind int

const (
	// Trusted is a file (or directory) only the user and root can change;
	// others may read it: the config and the managed policy.
	Trusted Kind = iota
	// Private is the user's alone: owned by the user, no access at all for
	// group or others (0600 files, 0700 directories): secrets, pins, audit.
	Private
)

// An Error says which file or directory lets another user change Target,
// and the command that fixes it.
type Error struct {
	Target string // the file that was checked
	Path   string // the file or directory at fault (may be Target)
	Reason string // what is wrong with Path, e.g. "is writable by other users (mode 0777)"
	Fix    string // a shell command, e.g. "chmod go-w /srv/shared"
}

func (e *Error) Error() string {
	return e.Msg() + "; fix: " + e.Fix
}

// Msg is the error without the fix, for callers that print the fix as a
// hint of its own.
func (e *Error) Msg() string {
	if e.Path == e.Target {
		return fmt.Sprintf("%s %s", e.Path, e.Reason)
	}
	return fmt.Sprintf("directory %s %s, so another user could replace %s", e.Path, e.Reason, e.Target)
}
