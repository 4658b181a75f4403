//go:build unix

package secrets

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMigrateDynamicMCP(t *testing.T) {
	ctx := t.Context()
	home := t.TempDir()
	dir := DynamicMCPDir(home)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil { // as dynamic-mcp left them
			t.Fatal(err)
		}
		return p
	}
	githubJSON := `{
  "access_token": "gho_` + canary + `",
  "refresh_token": "ghr_refresh",
  "expires_at": "2026-01-02T03:04:05Z"
}`
	github := write("github.json", githubJSON)
	write("linear.json", `{"access_token": "lin_`+canary+`"}`)
	notToken := write("notes.json", `{"hello": "`+canary+`"}`)
	unsafeName := write("..json", `{"access_token": "dots"}`) // server "."
	spaced := write("my server.json", `{"access_token": "sp"}`)
	write("README.txt", "not a token file")
	// A symlink to a file outside must not be read, moved or zeroed.
	outside := filepath.Join(t.TempDir(), "victim.json")
	if err := os.WriteFile(outside, []byte(`{"access_token": "victim"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	// A second hard link keeps the inode alive, so we can see the bytes the
	// migration left in the file it removed.
	keep := filepath.Join(home, "github-inode")
	if err := os.Link(github, keep); err != nil {
		t.Fatal(err)
	}

	s := openFile(t, filepath.Join(home, "store"), "pw")
	migrated, err := MigrateDynamicMCP(ctx, s, home)
	if diff := cmp.Diff([]string{"github", "linear"}, migrated); diff != "" {
		t.Errorf("migrated (-want +got):\n%s", diff)
	}
	if err == nil {
		t.Fatal("MigrateDynamicMCP reported no error for the symlink, the unsafe and the invalid files")
	}
	for _, want := range []string{"link.json: it is a symbolic link", "notes.json is not a dynamic-mcp token file", `unsafe server name "."`, `"my server"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), canary) {
		t.Errorf("error leaks a token: %v", err)
	}

	// The tokens are in the store, as the same JSON fields.
	v, gerr := s.Get(ctx, DynamicMCPPrefix+"github")
	if gerr != nil {
		t.Fatal(gerr)
	}
	var got, want DynamicMCPToken
	if err := json.Unmarshal([]byte(v.Reveal()), &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(githubJSON), &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored token (-want +got):\n%s", diff)
	}

	// The plain-text files are gone, and were zeroed before removal.
	for _, p := range []string{github, filepath.Join(dir, "linear.json")} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after migration (%v)", p, err)
		}
	}
	left, err := os.ReadFile(keep)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != len(githubJSON) || strings.Trim(string(left), "\x00") != "" {
		t.Errorf("the removed file held %q, want %d zero bytes", left, len(githubJSON))
	}
	// Everything refused is left exactly as it was.
	for _, p := range []string{notToken, unsafeName, spaced, link, outside} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed though it was not migrated: %v", p, err)
		}
	}
	if b, _ := os.ReadFile(outside); string(b) != `{"access_token": "victim"}` {
		t.Errorf("the symlink target was changed: %q", b)
	}
	if _, err := s.Get(ctx, DynamicMCPPrefix+"link"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the symlinked token was migrated: %v", err)
	}
	if diff := cmp.Diff([]string{".", "my server", "notes"}, PendingDynamicMCP(home)); diff != "" {
		t.Errorf("PendingDynamicMCP after migration (-want +got):\n%s", diff)
	}

	// Running it again is harmless.
	again, _ := MigrateDynamicMCP(ctx, s, home)
	if len(again) != 0 {
		t.Errorf("second migration moved %v again", again)
	}
}

func TestMigrateDynamicMCPNothingThere(t *testing.T) {
	s := openFile(t, filepath.Join(t.TempDir(), "store"), "pw")
	migrated, err := MigrateDynamicMCP(t.Context(), s, t.TempDir())
	if err != nil || len(migrated) != 0 {
		t.Errorf("MigrateDynamicMCP with no dynamic-mcp dir = %v, %v; want nothing, nil", migrated, err)
	}
	// A symlinked oauth-servers directory is refused, not followed.
	home := t.TempDir()
	real := t.TempDir()
	if err := os.WriteFile(filepath.Join(real, "x.json"), []byte(`{"access_token":"t"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(home, ".dynamic-mcp"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, DynamicMCPDir(home)); err != nil {
		t.Fatal(err)
	}
	if _, err := MigrateDynamicMCP(t.Context(), s, home); err == nil {
		t.Error("MigrateDynamicMCP followed a symlinked oauth-servers directory")
	}
	if _, err := os.Stat(filepath.Join(real, "x.json")); err != nil {
		t.Errorf("the file behind the symlink was touched: %v", err)
	}
}
