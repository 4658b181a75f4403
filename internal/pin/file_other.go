//go:build !unix

package pin

import (
	"fmt"
	"io/fs"
)

func checkPrivate(path string, _ fs.FileMode, _ string) error {
	return fmt.Errorf("pin: cannot check who may access %s on this system; the pin store is supported on Unix only", path)
}

func checkPrivateInfo(path string, _ fs.FileInfo, _ fs.FileMode, _ string) error {
	return checkPrivate(path, 0, "")
}

func lockFile(string) (func(), error) { return func() {}, nil }
