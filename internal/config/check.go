package config

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moatmcp/moat/internal/lazyregexp"
	"github.com/moatmcp/moat/internal/suggest"
)

var (
	serverName = lazyregexp.New(`^[A-Za-z0-9_.-]{1,64}$`)
	headerName = lazyregexp.New("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Keys a server object may have, by transport. The order is the one hints list.
var (
	commonKeys = []string{"description", "type", "enabled", "features", "timeout", "policy", "max_message_bytes", "per_user"}
	stdioKeys  = []string{"command", "args", "env", "inherit_env", "cwd", "run_as", "sandbox"}
	remoteKeys = []string{"url", "headers", "oauth_client_id", "oauth_scopes", "token_exchange", "allow_insecure_http", "allow_private_network", "tls"}
	topKeys    = []string{"mcpServers", "$schema", "defaults", "audit", "secrets", "gateway", "metrics"}
	flagKeys   = []string{"tools", "resources", "prompts"}
	timeKeys   = []string{"tools", "resources", "prompts", "connect"}
)

// checker walks the parsed file, reports problems and builds the Config.
type checker struct {
	ps     *problems
	opts   LoadOptions
	getenv func(string) (string, bool)
	// sawSecret is set when a ${secret:NAME} resolves, so a caller can
	// clear it, expand one value and tell whether a secret went into it.
	sawSecret bool
}

// root fills cfg from the top-level object n.
func (c *checker) root(n *node, cfg *Config) {
	if n.kind != kindObject {
		c.ps.add("", n.off, fmt.Sprintf("the top level is %s, not an object", n.kind),
			`a config is an object like {"mcpServers": {"name": {...}}}`)
		return
	}
	c.unknownKeys(n, "", topKeys, "at the top level")
	if m := n.get("$schema"); m != nil && m.val.kind != kindString {
		c.ps.add("/$schema", m.val.off, fmt.Sprintf(`"$schema" is %s, not a string`, m.val.kind), "remove it or give the schema's URL")
	}
	cfg.Defaults = c.defaults(n.get("defaults"))
	cfg.Audit = c.audit(n.get("audit"))
	cfg.Secrets = c.secrets(n.get("secrets"))
	// The gateway's identities name servers, so they are read after them.
	defer func() {
		cfg.Gateway = c.gateway(n.get("gateway"), cfg.Servers)
		cfg.Metrics = c.metrics(n.get("metrics"), &cfg.Gateway)
		c.tokenExchangeNeedsOIDC(n, cfg)
	}()
	m := n.get("mcpServers")
	if m == nil {
		c.ps.add("", n.off, `missing "mcpServers"`, `add "mcpServers": {} with one entry per upstream server`)
		return
	}
	if m.val.kind != kindObject {
		c.ps.add("/mcpServers", m.val.off, fmt.Sprintf(`"mcpServers" is %s, not an object`, m.val.kind),
			`write "mcpServers": {"name": {"description": "...", "command": "..."}}`)
		return
	}
	cfg.Servers = make(map[string]*Server, len(m.val.members))
	for _, sm := range m.val.members {
		if s := c.server(sm); s != nil {
			if s.Type == Stdio {
				s.Sandbox = s.Sandbox.withDefaults(cfg.Defaults.Sandbox)
			}
			// server left the explicit value (or 0) in MaxMessageBytes.
			c.messageLimit(n, s, s.MaxMessageBytes, cfg.Defaults.Policy)
			cfg.Servers[sm.key] = s
		}
	}
}

// unknownKeys reports every key of n that is neither in known nor in skip
// (keys reported elsewhere); the hint lists the known keys.
func (c *checker) unknownKeys(n *node, path string, known []string, where string, skip ...string) {
	for _, m := range n.members {
		if slices.Contains(known, m.key) || slices.Contains(skip, m.key) {
			continue
		}
		hint := "valid keys " + where + ": " + quoteList(known)
		if s := suggest.Hint(m.key, known); s != "" {
			hint = s + "; " + hint
		}
		c.ps.add(path+pointer(m.key), m.keyOff, fmt.Sprintf("unknown key %q %s", m.key, where), hint)
	}
}

func (c *checker) server(sm member) *Server {
	name, n := sm.key, sm.val
	path := pointer("mcpServers", name)
	switch {
	case name == "." || name == ".." || !serverName.MatchString(name):
		c.ps.add(path, sm.keyOff, fmt.Sprintf("invalid server name %q", name),
			"use 1 to 64 letters, digits, '_', '.' or '-' (not \".\" or \"..\")")
	}
	if n.kind != kindObject {
		c.ps.add(path, n.off, fmt.Sprintf("server %q is %s, not an object", name, n.kind),
			`write {"description": "...", "command": "..."} or {"description": "...", "url": "..."}`)
		return nil
	}
	s := &Server{Name: name, Enabled: true, Features: Features{true, true, true}}
	c.transport(s, n, path)
	// Read before the keys that expand ${secret:NAME}: a per-user server's
	// secrets are each identity's own (LoadOptions.UserSecret).
	if m := n.get("per_user"); m != nil {
		s.PerUser = c.boolean(m, path+"/per_user", `"per_user"`)
	}

	own, other := stdioKeys, remoteKeys
	if s.Type != Stdio {
		own, other = remoteKeys, stdioKeys
	}
	known := append(slices.Clone(commonKeys), own...)
	for _, m := range n.members {
		if slices.Contains(other, m.key) {
			c.ps.add(path+pointer(m.key), m.keyOff, fmt.Sprintf("%q is not valid for a %s server", m.key, s.Type),
				wrongTransportHint(s, m.key))
		}
	}
	c.unknownKeys(n, path, known, fmt.Sprintf("in a %s server", s.Type), other...)

	where := fmt.Sprintf("server %q", name)
	if m := n.get("description"); m == nil {
		c.ps.add(path, n.off, fmt.Sprintf("server %q has no \"description\"", name),
			`add "description": "what this server is for"; the model reads it to choose a group`)
	} else if v, ok := c.str(m, path); ok {
		if strings.TrimSpace(v) == "" {
			c.ps.add(path+"/description", m.val.off, "the description is empty",
				"say what this server is for; the model reads it to choose a group")
		}
		s.Description = v
	}
	if s.Type == Stdio {
		c.stdio(s, n, path, where)
	} else {
		c.remote(s, n, path, where)
	}
	if m := n.get("enabled"); m != nil {
		if m.val.kind != kindBool {
			c.ps.add(path+"/enabled", m.val.off, fmt.Sprintf(`"enabled" is %s, not true or false`, m.val.kind), "")
		}
		s.Enabled = m.val.b
	}
	c.features(s, n.get("features"), path+"/features")
	c.timeouts(s, n.get("timeout"), path+"/timeout")
	s.Policy = c.policy(n.get("policy"), path+"/policy", where+" policy")
	if m := n.get("max_message_bytes"); m != nil {
		p := path + "/max_message_bytes"
		if v := c.size(m, p, "max_message_bytes"); v > MaxMessageBytesCeiling {
			c.ps.add(p, m.val.off, fmt.Sprintf("max_message_bytes is %s; Moat reads at most %s per message from an upstream", formatSize(v), formatSize(MaxMessageBytesCeiling)),
				fmt.Sprintf("give at most %q", formatSize(MaxMessageBytesCeiling)))
		} else {
			s.MaxMessageBytes = v
		}
	}
	return s
}

func wrongTransportHint(s *Server, key string) string {
	switch {
	case s.Type == Stdio && s.TypeInferred:
		return fmt.Sprintf("a stdio server has command, args and env; remove %q", key)
	case s.Type == Stdio:
		return fmt.Sprintf(`remove %q, or set "type" to "http" or "sse" for a remote server`, key)
	case s.TypeInferred:
		return fmt.Sprintf(`this server has a "url", so it is remote: remove %q, or remove "url" for a stdio server`, key)
	}
	return fmt.Sprintf(`remove %q, or set "type" to "stdio" and remove the url keys`, key)
}

// transport sets Type and TypeInferred from "type" and "url".
func (c *checker) transport(s *Server, n *node, path string) {
	hasURL := n.get("url") != nil
	s.Type, s.TypeInferred = Stdio, false
	if hasURL {
		s.Type, s.TypeInferred = HTTP, true
	}
	m := n.get("type")
	if m == nil {
		return
	}
	v, ok := c.str(m, path)
	if !ok {
		return
	}
	switch t := Transport(v); t {
	case Stdio, HTTP, SSE:
		s.Type, s.TypeInferred = t, false
	default:
		hint := `use "stdio", "http" or "sse" (lowercase), or omit "type"`
		if sg := suggest.Hint(v, []string{"stdio", "http", "sse"}); sg != "" {
			hint = sg + "; " + hint
		}
		c.ps.add(path+"/type", m.val.off, fmt.Sprintf("unknown type %q", v), hint)
	}
}

func (c *checker) stdio(s *Server, n *node, path, where string) {
	if m := n.get("command"); m == nil {
		c.ps.add(path, n.off, fmt.Sprintf("server %q has no \"command\"", s.Name),
			`add "command" (a program on PATH) for a stdio server, or "url" for a remote one`)
	} else if raw, ok := c.str(m, path); ok {
		at := expansion{path + "/command", m.val.off, where + " command", s, true, false}
		if strings.TrimSpace(raw) == "" {
			c.ps.add(at.path, at.off, "the command is empty", "give the program to run, e.g. \"npx\"")
		} else if v, ok := c.expand(raw, at); ok {
			if strings.TrimSpace(v) == "" || strings.ContainsRune(v, 0) {
				c.ps.add(at.path, at.off, fmt.Sprintf("the command %q is empty or holds a NUL byte after expansion", raw), "")
			}
			s.Command = v
		}
	}
	if m := n.get("args"); m != nil && m.val.kind != kindNull {
		if m.val.kind != kindArray {
			c.ps.add(path+"/args", m.val.off, fmt.Sprintf(`"args" is %s, not an array of strings`, m.val.kind), `write "args": ["-y", "package"]`)
		} else {
			s.Args = make([]string, 0, len(m.val.items))
			for i, it := range m.val.items {
				p := path + "/args/" + strconv.Itoa(i)
				if it.kind != kindString {
					c.ps.add(p, it.off, fmt.Sprintf("args[%d] is %s, not a string", i, it.kind), "quote it")
					continue
				}
				at := expansion{p, it.off, fmt.Sprintf("%s args[%d]", where, i), s, true, false}
				if v, ok := c.expand(it.str, at); ok {
					c.noNUL(v, at)
					s.Args = append(s.Args, v)
				}
			}
		}
	}
	s.Env, _ = c.stringMap(s, n.get("env"), path+"/env", where+" env", func(k string) string {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return "an environment variable name must be non-empty and hold no '=' or NUL"
		}
		return ""
	})
	c.inheritEnv(s, n.get("inherit_env"), path+"/inherit_env")
	if m := n.get("cwd"); m != nil {
		if raw, ok := c.str(m, path); ok {
			s.Cwd, _ = c.filePath(raw, expansion{path + "/cwd", m.val.off, where + " cwd", nil, false, false})
		}
	}
	if m := n.get("run_as"); m != nil {
		if raw, ok := c.str(m, path); ok {
			if !runAsForm.MatchString(raw) {
				c.ps.add(path+"/run_as", m.val.off, fmt.Sprintf("%s run_as %q is not a user", where, raw),
					`write a user name or uid, optionally with a group: "run_as": "mcp-github" or "run_as": "2001:2001"`)
			} else {
				s.RunAs = raw
			}
		}
	}
	s.Sandbox = c.sandbox(n.get("sandbox"), path+"/sandbox", where)
}

// runAsForm is USER or USER:GROUP, each a name or a number.
var runAsForm = lazyregexp.New(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$`)

func (c *checker) remote(s *Server, n *node, path, where string) {
	if m := n.get("allow_insecure_http"); m != nil {
		s.AllowInsecureHTTP = c.boolean(m, path+"/allow_insecure_http", `"allow_insecure_http"`)
	}
	if m := n.get("allow_private_network"); m != nil {
		s.AllowPrivateNetwork = c.boolean(m, path+"/allow_private_network", `"allow_private_network"`)
	}
	if m := n.get("url"); m == nil {
		c.ps.add(path, n.off, fmt.Sprintf("server %q has type %q but no \"url\"", s.Name, s.Type),
			`add "url": "https://host/mcp"`)
	} else if raw, ok := c.str(m, path); ok {
		at := expansion{path + "/url", m.val.off, where + " url", s, false, false}
		if v, ok := c.expand(raw, at); ok {
			shown := fmt.Sprintf("%q", raw)
			if v != raw {
				shown += " (after expansion)"
			}
			if msg := checkURL(v); msg != "" {
				c.ps.add(at.path, at.off, fmt.Sprintf("url %s %s", shown, msg), `write an absolute URL such as "https://host/mcp"`)
			} else if insecureHTTP(v) && !s.AllowInsecureHTTP {
				c.ps.add(at.path, at.off, fmt.Sprintf("url %s uses plain http:// to a host that is not loopback", shown), insecureHTTPHint)
			}
			s.URL = v
		}
	}
	s.Headers, s.SecretHeaders = c.stringMap(s, n.get("headers"), path+"/headers", where+" headers", func(k string) string {
		if !headerName.MatchString(k) {
			return "a header name is a token: letters, digits and !#$%&'*+-.^_`|~"
		}
		return ""
	})
	if m := n.get("oauth_client_id"); m != nil {
		if raw, ok := c.str(m, path); ok {
			if v, ok := c.expand(raw, expansion{path + "/oauth_client_id", m.val.off, where + " oauth_client_id", s, false, false}); ok {
				s.OAuthClientID = v
			}
		}
	}
	if m := n.get("oauth_scopes"); m != nil {
		p := path + "/oauth_scopes"
		if m.val.kind != kindArray {
			c.ps.add(p, m.val.off, fmt.Sprintf(`"oauth_scopes" is %s, not an array of strings`, m.val.kind), `write "oauth_scopes": ["read"]`)
		} else {
			for i, it := range m.val.items {
				if it.kind != kindString {
					c.ps.add(p+"/"+strconv.Itoa(i), it.off, fmt.Sprintf("oauth_scopes[%d] is %s, not a string", i, it.kind), "quote it")
					continue
				}
				s.OAuthScopes = append(s.OAuthScopes, it.str)
			}
		}
	}
	c.tokenExchange(s, n.get("token_exchange"), path+"/token_exchange", where)
	c.tls(s, n.get("tls"), path+"/tls", where)
}

