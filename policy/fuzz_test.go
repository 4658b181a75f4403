package policy

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParsePolicy: Parse never panics, and whatever it accepts writes back
// to a form it reads as the same policy.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"allow": ["read_*"], "deny": ["write_*"], "destructive": "deny"}`,
		`{"rate": "10/s", "burst": 20, "max_concurrent": 4, "max_args_bytes": "256KiB", "max_result_bytes": "16MiB", "timeout": "30s"}`,
		`{"args": {"read_file": {"path": {"prefix": ["/home/me/project"], "regex": "^[^;]*$", "max_length": 4096}}}}`,
		`{"tools": {"search_files": {"rate": "1/s", "max_concurrent": 1}}, "global": {"rate": "100/s"}}`,
		`{"allow": ["a"], "allow": ["b"]}`, `{"Allow": ["x"]}`, "{\"allow\": [\"safe\\u0000\"]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		out, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("Marshal of a parsed policy failed: %v", err)
		}
		q, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%s) accepted, but its Marshal %s is refused: %v", data, out, err)
		}
		again, _ := json.Marshal(q)
		if string(again) != string(out) {
			t.Fatalf("round trip changed the policy:\n%s\n%s", out, again)
		}
	})
}

// FuzzPathConstraint: a path the prefix rule accepts is, once cleaned,
// absolute, free of "..", and equal to or under an allowed prefix on a
// path boundary.
func FuzzPathConstraint(f *testing.F) {
	for _, s := range []string{"/home/me/project/a", "/etc/../etc/passwd", "/home/me/project/../../etc",
		"/home/me/project-evil", "project", "/home/me/project/\x00/../..", "//home//me/project/", "/home/me/./project/."} {
		f.Add(s)
	}
	prefixes := []string{"/home/me/project", "/srv/data"}
	f.Fuzz(func(t *testing.T, p string) {
		if !PathAllowed(p, prefixes) {
			return
		}
		c := filepath.Clean(p)
		if !filepath.IsAbs(c) || strings.ContainsRune(p, 0) {
			t.Fatalf("accepted %q, which is not a clean absolute path without NUL", p)
		}
		for _, seg := range strings.Split(c, "/") {
			if seg == ".." {
				t.Fatalf("accepted %q, which still has '..' after cleaning", p)
			}
		}
		for _, pre := range prefixes {
			if c == pre || strings.HasPrefix(c, pre+"/") {
				return
			}
		}
		t.Fatalf("accepted %q (clean: %q), which is under none of %q", p, c, prefixes)
	})
}
