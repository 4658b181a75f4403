//go:build unix

package policy

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// safeFile refuses a file or directory that another user could change:
// writable by group or others (a sticky directory is not enough for a
// policy), or owned by neither root nor the current user.
func safeFile(path string, fi fs.FileInfo) error {
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("policy: %s is writable by group or others (mode %v), so another user could loosen the policy; Moat refuses it. Fix: chmod go-w %s", path, fi.Mode().Perm(), path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("policy: cannot read the owner of %s; Moat refuses it", path)
	}
	if uid := os.Getuid(); st.Uid != 0 && int(st.Uid) != uid {
		return fmt.Errorf("policy: %s is owned by uid %d, neither root nor you (uid %d), so that user could change the policy; Moat refuses it. Fix: sudo chown root %s", path, st.Uid, uid, path)
	}
	return nil
}