// checkURL says what is wrong with an expanded url, without quoting it (it
// may now hold a secret), or returns "".
func checkURL(v string) string {
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return "does not parse as a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "is not an http or https URL"
	case u.Host == "" || u.Hostname() == "":
		return "has no host"
	}
	return ""
}

// stringMap reads an object of strings, expanding every value. badKey
// returns why a key is unusable, or "". It also returns, in file order, the
// keys whose value took (even part of) a ${secret:NAME}.
func (c *checker) stringMap(s *Server, m *member, path, where string, badKey func(string) string) (map[string]string, []string) {
	if m == nil {
		return nil, nil
	}
	if m.val.kind != kindObject {
		c.ps.add(path, m.val.off, fmt.Sprintf("%s is %s, not an object of strings", where, m.val.kind), `write {"NAME": "value"}`)
		return nil, nil
	}
	var secretKeys []string
	out := make(map[string]string, len(m.val.members))
	for _, e := range m.val.members {
		p := path + pointer(e.key)
		if why := badKey(e.key); why != "" {
			c.ps.add(p, e.keyOff, fmt.Sprintf("invalid name %q in %s", e.key, where), why)
		}
		if e.val.kind != kindString {
			c.ps.add(p, e.val.off, fmt.Sprintf("%s %q is %s, not a string", where, e.key, e.val.kind), "quote it")
			continue
		}
		at := expansion{p, e.val.off, fmt.Sprintf("%s %q", where, e.key), s, false, false}
		c.sawSecret = false
		if v, ok := c.expand(e.val.str, at); ok {
			if c.sawSecret {
				secretKeys = append(secretKeys, e.key)
			}
			if strings.HasSuffix(where, "headers") {
				c.noControl(v, at)
			} else {
				c.noNUL(v, at)
			}
			out[e.key] = v
		}
	}
	return out, secretKeys
}

