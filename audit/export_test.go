package audit

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// ocsfSchema is the part of the OCSF schema (testdata/ocsf-1.5.0, copied
// from github.com/ocsf/ocsf-schema at v1.5.0, commit f0c227b) that the
// export uses, read as the schema server reads it: classes extend their
// category's class and base_event, objects extend objects, "$include" pulls
// in a profile's attributes, and dictionary.json gives every attribute's
// type and enum.
type ocsfSchema struct {
	dir        string
	dictionary map[string]ocsfAttr
	types      map[string]struct{ Type string }
	categories map[string]struct{ UID int }
}

type ocsfAttr struct {
	Type        string
	IsArray     bool `json:"is_array"`
	Requirement string
	Enum        map[string]json.RawMessage
}

type ocsfDef struct {
	UID         *int
	Name        string
	Category    string
	Extends     string
	Attributes  map[string]json.RawMessage
	Constraints struct {
		AtLeastOne []string `json:"at_least_one"`
	}
}

func loadOCSF(t *testing.T) *ocsfSchema {
	t.Helper()
	s := &ocsfSchema{dir: filepath.Join("testdata", "ocsf-"+OCSFVersion)}
	var version struct{ Version string }
	s.read(t, "version.json", &version)
	if version.Version != OCSFVersion {
		t.Fatalf("testdata holds OCSF %s, the export writes %s", version.Version, OCSFVersion)
	}
	var dict struct {
		Attributes map[string]ocsfAttr
		Types      struct {
			Attributes map[string]struct{ Type string }
		}
	}
	s.read(t, "dictionary.json", &dict)
	s.dictionary, s.types = dict.Attributes, dict.Types.Attributes
	var cats struct {
		Attributes map[string]struct{ UID int }
	}
	s.read(t, "categories.json", &cats)
	s.categories = cats.Attributes
	return s
}

func (s *ocsfSchema) read(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// attrs resolves a definition file's attributes along its extends chain
// (the child's fields win, enums are merged) and its includes, and returns
// them with the at-least-one constraint of the most specific definition.
func (s *ocsfSchema) attrs(t *testing.T, file string) (map[string]ocsfAttr, []string, ocsfDef) {
	t.Helper()
	var d ocsfDef
	s.read(t, file, &d)
	out := map[string]ocsfAttr{}
	if d.Extends != "" {
		parent := "objects/" + d.Extends + ".json"
		switch {
		case d.Extends == "base_event":
			parent = "events/base_event.json"
		case strings.HasPrefix(file, "events/application/") && d.Extends == "application":
			parent = "events/application/application.json"
		}
		out, _, _ = s.attrs(t, parent)
	}
	merge := func(name string, raw json.RawMessage) {
		var a ocsfAttr
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatalf("%s: attribute %s: %v", file, name, err)
		}
		old := out[name]
		if a.Requirement == "" {
			a.Requirement = old.Requirement
		}
		enum := maps.Clone(old.Enum)
		if enum == nil {
			enum = map[string]json.RawMessage{}
		}
		maps.Copy(enum, a.Enum)
		a.Enum = enum
		out[name] = a
	}
	for name, raw := range d.Attributes {
		if name == "$include" {
			var incs []string
			json.Unmarshal(raw, &incs)
			for _, inc := range incs {
				var p ocsfDef
				s.read(t, inc, &p)
				for n, r := range p.Attributes {
					merge(n, r)
					// A profile's attributes are required only in events
					// that declare it (metadata.profiles); the export
					// declares none.
					if strings.HasPrefix(inc, "profiles/") {
						a := out[n]
						a.Requirement = "optional"
						out[n] = a
					}
				}
			}
			continue
		}
		merge(name, raw)
	}
	return out, d.Constraints.AtLeastOne, d
}

