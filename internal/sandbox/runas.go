package sandbox

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// identity is a resolved Spec.RunAs: the user a child runs as.
type identity struct {
	uid, gid   uint32
	name, home string
}

// lookupRunAs resolves "USER" or "USER:GROUP", each a name or a number. A
// user without a group takes its primary group (its uid when it has no
// passwd entry); a numeric user without one gets HOME=/.
func lookupRunAs(spec string) (*identity, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	id := &identity{name: userPart, home: "/"}
	var u *user.User
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		id.uid, id.gid = uint32(n), uint32(n)
		u, _ = user.LookupId(userPart)
	} else if u, err = user.Lookup(userPart); err != nil {
		return nil, fmt.Errorf("no user %q on this machine: create it (useradd --system %s) or give a uid", userPart, userPart)
	}
	if u != nil {
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		id.uid, id.gid, id.name, id.home = uint32(uid), uint32(gid), u.Username, u.HomeDir
	}
	if hasGroup {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			id.gid = uint32(n)
		} else if g, err := user.LookupGroup(groupPart); err == nil {
			n, _ := strconv.ParseUint(g.Gid, 10, 32)
			id.gid = uint32(n)
		} else {
			return nil, fmt.Errorf("no group %q on this machine: create it (groupadd --system %s) or give a gid", groupPart, groupPart)
		}
	}
	return id, nil
}

// withIdentity sets HOME, USER and LOGNAME of env (sorted KEY=VALUE) to
// who's, unless the server's own env sets them.
func withIdentity(env []string, who *identity, own map[string]string) []string {
	set := map[string]string{"HOME": who.home, "USER": who.name, "LOGNAME": who.name}
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, mine := own[k]; !mine {
			if v, ok := set[k]; ok {
				kv = k + "=" + v
				delete(set, k)
			}
		}
		out = append(out, kv)
	}
	for k, v := range set {
		if _, mine := own[k]; !mine {
			out = append(out, k+"="+v)
		}
	}
	return out
}
