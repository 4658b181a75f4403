package importer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/tailscale/hujson"
)

// maxSourceSize bounds a source file; ~/.claude.json can hold long
// histories, but not this much.
const maxSourceSize = 64 << 20

// Imported is what one source file holds that Moat can use, and a record
// of what it cannot.
type Imported struct {
	Source   string             // the file read
	Format   string             // one of the Format constants
	Servers  map[string]*Server // by (Moat-valid) name
	Dropped  []Dropped          // what could not be carried over, sorted
	Literals []Literal          // literal credentials left in Servers, sorted
	Inputs   []string           // secret names VS Code ${input:ID}s became; each needs `moat secret set`
}

// Dropped is one field of one server that Moat's config cannot express, or
// a conversion the user should check.
type Dropped struct {
	Server, Field, Why string
}

// Server is one upstream as Moat's config can express it.
type Server struct {
	Description   string
	Type          string // "stdio", "http", "sse", or "" for a url whose transport Moat should probe
	Command       string
	Args          []string
	Env           map[string]string
	InheritEnv    []string // variables of Moat's environment the child also gets
	Cwd           string   // absolute, ~/ or ${VAR}/...; "" is a private empty directory
	URL           string
	Headers       map[string]string
	OAuthClientID string
	OAuthScopes   []string
	// AllowInsecureHTTP and AllowPrivateNetwork are set only when the
	// source's url needs them (plain http:// to another host, a private IP),
	// always with a note in Dropped.
	AllowInsecureHTTP, AllowPrivateNetwork bool
	Enabled                                bool
	Features                               Features
	Timeout                                Timeouts
}

// Features are Moat's opt-out switches.
type Features struct{ Tools, Resources, Prompts bool }

// Timeouts are durations in Moat's syntax ("30s", "1500ms"); "" is the default.
type Timeouts struct{ Tools, Resources, Prompts string }

// A SyntaxError is a source file that does not parse.
type SyntaxError struct {
	File      string
	Line, Col int // 1-based; 0 when unknown
	Msg       string
}

func (e *SyntaxError) Error() string {
	// The parsers quote pieces of the source, which may hold terminal
	// escapes or newlines: they are shown escaped, never raw.
	msg := escapeControl(e.Msg)
	if e.Line > 0 {
		return fmt.Sprintf("import: %s:%d:%d: %s", e.File, e.Line, e.Col, msg)
	}
	return fmt.Sprintf("import: %s: %s", e.File, msg)
}

// escapeControl writes control characters as Go escapes (\x1b, \n).
func escapeControl(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Read parses the config file at path in t's format. Claude Code's
// per-project entries and VS Code's ${workspaceFolder} refer to the current
// directory.
func Read(t *Tool, path string) (*Imported, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return ReadProject(t.Format, path, wd)
}

// ReadFile parses a config file of any supported tool, telling the format
// from the file's extension, name and content.
func ReadFile(path string) (*Imported, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return ReadFileProject(path, wd)
}

// ReadFileProject is ReadFile for the project in projectDir.
func ReadFileProject(path, projectDir string) (*Imported, error) {
	data, err := readSource(path)
	if err != nil {
		return nil, err
	}
	format, err := detect(path, data)
	if err != nil {
		return nil, err
	}
	return parse(format, path, data, projectDir)
}

// ReadProject is Read for the project in projectDir, given the format.
func ReadProject(format, path, projectDir string) (*Imported, error) {
	data, err := readSource(path)
	if err != nil {
		return nil, err
	}
	return parse(format, path, data, projectDir)
}

func readSource(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("import: %s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSourceSize+1))
	if err != nil {
		return nil, fmt.Errorf("import: %s: %w", path, err)
	}
	if len(data) > maxSourceSize {
		return nil, fmt.Errorf("import: %s is larger than %d MiB; is it the right file?", path, maxSourceSize>>20)
	}
	return data, nil
}

// detect tells a file's format from its name and content.
func detect(path string, data []byte) (string, error) {
	if strings.EqualFold(filepath.Ext(path), ".toml") {
		return FormatCodex, nil
	}
	top, err := decodeJSONC(path, data)
	if err != nil {
		return "", err
	}
	base := strings.ToLower(filepath.Base(path))
	_, hasMCPServers := top["mcpServers"]
	switch {
	case hasMCPServers && top["projects"] != nil || !hasMCPServers && top["projects"] != nil:
		return FormatClaude, nil
	case hasMCPServers && base == "settings.json":
		return FormatGemini, nil
	case hasMCPServers && (base == "cline_mcp_settings.json" || base == "mcp_settings.json"):
		return FormatCline, nil
	case hasMCPServers:
		return FormatJSON, nil
	case top["servers"] != nil:
		return FormatVSCode, nil
	case top["mcp"] != nil:
		return FormatOpenCode, nil
	}
	return "", fmt.Errorf("import: %s holds no MCP servers: no \"mcpServers\", \"servers\" (VS Code), \"mcp\" (OpenCode) or \"projects\" (Claude Code) key", path)
}

// decodeJSONC parses JSON with comments and trailing commas, reporting
// syntax errors with line and column.
func decodeJSONC(path string, data []byte) (map[string]any, error) {
	v, err := hujson.Parse(data)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "hujson: ")
		line, col := 0, 0
		if _, e := fmt.Sscanf(msg, "line %d, column %d:", &line, &col); e == nil {
			if i := strings.Index(msg, ": "); i >= 0 {
				msg = msg[i+2:]
			}
		}
		return nil, &SyntaxError{File: path, Line: line, Col: col, Msg: msg}
	}
	v.Standardize()
	dec := json.NewDecoder(bytes.NewReader(v.Pack()))
	dec.UseNumber()
	var top any
	if err := dec.Decode(&top); err != nil {
		return nil, &SyntaxError{File: path, Msg: err.Error()}
	}
	m, ok := top.(map[string]any)
	if !ok {
		return nil, &SyntaxError{File: path, Line: 1, Col: 1, Msg: "the top level is not an object"}
	}
	return m, nil
}

