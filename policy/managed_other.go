//go:build !unix

package policy

import (
	"fmt"
	"io/fs"
)

// safeFile cannot check ownership here, so a managed policy is refused
// rather than trusted unchecked.
func safeFile(path string, _ fs.FileInfo) error {
	return fmt.Errorf("policy: cannot check who may write %s on this system; managed policy files are supported on Unix only", path)
}
