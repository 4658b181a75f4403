package policy

import (
	"strings"
	"testing"
)

func TestDecideResourcesAndPrompts(t *testing.T) {
	p := mustParse(t, `{"resources": {"allow": ["file:///repo/*", "test://static/*"], "deny": ["*secret*"]},
		"prompts": {"deny": ["admin_*"]}}`)
	for _, c := range []struct {
		uri  string
		want bool
		rule string
	}{
		{"file:///repo/a/b.go", true, "resources.allow"}, // '*' crosses '/'
		{"file:///etc/passwd", false, "resources.allow"},
		{"file:///repo/secret.txt", false, "resources.deny:*secret*"},
		{"test://static/{id}", true, "resources.allow"}, // a template by its URI template
	} {
		d := p.DecideResource(c.uri)
		if d.Allow != c.want || d.Rule != c.rule {
			t.Errorf("DecideResource(%q) = %v %q (%s), want %v %q", c.uri, d.Allow, d.Rule, d.Reason, c.want, c.rule)
		}
		if !d.Allow && !strings.Contains(d.Reason, "do not retry") {
			t.Errorf("DecideResource(%q): the reason does not say what to do: %s", c.uri, d.Reason)
		}
	}
	if d := p.DecidePrompt("admin_reset"); d.Allow || d.Rule != "prompts.deny:admin_*" {
		t.Errorf("DecidePrompt(admin_reset) = %+v", d)
	}
	if d := p.DecidePrompt("greet"); !d.Allow {
		t.Errorf("DecidePrompt(greet) = %+v, want allowed (no prompt allow list)", d)
	}
	// The tool rules do not reach resources or prompts, nor the other way.
	q := mustParse(t, `{"allow": [], "deny": ["*"]}`)
	if d := q.DecideResource("file:///x"); !d.Allow {
		t.Errorf("a tools-only policy refused a resource: %+v", d)
	}
	var none *Policy
	if d := none.DecideResource("file:///x"); d.Allow || d.Rule != "no-policy" {
		t.Errorf("no policy allowed a resource: %+v", d)
	}
}

// TestManagedResourceRulesCannotBeLoosened: the user's allow list cannot
// admit what the managed policy leaves out, and its deny list stays.
func TestManagedResourceRulesCannotBeLoosened(t *testing.T) {
	managed := mustParse(t, `{"resources": {"allow": ["file:///srv/*"], "deny": ["*.key"]}, "prompts": {"allow": ["greet"]}}`)
	user := mustParse(t, `{"resources": {"allow": ["*"]}, "prompts": {"allow": ["*"], "deny": ["greet_admin"]}}`)
	p := Effective(user, nil, managed, nil)
	for uri, want := range map[string]bool{
		"file:///srv/a.txt":  true,
		"file:///home/x.txt": false, // outside the managed allow list
		"file:///srv/id.key": false, // the managed deny
	} {
		if d := p.DecideResource(uri); d.Allow != want {
			t.Errorf("DecideResource(%q) = %+v, want allow=%v", uri, d, want)
		}
	}
	if d := p.DecidePrompt("other"); d.Allow || !strings.Contains(d.Reason, "managed policy") {
		t.Errorf("DecidePrompt(other) = %+v, want the managed allow list to refuse it", d)
	}
	if d := p.DecidePrompt("greet"); !d.Allow {
		t.Errorf("DecidePrompt(greet) = %+v", d)
	}
}

func TestParseAccessRejects(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"resources": ["file:///x"]}`, `must be an object with "allow" and/or "deny"`},
		{`{"resources": {"alow": ["x"]}}`, `did you mean "allow"?`},
		{`{"prompts": {"deny": [1]}}`, "must be a string"},
		{`{"prompts": {"deny": "x"}}`, "must be a list of prompt names or globs"},
		{`{"resources": {"allow": ["file:///{x}"]}}`, "only '*' and '?' are wildcards"},
	} {
		_, err := Parse([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%s) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
}