func parse(format, path string, data []byte, projectDir string) (*Imported, error) {
	im := &Imported{Source: path, Format: format, Servers: map[string]*Server{}}
	r := &reader{im: im, norm: &normalizer{format: format, projectDir: projectDir, inputs: map[string]bool{}}}
	var entries map[string]any
	var err error
	switch format {
	case FormatCodex:
		entries, err = codexServers(path, data)
	default:
		entries, err = jsonServers(r, format, path, data, projectDir)
	}
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		r.server(name, entries[name])
	}
	if len(im.Servers) == 0 && len(entries) == 0 {
		return nil, fmt.Errorf("import: %s defines no MCP servers", path)
	}
	im.Inputs = slices.Sorted(maps.Keys(r.norm.inputs))
	im.Literals = findLiterals(im.Servers)
	sort.SliceStable(im.Dropped, func(i, j int) bool { return im.Dropped[i].Server < im.Dropped[j].Server })
	return im, nil
}

// jsonServers returns the server entries of a JSON or JSONC file.
func jsonServers(r *reader, format, path string, data []byte, projectDir string) (map[string]any, error) {
	top, err := decodeJSONC(path, data)
	if err != nil {
		return nil, err
	}
	key := "mcpServers"
	switch format {
	case FormatVSCode:
		key = "servers"
	case FormatOpenCode:
		key = "mcp"
	}
	entries, err := object(top[key], path, key)
	if err != nil {
		return nil, err
	}
	if format != FormatClaude {
		return entries, nil
	}
	// Claude Code: user scope at the top, local scope (`claude mcp add`
	// without -s, private to one project) under projects.<dir>. Both apply
	// in projectDir, and local wins, as in Claude Code.
	projects, _ := top["projects"].(map[string]any)
	proj, _ := projects[filepath.Clean(projectDir)].(map[string]any)
	local, err := object(proj["mcpServers"], path, "projects."+projectDir+".mcpServers")
	if err != nil {
		return nil, err
	}
	if entries == nil {
		entries = map[string]any{}
	}
	for name, v := range local {
		if _, ok := entries[name]; ok {
			r.drop(name, "*", "the user-scope entry is replaced by this project's local-scope entry, as in Claude Code")
		}
		entries[name] = v
	}
	return entries, nil
}

func object(v any, path, key string) (map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("import: %s: %q is %s, not an object of servers", path, key, kindOf(v))
	}
	return m, nil
}

func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case json.Number, int64, float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// codexServers reads [mcp_servers.NAME] tables, and dynamic-mcp's [mcp.NAME].
func codexServers(path string, data []byte) (map[string]any, error) {
	var top map[string]any
	if err := toml.Unmarshal(data, &top); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, col := de.Position()
			return nil, &SyntaxError{File: path, Line: line, Col: col, Msg: de.Error()}
		}
		return nil, &SyntaxError{File: path, Msg: err.Error()}
	}
	out := map[string]any{}
	for _, key := range []string{"mcp", "mcp_servers"} { // the real key wins
		m, err := object(top[key], path, key)
		if err != nil {
			return nil, err
		}
		maps.Copy(out, m)
	}
	return out, nil
}

// number reads a JSON or TOML number.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case int64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// duration formats n units of unit (1 for ms, 1000 for s) in Moat's syntax.
func duration(n float64, unitMS float64) (string, bool) {
	ms := n * unitMS
	if ms < 1 || ms > math.MaxInt32*1000.0 || math.IsNaN(ms) {
		return "", false
	}
	msi := int64(math.Round(ms))
	if msi%1000 == 0 {
		return strconv.FormatInt(msi/1000, 10) + "s", true
	}
	return strconv.FormatInt(msi, 10) + "ms", true
}