// check validates v (an object described by file) and returns every
// problem, each with its JSON path.
func (s *ocsfSchema) check(t *testing.T, path, file string, v map[string]any) []string {
	t.Helper()
	attrs, atLeastOne, _ := s.attrs(t, file)
	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, path+": "+fmt.Sprintf(format, a...)) }
	for name, a := range attrs {
		if _, ok := v[name]; !ok && a.Requirement == "required" {
			bad("required attribute %q is missing", name)
		}
	}
	if len(atLeastOne) > 0 && !slices.ContainsFunc(atLeastOne, func(n string) bool { _, ok := v[n]; return ok }) {
		bad("needs at least one of %v", atLeastOne)
	}
	for _, name := range slices.Sorted(maps.Keys(v)) {
		a, ok := attrs[name]
		if !ok {
			bad("attribute %q is not in the schema here", name)
			continue
		}
		d, ok := s.dictionary[name]
		if !ok {
			bad("attribute %q is not in the dictionary", name)
			continue
		}
		enum := maps.Clone(d.Enum)
		if enum == nil {
			enum = map[string]json.RawMessage{}
		}
		maps.Copy(enum, a.Enum)
		if path == "$" && (name == "class_uid" || name == "category_uid" || name == "type_uid") {
			// base_event's enums list its own uids only: a class's uids
			// are derived (see validate), not enumerated.
			enum = nil
		}
		problems = append(problems, s.value(t, path+"."+name, d, enum, v[name])...)
	}
	return problems
}

func (s *ocsfSchema) value(t *testing.T, path string, d ocsfAttr, enum map[string]json.RawMessage, v any) []string {
	if d.IsArray {
		arr, ok := v.([]any)
		if !ok {
			return []string{path + ": want an array"}
		}
		var out []string
		for i, e := range arr {
			one := d
			one.IsArray = false
			out = append(out, s.value(t, fmt.Sprintf("%s[%d]", path, i), one, enum, e)...)
		}
		return out
	}
	base := d.Type
	if tt, ok := s.types[d.Type]; ok && tt.Type != "" {
		base = tt.Type
	}
	switch {
	case d.Type == "object" || d.Type == "json_t":
		return nil
	case !strings.HasSuffix(d.Type, "_t"):
		m, ok := v.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want an object of type %s, got %T", path, d.Type, v)}
		}
		return s.check(t, path, "objects/"+d.Type+".json", m)
	case base == "integer_t" || base == "long_t" || d.Type == "timestamp_t":
		n, ok := v.(float64)
		if !ok || n != float64(int64(n)) {
			return []string{fmt.Sprintf("%s: want an integer (%s), got %v", path, d.Type, v)}
		}
		if len(enum) > 0 {
			if _, ok := enum[strconv.FormatInt(int64(n), 10)]; !ok {
				return []string{fmt.Sprintf("%s: %v is not one of %v", path, n, slices.Sorted(maps.Keys(enum)))}
			}
		}
	case base == "boolean_t":
		if _, ok := v.(bool); !ok {
			return []string{fmt.Sprintf("%s: want a boolean, got %v", path, v)}
		}
	case base == "float_t":
		if _, ok := v.(float64); !ok {
			return []string{fmt.Sprintf("%s: want a number, got %v", path, v)}
		}
	default: // string_t and the string-based types
		if _, ok := v.(string); !ok {
			return []string{fmt.Sprintf("%s: want a string (%s), got %v", path, d.Type, v)}
		}
	}
	return nil
}

// validate checks one exported event against its class.
func (s *ocsfSchema) validate(t *testing.T, ev map[string]any) []string {
	t.Helper()
	classes := map[float64]string{6003: "events/application/api_activity.json", 0: "events/base_event.json"}
	file, ok := classes[ev["class_uid"].(float64)]
	if !ok {
		return []string{fmt.Sprintf("class_uid %v is not a class the export uses", ev["class_uid"])}
	}
	problems := s.check(t, "$", file, ev)
	_, _, d := s.attrs(t, file)
	wantClass := 0
	if d.UID != nil {
		category := d.Category
		if category == "" { // a class file names its category through what it extends
			var parent ocsfDef
			s.read(t, "events/application/application.json", &parent)
			category = parent.Category
		}
		wantClass = s.categories[category].UID*1000 + *d.UID
	}
	if got := int(ev["class_uid"].(float64)); got != wantClass {
		problems = append(problems, fmt.Sprintf("$.class_uid: %d, the schema says %d", got, wantClass))
	}
	if got, want := ev["category_uid"], float64(wantClass/1000); got != want {
		problems = append(problems, fmt.Sprintf("$.category_uid: %v, want %v", got, want))
	}
	if got, want := ev["type_uid"], float64(wantClass*100)+ev["activity_id"].(float64); got != want {
		problems = append(problems, fmt.Sprintf("$.type_uid: %v, want class_uid*100+activity_id = %v", got, want))
	}
	return problems
}

