//go:build !linux

package faultyfs

import "testing"

// Mount skips the test: the faulty filesystem is built on Linux's FUSE.
func Mount(t testing.TB, dir, backing string) *Faults {
	t.Skip("SKIPPED LOUDLY: the faulty filesystem needs Linux")
	return nil
}
