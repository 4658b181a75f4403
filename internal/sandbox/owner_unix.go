//go:build unix

package sandbox

import (
	"os"
	"syscall"
)

func ownedBySelfOrRoot(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && (st.Uid == 0 || int(st.Uid) == os.Geteuid())
}
