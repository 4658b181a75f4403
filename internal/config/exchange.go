package config

import "fmt"

var tokenExchangeKeys = []string{"issuer", "client_secret", "audience", "token_url"}

// TokenExchange is a server's key "token_exchange": on a gateway that
// accepts OIDC tokens (gateway.oidc), each person's copy of this per-user
// server gets its access token by OAuth 2.0 Token Exchange (RFC 8693) of
// that person's own sign-in token at the server's authorization server,
// instead of a stored login. Moat is the client oauth_client_id there.
type TokenExchange struct {
	// Issuer is key "issuer": the authorization server Moat is a client
	// of, whose metadata (RFC 8414) names its token endpoint. The MCP
	// server's own metadata is never asked: a sign-in token, good at the
	// gateway, goes only where the config says. Issuer or TokenURL is
	// required.
	Issuer string
	// ClientSecret is key "client_secret": Moat's client secret at the
	// authorization server, usually "${secret:NAME}" (read from the shared
	// store even though the server is per user: it is the gateway's
	// credential, not a user's); "" for a public client.
	ClientSecret string
	// Audience is key "audience": the token exchange's audience parameter;
	// Issuer when absent.
	Audience string
	// TokenURL is key "token_url": the authorization server's token
	// endpoint; found from Issuer's metadata when absent.
	TokenURL string
}

func (t *TokenExchange) equal(o *TokenExchange) bool {
	if t == nil || o == nil {
		return t == o
	}
	return *t == *o
}

// tokenExchange reads a remote server's "token_exchange" block.
func (c *checker) tokenExchange(s *Server, m *member, path, where string) {
	if m == nil || !c.object(m, path, `"token_exchange"`, tokenExchangeKeys, `"token_exchange": {"client_secret": "${secret:NAME}"}`) {
		return
	}
	n := m.val
	te := &TokenExchange{}
	switch {
	case s.Type != HTTP:
		c.ps.add(path, m.keyOff, fmt.Sprintf("token_exchange needs a streamable HTTP server; server %q is %s", s.Name, s.Type),
			`remove "token_exchange", or use the server's streamable HTTP endpoint with "type": "http"`)
	case !s.PerUser:
		c.ps.add(path, m.keyOff, fmt.Sprintf("token_exchange gets each person's own token, but server %q is shared by every user", s.Name),
			`add "per_user": true to the server`)
	case s.OAuthClientID == "":
		c.ps.add(path, m.keyOff, fmt.Sprintf("token_exchange needs the client Moat is at the server's authorization server; server %q has no oauth_client_id", s.Name),
			`register Moat as a client there and add "oauth_client_id": "ID" (and its secret as "client_secret": "${secret:NAME}")`)
	}
	if f := n.get("client_secret"); f != nil {
		if raw, ok := c.str(f, path); ok {
			at := expansion{path + "/client_secret", f.val.off, where + " token_exchange.client_secret", s, false, true}
			if v, ok := c.expand(raw, at); ok {
				if v == raw && v != "" {
					c.ps.add(at.path, at.off, "token_exchange.client_secret is written in the config file in plain text",
						"store it with `moat secret set NAME` and write \"${secret:NAME}\"")
				}
				te.ClientSecret = v
			}
		}
	}
	if f := n.get("audience"); f != nil {
		if v, ok := c.str(f, path); ok {
			te.Audience = v
		}
	}
	te.Issuer = c.exchangeURL(n, path, where, "issuer", `write the authorization server's issuer URL, such as "https://auth.example.com"`)
	te.TokenURL = c.exchangeURL(n, path, where, "token_url", `write the token endpoint's URL, such as "https://auth.example.com/oauth/token"`)
	if te.Issuer == "" && te.TokenURL == "" && n.get("issuer") == nil && n.get("token_url") == nil {
		c.ps.add(path, m.keyOff, fmt.Sprintf("server %q's token_exchange names no authorization server", s.Name),
			`add "issuer": the authorization server Moat is registered with (its token endpoint is found from its metadata), or "token_url"; the MCP server is never asked where to send the users' sign-in tokens`)
	}
	s.TokenExchange = te
}

// exchangeURL reads key of a token_exchange block: an https URL (http
// only to loopback), since it receives the users' sign-in tokens.
func (c *checker) exchangeURL(n *node, path, where, key, hint string) string {
	f := n.get(key)
	if f == nil {
		return ""
	}
	raw, ok := c.str(f, path)
	if !ok {
		return ""
	}
	at := expansion{path + "/" + key, f.val.off, where + " token_exchange." + key, nil, false, false}
	v, ok := c.expand(raw, at)
	if !ok {
		return ""
	}
	switch msg := checkURL(v); {
	case msg != "":
		c.ps.add(at.path, at.off, fmt.Sprintf("token_exchange.%s %q %s", key, v, msg), hint)
	case insecureHTTP(v):
		c.ps.add(at.path, at.off, fmt.Sprintf("token_exchange.%s %q uses plain http:// to a host that is not loopback", key, v),
			"it receives the users' sign-in tokens: use https://")
	default:
		return v
	}
	return ""
}

// tokenExchangeNeedsOIDC reports the servers with token_exchange in a
// config without gateway.oidc: without the users' OIDC sign-in tokens
// there is nothing to exchange.
func (c *checker) tokenExchangeNeedsOIDC(n *node, cfg *Config) {
	if cfg.Gateway.OIDC != nil {
		return
	}
	m := n.get("mcpServers")
	for name, s := range cfg.Servers {
		if s.TokenExchange == nil {
			continue
		}
		off := m.val.off
		if sm := m.val.get(name); sm != nil {
			if f := sm.val.get("token_exchange"); f != nil {
				off = f.keyOff
			}
		}
		c.ps.add("/mcpServers"+pointer(name)+"/token_exchange", off,
			fmt.Sprintf("server %q exchanges each person's OIDC sign-in token, but the config has no gateway.oidc", name),
			`add "gateway": {"oidc": {"issuer": "...", "audience": "..."}} so the gateway accepts (and can exchange) its users' tokens`)
	}
}
