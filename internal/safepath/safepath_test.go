//go:build unix

package safepath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree makes dir/sub/file.json (0600 file, 0700 dirs) under a fresh temp dir
// and returns the sub directory and the file.
func tree(t *testing.T) (sub, file string) {
	t.Helper()
	sub = filepath.Join(t.TempDir(), "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(sub, "file.json")
	if err := os.WriteFile(file, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sub, file
}

func chmod(t *testing.T, p string, m fs.FileMode) {
	t.Helper()
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

// wantRefusal checks err is an *Error naming path and giving fix.
func wantRefusal(t *testing.T, what string, err error, path, fix string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: Check = %v, want a refusal (*Error) naming %s", what, err, path)
	}
	if e.Path != path || !strings.Contains(e.Fix, fix) || !strings.Contains(err.Error(), path) {
		t.Errorf("%s: refusal %q (path %s, fix %q), want it to name %s and give the fix %q", what, err, e.Path, e.Fix, path, fix)
	}
}

func TestSafeTreeIsAccepted(t *testing.T) {
	sub, file := tree(t)
	for _, k := range []Kind{Trusted, Private} {
		if err := Check(file, k); err != nil {
			t.Errorf("Check(0600 file in 0700 dirs, kind %d) = %v, want nil", k, err)
		}
		if err := Check(sub, k); err != nil {
			t.Errorf("Check(0700 dir, kind %d) = %v, want nil", k, err)
		}
	}
	chmod(t, file, 0o644)
	chmod(t, sub, 0o755)
	if err := Check(file, Trusted); err != nil {
		t.Errorf("a 0644 file in a 0755 dir is refused as Trusted: %v", err)
	}
	if err := Check(filepath.Join(sub, "..", "sub", ".", "file.json"), Trusted); err != nil {
		t.Errorf("a path with . and .. is refused: %v", err)
	}
}

func TestMissingWrapsNotExist(t *testing.T) {
	sub, _ := tree(t)
	if err := Check(filepath.Join(sub, "absent.json"), Trusted); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check(missing) = %v, want an error wrapping fs.ErrNotExist", err)
	}
}

func TestWritableDirectoryOnThePathIsRefused(t *testing.T) {
	sub, file := tree(t)
	chmod(t, sub, 0o777)
	wantRefusal(t, "0777 directory", Check(file, Trusted), sub, "chmod go-w "+sub)
	wantRefusal(t, "0777 directory, Private", Check(file, Private), sub, "chmod go-w "+sub)

	// The parent of the parent counts as much.
	top := filepath.Dir(sub)
	chmod(t, sub, 0o700)
	chmod(t, top, 0o757)
	wantRefusal(t, "0757 grandparent", Check(file, Trusted), top, "chmod go-w "+top)
	chmod(t, top, 0o700)
}

func TestStickyDirectoryAcceptsOwnEntriesOnly(t *testing.T) {
	sub, file := tree(t)
	chmod(t, sub, 0o777|fs.ModeSticky)
	if err := Check(file, Trusted); err != nil {
		t.Errorf("your own file in a sticky 1777 directory (like /tmp) is refused: %v", err)
	}
	t.Run("entry of another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("giving a file to another user (uid 65534) needs root")
		}
		if err := os.Lchown(file, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, "file of uid 65534 in a sticky dir", Check(file, Trusted), file, "mv "+file)
	})
}

