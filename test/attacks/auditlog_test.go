package attacks

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/testutil"
)

// TestTamperedAuditLog: after a session, an insider edits a record (a denied
// call made to look allowed), cuts the log, or swaps two records. `moat
// audit verify` exits 1 and names the kind of change for each, while the
// untouched log verifies.
//
// SECURITY.md, Audit log, "Tamper evidence" (audit:
// TestVerifyCatchesEverySingleChange; cmd/moat: TestAuditLogOfASession).
func TestTamperedAuditLog(t *testing.T) {
	dir := t.TempDir()
	srv := testServer(t, "test")
	srv["policy"] = map[string]any{"deny": []string{"fail"}}
	m := startMoat(t, testutil.WriteConfig(t, dir, map[string]server{"test": srv}))
	m.echoWorks(t, "test")
	if res := m.call(t, "test", "fail", nil); !res.IsError {
		t.Fatal("the denied tool ran")
	}
	m.echoWorks(t, "test")
	m.auditLog(t) // verifies the untouched log
	orig, err := os.ReadFile(auditPath(m.env))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(orig, []byte("\n"))
	lines = lines[:len(lines)-1] // the empty string after the last newline
	denied := -1
	for i, l := range lines {
		if bytes.Contains(l, []byte(`"decision":"deny"`)) {
			denied = i
		}
	}
	if denied < 0 || len(lines) < 6 {
		t.Fatalf("the log has no denied call to tamper with:\n%s", orig)
	}
	join := func(ls [][]byte) []byte { return bytes.Join(ls, nil) }
	for _, tt := range []struct {
		name string
		log  []byte
		kind string
	}{
		{"edited", join(append(append(append([][]byte{}, lines[:denied]...),
			bytes.Replace(lines[denied], []byte(`"decision":"deny"`), []byte(`"decision":"allow"`), 1)), lines[denied+1:]...)), "edited"},
		{"truncated mid-line", orig[:len(orig)-len(lines[len(lines)-1])/2], "torn-tail"},
		{"last records cut", join(lines[:len(lines)-2]), "unsealed"},
		{"reordered", join(append(append(append([][]byte{}, lines[:2]...), lines[3], lines[2]), lines[4:]...)), "reordered"},
		{"record deleted", join(append(append([][]byte{}, lines[:denied]...), lines[denied+1:]...)), "deleted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.jsonl")
			if err := os.WriteFile(path, tt.log, 0o600); err != nil {
				t.Fatal(err)
			}
			code, out := runMoat(t, m.env, "audit", "verify", path)
			if code != 1 || !strings.Contains(out, tt.kind) {
				t.Errorf("moat audit verify of a log %s: exit %d\n%s\nwant exit 1 naming %q", tt.name, code, out, tt.kind)
			}
		})
	}
}

// TestRefusalsBeforeTheChainAreAudited: a call to a group whose tools are
// turned off, or whose server cannot start, never reaches the guard chain,
// yet it is in the audit log like any refusal: no call leaves no record.
func TestRefusalsBeforeTheChainAreAudited(t *testing.T) {
	off := testServer(t, "off")
	off["features"] = map[string]any{"tools": false}
	broken := testServer(t, "broken", "-fail-until", filepath.Join(t.TempDir(), "never"))
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{"off": off, "broken": broken}))
	for _, group := range []string{"off", "broken"} {
		if res := m.call(t, group, "echo", map[string]any{"message": "x"}); !res.IsError {
			t.Fatalf("a call to group %s was not refused: %q", group, resultText(res))
		}
	}
	recs := m.auditLog(t)
	findRecord(t, recs, "the call to a group with tools off, denied", func(r audit.Record) bool {
		return r.Event == "tool_call" && r.Group == "off" && r.Decision == "deny" && r.Rule == "proxy:tools-off"
	})
	findRecord(t, recs, "the call to an unavailable group, as an error", func(r audit.Record) bool {
		return r.Event == "tool_call" && r.Group == "broken" && r.Rule == "proxy:unavailable" && r.Outcome == "error"
	})
}

// TestCancelledWhileStartingIsAudited: a call the client gives up on while
// its server is still starting never reaches the chain; it is recorded all
// the same, as cancelled (it was once recorded as "unavailable", and its
// record written with the cancelled request's context).
func TestCancelledWhileStartingIsAudited(t *testing.T) {
	slow := testServer(t, "slow", "-start-gate", filepath.Join(t.TempDir(), "never"))
	m := startMoat(t, testutil.WriteConfig(t, t.TempDir(), map[string]server{"slow": slow}))
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := m.cs.CallTool(ctx, &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "slow", "name": "echo", "args": map[string]any{"message": "x"}}}); err == nil {
		t.Fatal("a call to a server that never starts returned")
	}
	waitFor(t, "the cancelled call in the audit log", func() bool {
		b, _ := os.ReadFile(auditPath(m.env))
		return strings.Contains(string(b), `"proxy:cancelled"`)
	}, func() string { b, _ := os.ReadFile(auditPath(m.env)); return tail(string(b), 2000) })
	findRecord(t, m.auditLog(t), "the cancelled call", func(r audit.Record) bool {
		return r.Event == "tool_call" && r.Group == "slow" && r.Rule == "proxy:cancelled" && r.Outcome == audit.OutcomeCancelled
	})
}
