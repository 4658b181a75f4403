package policy

import "testing"

func TestKillOnTimeout(t *testing.T) {
	for _, tt := range []struct {
		name          string
		managed, user string
		tool          string
		want          bool
	}{
		{"unset", ``, `{}`, "slow", false},
		{"group", ``, `{"kill_on_timeout": true}`, "slow", true},
		{"one tool", ``, `{"tools": {"slow": {"kill_on_timeout": true}}}`, "slow", true},
		{"another tool", ``, `{"tools": {"slow": {"kill_on_timeout": true}}}`, "fast", false},
		{"managed cannot be turned off", `{"kill_on_timeout": true}`, `{"kill_on_timeout": false}`, "slow", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			user, err := ParseServer([]byte(tt.user))
			if err != nil {
				t.Fatal(err)
			}
			var managed *Policy
			if tt.managed != "" {
				if managed, err = Parse([]byte(tt.managed)); err != nil {
					t.Fatal(err)
				}
			}
			p := Effective(nil, user, nil, managed)
			if got := p.ToolSettings(tt.tool).KillOnTimeout; got != tt.want {
				t.Errorf("kill_on_timeout for %s = %v, want %v", tt.tool, got, tt.want)
			}
		})
	}
	if _, err := Parse([]byte(`{"kill_on_timeout": "yes"}`)); err == nil {
		t.Error(`kill_on_timeout "yes" was accepted`)
	}
}
