package importer

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// jsoncNames are the file names a JSON source is read under: each one
// selects another format in detect.
var jsoncNames = []string{"mcp.json", "settings.json", "cline_mcp_settings.json", "mcp_settings.json", ".claude.json", "opencode.jsonc"}

// FuzzImportJSONC feeds arbitrary bytes to ReadFileProject as a JSON or
// JSONC source of every format; see checkImport for what must hold.
func FuzzImportJSONC(f *testing.F) {
	seeds := importSeeds(f, "FuzzImportJSONC", "*.json", "*.jsonc")
	for i, data := range seeds {
		f.Add(uint8(i), data)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		checkImport(t, filepath.Join(dir, jsoncNames[int(which)%len(jsoncNames)]), data)
	})
}

// FuzzImportTOML feeds arbitrary bytes to ReadFileProject as a Codex (or
// dynamic-mcp) config.toml; see checkImport for what must hold.
func FuzzImportTOML(f *testing.F) {
	for _, data := range importSeeds(f, "FuzzImportTOML", "*.toml") {
		f.Add(data)
	}
	path := filepath.Join(f.TempDir(), "config.toml")
	f.Fuzz(func(t *testing.T, data []byte) {
		checkImport(t, path, data)
	})
}

// importSeeds returns the import fixtures of testdata/import (every tool,
// and the invalid ones) and the fuzz seeds in testdata/fuzz/<target>.
func importSeeds(f *testing.F, target string, patterns ...string) [][]byte {
	var files []string
	for _, p := range patterns {
		for _, glob := range []string{
			filepath.Join(fixtures, "*", p),
			filepath.Join("..", "..", "testdata", "fuzz", target, p),
		} {
			m, _ := filepath.Glob(glob)
			files = append(files, m...)
		}
	}
	if len(files) == 0 {
		f.Fatalf("no seeds for %s", target)
	}
	var out [][]byte
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// checkImport reads data from path and checks that a source the importer
// accepts becomes a config Moat loads (Render runs config.Parse), with the
// same servers, and that its Literals name each credential's place and
// reason without ever holding the credential.
func checkImport(t *testing.T, path string, data []byte) {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	im, err := ReadFileProject(path, projectDir)
	if err != nil {
		// moat import prints it to a terminal: no byte of the file may
		// reach it as a control character (a newline, an escape sequence).
		if i := strings.IndexFunc(err.Error(), isControl); i >= 0 {
			t.Fatalf("import error holds control character %q from the source: %q", err.Error()[i], err)
		}
		return
	}
	out, err := Render(im)
	if err != nil {
		t.Fatalf("the importer accepted the source but Moat would not load its config: %v\nsource: %q", err, data)
	}
	var rendered struct {
		MCPServers map[string]json.RawMessage `json:"mcpServers"`
	}
	if err := json.Unmarshal(out, &rendered); err != nil {
		t.Fatalf("rendered config is not JSON: %v\n%s", err, out)
	}
	if got, want := slices.Sorted(maps.Keys(rendered.MCPServers)), slices.Sorted(maps.Keys(im.Servers)); !slices.Equal(got, want) {
		t.Fatalf("rendered servers %q, imported %q", got, want)
	}
	for _, l := range im.Literals {
		checkLiteral(t, im, l)
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 }

// checkLiteral fails unless l points at a real place of a real server and
// its printed fields are built only from names (server, key, argument
// index, query parameter) and fixed reasons: then no value can leak into
// the report that `moat import` prints.
func checkLiteral(t *testing.T, im *Imported, l Literal) {
	t.Helper()
	s, ok := im.Servers[l.Server]
	if !ok {
		t.Fatalf("literal %+v names a server that was not imported", l)
	}
	var where, key, value string
	switch l.kind {
	case "env":
		where, key = "env "+l.key, l.key
		value, ok = s.Env[l.key]
	case "header":
		where, key = "header "+l.key, l.key
		value, ok = s.Headers[l.key]
	case "arg":
		where = fmt.Sprintf("args[%d]", l.idx)
		ok = l.idx >= 0 && l.idx < len(s.Args)
		if ok {
			value = s.Args[l.idx]
			key = argKey(s.Args, l.idx)
		}
	case "url":
		where, value, ok = "url", s.URL, s.URL != ""
	}
	if !ok {
		t.Fatalf("literal %+v points at nothing in server %q", l, l.Server)
	}
	if l.Where != where {
		t.Fatalf("literal Where = %q, want %q", l.Where, where)
	}
	if !fixedReason(l.Reason, key, value) {
		t.Fatalf("literal reason %q is not one of the fixed reasons (value %q)", l.Reason, value)
	}
}

// argKey is the option name an argument's value belongs to: "k" of
// "--k=VALUE", or of "--k VALUE". It comes from the source, like an env name.
func argKey(args []string, i int) string {
	if k, _, ok := strings.Cut(strings.TrimLeft(args[i], "-"), "="); ok {
		return k
	}
	if i > 0 && strings.HasPrefix(args[i-1], "-") {
		return strings.TrimLeft(args[i-1], "-")
	}
	return ""
}

// fixedReason reports whether reason is one credentialReason or
// urlCredential can give for a value under key.
func fixedReason(reason, key, value string) bool {
	if rest, ok := strings.CutPrefix(reason, "query parameter "); ok {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return false
		}
		name, _ := strconv.Unquote(q)
		u, err := url.Parse(value)
		if err != nil || !u.Query().Has(name) {
			return false
		}
		rest, ok = strings.CutPrefix(rest[len(q):], ": ")
		return ok && fixedReason(rest, name, "")
	}
	switch reason {
	case "a URL with a password in it", "a long random-looking value", fmt.Sprintf("the name %q says it holds a credential", key):
		return true
	}
	for _, f := range tokenFormats {
		if reason == f.why {
			return true
		}
	}
	return false
}
