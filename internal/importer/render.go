package importer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/lazyregexp"
)

// SchemaURL is written as "$schema" so editors check and complete the file;
// it is config-schema.json's $id.
const SchemaURL = "https://raw.githubusercontent.com/moatmcp/moat/main/config-schema.json"

// DefaultDescription proposes a description from what the server runs:
// "Filesystem tools (from @modelcontextprotocol/server-filesystem)" for an
// npx package, "Tools at api.example.com" for a url, else from its name.
func DefaultDescription(name string, s *Server) string {
	if pkg := packageOf(s.Command, s.Args); pkg != "" {
		return fmt.Sprintf("%s tools (from %s)", title(pkg), pkg)
	}
	if s.URL != "" {
		if u, err := url.Parse(s.URL); err == nil && u.Hostname() != "" && !strings.Contains(u.Host, "${") {
			return fmt.Sprintf("%s tools (at %s)", title(name), u.Hostname())
		}
	}
	return title(name) + " tools"
}

// Runners whose first non-flag argument is the package or image they run.
var runners = map[string]bool{"npx": true, "bunx": true, "pnpx": true, "uvx": true, "pipx": true, "docker": true, "podman": true, "deno": true}

// packageOf returns the package a launcher such as npx or docker runs.
func packageOf(command string, args []string) string {
	if !runners[path.Base(command)] {
		return ""
	}
	skipNext := false
	for i, a := range args {
		switch {
		case skipNext:
			skipNext = false
		case (path.Base(command) == "docker" || path.Base(command) == "podman") && i == 0 && a == "run",
			path.Base(command) == "deno" && a == "run",
			path.Base(command) == "pipx" && a == "run":
		case a == "-e" || a == "--env" || a == "-v" || a == "--volume" || a == "--name" || a == "--from" || a == "-p" || a == "--package":
			skipNext = true
		case strings.HasPrefix(a, "-"):
		case strings.Contains(a, "${"):
			return ""
		default:
			return a
		}
	}
	return ""
}

var (
	leadingVar    = lazyregexp.New(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	versionSuffix = lazyregexp.New(`(@[^/@]*|:[^/:]*)$`)
	nameNoise     = lazyregexp.New(`(?i)^(mcp-server-|server-|mcp-)|(-mcp-server|-server|-mcp)$`)
)

// title turns "@scope/server-git-hub@1.0" or "ghcr.io/github/github-mcp-server:1"
// into "Git hub" / "Github".
func title(pkg string) string {
	p := pkg
	if strings.HasPrefix(p, "npm:") || strings.HasPrefix(p, "jsr:") {
		p = p[4:]
	}
	if !strings.HasPrefix(p, "@") || strings.Count(p, "@") > 1 {
		p = versionSuffix.ReplaceAllString(p, "")
	}
	p = path.Base(p)
	for range 2 {
		p = nameNoise.ReplaceAllString(p, "")
	}
	words := strings.FieldsFunc(p, func(r rune) bool { return r == '-' || r == '_' || r == '.' || r == ' ' })
	if len(words) == 0 {
		return "MCP"
	}
	s := strings.Join(words, " ")
	return strings.ToUpper(s[:1]) + s[1:]
}

type outConfig struct {
	Schema     string                `json:"$schema"`
	MCPServers map[string]*outServer `json:"mcpServers"`
}

type outServer struct {
	Description   string            `json:"description"`
	Type          string            `json:"type,omitempty"`
	Command       string            `json:"command,omitempty"`
	Args          []string          `json:"args,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	InheritEnv    []string          `json:"inherit_env,omitempty"`
	Cwd           string            `json:"cwd,omitempty"`
	URL           string            `json:"url,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	OAuthClientID string            `json:"oauth_client_id,omitempty"`
	OAuthScopes   []string          `json:"oauth_scopes,omitempty"`
	AllowInsecure bool              `json:"allow_insecure_http,omitempty"`
	AllowPrivate  bool              `json:"allow_private_network,omitempty"`
	Enabled       *bool             `json:"enabled,omitempty"`
	Features      *outFlags         `json:"features,omitempty"`
	Timeout       *outTimeout       `json:"timeout,omitempty"`
}

type outFlags struct {
	Tools     *bool `json:"tools,omitempty"`
	Resources *bool `json:"resources,omitempty"`
	Prompts   *bool `json:"prompts,omitempty"`
}

type outTimeout struct {
	Tools     string `json:"tools,omitempty"`
	Resources string `json:"resources,omitempty"`
	Prompts   string `json:"prompts,omitempty"`
}

// Render returns im as a Moat config: pretty JSON, servers sorted by name,
// "$schema" first. It checks the result with config.Parse (with every
// variable and secret stood in for) and returns the problems instead if
// Moat would refuse it.
func Render(im *Imported) ([]byte, error) {
	out := outConfig{Schema: SchemaURL, MCPServers: map[string]*outServer{}}
	urlVars, pathVars := map[string]bool{}, map[string]bool{"HOME": true}
	for name, s := range im.Servers {
		o := &outServer{
			Description: s.Description, Type: s.Type, Command: s.Command, Args: s.Args, Env: s.Env,
			InheritEnv: s.InheritEnv, Cwd: s.Cwd, AllowInsecure: s.AllowInsecureHTTP, AllowPrivate: s.AllowPrivateNetwork,
			URL: s.URL, Headers: s.Headers, OAuthClientID: s.OAuthClientID, OAuthScopes: s.OAuthScopes,
		}
		if strings.TrimSpace(o.Description) == "" {
			o.Description = DefaultDescription(name, s)
		}
		if !s.Enabled {
			o.Enabled = new(bool)
		}
		if f := s.Features; !f.Tools || !f.Resources || !f.Prompts {
			o.Features = &outFlags{off(f.Tools), off(f.Resources), off(f.Prompts)}
		}
		if t := s.Timeout; t != (Timeouts{}) {
			o.Timeout = &outTimeout{t.Tools, t.Resources, t.Prompts}
		}
		if m := leadingVar.FindStringSubmatch(s.URL); m != nil {
			urlVars[m[1]] = true
		}
		if m := leadingVar.FindStringSubmatch(s.Cwd); m != nil {
			pathVars[m[1]] = true
		}
		out.MCPServers[name] = o
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	// Stand-ins: a url that is one variable gets a url, anything else a
	// plain word; the real values are checked when Moat loads the file.
	opts := &config.LoadOptions{
		Getenv: func(name string) (string, bool) {
			switch {
			case urlVars[name]:
				return "https://placeholder.invalid", true
			case pathVars[name]:
				return "/placeholder", true
			}
			return "placeholder", true
		},
		Secret: func(string) (string, error) { return "placeholder", nil },
	}
	if _, err := config.Parse("moat.json", buf.Bytes(), opts); err != nil {
		return nil, fmt.Errorf("import: the converted config would not load; please report this with the source file's layout:\n%w", err)
	}
	return buf.Bytes(), nil
}

// off returns a pointer to false when on is false, else nil (the default).
func off(on bool) *bool {
	if on {
		return nil
	}
	return new(bool)
}
