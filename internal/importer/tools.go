// Package importer reads the MCP server configs of ten AI tools (Cursor,
// OpenCode, Claude Desktop, Claude Code, VS Code, Cline, KiloCode, Codex,
// Gemini CLI, Antigravity) and turns them into a Moat config.
//
// [Read] and [ReadFile] parse one source file (JSON and JSONC through
// github.com/tailscale/hujson, Codex's TOML through go-toml) into an
// [Imported]: every field Moat can express is carried over, everything else
// is listed in [Imported.Dropped] by server and field. Environment syntax is
// normalized (${env:X} and OpenCode's {env:X} become ${X}; VS Code's
// ${input:ID} becomes ${secret:ID} and is listed in [Imported.Inputs]).
// Literal credentials are found and listed in [Imported.Literals] by place
// and reason, never by value; [MoveSecrets] moves them into the secret store.
// [Render] writes the Moat config and checks it with config.Parse first.
//
// Nothing in this package prints: callers MUST NOT print a server's env,
// header or arg values without redacting the places Literals names.
package importer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moatmcp/moat/internal/suggest"
)

// Formats a Tool's config file can have; they decide which keys hold the
// servers and how numbers and variables are read.
const (
	FormatJSON     = "json"     // {"mcpServers": {...}}: Cursor, Claude Desktop, Antigravity, Claude Code's .mcp.json
	FormatClaude   = "claude"   // ~/.claude.json: mcpServers plus projects.<dir>.mcpServers
	FormatGemini   = "gemini"   // mcpServers; url is SSE, httpUrl is HTTP, timeout in ms, $VAR in values
	FormatCline    = "cline"    // mcpServers; disabled, alwaysAllow, timeout in seconds
	FormatVSCode   = "vscode"   // {"servers": {...}, "inputs": [...]}
	FormatOpenCode = "opencode" // {"mcp": {...}}: command is an array, environment, {env:X}
	FormatCodex    = "codex"    // TOML [mcp_servers.NAME] (dynamic-mcp's [mcp.NAME] is accepted too)
)

// A Tool is an AI tool whose MCP config Moat can import.
type Tool struct {
	Name    string   // canonical name, e.g. "claude-desktop"
	Display string   // for people, e.g. "Claude Desktop"
	Aliases []string // other accepted names
	// ProjectPath and GlobalPath return where the tool keeps its config:
	// ProjectPath relative to the project directory, GlobalPath absolute
	// under home. They return an error when the tool has no such scope.
	ProjectPath, GlobalPath func(home, goos string) (string, error)
	Format                  string

	// projectAlts are further project paths tried in order when
	// ProjectPath's file does not exist (OpenCode's several names).
	projectAlts []string
	globalAlts  []string // the same for GlobalPath, relative to its directory
}

func fixed(parts ...string) func(home, goos string) (string, error) {
	return func(home, goos string) (string, error) {
		if parts[0] == "~" {
			return filepath.Join(append([]string{home}, parts[1:]...)...), nil
		}
		return filepath.Join(parts...), nil
	}
}

func none(msg string) func(home, goos string) (string, error) {
	return func(string, string) (string, error) { return "", errors.New(msg) }
}

