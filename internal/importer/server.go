package importer

import (
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moatmcp/moat/internal/config"
)

// reader turns source server entries into Servers.
type reader struct {
	im   *Imported
	norm *normalizer
}

func (r *reader) drop(server, field, why string) {
	r.im.Dropped = append(r.im.Dropped, Dropped{Server: server, Field: field, Why: why})
}

// Reasons for fields Moat does not carry, by source key.
var dropReasons = map[string]string{
	"alwaysAllow":         "auto-approval is the client's decision; Moat's policy decides what runs",
	"autoApprove":         "auto-approval is the client's decision; Moat's policy decides what runs",
	"trust":               "trust (skipping confirmations) is the client's decision; Moat's policy decides what runs",
	"includeTools":        "Moat's config has no per-server tool list; use a policy rule",
	"excludeTools":        "Moat's config has no per-server tool list; use a policy rule",
	"enabled_tools":       "Moat's config has no per-server tool list; use a policy rule",
	"disabled_tools":      "Moat's config has no per-server tool list; use a policy rule",
	"envFile":             "Moat does not read env files; copy the variables into env",
	"env_file":            "Moat does not read env files; copy the variables into env",
	"startup_timeout_sec": "Moat has no startup timeout setting",
	"startup_timeout_ms":  "Moat has no startup timeout setting",
	"networkTimeout":      "Moat has no network timeout setting",
}

// server converts one source entry; a server Moat cannot run is dropped as
// a whole and listed.
func (r *reader) server(srcName string, v any) {
	name := serverName(srcName)
	if name != srcName {
		r.drop(name, "name", fmt.Sprintf("renamed from %q: Moat names use 1 to 64 letters, digits, '_', '.' or '-'", srcName))
	}
	if _, dup := r.im.Servers[name]; dup {
		r.drop(srcName, "*", fmt.Sprintf("skipped: its Moat name %q is taken by another server", name))
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		r.drop(name, "*", fmt.Sprintf("skipped: the entry is %s, not an object", kindOf(v)))
		return
	}
	s := &Server{Enabled: true, Features: Features{true, true, true}}
	typ, typeKnown := r.transport(name, m)

	var url string
	for _, k := range []string{"url", "serverUrl", "httpUrl"} {
		if u, ok := r.str(name, k, m[k]); ok && u != "" {
			if url != "" {
				r.drop(name, k, "a second url; the first one is used")
				continue
			}
			url = u
			if k == "httpUrl" && !typeKnown {
				typ = "http"
			}
			if k == "url" && r.norm.format == FormatGemini && !typeKnown {
				typ = "sse" // Gemini CLI: url is SSE, httpUrl is streamable HTTP
			}
		}
	}
	command, args := r.command(name, m)

	switch {
	case typ == "stdio" || typ == "" && url == "" && command != "":
		if command == "" {
			r.drop(name, "*", "skipped: a stdio server needs a \"command\"")
			return
		}
		s.Type = "stdio"
		if url != "" {
			r.drop(name, "url", "this is a stdio server; the url is ignored")
			url = ""
		}
	case url != "":
		s.Type = typ
		if command != "" || len(args) > 0 {
			key := "command"
			if command == "" {
				key = "args"
			}
			r.drop(name, key, "this server has a url, so it is remote; command, args and env are not used")
			command, args = "", nil
		}
	default:
		r.drop(name, "*", "skipped: it has neither a \"command\" nor a \"url\"")
		return
	}

	if s.Command, ok = r.normalize(name, "command", command); !ok {
		r.drop(name, "*", "skipped: the command cannot be expressed in Moat's config")
		return
	}
	for i, a := range args {
		if a, ok := r.normalize(name, fmt.Sprintf("args[%d]", i), a); ok {
			s.Args = append(s.Args, a)
		}
	}
	if s.URL, ok = r.normalize(name, "url", url); !ok && url != "" {
		r.drop(name, "*", "skipped: the url cannot be expressed in Moat's config")
		return
	}
	if s.URL != "" && !plausibleURL(s.URL) {
		r.drop(name, "*", "skipped: its url is not an absolute http or https URL")
		return
	}
	env := r.stringMap(name, "env", m["env"])
	maps.Copy(env, r.stringMap(name, "environment", m["environment"]))
	headers := r.stringMap(name, "headers", m["headers"])
	maps.Copy(headers, r.stringMap(name, "http_headers", m["http_headers"]))
	for k := range headers {
		if !headerName(k) {
			r.drop(name, "headers", fmt.Sprintf("header %q is not a valid HTTP header name", k))
			delete(headers, k)
		}
	}
	for k := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			r.drop(name, "env", fmt.Sprintf("%q is not an environment variable name", k))
			delete(env, k)
		}
	}
	r.codexExtras(name, m, s, headers)
	if s.Type == "stdio" {
		s.Env = r.normalizeMap(name, "env", env)
		r.cwd(name, m, s)
		if len(headers) > 0 {
			r.drop(name, "headers", "a stdio server has no HTTP headers")
		}
	} else {
		s.Headers = r.normalizeMap(name, "headers", headers)
		if len(env) > 0 {
			r.drop(name, "env", "a remote server has no process environment")
		}
		if m["cwd"] != nil {
			r.drop(name, "cwd", "a remote server has no working directory")
		}
		r.network(name, s)
	}
	r.flags(name, m, s)
	r.oauth(name, m, s)
	r.timeouts(name, m, s)
	if d, ok := m["description"].(string); ok && strings.TrimSpace(d) != "" {
		s.Description = strings.TrimSpace(d)
	} else {
		s.Description = DefaultDescription(name, s)
	}
	r.unknown(name, m)
	r.im.Servers[name] = s
}

