package suggest

import "testing"

func TestHint(t *testing.T) {
	actions := []string{"allow", "deny", "confirm"}
	for _, tt := range []struct {
		word, want string
		known      []string
	}{
		{"dney", `did you mean "deny"?`, actions}, // a swap counts once
		{"Deny", `did you mean "deny"? (case matters)`, actions},
		{"alow", `did you mean "allow"?`, actions},
		{"confirmation", "", actions}, // too far, and not a prefix of a known word
		{"destructiv", `did you mean "destructive"?`, []string{"destructive", "read_only"}},
		{"read", `did you mean "read_only"?`, []string{"destructive", "read_only"}}, // a prefix
		{"xyz", "", actions},
		{"deny", "", actions}, // exact: nothing to suggest
	} {
		if got := Hint(tt.word, tt.known); got != tt.want {
			t.Errorf("Hint(%q) = %q, want %q", tt.word, got, tt.want)
		}
	}
}

func TestClosestBoundsHostileInput(t *testing.T) {
	long := string(make([]byte, 1<<20))
	if got := Closest(long, []string{"allow"}); got != "" {
		t.Errorf("Closest(1 MiB) = %q", got)
	}
}
