package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/pin"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/redact"
	"github.com/moatmcp/moat/internal/upstream"
)

// fakeAccounts is a host whose gateway runs as uid 500 ("gw"), where the
// group devs is gid 2000 and qa gid 4000, and whose users' supplementary
// groups are supp.
func fakeAccounts(supp map[int][]string) osAccounts {
	return osAccounts{
		uid: func() int { return 500 },
		userName: func(uid int) (string, error) {
			if uid == 500 {
				return "gw", nil
			}
			return "", errors.New("unknown user")
		},
		groupIDs: func(uid int) ([]string, error) {
			if g, ok := supp[uid]; ok {
				return g, nil
			}
			return nil, errors.New("unknown user")
		},
		lookupGID: func(name string) (string, error) {
			switch name {
			case "devs":
				return "2000", nil
			case "qa":
				return "4000", nil
			}
			return "", errors.New("unknown group")
		},
	}
}

// gatewayConfig is a config with servers files and kb and the given
// gateway block, loaded as the loader would.
func gatewayConfig(t *testing.T, gateway string) *config.Config {
	t.Helper()
	src := `{"mcpServers": {
		"files": {"description": "d", "command": "x", "policy": {"pin": "off", "deny": ["rm"]}},
		"kb": {"description": "d", "command": "y", "policy": {"pin": "off"}}}`
	if gateway != "" {
		src += `, "gateway": ` + gateway
	}
	cfg, err := config.Parse("/cfg/moat.json", []byte(src+`}`), &config.LoadOptions{Getenv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func applied(t *testing.T, cfg *config.Config, acct osAccounts) *Gate {
	t.Helper()
	gs := New(slog.New(slog.NewTextHandler(io.Discard, nil)), redact.New())
	gs.accounts = acct
	if err := gs.Apply(cfg, nil); err != nil {
		t.Fatal(err)
	}
	return gs
}

func TestIdentify(t *testing.T) {
	acct := fakeAccounts(map[int][]string{1000: {"2000"}, 1002: {"3000"}, 1003: {"2000", "4000"}, 1005: {"9"}})
	gs := applied(t, gatewayConfig(t, `{"identities": {
		"alice": {"uids": [1000]},
		"devs": {"unix_groups": ["devs"]},
		"ops": {"unix_groups": ["3000"]},
		"qa": {"unix_groups": ["qa", "ghost"]}}}`), acct)
	for _, tt := range []struct {
		name          string
		uid, gid, pid int
		want          string // identity, or "" for an error
		errFrags      []string
	}{
		{"by uid", 1000, 100, 7, "alice", nil},
		{"uid wins over a group", 1000, 2000, 7, "alice", nil},
		{"group name, primary gid", 1001, 2000, 7, "devs", nil},
		{"numeric gid, supplementary", 1002, 100, 7, "ops", nil},
		{"numeric gid, primary", 1004, 3000, 7, "ops", nil},
		{"ambiguous by group", 1003, 100, 7, "", []string{"uid 1003", "several identities (devs, qa)", "add it to gateway.identities.NAME.uids of one of them in /cfg/moat.json"}},
		{"unmatched", 1005, 100, 7, "", []string{"uid 1005 (gid 100) is no identity", "add it to gateway.identities.NAME.uids in /cfg/moat.json"}},
		{"unknown user, unknown group", 1006, 9999, 7, "", []string{"uid 1006"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, err := gs.Identify(tt.uid, tt.gid, tt.pid)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("Identify(%d, %d) = %+v, want an error", tt.uid, tt.gid, id)
				}
				for _, f := range tt.errFrags {
					if !strings.Contains(err.Error(), f) {
						t.Errorf("Identify(%d, %d) error %q, want it to contain %q", tt.uid, tt.gid, err, f)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Identify(%d, %d): %v", tt.uid, tt.gid, err)
			}
			if want := (guard.Identity{Name: tt.want, Principal: fmt.Sprintf("uid %d", tt.uid), UID: tt.uid, GID: tt.gid, PID: tt.pid}); *id != want {
				t.Errorf("Identify(%d, %d, %d) = %+v, want %+v", tt.uid, tt.gid, tt.pid, *id, want)
			}
		})
	}
}

// TestIdentifyWithoutIdentities: with no gateway.identities only the
// gateway's own user is let in, named by its login name (else uid-N).
func TestIdentifyWithoutIdentities(t *testing.T) {
	acct := fakeAccounts(nil)
	gs := applied(t, gatewayConfig(t, ""), acct)
	id, err := gs.Identify(500, 500, 9)
	if err != nil || *id != (guard.Identity{Name: "gw", Principal: "uid 500", UID: 500, GID: 500, PID: 9}) {
		t.Errorf("Identify(own uid) = %+v, %v; want identity gw", id, err)
	}
	if !gs.Visible(id, "files") || !gs.Visible(id, "kb") {
		t.Error("the gateway's own user cannot see every group")
	}
	_, err = gs.Identify(501, 501, 9)
	if err == nil || !strings.Contains(err.Error(), "uid 501 may not connect") || !strings.Contains(err.Error(), "add it to gateway.identities.NAME.uids in /cfg/moat.json") {
		t.Errorf("Identify(another uid) error = %v, want a refusal naming uid 501 and the fix", err)
	}
	acct.userName = func(int) (string, error) { return "", errors.New("no passwd entry") }
	gs = applied(t, gatewayConfig(t, `{}`), acct)
	if id, err := gs.Identify(500, 500, 9); err != nil || id.Name != "uid-500" {
		t.Errorf("Identify(own uid without a login name) = %+v, %v; want uid-500", id, err)
	}
}

func TestVisible(t *testing.T) {
	cfg := gatewayConfig(t, `{"identities": {"alice": {"uids": [1000], "servers": ["files"]}, "bob": {"uids": [1001]}, "nobody": {"uids": [1002], "servers": []}}}`)
	gs := applied(t, cfg, fakeAccounts(nil))
	alice := &guard.Identity{Name: "alice", UID: 1000}
	for _, tt := range []struct {
		id    *guard.Identity
		group string
		want  bool
	}{
		{nil, "kb", true},
		{alice, "files", true},
		{alice, "kb", false},
		{&guard.Identity{Name: "bob"}, "kb", true},
		{&guard.Identity{Name: "nobody"}, "files", false},
		{&guard.Identity{Name: "mallory"}, "files", false},
	} {
		if got := gs.Visible(tt.id, tt.group); got != tt.want {
			t.Errorf("Visible(%v, %s) = %v, want %v", tt.id, tt.group, got, tt.want)
		}
	}
	// A reload that removes alice refuses her session everything.
	if err := gs.Apply(gatewayConfig(t, `{"identities": {"bob": {"uids": [1001]}}}`), nil); err != nil {
		t.Fatal(err)
	}
	if gs.Visible(alice, "files") || gs.PermitFor(alice)("files", guard.KindPrompt, "p") {
		t.Error("alice, removed by a reload, can still see group files")
	}
}

// listingGate is a gate over gatewayConfig's servers, with a pin store,
// and their groups (which never connect).
func listingGate(t *testing.T, gateway string) (*Gate, map[string]*upstream.Group) {
	t.Helper()
	cfg := gatewayConfig(t, gateway)
	gs := applied(t, cfg, fakeAccounts(nil))
	dir := t.TempDir()
	gs.Pins = sync.OnceValues(func() (*pin.Store, error) {
		return pin.Open(filepath.Join(dir, "pins", "pins.json"), bytes.Repeat([]byte{7}, 32), &memAnchor{})
	})
	m := upstream.NewManager(upstream.Options{})
	t.Cleanup(m.Close)
	m.Apply(cfg)
	groups := map[string]*upstream.Group{}
	for name := range cfg.Servers {
		g, ok := m.Group(name)
		if !ok {
			t.Fatalf("no group %s", name)
		}
		groups[name] = g
	}
	return gs, groups
}

// TestIdentityCatalogAgreesWithTheChain: for every identity, group and tool, a
// tool is listed to the identity exactly when the chain lets that
// identity call it, and a resource or prompt is permitted exactly when the
// chain serves it; a divergence between listing and calling fails here.
func TestIdentityCatalogAgreesWithTheChain(t *testing.T) {
	gs, groups := listingGate(t, `{"identities": {
		"alice": {"uids": [1000], "servers": ["files"], "policy": {"deny": ["write_*"], "resources": {"deny": ["file:///etc/*"]}, "prompts": {"allow": ["hello"]}}},
		"bob": {"uids": [1001], "policy": {"destructive": "deny"}},
		"carol": {"uids": [1002], "policy": {"read_only_only": true, "allow": ["read", "rm"]}},
		"dave": {"uids": [1003]}}}`)
	no := false
	schema := map[string]any{"type": "object"}
	tools := []*mcp.Tool{
		{Name: "read", InputSchema: schema, Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		{Name: "write_x", InputSchema: schema, Annotations: &mcp.ToolAnnotations{DestructiveHint: &no}},
		{Name: "rm", InputSchema: schema},
		{Name: "create", InputSchema: schema, Annotations: &mcp.ToolAnnotations{DestructiveHint: &no}},
	}
	chain := guard.Chain(func(context.Context, *guard.Call) (*guard.Result, error) {
		return &guard.Result{Tool: &mcp.CallToolResult{}}, nil
	}, gs.Layers(passThrough, passThrough)...)
	identities := []*guard.Identity{nil}
	for _, n := range []string{"alice", "bob", "carol", "dave", "removed"} {
		identities = append(identities, &guard.Identity{Name: n, UID: -1, GID: -1, PID: -1})
	}
	var listedAny, refusedAny bool
	for _, id := range identities {
		for name, grp := range groups {
			var listed []string
			for _, e := range catalogFor(gs, id)(grp, tools) {
				if e.Held == "" {
					listed = append(listed, e.Tool.Name)
				}
			}
			for _, tool := range tools {
				c := &guard.Call{Kind: guard.KindTool, Group: name, Name: tool.Name, Tool: tool, Args: json.RawMessage(`{}`), Identity: id}
				_, err := chain(context.Background(), c)
				allowed, isListed := err == nil, slices.Contains(listed, tool.Name)
				if allowed != isListed {
					t.Errorf("identity %v, %s/%s: listed %v, but the chain allows it: %v (%v)", id, name, tool.Name, isListed, allowed, err)
				}
				listedAny, refusedAny = listedAny || isListed, refusedAny || !allowed
			}
			for _, req := range []struct {
				kind guard.Kind
				name string
			}{{guard.KindResource, "file:///etc/passwd"}, {guard.KindResource, "file:///home/a"}, {guard.KindPrompt, "hello"}, {guard.KindPrompt, "other"}} {
				c := &guard.Call{Kind: req.kind, Group: name, Identity: id}
				if req.kind == guard.KindPrompt {
					c.Name = req.name
				} else {
					c.URI = req.name
				}
				_, err := chain(context.Background(), c)
				if permitted := gs.PermitFor(id)(name, req.kind, req.name); permitted != (err == nil) {
					t.Errorf("identity %v, %s %s %s: PermitFor says %v, but the chain's answer is %v", id, name, req.kind, req.name, permitted, err)
				}
			}
		}
	}
	if !listedAny || !refusedAny {
		t.Errorf("the cases do not exercise both answers (listed any: %v, refused any: %v)", listedAny, refusedAny)
	}
	// Spot checks, so that agreeing by both being wrong fails too.
	alice := identities[1]
	if got := names(catalogFor(gs, alice)(groups["files"], tools)); !slices.Equal(got, []string{"read", "create"}) {
		t.Errorf("alice sees %v of files, want [read create] (rm is the group's deny, write_x hers)", got)
	}
	if got := catalogFor(gs, alice)(groups["kb"], tools); len(got) != 0 {
		t.Errorf("alice sees %v of kb, which her servers do not list", names(got))
	}
	if got := names(catalogFor(gs, nil)(groups["kb"], tools)); len(got) != 4 {
		t.Errorf("the stdio client sees %v of kb, want every tool", got)
	}
}

func passThrough(next guard.Handler) guard.Handler { return next }

func names(es []proxy.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Tool.Name)
	}
	return out
}

// TestIdentityLimitsSurviveApply: an identity's global rate is its own
// (two identities do not share it), and a reload that leaves it unchanged
// keeps its state.
func TestIdentityLimitsSurviveApply(t *testing.T) {
	gw := `{"identities": {"alice": {"uids": [1000], "policy": {"global": {"rate": "1/h"}}}, "bob": {"uids": [1001], "policy": {"global": {"rate": "1/h"}}}}}`
	gs := applied(t, gatewayConfig(t, gw), fakeAccounts(nil))
	now := time.Now()
	if ok, _ := gs.limits.AllowAsAt(now, "alice", "files", "t"); !ok {
		t.Fatal("alice's first call was refused")
	}
	if ok, _ := gs.limits.AllowAsAt(now, "bob", "kb", "t"); !ok {
		t.Error("bob's first call was refused: he shares alice's rate")
	}
	if err := gs.Apply(gatewayConfig(t, gw), nil); err != nil {
		t.Fatal(err)
	}
	if ok, _ := gs.limits.AllowAsAt(now, "alice", "kb", "t"); ok {
		t.Error("a reload that left alice's rate alone refilled it")
	}
}

// TestApplyRefusesABadIdentityPolicy: an identity policy the loader would
// refuse is refused by Apply too, and nothing changes.
func TestApplyRefusesABadIdentityPolicy(t *testing.T) {
	gs := applied(t, gatewayConfig(t, `{"identities": {"alice": {"uids": [1000]}}}`), fakeAccounts(nil))
	bad := gatewayConfig(t, `{"identities": {"bob": {"uids": [1001]}}}`)
	bad.Gateway.Identities["bob"].Policy = json.RawMessage(`{"pin": "off"}`)
	if err := gs.Apply(bad, nil); err == nil || !strings.Contains(err.Error(), "gateway.identities.bob.policy") {
		t.Fatalf("Apply = %v, want an error naming gateway.identities.bob.policy", err)
	}
	if id, err := gs.Identify(1000, 1000, 1); err != nil || id.Name != "alice" {
		t.Errorf("after a refused Apply, Identify(1000) = %v, %v; want the previous config's alice", id, err)
	}
}

// catalogFor is what a gateway session of id is shown of a group: the
// group's catalog, narrowed to the identity.
func catalogFor(gs *Gate, id *guard.Identity) func(*upstream.Group, []*mcp.Tool) []proxy.Entry {
	return func(grp *upstream.Group, tools []*mcp.Tool) []proxy.Entry {
		return gs.ForIdentity(id, grp.Name(), gs.Catalog(grp, tools), tools)
	}
}

// TestIdentifyToken: a token names the identity whose tokens list it,
// with no uid, gid or pid; a token of no identity (or any token when the
// config has no identities) is refused naming the fix; a reload that moves
// a token moves its bearer.
func TestIdentifyToken(t *testing.T) {
	acct := fakeAccounts(nil)
	gs := applied(t, gatewayConfig(t, `{"identities": {
		"alice": {"uids": [1000], "tokens": ["laptop"]},
		"ci": {"tokens": ["runner", "nightly"], "servers": ["kb"]}}}`), acct)
	for tok, want := range map[string]string{"laptop": "alice", "runner": "ci", "nightly": "ci"} {
		id, err := gs.IdentifyToken(tok)
		if err != nil || *id != (guard.Identity{Name: want, Principal: "token " + tok, UID: -1, GID: -1, PID: -1}) {
			t.Errorf("IdentifyToken(%q) = %+v, %v; want identity %s, the token as its principal, and no uid, gid or pid", tok, id, err, want)
		}
	}
	if id, _ := gs.IdentifyToken("runner"); gs.Visible(id, "files") || !gs.Visible(id, "kb") {
		t.Error("the identity of token runner does not see exactly its servers")
	}
	if id, err := gs.IdentifyToken("phone"); err == nil || !strings.Contains(err.Error(), `token "phone" is no identity's; add it to gateway.identities.NAME.tokens in /cfg/moat.json`) {
		t.Errorf("IdentifyToken(unlisted) = %+v, %v; want a refusal naming the token and the fix", id, err)
	}
	if err := gs.Apply(gatewayConfig(t, `{"identities": {"bob": {"tokens": ["laptop"]}}}`), nil); err != nil {
		t.Fatal(err)
	}
	if id, err := gs.IdentifyToken("laptop"); err != nil || id.Name != "bob" {
		t.Errorf("after a reload, IdentifyToken(laptop) = %+v, %v; want bob", id, err)
	}
	gs = applied(t, gatewayConfig(t, ""), acct)
	if id, err := gs.IdentifyToken("laptop"); err == nil {
		t.Errorf("with no identities, IdentifyToken(laptop) = %+v; want a refusal", id)
	}
}

// TestIdentifyOIDC: a JWT's sub names its identity before its groups or
// scopes do; one identity by groups or scopes is it; two are refused as
// ambiguous, naming both; none is refused naming the fix.
func TestIdentifyOIDC(t *testing.T) {
	gs := applied(t, gatewayConfig(t, `{"oidc": {"issuer": "https://idp.example.com", "audience": "https://moat.example.com/mcp"}, "identities": {
		"alice": {"oidc": {"subjects": ["u-alice"], "groups": ["devs"]}},
		"ops": {"oidc": {"groups": ["ops"], "scopes": ["mcp:ops", "mcp:read"]}},
		"bob": {"oidc": {"subjects": ["u-bob"]}}}}`), fakeAccounts(nil))
	for _, tt := range []struct {
		c    OIDCClaims
		want string // identity, or a fragment of the error
	}{
		{OIDCClaims{Subject: "u-alice"}, "alice"},
		{OIDCClaims{Subject: "u-bob", Groups: []string{"devs", "ops"}}, "bob"},
		{OIDCClaims{Subject: "u-x", Groups: []string{"devs"}}, "alice"},
		{OIDCClaims{Subject: "u-x", Scopes: []string{"mcp:read", "mcp:ops"}}, "ops"},
		{OIDCClaims{Subject: "u-x", Scopes: []string{"mcp:read"}}, "is no identity's; list it under gateway.identities.NAME.oidc.subjects"},
		{OIDCClaims{Subject: "u-x", Groups: []string{"devs", "ops"}}, "matches the oidc groups or scopes of several identities (alice, ops), so which it is is ambiguous"},
		{OIDCClaims{Subject: "", Groups: nil}, "is no identity's"},
	} {
		id, err := gs.IdentifyOIDC(tt.c)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = id.Name
			if *id != (guard.Identity{Name: id.Name, UID: -1, GID: -1, PID: -1}) {
				t.Errorf("IdentifyOIDC(%+v) = %+v; want no uid, gid or pid", tt.c, id)
			}
		}
		if !strings.Contains(got, tt.want) || (err == nil) != (got == tt.want) {
			t.Errorf("IdentifyOIDC(%+v) = %q; want %q", tt.c, got, tt.want)
		}
	}
}