// exportRecords covers every kind of record the log holds.
func exportRecords() []*Record {
	base := func(r *Record, seq uint64) *Record {
		r.V, r.Seq, r.Time, r.PID, r.User, r.Hash = Version, seq, "2026-12-06T02:03:04.123456789Z", 4242, "alice", strings.Repeat("ab", 32)
		return r
	}
	return []*Record{
		base(&Record{Event: "server_start", Detail: map[string]string{"config_hash": "c0ffee", "version": "dev"}}, 1),
		base(&Record{Event: EventIntent, Group: "files", Tool: "read_file", Session: "s1", ArgsSHA256: "aa", ArgsShape: map[string]string{"path": "string"}, Detail: map[string]string{"call": "tool_call"}}, 2),
		base(&Record{Event: "tool_call", Group: "files", Tool: "read_file", Session: "s1", Decision: "allow", Outcome: OutcomeOK, DurationMS: 12, BytesIn: 20, BytesOut: 300, Detail: map[string]string{DetailIntent: "2"}}, 3),
		base(&Record{Event: "tool_call", Group: "files", Tool: "write_file", Decision: "deny", Rule: "policy:deny:write_*", Reason: "denied by the policy", Outcome: OutcomeDenied}, 4),
		base(&Record{Event: "tool_call", Group: "web", Tool: "fetch", Decision: "allow", Outcome: OutcomeTimeout, Reason: "timed out after 30s"}, 5),
		base(&Record{Event: "resource_read", Group: "files", Tool: "file:///etc/hosts", Decision: "allow", Outcome: OutcomeOK}, 6),
		base(&Record{Event: "prompt_get", Group: "everything", Tool: "simple-prompt", Decision: "allow", Outcome: OutcomeOK}, 7),
		base(&Record{Event: "resource_subscribe", Group: "files", Tool: "file:///tmp/x", Decision: "allow", Outcome: OutcomeLimited}, 8),
		base(&Record{Event: "completion", Group: "everything", Tool: "completable-prompt", Decision: "allow", Outcome: OutcomeOK}, 9),
		base(&Record{Event: "opt_out", Group: "files", Detail: map[string]string{"setting": "pin=off"}}, 10),
		base(&Record{Event: EventAuditFailure, Outcome: OutcomeError, Reason: "records could not be written: no space", Detail: map[string]string{"lost": "3"}}, 11),
		base(&Record{Event: EventCheckpoint, Count: 10, Digest: "dd", Sig: "c2ln"}, 12),
	}
}

// TestOCSFExportMatchesTheSchema: every kind of record, exported, is a valid
// event of its OCSF 1.5.0 class (API Activity 6003 for calls, Base Event
// otherwise) as the schema's own files define it: required attributes,
// at-least-one constraints, types, enums, uids. The validator is shown to
// catch what it must (a missing operation, an unknown attribute, a value
// outside its enum, a wrong type_uid).
//
// SECURITY.md, Audit log, "Export".
func TestOCSFExportMatchesTheSchema(t *testing.T) {
	s := loadOCSF(t)
	for _, r := range exportRecords() {
		b, err := OCSF(r, "1.2.3")
		if err != nil {
			t.Fatal(err)
		}
		var ev map[string]any
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		if p := s.validate(t, ev); len(p) > 0 {
			t.Errorf("%s (seq %d) is not valid OCSF:\n  %s\n%s", r.Event, r.Seq, strings.Join(p, "\n  "), b)
		}
		if _, isCall := callEvents[r.Event]; isCall != (ev["class_uid"].(float64) == 6003) {
			t.Errorf("%s exported as class %v", r.Event, ev["class_uid"])
		}
	}

	b, _ := OCSF(exportRecords()[2], "1.2.3")
	for name, spoil := range map[string]func(ev map[string]any){
		"no api.operation":  func(ev map[string]any) { delete(ev["api"].(map[string]any), "operation") },
		"unknown attribute": func(ev map[string]any) { ev["moat_group"] = "files" },
		"status_id 7":       func(ev map[string]any) { ev["status_id"] = 7.0 },
		"wrong type_uid":    func(ev map[string]any) { ev["type_uid"] = 600301.0 },
		"actor with no one": func(ev map[string]any) { ev["actor"] = map[string]any{} },
		"time as a string":  func(ev map[string]any) { ev["time"] = "2026-12-06" },
	} {
		var ev map[string]any
		json.Unmarshal(b, &ev)
		spoil(ev)
		if len(s.validate(t, ev)) == 0 {
			t.Errorf("the validator accepts an event with %s", name)
		}
	}
}

