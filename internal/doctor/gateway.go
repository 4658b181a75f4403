package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"time"

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
	if gw.TLS != nil {
		d.checkTLS(gw.TLS)
	}
	d.checkTokens(gw)
	fi, statErr := os.Lstat(path)
	if !d.gatewayConfigured() && errors.Is(statErr, fs.ErrNotExist) {
		// Most users run Moat on stdio: nothing to say.
		return
	}
	d.checkIdentities(gw)
	d.checkPerUser(gw)
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
	return gw.Identities != nil || gw.SocketGroup != "" || gw.TLS != nil || (gw.SocketMode != 0 && gw.SocketMode != config.DefaultSocketMode)
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

// tlsExpiryWarning is how long before its end a gateway's certificate is
// reported.
const tlsExpiryWarning = 30 * 24 * time.Hour

// checkTLS checks what an HTTPS listener would serve: the certificate and
// key load and match, the key is the user's alone, and the certificate is
// not expired nor about to be.
func (d *run) checkTLS(t *config.GatewayTLS) {
	c := Check{Section: SectionGateway, Name: "gateway.tls"}
	pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		c.Status, c.Message = Fail, fmt.Sprintf("gateway.tls does not load: %v", err)
		c.Fix = "give cert_file a PEM certificate chain and key_file its private key"
		d.add(c)
		return
	}
	if err := safepath.Check(t.KeyFile, safepath.Private); err != nil {
		d.add(Check{Section: SectionGateway, Name: "gateway.tls_key", Status: Fail,
			Message: fmt.Sprintf("the TLS key can be read or changed by another user: %v", err),
			Fix:     fmt.Sprintf("chmod 600 %s, in a directory only you can change", t.KeyFile)})
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			c.Status, c.Message = Fail, fmt.Sprintf("gateway.tls certificate: %v", err)
			d.add(c)
			return
		}
	}
	names := strings.Join(append(slices.Clone(leaf.DNSNames), ipStrings(leaf)...), ", ")
	now := d.now()
	switch left := leaf.NotAfter.Sub(now); {
	case left <= 0:
		c.Status, c.Message = Fail, fmt.Sprintf("the gateway's certificate (%s) expired on %s", names, leaf.NotAfter.UTC().Format(time.DateOnly))
		c.Fix = "renew it, then restart the gateway (the files are read at start)"
	case left < tlsExpiryWarning:
		c.Status, c.Message = Warn, fmt.Sprintf("the gateway's certificate (%s) expires on %s, in %d days", names, leaf.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
		c.Fix = "renew it, then restart the gateway (the files are read at start)"
	default:
		c.Status, c.Message = OK, fmt.Sprintf("the gateway's certificate (%s) is valid until %s", names, leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	d.add(c)
}

func ipStrings(c *x509.Certificate) []string {
	var out []string
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// checkTokens compares the tokens the identities name with those the
// secret store holds: one named but never created lets no one in, one
// stored but named by no identity is refused.
func (d *run) checkTokens(gw config.Gateway) {
	named := map[string]string{} // token → identity
	for name, id := range gw.Identities {
		for _, tok := range id.Tokens {
			named[tok] = name
		}
	}
	if len(named) == 0 || d.o.Tokens == nil {
		return
	}
	c := Check{Section: SectionGateway, Name: "gateway.tokens", Status: OK}
	if d.store == nil {
		c.Status, c.Message = Warn, "the gateway's tokens cannot be checked: the secret store does not open"
		d.add(c)
		return
	}
	stored, err := d.o.Tokens(context.Background(), d.store)
	if err != nil {
		c.Status, c.Message = Fail, fmt.Sprintf("the gateway's tokens cannot be read from the secret store: %v", err)
		c.Fix = "every HTTP request would be refused; check the secret store (above)"
		d.add(c)
		return
	}
	var problems []string
	for tok, id := range named {
		if !slices.Contains(stored, tok) {
			problems = append(problems, fmt.Sprintf("token %q of identity %s was never created: moat token create %s", tok, id, tok))
		}
	}
	for _, tok := range stored {
		if _, ok := named[tok]; !ok && !slices.Contains(d.cfg.Metrics.Tokens, tok) {
			problems = append(problems, fmt.Sprintf("token %q is stored but no identity names it: it is refused (moat token revoke %s, or add it to an identity's tokens)", tok, tok))
		}
	}
	slices.Sort(problems)
	c.Message = fmt.Sprintf("%d tokens stored, %d named by identities", len(stored), len(named))
	if len(problems) > 0 {
		c.Status, c.Details = Warn, problems
		c.Fix = "create, revoke or name the tokens listed"
	}
	d.add(c)
}
