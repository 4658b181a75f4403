package doctor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/secrets"
)

// perUserSecret resolves a per-user server's ${secret:NAME} for doctor's
// load: the shared value when there is one (what stdio serve uses), else a
// placeholder, since a gateway never needs it (each identity's own is
// checked by checkPerUser). It records which names each server takes.
func (d *run) perUserSecret(server, name string) (string, error) {
	if d.perUser == nil {
		d.perUser = map[string][]string{}
	}
	if !slices.Contains(d.perUser[server], name) {
		d.perUser[server] = append(d.perUser[server], name)
	}
	if v, err := d.secret(name); err == nil {
		return v, nil
	}
	if d.unshared == nil {
		d.unshared = map[string]bool{}
	}
	d.unshared[server] = true
	return "per-user", nil
}

// checkPerUser says, for each per-user server, which identities get a copy
// of their own and what each lacks: its own ${secret:} values (a copy
// without them does not start), or a person of its own (an identity matched
// by groups or scopes gives each person a copy, but with the identity's
// credentials, unless the server's token is exchanged from each person's).
func (d *run) checkPerUser(gw config.Gateway) {
	var servers []string
	for name, s := range d.cfg.Servers {
		if s.PerUser && s.Enabled {
			servers = append(servers, name)
		}
	}
	if len(servers) == 0 || len(gw.Identities) == 0 {
		return
	}
	slices.Sort(servers)
	c := Check{Section: SectionGateway, Name: "gateway.per_user", Status: OK}
	var summary, problems []string
	for _, server := range servers {
		var ids []string
		for name, id := range gw.Identities {
			if id.Servers == nil || slices.Contains(id.Servers, server) {
				ids = append(ids, name)
			}
		}
		slices.Sort(ids)
		summary = append(summary, fmt.Sprintf("%s (%s)", server, strings.Join(ids, ", ")))
		s := d.cfg.Servers[server]
		ownToken := s.TokenExchange != nil && len(d.perUser[server]) == 0
		for _, name := range ids {
			if by := gw.Identities[name].SharedBy(); by != "" && !ownToken {
				problems = append(problems, fmt.Sprintf("identity %s is matched by %s: each person in it gets a copy of %s of their own, but all use the identity's credentials (its secrets and login); give each person an identity of their own (uids, tokens or oidc.subjects), or, for OIDC sign-ins, use token_exchange where the server's authorization server offers it", name, by, server))
			}
			for _, secret := range d.perUser[server] {
				if p := d.identitySecret(name, secret); p != "" {
					problems = append(problems, fmt.Sprintf("%s: %s", server, p))
				}
			}
		}
	}
	c.Message = fmt.Sprintf("per-user servers, one copy per person of each identity: %s", strings.Join(summary, "; "))
	if len(problems) > 0 {
		c.Status, c.Details = Warn, problems
		c.Fix = "an identity without its secrets is told why when it uses the server; store them as the gateway's user"
	}
	d.add(c)
}

// identitySecret says what is wrong with identity's own value of secret,
// or "".
func (d *run) identitySecret(identity, secret string) string {
	if d.store == nil {
		return "its secrets cannot be checked: the secret store does not open"
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	_, err := d.store.Get(ctx, secrets.ForIdentity(secret, identity))
	switch {
	case errors.Is(err, secrets.ErrNotFound):
		return fmt.Sprintf("identity %s has no secret %q of its own: moat secret set --identity %s %s", identity, secret, identity, secret)
	case err != nil:
		return fmt.Sprintf("identity %s's secret %q cannot be read: %v", identity, secret, err)
	}
	return ""
}

// perUserServer is the check of a per-user server whose secrets have no
// shared value: a gateway runs it with each identity's own (checked in the
// gateway section); stdio serve needs the shared one.
func (d *run) perUserServer(s *config.Server) Check {
	c := Check{Section: "server " + s.Name, Server: s.Name, Name: "server.per_user"}
	names := strings.Join(d.perUser[s.Name], ", ")
	if len(d.cfg.Gateway.Identities) > 0 {
		c.Status, c.Message = OK, fmt.Sprintf("per-user: a gateway runs it with each identity's own %s (see gateway.per_user); not started here", names)
		return c
	}
	c.Status, c.Message = Fail, fmt.Sprintf("per-user, and no gateway.identities: moat serve on stdio runs it with the shared %s, which is not stored", names)
	c.Fix = fmt.Sprintf("run `moat secret set %s`, or list identities under gateway and serve it with moat serve --listen", d.perUser[s.Name][0])
	return c
}
