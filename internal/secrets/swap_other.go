//go:build unix && !linux

package secrets

// swapDirs puts newDir in dir's place and leaves the old store at newDir.
func swapDirs(newDir, dir string) error { return swapDirsFallback(newDir, dir) }