// transport reads "type" (or Cline's "transportType").
func (r *reader) transport(name string, m map[string]any) (typ string, known bool) {
	for _, k := range []string{"type", "transportType", "transport"} {
		raw, ok := r.str(name, k, m[k])
		if !ok || raw == "" {
			continue
		}
		switch strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(raw)) {
		case "stdio", "local":
			return "stdio", true
		case "http", "streamablehttp", "streamable":
			return "http", true
		case "sse":
			return "sse", true
		case "remote": // OpenCode: HTTP or SSE, like Moat's inferred type
			return "", false
		default:
			r.drop(name, k, fmt.Sprintf("unknown transport %q; inferred from command or url instead", raw))
		}
	}
	return "", false
}

// command reads "command", which OpenCode (and some others) give as an
// array holding the arguments too.
func (r *reader) command(name string, m map[string]any) (string, []string) {
	var command string
	var args []string
	switch c := m["command"].(type) {
	case nil:
	case string:
		command = c
	case []any:
		all := r.strings(name, "command", c)
		if len(all) > 0 {
			command, args = all[0], all[1:]
		}
	default:
		r.drop(name, "command", fmt.Sprintf("it is %s, not a string", kindOf(c)))
	}
	switch a := m["args"].(type) {
	case nil:
	case []any:
		args = append(args, r.strings(name, "args", a)...)
	default:
		r.drop(name, "args", fmt.Sprintf("it is %s, not an array", kindOf(a)))
	}
	return strings.TrimSpace(command), args
}