func TestGroupWritableNeedsAPrivateGroup(t *testing.T) {
	sub, file := tree(t)
	me, gid := os.Geteuid(), os.Getegid()
	setGroups := func(passwd, group string) {
		d := t.TempDir()
		passwdFile, groupFile = filepath.Join(d, "passwd"), filepath.Join(d, "group")
		for p, s := range map[string]string{passwdFile: passwd, groupFile: group} {
			if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { passwdFile, groupFile = "/etc/passwd", "/etc/group" })
	chmod(t, sub, 0o770)
	chmod(t, file, 0o660)

	setGroups(fmt.Sprintf("me:x:%d:%d::/h:/bin/sh\n", me, gid), fmt.Sprintf("me:x:%d:\n", gid))
	if err := Check(file, Trusted); err != nil {
		t.Errorf("group-writable dir and file of your private group (you its only member) are refused: %v", err)
	}
	if err := Check(file, Private); err == nil {
		t.Error("a 0660 file passes as Private; Private allows no group access at all")
	}

	setGroups(fmt.Sprintf("me:x:%d:%d::/h:/bin/sh\nother:x:%d:%d::/h:/bin/sh\n", me, gid, me+4242, gid), fmt.Sprintf("me:x:%d:\n", gid))
	wantRefusal(t, "group shared as primary group", Check(file, Trusted), sub, "chmod go-w "+sub)

	setGroups(fmt.Sprintf("me:x:%d:%d::/h:/bin/sh\n", me, gid), fmt.Sprintf("me:x:%d:me,other\n", gid))
	wantRefusal(t, "group with another listed member", Check(file, Trusted), sub, "chmod go-w "+sub)

	setGroups(fmt.Sprintf("me:x:%d:%d::/h:/bin/sh\n", me, gid), "")
	wantRefusal(t, "group not in /etc/group", Check(file, Trusted), sub, "chmod go-w "+sub)

	setGroups(fmt.Sprintf("me:x:%d:%d::/h:/bin/sh\n", me, gid), fmt.Sprintf("me:x:%d:\n", gid))
	chmod(t, sub, 0o700)
	if err := Check(file, Trusted); err != nil {
		t.Errorf("a 0660 file of your private group is refused: %v", err)
	}
	setGroups(fmt.Sprintf("me:x:%d:%d::/h:/bin/sh\n", me, gid), fmt.Sprintf("me:x:%d:other\n", gid))
	wantRefusal(t, "0660 file, shared group", Check(file, Trusted), file, "chmod go-w "+file)
}

func TestFileModes(t *testing.T) {
	sub, file := tree(t)
	chmod(t, file, 0o606)
	wantRefusal(t, "world-writable file", Check(file, Trusted), file, "chmod go-w "+file)
	chmod(t, file, 0o640)
	wantRefusal(t, "0640 file, Private", Check(file, Private), file, "chmod 600 "+file)
	chmod(t, file, 0o600)
	chmod(t, sub, 0o750)
	wantRefusal(t, "0750 dir, Private", Check(sub, Private), sub, "chmod 700 "+sub)
	fi, err := os.Stat(sub)
	if err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, "0750 dir, CheckInfo", CheckInfo(sub, fi, Private), sub, "chmod 700 "+sub)
}

func TestSymlinksAreCheckedOnBothSides(t *testing.T) {
	safe, file := tree(t)
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	chmod(t, open, 0o777)

	// A link in a safe directory to a file in a directory anyone can write.
	target := filepath.Join(open, "real.json")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(safe, "link.json")
	if err := os.Symlink("../../"+filepath.Base(filepath.Dir(open))+"/open/real.json", link); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, "link to a file in a 0777 dir", Check(link, Trusted), open, "chmod go-w "+open)

	// A link in a directory anyone can write, to a safe file: the link
	// itself can be swapped.
	link2 := filepath.Join(open, "link.json")
	if err := os.Symlink(file, link2); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, "link in a 0777 dir", Check(link2, Trusted), open, "chmod go-w "+open)

	chmod(t, open, 0o700)
	if err := Check(link, Trusted); err != nil {
		t.Errorf("a relative link between safe directories is refused: %v", err)
	}
	if err := Check(link2, Trusted); err != nil {
		t.Errorf("an absolute link between safe directories is refused: %v", err)
	}

	loop := filepath.Join(safe, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	if err := Check(loop, Trusted); err == nil || !strings.Contains(err.Error(), "too many levels") {
		t.Errorf("Check(symlink loop) = %v, want ELOOP", err)
	}
}

func TestOwnershipByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a file or directory to another user (uid 65534) needs root; run the tests as root (CI does)")
	}
	t.Run("directory", func(t *testing.T) {
		sub, file := tree(t)
		if err := os.Chown(sub, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, "dir owned by uid 65534", Check(file, Trusted), sub, "sudo chown root "+sub)
	})
	t.Run("file", func(t *testing.T) {
		_, file := tree(t)
		if err := os.Chown(file, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, "file owned by uid 65534", Check(file, Trusted), file, "sudo chown root "+file)
		wantRefusal(t, "file owned by uid 65534, Private", Check(file, Private), file, "sudo chown root "+file)
	})
}
