package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

var (
	toolNames = []string{"read_file", "write_file", "rm", "list_dir", "search"}
	globPool  = []string{"read_*", "write_*", "rm", "*", "list_?ir", "search", "*_file"}
	annPool   = []*Annotations{nil, readOnly, destructive, additive}
	argsPool  = []map[string]any{nil, {}, {"path": "/p/a"}, {"path": "/q"}, {"path": "rel"}, {"path": "/p/../etc"}, {"path": 3}}
)

// randomPolicy builds a policy from the pools, through Parse, so the
// property covers what users can write.
func randomPolicy(r *rand.Rand) *Policy {
	m := map[string]any{}
	pick := func(pool []string) []string {
		var out []string
		for _, s := range pool {
			if r.IntN(3) == 0 {
				out = append(out, s)
			}
		}
		return out
	}
	if r.IntN(2) == 0 {
		m["allow"] = append([]string{}, pick(globPool)...)
	}
	if r.IntN(2) == 0 {
		m["deny"] = append([]string{}, pick(globPool)...)
	}
	maybe := func(k string, vals ...any) {
		if i := r.IntN(len(vals) + 1); i < len(vals) {
			m[k] = vals[i]
		}
	}
	maybe("destructive", "allow", "deny")
	maybe("read_only_only", true, false)
	maybe("pin", "strict", "auto-add", "off")
	maybe("redact", "redact", "block", "off")
	maybe("on_invalid_schema", "reject", "passthrough")
	maybe("rate", "1/s", "10/s", "100/m", "1000/h")
	if _, ok := m["rate"]; ok {
		maybe("burst", 1, 5, 50)
	}
	maybe("max_concurrent", 1, 4, 100)
	maybe("max_args_bytes", 10, "1KiB", "2MiB")
	maybe("max_result_bytes", 10, "1KiB", "64MiB")
	maybe("timeout", "1s", "2m", "500ms")
	if r.IntN(2) == 0 {
		m["args"] = map[string]any{globPool[r.IntN(len(globPool))]: map[string]any{"path": map[string]any{"prefix": append([]string{}, pick([]string{"/p", "/q", "/"})...)}}}
	}
	if r.IntN(2) == 0 {
		ts := map[string]any{}
		maybe2 := func(k string, vals ...any) {
			if i := r.IntN(len(vals) + 1); i < len(vals) {
				ts[k] = vals[i]
			}
		}
		maybe2("rate", "2/s", "50/m")
		maybe2("max_concurrent", 1, 2)
		maybe2("max_result_bytes", 100, "8MiB")
		m["tools"] = map[string]any{globPool[r.IntN(len(globPool))]: ts}
	}
	if r.IntN(2) == 0 {
		m["global"] = map[string]any{"rate": []string{"3/s", "300/m"}[r.IntN(2)], "max_concurrent": 1 + r.IntN(10)}
	}
	data, _ := json.Marshal(m)
	p, err := Parse(data)
	if err != nil {
		panic(fmt.Sprintf("randomPolicy built an invalid policy %s: %v", data, err))
	}
	return p
}

// looser returns what in got is looser than base, or "".
func looser(base, got *Policy) string {
	for _, tool := range toolNames {
		for _, ann := range annPool {
			for _, args := range argsPool {
				if got.Decide(tool, ann, args).Allow && !base.Decide(tool, ann, args).Allow {
					return fmt.Sprintf("Decide(%s, %+v, %v) allows what the base refuses", tool, ann, args)
				}
			}
		}
		bt, gt := base.ToolSettings(tool), got.ToolSettings(tool)
		if msg := looserSettings("tool "+tool, bt, gt); msg != "" {
			return msg
		}
	}
	if msg := looserSettings("group", base.GroupSettings(), got.GroupSettings()); msg != "" {
		return msg
	}
	if msg := looserSettings("global", base.GlobalSettings(), got.GlobalSettings()); msg != "" {
		return msg
	}
	for _, m := range []struct {
		name      string
		b, g      string
		strictest []string
	}{
		{"pin", base.PinMode(), got.PinMode(), []string{PinStrict, PinAutoAdd, PinOff}},
		{"redact", base.RedactMode(), got.RedactMode(), []string{RedactBlock, RedactRedact, RedactOff}},
		{"on_invalid_schema", base.InvalidSchemaMode(), got.InvalidSchemaMode(), []string{InvalidSchemaReject, InvalidSchemaPassthrough}},
	} {
		if slices.Index(m.strictest, m.g) > slices.Index(m.strictest, m.b) {
			return fmt.Sprintf("%s is %s, looser than %s", m.name, m.g, m.b)
		}
	}
	return ""
}