func (c *checker) noNUL(v string, at expansion) {
	if strings.ContainsRune(v, 0) {
		c.ps.add(at.path, at.off, fmt.Sprintf("%s holds a NUL byte", at.where), "a process argument or environment value cannot hold NUL")
	}
}

func (c *checker) noControl(v string, at expansion) {
	for _, r := range v {
		if (r < 0x20 && r != '\t') || r == 0x7f {
			c.ps.add(at.path, at.off, fmt.Sprintf("%s holds a control character such as a line break", at.where),
				"a header value must be one line; check the value or the variable it uses")
			return
		}
	}
}

func (c *checker) features(s *Server, m *member, path string) {
	if m == nil {
		return
	}
	if m.val.kind != kindObject {
		c.ps.add(path, m.val.off, fmt.Sprintf(`"features" is %s, not an object`, m.val.kind), `write "features": {"prompts": false}`)
		return
	}
	c.unknownKeys(m.val, path, flagKeys, `in "features"`)
	for _, f := range []struct {
		key string
		dst *bool
	}{{"tools", &s.Features.Tools}, {"resources", &s.Features.Resources}, {"prompts", &s.Features.Prompts}} {
		if fm := m.val.get(f.key); fm != nil {
			if fm.val.kind != kindBool {
				c.ps.add(path+"/"+f.key, fm.val.off, fmt.Sprintf("features.%s is %s, not true or false", f.key, fm.val.kind), "")
				continue
			}
			*f.dst = fm.val.b
		}
	}
}

