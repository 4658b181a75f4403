package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/config"
)

func TestSessionsPerUserAreBounded(t *testing.T) {
	var c sessionCount
	var leaves []func()
	for range maxSessionsPerUser {
		leave, err := c.enter("uid 1000")
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, leave)
	}
	if _, err := c.enter("uid 1000"); err == nil || !strings.Contains(err.Error(), "uid 1000 already has 256 sessions") {
		t.Fatalf("one session too many: %v", err)
	}
	if leave, err := c.enter("uid 1001"); err != nil {
		t.Fatalf("another user is refused with the first at its most: %v", err)
	} else {
		leave()
	}
	leaves[0]()
	if _, err := c.enter("uid 1000"); err != nil {
		t.Fatalf("a session after one ended: %v", err)
	}
}

// TestTokenVerifier: a token is known by its SHA-256 alone; a revoked
// token is refused once the cache's second has passed; a store that
// cannot be read refuses every token.
func TestTokenVerifier(t *testing.T) {
	tok := newToken()
	if !strings.HasPrefix(tok, "moat_") || len(tok) != len("moat_")+43 {
		t.Fatalf("newToken() = %q", tok)
	}
	stored := []storedToken{{Name: "laptop", SHA256: tokenHash(tok)}}
	var readErr error
	now := time.Unix(1000, 0)
	reads := 0
	v := &tokenVerifier{now: func() time.Time { return now }, read: func(context.Context) ([]storedToken, error) {
		reads++
		return stored, readErr
	}}
	ctx := context.Background()
	if name, err := v.verify(ctx, tok); err != nil || name != "laptop" {
		t.Errorf("verify(the token) = %q, %v", name, err)
	}
	for _, bad := range []string{"", tok + "x", tok[:len(tok)-1], tokenHash(tok)} {
		if name, err := v.verify(ctx, bad); err == nil {
			t.Errorf("verify(%.12q…) = %q, want a refusal", bad, name)
		}
	}
	stored = nil // revoked
	if _, err := v.verify(ctx, tok); err != nil {
		t.Errorf("within the cache's second, the token was refused: %v", err)
	}
	now = now.Add(tokenCacheTTL)
	if _, err := v.verify(ctx, tok); err == nil {
		t.Error("a revoked token still works after the cache's second")
	}
	if reads != 2 {
		t.Errorf("the store was read %d times, want 2 (once per second)", reads)
	}
	stored, readErr = []storedToken{{Name: "laptop", SHA256: tokenHash(tok)}}, errors.New("keychain locked")
	now = now.Add(tokenCacheTTL)
	if _, err := v.verify(ctx, tok); err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("with the store unreadable: %v, want a refusal", err)
	}

	// A request that goes away as it triggers a read (anyone's, with any
	// token) does not end the read that every other request then uses.
	readErr = nil
	v.read = func(ctx context.Context) ([]storedToken, error) {
		if err := ctx.Err(); err != nil {
			return nil, err // as the keychain backend does
		}
		return stored, nil
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	now = now.Add(tokenCacheTTL)
	v.verify(gone, "moat_not-a-token")
	if _, err := v.verify(ctx, tok); err != nil {
		t.Errorf("after a request that went away triggered the read, the token was refused: %v", err)
	}
}

func TestBearerAndListenAddresses(t *testing.T) {
	for h, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "Bearer": "", "": "", "Bearer ": ""} {
		if got, ok := bearer(h); got != want || ok != (want != "") {
			t.Errorf("bearer(%q) = %q, %v; want %q", h, got, ok, want)
		}
	}
	for in, want := range map[string]string{"127.0.0.1:7733": "127.0.0.1:7733", "[::1]:0": "[::1]:0", "localhost:80": "localhost:80", ":7733": ":7733"} {
		if got, err := tcpAddr(in); err != nil || got != want {
			t.Errorf("tcpAddr(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"7733", "host:port", "127.0.0.1:70000", "/tmp/x.sock"} {
		if got, err := tcpAddr(bad); err == nil {
			t.Errorf("tcpAddr(%q) = %q, want an error", bad, got)
		}
	}
	for host, want := range map[string]bool{"127.0.0.1": true, "127.3.4.5": true, "::1": true, "localhost": true, "": false, "0.0.0.0": false, "192.168.1.2": false, "example.com": false} {
		if config.IsLoopback(host) != want {
			t.Errorf("config.IsLoopback(%q) = %v", host, !want)
		}
	}
	listen, rest, err := listenArgs([]string{"--listen", "unix:/tmp/g.sock", "--listen=127.0.0.1:0", "cfg.json"})
	if err != nil || !slices.Equal(listen, []string{"/tmp/g.sock", "tcp:127.0.0.1:0"}) || !slices.Equal(rest, []string{"cfg.json"}) {
		t.Errorf("listenArgs = %q, %q, %v", listen, rest, err)
	}
}