func looserSettings(scope string, b, g Settings) string {
	switch {
	case !b.Rate.IsZero() && (g.Rate.IsZero() || b.Rate.slower(g.Rate)):
		return fmt.Sprintf("%s rate %v is looser than %v", scope, g.Rate, b.Rate)
	case !b.Rate.IsZero() && g.burst() > b.burst():
		return fmt.Sprintf("%s burst %d is looser than %d", scope, g.burst(), b.burst())
	case b.MaxConcurrent != 0 && (g.MaxConcurrent == 0 || g.MaxConcurrent > b.MaxConcurrent):
		return fmt.Sprintf("%s max_concurrent %d is looser than %d", scope, g.MaxConcurrent, b.MaxConcurrent)
	case g.MaxArgsBytes > b.MaxArgsBytes, g.MaxResultBytes > b.MaxResultBytes, g.Timeout > b.Timeout:
		return fmt.Sprintf("%s sizes/timeout %+v are looser than %+v", scope, g, b)
	}
	return ""
}

func TestMergeNeverLoosensManaged(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		m, u := randomPolicy(r), randomPolicy(r)
		merged := Merge(m, u)
		if msg := looser(m, merged); msg != "" {
			mj, _ := json.Marshal(m)
			uj, _ := json.Marshal(u)
			t.Fatalf("case %d: Merge(managed %s, user %s) is looser than managed: %s", i, mj, uj, msg)
		}
		for _, tool := range toolNames {
			if merged.Decide(tool, nil, nil).Allow && !u.Decide(tool, nil, nil).Allow {
				t.Fatalf("case %d: Merge allows %s, which the user's own policy refuses", i, tool)
			}
		}
		// Merging again, or through Effective, keeps every managed rule.
		eff := Effective(randomPolicy(r), u, nil, m)
		if msg := looser(m, eff); msg != "" {
			t.Fatalf("case %d: Effective is looser than the managed server policy: %s", i, msg)
		}
		if msg := looser(m, Merge(merged, randomPolicy(r))); msg != "" {
			t.Fatalf("case %d: a second Merge loosened the managed policy: %s", i, msg)
		}
	}
}

func TestMergeExamples(t *testing.T) {
	managed := mustParse(t, `{"deny": ["rm"], "destructive": "deny", "allow": ["read_*", "write_file"], "rate": "10/s", "pin": "auto-add"}`)
	user := mustParse(t, `{"allow": ["*"], "destructive": "allow", "rate": "100/s", "pin": "off", "deny": ["write_*"], "max_concurrent": 2}`)
	m := Merge(managed, user)
	for _, tt := range []struct {
		tool      string
		ann       *Annotations
		wantAllow bool
	}{
		{"read_file", readOnly, true},
		{"write_file", destructive, false}, // the user's deny tightens
		{"rm", readOnly, false},            // managed deny stays
		{"delete", readOnly, false},        // managed allow list stays
		{"read_x", destructive, false},     // managed destructive tier stays
	} {
		if d := m.Decide(tt.tool, tt.ann, nil); d.Allow != tt.wantAllow {
			t.Errorf("merged Decide(%s) = %+v, want allow %v", tt.tool, d, tt.wantAllow)
		}
	}
	if g := m.GroupSettings(); g.Rate.N != 10 || g.MaxConcurrent != 2 {
		t.Errorf("merged group settings = %+v, want the managed rate 10/s and the user's cap 2", g)
	}
	if m.PinMode() != PinAutoAdd {
		t.Errorf("merged pin = %s, want auto-add (the user cannot turn pinning off)", m.PinMode())
	}
}

func TestEffectiveOverlaysWithinOneSource(t *testing.T) {
	defaults := mustParse(t, `{"allow": ["read_*"], "deny": ["rm"], "rate": "1/s", "max_result_bytes": "1MiB"}`)
	server := mustParse(t, `{"allow": ["*"], "deny": ["mv"], "rate": "5/s"}`)
	p := Effective(defaults, server, nil, nil)
	if d := p.Decide("write_file", nil, nil); !d.Allow {
		t.Errorf("server allow list should replace the default one; Decide(write_file) = %+v", d)
	}
	for _, tool := range []string{"rm", "mv"} {
		if d := p.Decide(tool, nil, nil); d.Allow {
			t.Errorf("deny lists of defaults and server should both apply; Decide(%s) allowed", tool)
		}
	}
	if g, ts := p.GroupSettings(), p.ToolSettings("x"); g.Rate.N != 5 || ts.MaxResultBytes != 1<<20 {
		t.Errorf("Effective settings: rate %v, max_result_bytes %d; want the server's 5/s and the default 1MiB", g.Rate, ts.MaxResultBytes)
	}
}
