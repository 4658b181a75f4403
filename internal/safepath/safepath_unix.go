//go:build unix

package safepath

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Supported is true where Check and CheckInfo check anything.
const Supported = true

// maxLinks is the kernel's limit of symbolic links in one lookup.
const maxLinks = 40

// Where group membership is read; tests point them at fixtures.
var (
	passwdFile = "/etc/passwd"
	groupFile  = "/etc/group"
)

// Check checks path (a file or a directory) for kind k, and every directory
// looked up on the way to it from /, following symbolic links. The error
// for a missing path wraps fs.ErrNotExist.
func Check(path string, k Kind) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	w := &walker{uid: uint32(os.Geteuid()), target: abs}
	final, fi, err := w.resolve(abs)
	if err != nil {
		return err
	}
	return w.checkFinal(final, fi, k)
}

// CheckInfo checks one file or directory, typically from the Stat of an
// open file, for kind k; name is the path shown in errors.
func CheckInfo(name string, fi fs.FileInfo, k Kind) error {
	w := &walker{uid: uint32(os.Geteuid()), target: name}
	return w.checkFinal(name, fi, k)
}

type walker struct {
	uid    uint32
	target string
	groups *groupDB // read on first need
}

// resolve walks abs from / the way the kernel does and checks each
// directory it looks a name up in. It returns the physical path and its
// Lstat.
func (w *walker) resolve(abs string) (string, fs.FileInfo, error) {
	rest := components(abs)
	cur := "/"
	curInfo, err := os.Lstat(cur)
	if err != nil {
		return "", nil, err
	}
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			if curInfo, err = os.Lstat(cur); err != nil {
				return "", nil, err
			}
			continue
		}
		shared, err := w.checkDir(cur, curInfo)
		if err != nil {
			return "", nil, err
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", w.target, err)
		}
		if shared {
			if uid := owner(fi); uid != w.uid && uid != 0 {
				return "", nil, &Error{Target: w.target, Path: next,
					Reason: fmt.Sprintf("is owned by %s in %s, a directory other users can write", who(uid), cur),
					Fix:    fmt.Sprintf("mv %s %s.untrusted, then create it again yourself", next, next)}
			}
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if links++; links > maxLinks {
				return "", nil, fmt.Errorf("%s: %w", w.target, syscall.ELOOP)
			}
			to, err := os.Readlink(next)
			if err != nil {
				return "", nil, err
			}
			if filepath.IsAbs(to) {
				cur = "/"
				if curInfo, err = os.Lstat(cur); err != nil {
					return "", nil, err
				}
			}
			rest = append(components(to), rest...)
			continue
		}
		if len(rest) > 0 && !fi.IsDir() {
			return "", nil, fmt.Errorf("%s: %s: %w", w.target, next, syscall.ENOTDIR)
		}
		cur, curInfo = next, fi
	}
	return cur, curInfo, nil
}

