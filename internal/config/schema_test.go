package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The published schema is what an editor checks a config with: it must
// accept every Moat config the repository ships as an example, and reject
// the policy typos of issue 20 ("dney", "destructiv") and their kin, so an
// editor flags them before Moat ever reads the file.
func TestSchemaAcceptsEveryExampleAndRejectsPolicyTypos(t *testing.T) {
	sch := compileSchemaFile(t, "../../config-schema.json")
	var files []string
	for _, pattern := range []string{
		"../../examples/*.json",
		filepath.Join(testdata, "valid", "*.json"),
		"../../testdata/import/*/*.golden.json",
	} {
		m, err := filepath.Glob(pattern)
		if err != nil || len(m) == 0 {
			t.Fatalf("no example config matches %s (%v): the test would check nothing", pattern, err)
		}
		files = append(files, m...)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("config-schema.json rejects the example %s:\n%v", f, err)
		}
	}

	for _, tt := range []struct{ name, policy, where string }{
		{"action typo", `{"destructive": "dney"}`, "/destructive"},
		{"key typo", `{"destructiv": "deny"}`, ""}, // additional properties are reported at their object
		{"pin typo", `{"pin": "strcit"}`, "/pin"},
		{"redact typo", `{"redact": "redcat"}`, "/redact"},
		{"setting typo in tools", `{"tools": {"t": {"max_concurent": 1}}}`, "/tools/t"},
		{"argument rule typo", `{"args": {"t": {"path": {"prefx": ["/a"]}}}}`, "/args/t/path"},
		{"rate unit", `{"rate": "10/d"}`, "/rate"},
		{"size unit", `{"max_result_bytes": "16MB"}`, "/max_result_bytes"},
		{"zero cap", `{"max_concurrent": 0}`, "/max_concurrent"},
		{"burst without rate", `{"burst": 5}`, ""},
		{"glob with a class", `{"deny": ["write_[ab]"]}`, "/deny/0"},
		{"global in a server", `{"global": {"rate": "1/s"}}`, "/global"},
		{"list as string", `{"allow": "read_*"}`, "/allow"},
	} {
		src := `{"mcpServers": {"s": {"description": "d", "command": "x", "policy": ` + tt.policy + `}}}`
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(src))
		if err != nil {
			t.Fatal(err)
		}
		err = sch.Validate(inst)
		if err == nil {
			t.Errorf("%s: config-schema.json accepts the policy %s; an editor would not flag it", tt.name, tt.policy)
			continue
		}
		if want := "/mcpServers/s/policy" + tt.where; !strings.Contains(err.Error(), want) {
			t.Errorf("%s: the schema's error does not point at %s:\n%v", tt.name, want, err)
		}
	}
	// The same policy keys are fine where they belong.
	src := `{"mcpServers": {}, "defaults": {"policy": {"global": {"rate": "100/s", "burst": 10}, "pin": "${PIN}"}}}`
	inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(src))
	if err := sch.Validate(inst); err != nil {
		t.Errorf("config-schema.json rejects global limits in defaults.policy, or a ${VAR} value: %v", err)
	}
}
