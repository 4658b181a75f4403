package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/safepath"
	"github.com/moatmcp/moat/internal/socket"
)

// SectionGateway holds the checks of a gateway's socket and identities.
const SectionGateway = "gateway"

// checkGateway checks what a gateway on GatewaySocket would serve, and the
// socket itself: who may connect (its mode, group and directory), whether
// a gateway listens on it, and whether that gateway is one the user can
// trust. It says nothing when the config sets no gateway key and no
// socket is there.
func (d *run) checkGateway() {
	path := d.o.GatewaySocket
	if path == "" {
		path = socket.DefaultPath()
	}
	var gw config.Gateway
	if d.cfg != nil {
		gw = d.cfg.Gateway
	}
	fi, statErr := os.Lstat(path)
	if !d.gatewayConfigured() && errors.Is(statErr, fs.ErrNotExist) {
		// Most users run Moat on stdio: nothing to say.
		return
	}
	d.checkIdentities(gw)
	mode := gw.SocketMode
	if mode == 0 {
		mode = config.DefaultSocketMode
	}
	if gw.SocketGroup != "" {
		if _, err := socket.LookupGroup(gw.SocketGroup); err != nil {
			d.add(Check{Section: SectionGateway, Name: "gateway.socket_group", Status: Fail,
				Message: fmt.Sprintf("socket_group %q is not a group of this host: the gateway cannot give it the socket", gw.SocketGroup),
				Fix:     "name an existing group (getent group) or its numeric id in gateway.socket_group"})
		}
	}
	c := Check{Section: SectionGateway, Name: "gateway.socket"}
	switch {
	case errors.Is(statErr, fs.ErrNotExist):
		c.Status, c.Message = OK, fmt.Sprintf("no gateway is listening on %s", path)
		if d.gatewayConfigured() {
			c.Message += fmt.Sprintf(" (start one with moat serve --listen unix:%s, or the systemd user unit in the README)", path)
		}
		d.add(c)
		return
	case statErr != nil:
		c.Status, c.Message = Fail, fmt.Sprintf("cannot read the gateway's socket %s: %v", path, statErr)
		d.add(c)
		return
	case fi.Mode().Type() != fs.ModeSocket:
		c.Status, c.Message = Fail, fmt.Sprintf("%s is not a socket (%v)", path, fi.Mode().Type())
		c.Fix = "remove it, or give the gateway and moat connect another path (MOAT_GATEWAY_SOCKET)"
		d.add(c)
		return
	}
	if err := safepath.Check(filepath.Dir(path), safepath.Trusted); err != nil {
		d.add(Check{Section: SectionGateway, Name: "gateway.directory", Status: Fail,
			Message: fmt.Sprintf("the socket's directory can be changed by another user: %v", err),
			Fix:     "put the socket in a directory only you (or root) can change, such as $XDG_RUNTIME_DIR/moat"})
	}
	perm := fi.Mode().Perm()
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case perm&0o002 != 0:
		c.Status, c.Message = Fail, fmt.Sprintf("socket %s is %#o: every user of the host can connect", path, perm)
		c.Fix = fmt.Sprintf("chmod o-rwx %s, and set gateway.socket_mode (the gateway sets it when it starts)", path)
	case perm != mode:
		c.Status, c.Message = Warn, fmt.Sprintf("socket %s is %#o, the config says %#o", path, perm, mode)
		c.Fix = "restart the gateway so it makes the socket again, or make gateway.socket_mode say what you want"
	default:
		c.Status, c.Message = OK, fmt.Sprintf("socket %s is %#o, owner uid %d, group %s", path, perm, st.Uid, groupName(int(st.Gid)))
	}
	d.add(c)
	d.checkListener(path)
}

// gatewayConfigured reports whether the config sets anything of its
// gateway block (the loader fills in the default mode).
func (d *run) gatewayConfigured() bool {
	if d.cfg == nil {
		return false
	}
	gw := d.cfg.Gateway
	return gw.Identities != nil || gw.SocketGroup != "" || (gw.SocketMode != 0 && gw.SocketMode != config.DefaultSocketMode)
}

// checkListener dials the socket as moat connect does.
func (d *run) checkListener(path string) {
	c := Check{Section: SectionGateway, Name: "gateway.listening"}
	conn, err := socket.Dial(path)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		c.Status, c.Message = Warn, fmt.Sprintf("nothing listens on %s: a gateway that stopped left its socket", path)
		c.Fix = "start the gateway again (it replaces the stale socket)"
	case err != nil:
		c.Status, c.Message = Fail, err.Error()
		c.Fix = "find what listens there (ss -xlp) and stop it; start your own gateway"
	default:
		p, _ := socket.PeerOf(conn)
		conn.Close()
		c.Status, c.Message = OK, fmt.Sprintf("a gateway listens on %s (pid %d, uid %d)", path, p.PID, p.UID)
	}
	d.add(c)
}

// checkIdentities says who the config lets connect, and which of its
// uids and groups this host does not know (they match nobody).
func (d *run) checkIdentities(gw config.Gateway) {
	c := Check{Section: SectionGateway, Name: "gateway.identities", Status: OK}
	if len(gw.Identities) == 0 {
		name := strconv.Itoa(os.Getuid())
		if u, err := user.LookupId(name); err == nil {
			name = u.Username
		}
		c.Message = fmt.Sprintf("no gateway.identities: only the gateway's own user (%s) may connect", name)
		d.add(c)
		return
	}
	names := make([]string, 0, len(gw.Identities))
	var unknown []string
	for name, id := range gw.Identities {
		names = append(names, name)
		for _, uid := range id.UIDs {
			if _, err := user.LookupId(strconv.Itoa(uid)); err != nil {
				unknown = append(unknown, fmt.Sprintf("%s: uid %d has no account on this host", name, uid))
			}
		}
		for _, g := range id.Groups {
			if _, err := socket.LookupGroup(g); err != nil {
				unknown = append(unknown, fmt.Sprintf("%s: group %q does not exist on this host, so it matches nobody", name, g))
			}
		}
	}
	slices.Sort(names)
	slices.Sort(unknown)
	c.Message = fmt.Sprintf("%d identities may connect: %s", len(names), strings.Join(names, ", "))
	if len(unknown) > 0 {
		c.Status, c.Details = Warn, unknown
		c.Fix = "correct or remove these entries of gateway.identities"
	}
	d.add(c)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}
