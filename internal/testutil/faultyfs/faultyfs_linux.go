package faultyfs

import (
	"context"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Mount mounts, at dir, a FUSE filesystem that passes everything through
// to backing, failing as the returned Faults say; reads always work. It is
// unmounted when the test ends. It skips the test, loudly, where FUSE
// cannot be mounted (not root, no /dev/fuse).
func Mount(t testing.TB, dir, backing string) *Faults {
	t.Helper()
	fail := new(Faults)
	lb, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		t.Fatal(err)
	}
	root := &faultyNode{LoopbackNode: lb.(*fs.LoopbackNode), fail: fail}
	srv, err := fs.Mount(dir, root, &fs.Options{MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: "moat-faulty", Name: "faulty"}})
	if err != nil {
		t.Skipf("SKIPPED LOUDLY: cannot mount a FUSE filesystem at %s (needs root or a user namespace, and /dev/fuse): %v", dir, err)
	}
	t.Cleanup(func() {
		fail.Writes.Store(false)
		fail.Syncs.Store(false)
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmounting the faulty filesystem: %v", err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return fail
}

// faultyNode is a loopback node whose files fail as fail says.
type faultyNode struct {
	*fs.LoopbackNode
	fail *Faults
}

func (n *faultyNode) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &faultyNode{LoopbackNode: ops.(*fs.LoopbackNode), fail: n.fail}
}

func (n *faultyNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &faultyFile{inner: fh, fail: n.fail}, fl, 0
}

func (n *faultyNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return in, &faultyFile{inner: fh, fail: n.fail}, fl, 0
}

// faultyFile passes its operations to the loopback file, failing writes,
// syncs and size changes with EIO as fail says.
type faultyFile struct {
	inner fs.FileHandle
	fail  *Faults
}

func (f *faultyFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.inner.(fs.FileReader).Read(ctx, dest, off)
}

func (f *faultyFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if f.fail.write() {
		return 0, syscall.EIO
	}
	return f.inner.(fs.FileWriter).Write(ctx, data, off)
}

func (f *faultyFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if f.fail.sync() {
		return syscall.EIO
	}
	return f.inner.(fs.FileFsyncer).Fsync(ctx, flags)
}

func (f *faultyFile) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetSize(); ok && f.fail.write() {
		return syscall.EIO
	}
	return f.inner.(fs.FileSetattrer).Setattr(ctx, in, out)
}

func (f *faultyFile) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.inner.(fs.FileGetattrer).Getattr(ctx, out)
}

func (f *faultyFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.inner.(fs.FileLseeker).Lseek(ctx, off, whence)
}

func (f *faultyFile) Flush(ctx context.Context) syscall.Errno {
	return f.inner.(fs.FileFlusher).Flush(ctx)
}

func (f *faultyFile) Release(ctx context.Context) syscall.Errno {
	return f.inner.(fs.FileReleaser).Release(ctx)
}
