package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DynamicMCPPrefix starts the item names of tokens migrated from dynamic-mcp.
// They are keyed by server name alone, as dynamic-mcp kept them; the OAuth
// package rebinds each to [TokenKey] of its server, url and client id.
const DynamicMCPPrefix = "dynamic-mcp-oauth:"

// DynamicMCPToken is the JSON stored for a migrated token: dynamic-mcp's
// fields, unchanged. ExpiresAt is RFC 3339 when present; absent means the
// token never expires.
type DynamicMCPToken struct {
	AccessToken  string          `json:"access_token"`
	RefreshToken string          `json:"refresh_token,omitempty"`
	ExpiresAt    json.RawMessage `json:"expires_at,omitempty"`
}

// DynamicMCPDir returns the directory where dynamic-mcp kept plain-text
// OAuth tokens under home.
func DynamicMCPDir(home string) string {
	return filepath.Join(home, ".dynamic-mcp", "oauth-servers")
}

// PendingDynamicMCP returns the server names that have plain-text dynamic-mcp
// tokens waiting for [MigrateDynamicMCP], for a one-line notice at startup.
func PendingDynamicMCP(home string) []string {
	dir := DynamicMCPDir(home)
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".json") {
			names = append(names, strings.TrimSuffix(e.Name(), ".json"))
		}
	}
	return names
}

// MigrateDynamicMCP moves dynamic-mcp's plain-text OAuth tokens
// (home/.dynamic-mcp/oauth-servers/SERVER.json) into s, as JSON
// ([DynamicMCPToken]) under DynamicMCPPrefix+SERVER, then overwrites each
// file with zeros, syncs it and removes it. A file is removed only after its
// token reads back from the store. Symbolic links are never followed, and a
// server name that is not a valid secret name is refused; such files stay
// and are reported in err. migrated lists the servers moved, even when err
// reports others that failed.
func MigrateDynamicMCP(ctx context.Context, s *Store, home string) (migrated []string, err error) {
	dir := DynamicMCPDir(home)
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secrets: migrate: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("secrets: migrate: refusing %s: not a directory (a symbolic link?)", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("secrets: migrate: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		server, err := migrateOne(ctx, s, dir, e.Name())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		migrated = append(migrated, server)
	}
	return migrated, errors.Join(errs...)
}

func migrateOne(ctx context.Context, s *Store, dir, file string) (string, error) {
	path := filepath.Join(dir, file)
	server := strings.TrimSuffix(file, ".json")
	if server == "" || server == "." || server == ".." || strings.ContainsAny(server, `/\`) {
		return "", fmt.Errorf("secrets: migrate: refusing %s: unsafe server name %q", path, server)
	}
	name := DynamicMCPPrefix + server
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("secrets: migrate: refusing %s: server name %q cannot name a secret: %w", path, server, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|oNoFollow, 0)
	if isLoop(err) {
		return "", fmt.Errorf("secrets: migrate: refusing %s: it is a symbolic link", path)
	}
	if err != nil {
		return "", fmt.Errorf("secrets: migrate: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("secrets: migrate: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("secrets: migrate: refusing %s: not a regular file", path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxValueLen+1))
	if err != nil {
		return "", fmt.Errorf("secrets: migrate: reading %s: %w", path, err)
	}
	var tok DynamicMCPToken
	// The error of json.Unmarshal can quote the input, which is a token:
	// report only that the file is not valid.
	if len(raw) > maxValueLen || json.Unmarshal(raw, &tok) != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("secrets: migrate: %s is not a dynamic-mcp token file (JSON with access_token); left in place", path)
	}
	enc, err := json.Marshal(tok)
	if err != nil {
		return "", err
	}
	v := NewSecret(string(enc))
	if err := s.Set(ctx, name, v); err != nil {
		return "", fmt.Errorf("secrets: migrate: storing the token of %q: %w", server, err)
	}
	back, err := s.Get(ctx, name)
	if err != nil || !back.Equal(v) {
		return "", fmt.Errorf("secrets: migrate: the token of %q did not read back from %s; %s left in place", server, s.Backend(), path)
	}
	if err := shred(f, fi.Size()); err != nil {
		return "", fmt.Errorf("secrets: migrate: the token of %q is stored, but overwriting %s failed: %w; remove it by hand", server, path, err)
	}
	if err := os.Remove(path); err != nil {
		return "", fmt.Errorf("secrets: migrate: the token of %q is stored, but removing %s failed: %w", server, path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: the file is already zeros
		d.Close()
	}
	return server, nil
}

// shred overwrites the first n bytes of f with zeros and syncs them. On
// copy-on-write or journaling file systems old blocks may survive; this
// removes the token from the file's live contents, which is what we can do.
func shred(f *os.File, n int64) error {
	zeros := make([]byte, 32<<10)
	for off := int64(0); off < n; {
		k := min(int64(len(zeros)), n-off)
		if _, err := f.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off += k
	}
	return f.Sync()
}
