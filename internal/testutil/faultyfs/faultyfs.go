// Package faultyfs gives tests a real filesystem that fails on demand: a
// FUSE passthrough whose writes, syncs and truncations return EIO while a
// test says so, as a dying disk does. Faults of a real filesystem reach the
// code under test through its own system calls, which no mock of os.File
// can show (a write that fails, a sync that fails after writes succeeded).
package faultyfs

import "sync/atomic"

// Faults are switched on and off by the test while the filesystem is used.
type Faults struct {
	Writes atomic.Bool // write, fsync and truncate fail with EIO
	Syncs  atomic.Bool // fsync fails with EIO (writes succeed)
}

func (f *Faults) write() bool { return f.Writes.Load() }
func (f *Faults) sync() bool  { return f.Writes.Load() || f.Syncs.Load() }