func components(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// checkDir checks a directory Moat looks a name up in. shared reports a
// sticky directory that others may write: the entry looked up in it must
// then be owned by the user or root.
func (w *walker) checkDir(dir string, fi fs.FileInfo) (shared bool, err error) {
	uid := owner(fi)
	if uid != w.uid && uid != 0 {
		return false, &Error{Target: w.target, Path: dir,
			Reason: fmt.Sprintf("is owned by %s, who could replace anything in it", who(uid)),
			Fix:    fmt.Sprintf("sudo chown %s %s (or move %s to a directory of yours)", userName(w.uid), dir, w.target)}
	}
	perm := fi.Mode().Perm()
	if perm&0o022 == 0 {
		return false, nil
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		return true, nil
	}
	if perm&0o002 == 0 && w.privateGroup(group(fi)) {
		return false, nil
	}
	return false, &Error{Target: w.target, Path: dir,
		Reason: fmt.Sprintf("is writable by %s (mode %04o, no sticky bit)", writers(perm), perm),
		Fix:    sudo(uid, w.uid) + "chmod go-w " + dir}
}

// checkFinal checks the file or directory itself.
func (w *walker) checkFinal(path string, fi fs.FileInfo, k Kind) error {
	uid := owner(fi)
	perm := fi.Mode().Perm()
	if k == Private {
		want := "600"
		if fi.IsDir() {
			want = "700"
		}
		if uid != w.uid {
			return &Error{Target: w.target, Path: path,
				Reason: fmt.Sprintf("is owned by %s, not by you (%s)", who(uid), userName(w.uid)),
				Fix:    fmt.Sprintf("sudo chown %s %s", userName(w.uid), path)}
		}
		if perm&0o077 != 0 {
			return &Error{Target: w.target, Path: path,
				Reason: fmt.Sprintf("can be used by group or other users (mode %04o)", perm),
				Fix:    fmt.Sprintf("chmod %s %s", want, path)}
		}
		return nil
	}
	if uid != w.uid && uid != 0 {
		return &Error{Target: w.target, Path: path,
			Reason: fmt.Sprintf("is owned by %s, not by you or root, and its owner can change it", who(uid)),
			Fix:    fmt.Sprintf("sudo chown %s %s (if you trust its content)", userName(w.uid), path)}
	}
	if perm&0o022 == 0 || perm&0o002 == 0 && w.privateGroup(group(fi)) {
		return nil
	}
	return &Error{Target: w.target, Path: path,
		Reason: fmt.Sprintf("is writable by %s (mode %04o)", writers(perm), perm),
		Fix:    sudo(uid, w.uid) + "chmod go-w " + path}
}

func writers(perm fs.FileMode) string {
	if perm&0o002 != 0 {
		return "other users"
	}
	return "its group"
}

func sudo(owner, me uint32) string {
	if owner != me {
		return "sudo "
	}
	return ""
}

func owner(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0) // unknown: nobody trusted
}

func group(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Gid
	}
	return ^uint32(0)
}

// who names a user for a message: "nobody (uid 65534)".
func who(uid uint32) string {
	if name := userName(uid); !strings.HasPrefix(name, "uid ") {
		return fmt.Sprintf("%s (uid %d)", name, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// userName is uid's login name, for a command, or "uid N" when unknown.
func userName(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil {
		return u.Username
	}
	return "uid " + s
}

// privateGroup reports whether gid is the current user's private group:
// the user is its only member, as primary group or listed member.
func (w *walker) privateGroup(gid uint32) bool {
	if w.groups == nil {
		w.groups = readGroups()
	}
	return w.groups.private(gid, w.uid)
}

type groupDB struct {
	err     error
	primary map[uint32][]uint32 // gid -> uids whose primary group it is
	names   map[uint32]string   // uid -> user name
	members map[uint32][]string // gid -> listed members; absent: no such group
}

func (db *groupDB) private(gid, uid uint32) bool {
	listed, ok := db.members[gid]
	if db.err != nil || !ok {
		return false
	}
	me, ok := db.names[uid]
	if !ok {
		return false
	}
	n := 0
	for _, u := range db.primary[gid] {
		if u != uid {
			return false
		}
		n = 1
	}
	for _, m := range listed {
		if m != me {
			return false
		}
		n = 1
	}
	return n == 1
}

func readGroups() *groupDB {
	db := &groupDB{primary: map[uint32][]uint32{}, names: map[uint32]string{}, members: map[uint32][]string{}}
	err := eachLine(passwdFile, func(f []string) {
		if len(f) < 4 {
			return
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return
		}
		if _, dup := db.names[uint32(uid)]; !dup {
			db.names[uint32(uid)] = f[0]
		}
		db.primary[uint32(gid)] = append(db.primary[uint32(gid)], uint32(uid))
	})
	if err == nil {
		err = eachLine(groupFile, func(f []string) {
			if len(f) < 4 {
				return
			}
			gid, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil {
				return
			}
			var list []string
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					list = append(list, m)
				}
			}
			db.members[uint32(gid)] = append(db.members[uint32(gid)], list...)
			if list == nil && db.members[uint32(gid)] == nil {
				db.members[uint32(gid)] = []string{}
			}
		})
	}
	db.err = err
	return db
}

// eachLine calls fn with the colon-separated fields of each line of an
// /etc/passwd-style file. Lines starting with '+' or '-' (NIS compat)
// make the file unusable: its membership is not all here.
func eachLine(path string, fn func([]string)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "+") || strings.HasPrefix(line, "-") {
			return errors.New(path + " uses NIS compat entries")
		}
		fn(strings.Split(line, ":"))
	}
	return sc.Err()
}