func (c *checker) timeouts(s *Server, m *member, path string) {
	s.Timeout = Timeouts{Tools: DefaultToolTimeout, Resources: DefaultResourceTimeout, Prompts: DefaultPromptTimeout}
	if m == nil {
		return
	}
	if m.val.kind != kindObject {
		c.ps.add(path, m.val.off, fmt.Sprintf(`"timeout" is %s, not an object`, m.val.kind), `write "timeout": {"tools": "30s"}`)
		return
	}
	c.unknownKeys(m.val, path, timeKeys, `in "timeout"`)
	for _, f := range []struct {
		key string
		dst *time.Duration
	}{{"tools", &s.Timeout.Tools}, {"resources", &s.Timeout.Resources}, {"prompts", &s.Timeout.Prompts}, {"connect", &s.Timeout.Connect}} {
		if tm := m.val.get(f.key); tm != nil {
			if d := c.duration(tm, path+"/"+f.key); d > 0 {
				*f.dst = d
			}
		}
	}
}

// str returns m's value if it is a string, and reports it otherwise.
func (c *checker) str(m *member, parent string) (string, bool) {
	if m.val.kind != kindString {
		c.ps.add(parent+pointer(m.key), m.val.off, fmt.Sprintf("%q is %s, not a string", m.key, m.val.kind), "quote it")
		return "", false
	}
	return m.val.str, true
}
