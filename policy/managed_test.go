package policy

import (
	"strings"
	"testing"
)

func TestParseManaged(t *testing.T) {
	good := `{"defaults": {"deny": ["rm"], "global": {"rate": "50/s"}}, "servers": {"files": {"allow": ["read_*"]}}}`
	m, err := ParseManaged([]byte(good))
	if err != nil {
		t.Fatalf("ParseManaged(good): %v", err)
	}
	if m.RequireEncryption {
		t.Error("RequireEncryption is set by a managed policy without a secrets block")
	}
	if m, err := ParseManaged([]byte(`{"secrets": {"require_encryption": true}}`)); err != nil || !m.RequireEncryption {
		t.Errorf("ParseManaged(secrets.require_encryption) = %+v, %v; want RequireEncryption", m, err)
	}
	d, s := m.For("files")
	p := Effective(nil, mustParse(t, `{"allow": ["*"]}`), d, s)
	if p.Decide("rm", readOnly, nil).Allow || p.Decide("write_file", readOnly, nil).Allow || !p.Decide("read_file", readOnly, nil).Allow {
		t.Error("the managed deny and allow rules did not survive Effective")
	}
	for _, tt := range []struct {
		name, body string
		want       string
	}{
		{"bad policy", `{"defaults": {"rate": "fast"}}`, "/defaults/rate"},
		{"global in a server", `{"servers": {"x": {"global": {"rate": "1/s"}}}}`, "/servers/x/global"},
		{"unknown top key", `{"default": {}}`, `unknown key "default"`},
		{"unknown top key hint", `{"default": {}}`, `did you mean "defaults"?`},
		{"empty file", ``, "invalid JSON"},
		{"secrets not an object", `{"secrets": true}`, "/secrets"},
		{"require_encryption not a bool", `{"secrets": {"require_encryption": "yes"}}`, "must be true or false"},
		{"secrets typo", `{"secrets": {"require_encrypton": true}}`, `did you mean "require_encryption"?`},
	} {
		_, err := ParseManaged([]byte(tt.body))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseManaged(%s) = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}
