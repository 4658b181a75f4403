//go:build unix && !linux

package audit

import (
	"io/fs"
	"os"
)

func fdatasync(f *os.File) error { return f.Sync() }

// renameNoReplace renames old to new, failing if new exists: a rotated file
// is never replaced, even when the clock repeats or steps back. The check
// and the rename are two steps here; writers that take the lock do not race.
func renameNoReplace(old, new string) error {
	if _, err := os.Lstat(new); err == nil {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: fs.ErrExist}
	}
	return os.Rename(old, new)
}