// appData is where an application keeps per-user settings on each OS, as
// VS Code and Claude Desktop do.
func appData(home, goos string, parts ...string) string {
	var base string
	switch goos {
	case "darwin":
		base = filepath.Join(home, "Library", "Application Support")
	case "windows":
		base = filepath.Join(home, "AppData", "Roaming")
	default:
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(append([]string{base}, parts...)...)
}

func inAppData(parts ...string) func(home, goos string) (string, error) {
	return func(home, goos string) (string, error) { return appData(home, goos, parts...), nil }
}

var tools = []*Tool{
	{Name: "cursor", Display: "Cursor", Format: FormatJSON,
		ProjectPath: fixed(".cursor", "mcp.json"), GlobalPath: fixed("~", ".cursor", "mcp.json")},
	{Name: "opencode", Display: "OpenCode", Aliases: []string{"open-code"}, Format: FormatOpenCode,
		ProjectPath: fixed("opencode.jsonc"),
		projectAlts: []string{"opencode.json", filepath.Join(".opencode", "opencode.jsonc"), filepath.Join(".opencode", "opencode.json")},
		GlobalPath:  fixed("~", ".config", "opencode", "opencode.jsonc"),
		globalAlts:  []string{"opencode.json"}},
	{Name: "claude-desktop", Display: "Claude Desktop", Format: FormatJSON,
		ProjectPath: none("Claude Desktop has no project config; use --global"),
		GlobalPath:  inAppData("Claude", "claude_desktop_config.json")},
	{Name: "claude", Display: "Claude Code", Aliases: []string{"claude-code", "claude-cli"}, Format: FormatClaude,
		ProjectPath: fixed(".mcp.json"), GlobalPath: fixed("~", ".claude.json")},
	{Name: "vscode", Display: "VS Code", Aliases: []string{"vs-code", "visualstudiocode", "code"}, Format: FormatVSCode,
		ProjectPath: fixed(".vscode", "mcp.json"), GlobalPath: inAppData("Code", "User", "mcp.json")},
	{Name: "cline", Display: "Cline", Format: FormatCline,
		ProjectPath: fixed(".cline", "mcp.json"),
		GlobalPath:  inAppData("Code", "User", "globalStorage", "saoudrizwan.claude-dev", "settings", "cline_mcp_settings.json")},
	{Name: "kilocode", Display: "Kilo Code", Aliases: []string{"kilo-code", "kilo"}, Format: FormatCline,
		ProjectPath: fixed(".kilocode", "mcp.json"),
		GlobalPath:  inAppData("Code", "User", "globalStorage", "kilocode.kilo-code", "settings", "mcp_settings.json")},
	{Name: "codex", Display: "Codex CLI", Aliases: []string{"codex-cli"}, Format: FormatCodex,
		ProjectPath: none("Codex keeps MCP servers only in ~/.codex/config.toml; use --global"),
		GlobalPath:  fixed("~", ".codex", "config.toml")},
	{Name: "gemini", Display: "Gemini CLI", Aliases: []string{"gemini-cli"}, Format: FormatGemini,
		ProjectPath: fixed(".gemini", "settings.json"), GlobalPath: fixed("~", ".gemini", "settings.json")},
	{Name: "antigravity", Display: "Antigravity", Format: FormatJSON,
		ProjectPath: none("Antigravity has no project config; use --global"),
		GlobalPath:  fixed("~", ".gemini", "antigravity", "mcp_config.json")},
}

// Tools returns every supported tool, in a stable order.
func Tools() []*Tool { return slices.Clone(tools) }

func normalizeName(s string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "_", "-")
}

// Lookup finds a tool by name or alias, ignoring case and treating _ as -.
// An unknown name gives an error that lists the supported names and, when
// one is close, suggests it.
func Lookup(name string) (*Tool, error) {
	n := normalizeName(name)
	var names []string
	owner := map[string]string{} // name or alias → tool name
	var aliases []string
	for _, t := range tools {
		for _, a := range append([]string{t.Name}, t.Aliases...) {
			if a == n {
				return t, nil
			}
			owner[a] = t.Name
			aliases = append(aliases, a)
		}
		names = append(names, t.Name)
	}
	best := owner[suggest.Closest(n, aliases)]
	msg := fmt.Sprintf("unknown tool %q", name)
	if best != "" {
		msg += fmt.Sprintf("; did you mean %q?", best)
	}
	return nil, &LookupError{Msg: msg, Suggestion: best, Supported: names}
}

// A LookupError is an unknown tool name.
type LookupError struct {
	Msg        string
	Suggestion string   // the closest name, or ""
	Supported  []string // every canonical name
}

func (e *LookupError) Error() string { return "import: " + e.Msg }

// Hints says what the supported names are.
func (e *LookupError) Hints() []string {
	return []string{"supported tools: " + strings.Join(e.Supported, ", "), "or give the path of a config file: moat import ./mcp.json"}
}

// Locate returns the config file of t for the project in projectDir, or the
// global one when global is set: the first candidate that exists, else the
// preferred one (so the caller's "not found" names it).
func (t *Tool) Locate(projectDir, home, goos string, global bool) (string, error) {
	if global {
		p, err := t.GlobalPath(home, goos)
		if err != nil {
			return "", fmt.Errorf("import: %s: %w", t.Display, err)
		}
		return firstExisting(p, filepath.Dir(p), t.globalAlts), nil
	}
	p, err := t.ProjectPath(home, goos)
	if err != nil {
		return "", fmt.Errorf("import: %s: %w", t.Display, err)
	}
	return firstExisting(filepath.Join(projectDir, p), projectDir, t.projectAlts), nil
}

func firstExisting(preferred, dir string, alts []string) string {
	for _, c := range append([]string{preferred}, prefixed(dir, alts)...) {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return preferred
}

func prefixed(dir string, rel []string) []string {
	out := make([]string, len(rel))
	for i, r := range rel {
		out[i] = filepath.Join(dir, r)
	}
	return out
}
