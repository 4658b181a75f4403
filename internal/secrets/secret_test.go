package secrets

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

const canary = "canary-7f3a9c-SECRET-VALUE"

func TestSecretNeverPrinted(t *testing.T) {
	s := NewSecret(canary)
	type holder struct {
		Exported Secret
		hidden   Secret
		ptr      *Secret
	}
	h := holder{Exported: s, hidden: s, ptr: &s}

	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		outs = append(outs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, &s), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h))
		outs = append(outs, fmt.Sprintf(verb, []Secret{s}), fmt.Sprintf(verb, map[string]Secret{"k": s}))
	}
	outs = append(outs, fmt.Sprint(s, h), fmt.Sprintln(s, &h), s.String(), s.GoString())

	for _, v := range []any{s, &s, h, []Secret{s}, map[string]any{"token": s}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		outs = append(outs, string(b))
	}
	txt, _ := s.MarshalText()
	outs = append(outs, string(txt))

	var logs bytes.Buffer
	for _, hnd := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		l := slog.New(hnd)
		l.Info("login", "token", s, "ptr", &s, "holder", h)
		l.Info("group", slog.Group("g", slog.Any("token", s)))
	}
	outs = append(outs, logs.String())

	for _, o := range outs {
		if strings.Contains(o, canary) || strings.Contains(o, fmt.Sprintf("%x", canary)) {
			t.Errorf("secret value leaked in %q", o)
		}
	}
	if got := fmt.Sprintf("%v", s); got != "REDACTED" {
		t.Errorf(`fmt %%v = %q, want "REDACTED"`, got)
	}
	if !strings.Contains(logs.String(), "REDACTED") {
		t.Errorf("slog output %q does not say REDACTED", logs.String())
	}
	if got := s.Reveal(); got != canary {
		t.Errorf("Reveal() = %q, want the value", got)
	}
}

func TestSecretEqualAndIncomparable(t *testing.T) {
	if reflect.TypeOf(Secret{}).Comparable() {
		t.Error("Secret is comparable with ==; it must not be (use Equal)")
	}
	tests := []struct {
		a, b string
		want bool
	}{
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "abcd", false},
		{"", "", true},
	}
	for _, tt := range tests {
		if got := NewSecret(tt.a).Equal(NewSecret(tt.b)); got != tt.want {
			t.Errorf("NewSecret(%q).Equal(NewSecret(%q)) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	var zero Secret
	if !zero.IsZero() || zero.Reveal() != "" || !zero.Equal(NewSecret("")) {
		t.Error("the zero Secret must be empty")
	}
}

func TestTokenKey(t *testing.T) {
	base := TokenKey("github", "https://api.github.com/mcp", "client-1")
	if !strings.HasPrefix(base, "oauth:") || len(base) != len("oauth:")+32 {
		t.Fatalf("TokenKey = %q, want oauth: and 32 hex digits", base)
	}
	if err := ValidateName(base); err != nil {
		t.Fatalf("TokenKey %q is not a valid name: %v", base, err)
	}
	if again := TokenKey("github", "https://api.github.com/mcp", "client-1"); again != base {
		t.Errorf("TokenKey is not stable: %q then %q", base, again)
	}
	// Each field binds the token: changing any of them gives another item.
	// The last two cases would collide under naive concatenation.
	others := [][3]string{
		{"github2", "https://api.github.com/mcp", "client-1"},
		{"github", "https://evil.example/mcp", "client-1"},
		{"github", "https://api.github.com/mcp", "client-2"},
		{"githubhttps://api.github.com/mcp", "", "client-1"},
		{"github", "https://api.github.com/mcpclient-1", ""},
	}
	for _, o := range others {
		if k := TokenKey(o[0], o[1], o[2]); k == base {
			t.Errorf("TokenKey(%q, %q, %q) = TokenKey of the original", o[0], o[1], o[2])
		}
	}
	if k := TokenKey("../../etc/passwd", "u", "c"); strings.Contains(k, "/") || strings.Contains(k, "passwd") {
		t.Errorf("TokenKey kept parts of the server name: %q", k)
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"github-token", true},
		{"dynamic-mcp-oauth:my_server.1", true},
		{"a", true},
		{"_private", true},
		{"-flag", false},
		{"", false},
		{".moat-index", false},
		{"../x", false},
		{"a/b", false},
		{"with space", false},
		{"tab\t", false},
		{"nul\x00", false},
		{"ünïcode", false},
		{strings.Repeat("a", 201), false},
		{strings.Repeat("a", 200), true},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
