package policy

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustParse(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%s): %v", s, err)
	}
	return p
}

// TestPublicPackageImportsNoInternals: policy stays embeddable: no SDK, no
// network or process I/O, and of Moat's internals only leaf packages built
// on the standard library alone (internal/suggest, so that policy's "did
// you mean" is every other one's).
func TestPublicPackageImportsNoInternals(t *testing.T) {
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	for _, dep := range deps(".") {
		switch {
		case dep == "net/http" || dep == "os/exec" || strings.HasPrefix(dep, "github.com/modelcontextprotocol/"):
			t.Errorf("policy depends on %s; the public policy package must stay free of the SDK and network I/O", dep)
		case strings.HasPrefix(dep, "github.com/moatmcp/moat/internal/"):
			for _, d := range deps(dep) {
				if d != dep && strings.Contains(strings.Split(d, "/")[0], ".") {
					t.Errorf("policy depends on %s, which depends on %s; an internal package policy uses must need only the standard library", dep, d)
				}
			}
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, tt := range []struct {
		in       string
		wantPath string
		wantMsg  string
	}{
		{`{"alow": ["x"]}`, "/alow", "unknown key"},
		{`{"allow": ["a"], "allow": ["b"]}`, "/", "duplicate key"},
		{`{"allow": ["a["]}`, "/allow/0", "character classes"},
		{`{"allow": [""]}`, "/allow/0", "empty"},
		{`{"deny": "write_*"}`, "/deny", "list"},
		{`{"rate": "10/d"}`, "/rate", "rate"},
		{`{"rate": "0/s"}`, "/rate", "rate"},
		{`{"rate": "-1/s"}`, "/rate", "rate"},
		{`{"burst": 5}`, "/burst", "needs a \"rate\""},
		{`{"max_concurrent": 0}`, "/max_concurrent", "from 1"},
		{`{"max_args_bytes": "256KB"}`, "/max_args_bytes", "invalid size"},
		{`{"max_result_bytes": "1.5MiB"}`, "/max_result_bytes", "invalid size"},
		{`{"timeout": "1m30s"}`, "/timeout", "invalid duration"},
		{`{"destructive": "ask"}`, "/destructive", "must be one of"},
		{`{"pin": "loose"}`, "/pin", "must be one of"},
		{`{"args": {"read_file": {"path": {"prefix": ["project"]}}}}`, "/args/read_file/path/prefix/0", "absolute"},
		{`{"args": {"read_file": {"path": {"regex": "(?=x)"}}}}`, "/args/read_file/path/regex", "RE2"},
		{`{"args": {"read_file": {"path": {}}}}`, "/args/read_file/path", "needs prefix"},
		{`{"tools": {"search_files": {"rate": "1/s", "allow": []}}}`, "/tools/search_files/allow", "unknown key"},
		{`{"global": {"timeout": "1s"}}`, "/global/timeout", "unknown key"},
		{`{"allow": ["a"]} {}`, "/", "after the JSON value"},
		{`[]`, "/", "JSON object"},
		{"{\"allow\": [\"\xff\"]}", "/", "UTF-8"},
	} {
		_, err := Parse([]byte(tt.in))
		pe, ok := err.(*Error)
		if !ok {
			t.Errorf("Parse(%s) = %v, want a *policy.Error", tt.in, err)
			continue
		}
		found := false
		for _, p := range pe.Problems {
			path := p.Path
			if path == "" {
				path = "/"
			}
			if path == tt.wantPath && strings.Contains(p.Msg, tt.wantMsg) {
				found = true
			}
		}
		if !found {
			t.Errorf("Parse(%s) = %v, want a problem at %s mentioning %q", tt.in, err, tt.wantPath, tt.wantMsg)
		}
	}
	if _, err := ParseServer([]byte(`{"global": {"rate": "1/s"}}`)); err == nil || !strings.Contains(err.Error(), "defaults.policy") {
		t.Errorf("ParseServer with global = %v, want an error pointing to defaults.policy", err)
	}
}

// A typo in a key or a value is refused with the word that was meant
// (issue 20: "dney" and "destructiv" passed `moat config validate`).
func TestParseSuggestsTheMeantWord(t *testing.T) {
	for _, tt := range []struct{ in, path, hint string }{
		{`{"destructive": "dney"}`, "/destructive", `did you mean "deny"?`},
		{`{"destructiv": "deny"}`, "/destructiv", `did you mean "destructive"?`},
		{`{"pin": "Strict"}`, "/pin", `did you mean "strict"? (case matters)`},
		{`{"redact": "redcat"}`, "/redact", `did you mean "redact"?`},
		{`{"on_invalid_schema": "pass"}`, "/on_invalid_schema", `did you mean "passthrough"?`},
		{`{"tools": {"x": {"max_concurent": 1}}}`, "/tools/x/max_concurent", `did you mean "max_concurrent"?`},
		{`{"args": {"x": {"p": {"prefix": ["/a"], "max_lenght": 9}}}}`, "/args/x/p/max_lenght", `did you mean "max_length"?`},
	} {
		_, err := Parse([]byte(tt.in))
		var pe *Error
		if !errors.As(err, &pe) || len(pe.Problems) != 1 || pe.Problems[0].Path != tt.path || pe.Problems[0].Hint != tt.hint {
			t.Errorf("Parse(%s) = %#v, want one problem at %s with the hint %q", tt.in, err, tt.path, tt.hint)
		}
	}
}

func TestParseAcceptsTheDesignExample(t *testing.T) {
	p := mustParse(t, `{
		"allow": ["read_*", "list_*", "search_*"], "deny": ["write_*"],
		"destructive": "deny", "read_only_only": false,
		"rate": "10/s", "burst": 20, "max_concurrent": 4,
		"max_args_bytes": "256KiB", "max_result_bytes": "16MiB", "timeout": "30s",
		"args": {"read_file": {"path": {"prefix": ["/home/me/project/"], "regex": "^[^;]*$", "max_length": 4096}}},
		"tools": {"search_files": {"rate": "1/s", "max_concurrent": 1, "max_result_bytes": 1048576}},
		"pin": "strict", "redact": "redact", "on_invalid_schema": "reject",
		"global": {"rate": "100/s", "max_concurrent": 32}}`)
	ts := p.ToolSettings("search_files")
	want := Settings{Rate: Rate{1, time.Second}, Burst: 1, MaxConcurrent: 1, MaxArgsBytes: 256 << 10, MaxResultBytes: 1 << 20, Timeout: 30 * time.Second}
	if diff := cmp.Diff(want, ts); diff != "" {
		t.Errorf("ToolSettings(search_files) (-want +got):\n%s", diff)
	}
	if got := p.Args["read_file"]["path"].Prefix; !cmp.Equal(got, []string{"/home/me/project"}) {
		t.Errorf("prefix = %q, want it cleaned to /home/me/project", got)
	}
	if g := p.GroupSettings(); g.Burst != 20 || g.MaxConcurrent != 4 {
		t.Errorf("GroupSettings = %+v, want burst 20, max_concurrent 4", g)
	}
}

func TestDefaultsAreNotUnlimited(t *testing.T) {
	p := mustParse(t, `{}`)
	ts := p.ToolSettings("anything")
	if ts.MaxArgsBytes != DefaultMaxArgsBytes || ts.MaxResultBytes != DefaultMaxResultBytes || ts.Timeout != DefaultTimeout {
		t.Errorf("empty policy ToolSettings = %+v, want the built-in defaults", ts)
	}
	if g := p.GlobalSettings(); g.Rate != DefaultGlobalRate || g.MaxConcurrent != DefaultGlobalMaxConc {
		t.Errorf("empty policy GlobalSettings = %+v, want the built-in ceiling", g)
	}
	if p.PinMode() != PinStrict || p.RedactMode() != RedactRedact || p.InvalidSchemaMode() != InvalidSchemaReject {
		t.Errorf("empty policy modes = %s/%s/%s, want strict/redact/reject", p.PinMode(), p.RedactMode(), p.InvalidSchemaMode())
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	p := mustParse(t, `{"allow": ["a*"], "deny": [], "destructive": "deny", "read_only_only": true,
		"rate": "100/m", "timeout": "1500ms", "max_args_bytes": 1000,
		"args": {"t": {"p": {"prefix": ["/x"], "max_length": 3}}},
		"tools": {"t": {"timeout": "2h"}}, "global": {"rate": "5/h", "burst": 2}, "pin": "off",
		"resources": {"allow": ["file:///repo/*"], "deny": ["*secret*"]}, "prompts": {"deny": ["admin_*"]}}`)
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	q := mustParse(t, string(data))
	if diff := cmp.Diff(p, q, cmp.AllowUnexported(Policy{}), cmp.Comparer(func(a, b *ArgRule) bool {
		return cmp.Equal(a.Prefix, b.Prefix) && a.Regex == b.Regex && a.MaxLength == b.MaxLength
	})); diff != "" {
		t.Errorf("Parse(Marshal(p)) differs (-p +got):\n%s", diff)
	}
	if _, err := json.Marshal(Merge(p, p)); err == nil {
		t.Error("Marshal of a merged policy succeeded; it would drop the managed rules")
	}
}