func (r *reader) strings(name, field string, a []any) []string {
	out := make([]string, 0, len(a))
	for i, it := range a {
		s, ok := it.(string)
		if !ok {
			if n, isNum := number(it); isNum {
				s = fmt.Sprint(n) // an unquoted port or count: Moat wants strings
			} else {
				r.drop(name, fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("it is %s, not a string", kindOf(it)))
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

func (r *reader) str(name, field string, v any) (string, bool) {
	switch s := v.(type) {
	case nil:
		return "", false
	case string:
		return strings.TrimSpace(s), true
	}
	r.drop(name, field, fmt.Sprintf("it is %s, not a string", kindOf(v)))
	return "", false
}

func (r *reader) stringMap(name, field string, v any) map[string]string {
	out := map[string]string{}
	if v == nil {
		return out
	}
	m, ok := v.(map[string]any)
	if !ok {
		r.drop(name, field, fmt.Sprintf("it is %s, not an object", kindOf(v)))
		return out
	}
	for k, val := range m {
		switch x := val.(type) {
		case string:
			out[k] = x
		case bool:
			out[k] = fmt.Sprint(x)
		default:
			if n, isNum := number(val); isNum {
				out[k] = fmt.Sprint(n)
				continue
			}
			r.drop(name, field+" "+k, fmt.Sprintf("it is %s, not a string", kindOf(val)))
		}
	}
	return out
}

// normalize rewrites one value's variable syntax, listing notes and
// dropping what Moat cannot express.
func (r *reader) normalize(name, field, v string) (string, bool) {
	out, notes, err := r.norm.value(v)
	if err != nil {
		r.drop(name, field, err.Error())
		return "", false
	}
	for _, n := range notes {
		r.drop(name, field, n)
	}
	return out, true
}

func (r *reader) normalizeMap(name, field string, m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if v, ok := r.normalize(name, field+" "+k, m[k]); ok {
			out[k] = v
		}
	}
	return out
}

// codexExtras maps Codex's env_vars (names passed through, Moat's
// inherit_env), env_http_headers (header: variable) and bearer_token_env_var.
func (r *reader) codexExtras(name string, m map[string]any, s *Server, headers map[string]string) {
	if a, ok := m["env_vars"].([]any); ok {
		for _, v := range r.strings(name, "env_vars", a) {
			if varName.MatchString(v) {
				s.InheritEnv = append(s.InheritEnv, v)
			} else {
				r.drop(name, "env_vars", fmt.Sprintf("%q is not a variable name", v))
			}
		}
	}
	for k, v := range r.stringMap(name, "env_http_headers", m["env_http_headers"]) {
		if varName.MatchString(v) {
			headers[k] = "${" + v + "}"
		}
	}
	if v, ok := r.str(name, "bearer_token_env_var", m["bearer_token_env_var"]); ok && varName.MatchString(v) {
		headers["Authorization"] = "Bearer ${" + v + "}"
	}
}

// cwd reads the working directory; a relative one is taken relative to
// the project, as the source tools start servers there.
func (r *reader) cwd(name string, m map[string]any, s *Server) {
	raw, ok := r.str(name, "cwd", m["cwd"])
	if !ok || raw == "" {
		return
	}
	v, ok := r.normalize(name, "cwd", raw)
	if !ok {
		return
	}
	if !filepath.IsAbs(v) && v != "~" && !strings.HasPrefix(v, "~/") && !strings.HasPrefix(v, "${") {
		if r.norm.projectDir == "" {
			r.drop(name, "cwd", "a relative directory, and the project directory is unknown")
			return
		}
		v = filepath.Join(r.norm.projectDir, v)
		r.drop(name, "cwd", fmt.Sprintf("the relative directory %q is taken as %s", raw, v))
	}
	s.Cwd = v
}

// headerName reports whether k is an HTTP header name (an RFC 9110 token).
func headerName(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if c > 0x7e || c <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, c) {
			return false
		}
	}
	return true
}

// plausibleURL reports whether u can be an upstream's url: absolute http
// or https with a host. A ${VAR} is given the benefit of the doubt (Moat
// checks the expanded value when it loads the config) as long as what
// comes before it can begin such a URL.
func plausibleURL(u string) bool {
	if i := strings.Index(u, "${"); i >= 0 {
		pre := strings.ToLower(u[:i])
		for _, scheme := range []string{"https://", "http://"} {
			if strings.HasPrefix(pre, scheme) || strings.HasPrefix(scheme, pre) {
				return true
			}
		}
		return false
	}
	p, err := url.Parse(u)
	return err == nil && (strings.EqualFold(p.Scheme, "https") || strings.EqualFold(p.Scheme, "http")) && p.Host != ""
}

// network sets Moat's opt-ins that the source's url needs to keep
// working, and says so: Moat refuses plain http:// to another host and
// private addresses by default.
func (r *reader) network(name string, s *Server) {
	u, err := url.Parse(s.URL)
	if err != nil || strings.Contains(u.Host, "${") {
		return
	}
	host := strings.TrimSuffix(u.Hostname(), ".")
	ip, ipErr := netip.ParseAddr(host)
	loopback := strings.EqualFold(host, "localhost") || ipErr == nil && ip.Unmap().IsLoopback()
	if strings.EqualFold(u.Scheme, "http") && !loopback {
		s.AllowInsecureHTTP = true
		r.drop(name, "url", "plain http:// to "+host+": allow_insecure_http is set so it keeps working; switch to https if the server offers it")
	}
	if ipErr == nil && (ip.Unmap().IsPrivate() || ip.Unmap().IsLinkLocalUnicast()) {
		s.AllowPrivateNetwork = true
		r.drop(name, "url", "a private address: allow_private_network is set so it keeps working")
	}
}

// flags reads enabled/disabled and Moat's own features object.
func (r *reader) flags(name string, m map[string]any, s *Server) {
	for _, k := range []string{"enabled", "disabled"} {
		switch b := m[k].(type) {
		case nil:
		case bool:
			if k == "enabled" && !b || k == "disabled" && b {
				s.Enabled = false
			}
		default:
			r.drop(name, k, fmt.Sprintf("it is %s, not true or false", kindOf(b)))
		}
	}
	if f, ok := m["features"].(map[string]any); ok {
		for k, dst := range map[string]*bool{"tools": &s.Features.Tools, "resources": &s.Features.Resources, "prompts": &s.Features.Prompts} {
			if b, ok := f[k].(bool); ok {
				*dst = b
			}
		}
	}
}

// oauth reads Moat's oauth keys and OpenCode's oauth object.
func (r *reader) oauth(name string, m map[string]any, s *Server) {
	if id, ok := r.str(name, "oauth_client_id", m["oauth_client_id"]); ok {
		s.OAuthClientID = id
	}
	if a, ok := m["oauth_scopes"].([]any); ok {
		s.OAuthScopes = r.strings(name, "oauth_scopes", a)
	}
	o, ok := m["oauth"].(map[string]any)
	if !ok {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(o)) {
		switch k {
		case "clientId":
			if id, ok := r.str(name, "oauth.clientId", o[k]); ok {
				s.OAuthClientID = id
			}
		case "scope":
			if sc, ok := r.str(name, "oauth.scope", o[k]); ok {
				s.OAuthScopes = strings.Fields(sc)
			}
		case "clientSecret":
			r.drop(name, "oauth.clientSecret", "Moat uses public OAuth clients (PKCE); no client secret is kept")
		default:
			r.drop(name, "oauth."+k, "no Moat equivalent")
		}
	}
}

// timeouts reads each tool's timeout in its own unit into Moat's tool-call
// timeout.
func (r *reader) timeouts(name string, m map[string]any, s *Server) {
	if t, ok := m["timeout"].(map[string]any); ok { // Moat's and dynamic-mcp's own
		for k, dst := range map[string]*string{"tools": &s.Timeout.Tools, "resources": &s.Timeout.Resources, "prompts": &s.Timeout.Prompts} {
			switch v := t[k].(type) {
			case string:
				if _, err := config.ParseDuration(v); err != nil {
					r.drop(name, "timeout."+k, err.Error())
					continue
				}
				*dst = v
			default:
				if n, ok := number(v); ok {
					*dst, _ = duration(n, 1000)
				}
			}
		}
		return
	}
	for _, k := range []string{"timeout", "tool_timeout_sec"} {
		n, ok := number(m[k])
		if !ok {
			if m[k] != nil {
				r.drop(name, k, fmt.Sprintf("it is %s, not a number", kindOf(m[k])))
			}
			continue
		}
		unit := 1000.0 // seconds: Cline, Kilo Code, Codex
		switch {
		case r.norm.format == FormatOpenCode:
			r.drop(name, k, "OpenCode's timeout bounds listing tools, not calls; Moat's defaults apply")
			continue
		case r.norm.format == FormatGemini:
			unit = 1
		case r.norm.format == FormatJSON && n >= 1000:
			unit = 1 // a plain mcpServers file: large numbers are milliseconds
		}
		d, ok := duration(n, unit)
		if !ok {
			r.drop(name, k, "not a positive duration")
			continue
		}
		s.Timeout.Tools = d
	}
}

// handled are the keys server reads.
var handled = []string{
	"type", "transportType", "transport", "url", "serverUrl", "httpUrl", "command", "args",
	"env", "environment", "headers", "http_headers", "env_vars", "env_http_headers", "bearer_token_env_var",
	"cwd", "enabled", "disabled", "features", "oauth_client_id", "oauth_scopes", "oauth", "timeout", "tool_timeout_sec",
	"description",
}

// unknown lists every key not handled, with the reason when one is known.
func (r *reader) unknown(name string, m map[string]any) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if slices.Contains(handled, k) {
			continue
		}
		why, ok := dropReasons[k]
		if !ok {
			why = "no Moat equivalent"
		}
		r.drop(name, k, why)
	}
}
