package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

var (
	gatewayOIDCKeys  = []string{"issuer", "audience", "resource", "required_scopes", "groups_claim", "max_clock_skew", "allowed_algs"}
	identityOIDCKeys = []string{"subjects", "groups", "scopes"}
	// oidcAlgs are the JWS algorithms gateway.oidc.allowed_algs may name:
	// asymmetric signatures only. "none" proves nothing, and an HS*
	// algorithm would let anyone who knows the key (every resource server
	// of the issuer) mint tokens.
	oidcAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

const (
	// DefaultOIDCGroupsClaim is gateway.oidc.groups_claim when absent.
	DefaultOIDCGroupsClaim = "groups"
	// DefaultOIDCClockSkew is gateway.oidc.max_clock_skew when absent.
	DefaultOIDCClockSkew = 60 * time.Second
	// MaxOIDCClockSkew bounds gateway.oidc.max_clock_skew: an expired
	// token must not live on for long.
	MaxOIDCClockSkew = 5 * time.Minute
)

// DefaultOIDCAlgs is gateway.oidc.allowed_algs when absent.
var DefaultOIDCAlgs = []string{"RS256", "ES256"}

// GatewayOIDC is gateway.oidc: the OpenID Connect issuer whose JWT access
// tokens the HTTP listener accepts, as an OAuth 2.1 resource server.
type GatewayOIDC struct {
	// Issuer is key "issuer": the issuer's URL, https (http only on a
	// loopback host), exactly as its tokens' iss claim says it.
	Issuer string
	// Audience is key "audience" (required): a value the token's aud
	// claim must hold, typically the gateway's public /mcp URL.
	Audience string
	// Resource is key "resource": the resource identifier published in
	// the Protected Resource Metadata; Audience when absent.
	Resource string
	// RequiredScopes is key "required_scopes": scopes every token must
	// carry (its scope or scp claim); nil when absent.
	RequiredScopes []string
	// GroupsClaim is key "groups_claim": the claim holding the token's
	// groups; DefaultOIDCGroupsClaim when absent.
	GroupsClaim string
	// MaxClockSkew is key "max_clock_skew": the leeway on exp, nbf and
	// iat; DefaultOIDCClockSkew when absent, at most MaxOIDCClockSkew.
	MaxClockSkew time.Duration
	// AllowedAlgs is key "allowed_algs": the JWS algorithms accepted;
	// DefaultOIDCAlgs when absent. Never "none" or HS*.
	AllowedAlgs []string
}

// IdentityOIDC is gateway.identities.NAME.oidc: the JWT bearers that are
// the identity. A token whose sub is in Subjects is this identity; else,
// if no identity lists its sub, the one identity whose Groups meets the
// token's groups or whose Scopes the token all carries (two such
// identities: the token is refused as ambiguous).
type IdentityOIDC struct {
	// Subjects is key "subjects": sub claims; a subject is one identity's
	// at most (the loader refuses it under two).
	Subjects []string
	// Groups is key "groups": values of the token's groups claim.
	Groups []string
	// Scopes is key "scopes": scopes a token must all carry to be this
	// identity by scope.
	Scopes []string
}

// loopbackHost reports whether host names only this machine.
func loopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// oidcURL reports why raw is no usable issuer or resource URL, "" when it is.
func oidcURL(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Sprintf("is not a URL (%v)", err)
	case u.Host == "":
		return "has no host"
	case u.User != nil:
		return "holds a user name or password"
	case u.Fragment != "" || u.RawQuery != "":
		return "has a query or fragment"
	case u.Scheme == "https":
		return ""
	case u.Scheme == "http" && loopbackHost(u.Hostname()):
		return ""
	case u.Scheme == "http":
		return "is plain http on a host other than loopback, so the keys that prove every token could be changed on the way"
	}
	return fmt.Sprintf("has scheme %q, not https", u.Scheme)
}