// TestCEFExport: each record is one CEF line whose header and extension
// read back exactly, with separators, backslashes, equals signs and line
// breaks in values escaped.
//
// SECURITY.md, Audit log, "Export".
func TestCEFExport(t *testing.T) {
	r := exportRecords()[3]
	r.Reason = "a|b=c\\d\nnext line"
	r.Group = "gr|oup"
	line, err := CEF(r, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(line, "\r\n") {
		t.Fatalf("a CEF line holds a line break: %q", line)
	}
	header, ext := splitCEF(line)
	if want := []string{"CEF:0", "Moat", "Moat", "1.2.3", "tool_call", "tool_call gr|oup/write_file", "6"}; !slices.Equal(header, want) {
		t.Errorf("header %q, want %q", header, want)
	}
	want := map[string]string{
		"rt": "1796522584123", "suser": "alice", "spid": "4242", "act": "deny", "outcome": "denied",
		"reason": "a|b=c\\d\nnext line", "cs1Label": "group", "cs1": "gr|oup", "cs2Label": "tool", "cs2": "write_file",
		"cs3Label": "rule", "cs3": "policy:deny:write_*", "cn1Label": "seq", "cn1": "4",
	}
	if !maps.Equal(ext, want) {
		t.Errorf("extension\n got %q\nwant %q", ext, want)
	}
	for _, r := range exportRecords() {
		if _, err := CEF(r, "dev"); err != nil {
			t.Errorf("%s: %v", r.Event, err)
		}
	}
}

// splitCEF parses a CEF line as a SIEM would: seven header fields split at
// unescaped pipes, then key=value pairs whose values end where the next
// unescaped " key=" begins.
func splitCEF(line string) ([]string, map[string]string) {
	var header []string
	var cur strings.Builder
	i := 0
	for ; i < len(line) && len(header) < 7; i++ {
		switch c := line[i]; {
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '|':
			header = append(header, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	ext := map[string]string{}
	rest := line[i:]
	var key string
	cur.Reset()
	unescape := strings.NewReplacer(`\\`, `\`, `\=`, `=`, `\n`, "\n", `\r`, "\r")
	for j := 0; j <= len(rest); j++ {
		if j == len(rest) || rest[j] == ' ' && keyAt(rest[j+1:]) {
			if key != "" {
				ext[key] = unescape.Replace(cur.String())
			}
			if j == len(rest) {
				break
			}
			k, _, _ := strings.Cut(rest[j+1:], "=")
			key = k
			j += len(k) + 1
			cur.Reset()
			continue
		}
		if j == 0 {
			k, _, _ := strings.Cut(rest, "=")
			key = k
			j += len(k)
			continue
		}
		if rest[j] == '\\' && j+1 < len(rest) {
			cur.WriteByte(rest[j])
			j++
		}
		cur.WriteByte(rest[j])
	}
	return header, ext
}

// keyAt reports whether s starts with a CEF extension key and "=".
func keyAt(s string) bool {
	k, _, ok := strings.Cut(s, "=")
	return ok && k != "" && !strings.ContainsAny(k, ` \`)
}
