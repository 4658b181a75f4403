//go:build unix

package config

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// unsafeFile reports a config file that someone other than the current
// user (or root) could change: whoever can write the config can make Moat
// run any command as this user.
func unsafeFile(path string, fi os.FileInfo) *Problem {
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		who := "other users"
		if perm&0o002 == 0 {
			who = "its group"
		}
		return &Problem{
			Msg:  fmt.Sprintf("the file is writable by %s (mode %04o), and whoever can edit it can run commands as you", who, perm),
			Hint: "fix it with: chmod go-w " + path,
		}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	uid := os.Getuid()
	if int(st.Uid) == uid || st.Uid == 0 {
		return nil
	}
	owner := strconv.FormatUint(uint64(st.Uid), 10)
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	me := strconv.Itoa(uid)
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	return &Problem{
		Msg:  fmt.Sprintf("the file is owned by %s, not by you or root, and its owner can make moat run commands as you", owner),
		Hint: fmt.Sprintf("if you trust its content, take it over with: sudo chown %s %s", me, path),
	}
}