// gatewayOIDC reads gateway.oidc.
func (c *checker) gatewayOIDC(m *member) *GatewayOIDC {
	const path = "/gateway/oidc"
	const example = `"oidc": {"issuer": "https://login.example.com", "audience": "https://moat.example.com/mcp"}`
	if !c.object(m, path, `"gateway.oidc"`, gatewayOIDCKeys, example) {
		return nil
	}
	n := m.val
	o := &GatewayOIDC{GroupsClaim: DefaultOIDCGroupsClaim, MaxClockSkew: DefaultOIDCClockSkew, AllowedAlgs: DefaultOIDCAlgs}
	ok := true
	for _, k := range []struct {
		key      string
		dst      *string
		required bool
	}{{"issuer", &o.Issuer, true}, {"audience", &o.Audience, true}, {"resource", &o.Resource, false}} {
		f := n.get(k.key)
		if f == nil {
			if k.required {
				c.ps.add(path, n.off, fmt.Sprintf("gateway.oidc has no %q", k.key), "give both: "+example)
				ok = false
			}
			continue
		}
		v, good := c.str(f, path)
		if !good {
			ok = false
			continue
		}
		if why := oidcURL(v); why != "" {
			c.ps.add(path+"/"+k.key, f.val.off, fmt.Sprintf("gateway.oidc.%s %q %s", k.key, v, why),
				"write an https URL such as \"https://login.example.com\" (http only for a loopback host, in tests)")
			ok = false
			continue
		}
		*k.dst = v
	}
	if o.Resource == "" {
		o.Resource = o.Audience
	}
	if f := n.get("required_scopes"); f != nil {
		o.RequiredScopes = []string{}
		c.stringList(f, path+"/required_scopes", "gateway.oidc.required_scopes", `"required_scopes": ["mcp"]`, func(i int, it *node, p string) {
			if it.str == "" || strings.ContainsAny(it.str, " \"\\") {
				c.ps.add(p, it.off, fmt.Sprintf("gateway.oidc.required_scopes[%d] %q is not a scope", i, it.str), "a scope is one word without spaces or quotes, such as \"mcp\"")
				ok = false
				return
			}
			o.RequiredScopes = append(o.RequiredScopes, it.str)
		})
	}
	if f := n.get("groups_claim"); f != nil {
		if v, good := c.str(f, path); good {
			if v == "" {
				c.ps.add(path+"/groups_claim", f.val.off, "gateway.oidc.groups_claim is empty", `name the claim that lists the token's groups, such as "groups", or remove the key`)
				ok = false
			} else {
				o.GroupsClaim = v
			}
		}
	}
	if f := n.get("max_clock_skew"); f != nil {
		d := c.duration(f, path+"/max_clock_skew")
		switch {
		case d > MaxOIDCClockSkew:
			c.ps.add(path+"/max_clock_skew", f.val.off, fmt.Sprintf("gateway.oidc.max_clock_skew %v is more than %v: an expired token would be accepted that long", d, MaxOIDCClockSkew),
				"keep the hosts' clocks in sync (NTP) and use at most 5m; the default is 60s")
			ok = false
		case d > 0:
			o.MaxClockSkew = d
		}
	}
	if f := n.get("allowed_algs"); f != nil {
		var algs []string
		c.stringList(f, path+"/allowed_algs", "gateway.oidc.allowed_algs", `"allowed_algs": ["RS256", "ES256"]`, func(i int, it *node, p string) {
			if !slices.Contains(oidcAlgs, it.str) {
				why := "is not a JWS signature algorithm moat accepts"
				switch {
				case strings.EqualFold(it.str, "none"):
					why = "proves nothing: a token signed with none can be written by anyone"
				case strings.HasPrefix(strings.ToUpper(it.str), "HS"):
					why = "is a shared-key algorithm: whoever holds the key (every service the issuer shares it with) could mint tokens"
				}
				c.ps.add(p, it.off, fmt.Sprintf("gateway.oidc.allowed_algs[%d] %q %s", i, it.str, why), "use asymmetric algorithms: "+strings.Join(oidcAlgs, ", "))
				ok = false
				return
			}
			algs = append(algs, it.str)
		})
		if len(algs) > 0 {
			o.AllowedAlgs = algs
		} else if ok {
			c.ps.add(path+"/allowed_algs", f.val.off, "gateway.oidc.allowed_algs is empty, so no token could ever be accepted", `list algorithms such as ["RS256", "ES256"], or remove the key for that default`)
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return o
}

// oidcOwners map each OIDC subject seen so far to its identity.
type oidcOwners map[string]string

// identityOIDC reads gateway.identities.NAME.oidc.
func (c *checker) identityOIDC(m *member, path, name string, own oidcOwners) *IdentityOIDC {
	where := fmt.Sprintf("identity %q oidc", name)
	const example = `"oidc": {"subjects": ["user-123"], "groups": ["devs"], "scopes": ["mcp:admin"]}`
	if !c.object(m, path, where, identityOIDCKeys, example) {
		return nil
	}
	o := &IdentityOIDC{}
	for _, k := range []struct {
		key string
		dst *[]string
	}{{"subjects", &o.Subjects}, {"groups", &o.Groups}, {"scopes", &o.Scopes}} {
		f := m.val.get(k.key)
		if f == nil {
			continue
		}
		c.stringList(f, path+"/"+k.key, where+" "+k.key, fmt.Sprintf(`"%s": ["..."]`, k.key), func(i int, it *node, p string) {
			if it.str == "" {
				c.ps.add(p, it.off, fmt.Sprintf("%s %s[%d] is empty", where, k.key, i), "remove it")
				return
			}
			if k.key == "subjects" {
				switch other, dup := own[it.str]; {
				case dup && other == name:
					c.ps.add(p, it.off, fmt.Sprintf("subject %q is listed twice under identity %q", it.str, name), "remove one of them")
					return
				case dup:
					c.ps.add(p, it.off, fmt.Sprintf("subject %q is listed under identities %q and %q; a token's subject must be exactly one identity", it.str, other, name), "remove one of them")
					return
				}
				own[it.str] = name
			}
			*k.dst = append(*k.dst, it.str)
		})
	}
	if len(o.Subjects) == 0 && len(o.Groups) == 0 && len(o.Scopes) == 0 {
		if !c.listHasItems(m.val, "subjects") && !c.listHasItems(m.val, "groups") && !c.listHasItems(m.val, "scopes") {
			c.ps.add(path, m.val.off, fmt.Sprintf("%s lists no subjects, groups or scopes, so no token can ever be it", where), "write "+example)
		}
		return nil
	}
	return o
}
