package pin

import (
	"fmt"
	"io/fs"

	"github.com/moatmcp/moat/internal/safepath"
)

// checkPrivate refuses a pin store file or directory that is not the
// user's alone, or that sits below a directory another user could change.
func checkPrivate(path string) error {
	if !safepath.Supported {
		return fmt.Errorf("pin: cannot check who may access %s on this system; the pin store is supported on Unix only", path)
	}
	return refused(safepath.Check(path, safepath.Private))
}

// checkPrivateInfo is checkPrivate for the file just opened.
func checkPrivateInfo(path string, fi fs.FileInfo) error {
	if !safepath.Supported {
		return checkPrivate(path)
	}
	return refused(safepath.CheckInfo(path, fi, safepath.Private))
}

func refused(err error) error {
	if err == nil {
		return nil
	}
	if se, ok := err.(*safepath.Error); ok {
		return fmt.Errorf("pin: %s, so other users could read or change tool approvals; Moat refuses it. Fix: %s", se.Msg(), se.Fix)
	}
	return fmt.Errorf("pin: %w", err)
}
