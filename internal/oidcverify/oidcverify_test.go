package oidcverify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/testutil"
	"github.com/moatmcp/moat/internal/testutil/oidcprovider"
)

const aud = "https://moat.example.com/mcp"

// TestVerify runs every check against a real issuer over TLS on
// loopback, reached through netguard (which trusts its CA by
// SSL_CERT_FILE, read once per process: so one issuer for the package).
func TestVerify(t *testing.T) {
	p := oidcprovider.Start(t)
	os.Setenv("SSL_CERT_FILE", p.CAFile)
	cfg := &config.GatewayOIDC{Issuer: p.URL, Audience: aud, Resource: aud, GroupsClaim: "groups",
		MaxClockSkew: time.Minute, AllowedAlgs: []string{"RS256", "ES256"}, RequiredScopes: []string{"mcp"}}
	p.SetDown(true)
	v, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.Discover(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	now := time.Now()
	claims := func(edit func(map[string]any)) map[string]any {
		c := map[string]any{"iss": p.URL, "aud": []string{aud, "other"}, "sub": "u-alice", "exp": now.Add(time.Hour).Unix(),
			"iat": now.Unix(), "nbf": now.Unix(), "scope": "mcp read", "groups": []string{"devs"}}
		if edit != nil {
			edit(c)
		}
		return c
	}
	valid := p.Mint(t, claims(nil))
	if _, err := v.Verify(ctx, valid); err == nil || !strings.Contains(err.Error(), "could not be reached") {
		t.Fatalf("Verify while the issuer is down = %v; want a refusal saying it could not be reached", err)
	}
	p.SetDown(false)
	testutil.Eventually(t, "discovery once the issuer is up", func() bool {
		_, err := v.Verify(ctx, valid)
		return err == nil
	})
	c, err := v.Verify(ctx, valid)
	if err != nil || c.Subject != "u-alice" || c.Issuer != p.URL || strings.Join(c.Groups, ",") != "devs" || strings.Join(c.Scopes, ",") != "mcp,read" {
		t.Fatalf("Verify(valid) = %+v, %v", c, err)
	}

	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	old := p.Mint(t, claims(nil))
	for _, tt := range []struct {
		name, tok, want string
	}{
		{"expired", p.Mint(t, claims(func(c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() })), "expired at"},
		{"expired within the skew", p.Mint(t, claims(func(c map[string]any) { c["exp"] = now.Add(-30 * time.Second).Unix() })), ""},
		{"no exp", p.Mint(t, claims(func(c map[string]any) { delete(c, "exp") })), "no exp claim"},
		{"nbf ahead", p.Mint(t, claims(func(c map[string]any) { c["nbf"] = now.Add(2 * time.Minute).Unix() })), "not valid yet"},
		{"nbf within the skew", p.Mint(t, claims(func(c map[string]any) { c["nbf"] = now.Add(30 * time.Second).Unix() })), ""},
		{"iat ahead", p.Mint(t, claims(func(c map[string]any) { c["iat"] = now.Add(2 * time.Minute).Unix() })), "issued in the future"},
		{"wrong audience", p.Mint(t, claims(func(c map[string]any) { c["aud"] = "https://else.example.com/mcp" })), "wrong audience"},
		{"wrong issuer", p.Mint(t, claims(func(c map[string]any) { c["iss"] = "https://evil.example.com" })), "wrong issuer"},
		{"alg none", oidcprovider.MintNone(t, claims(nil)), `signature algorithm not allowed by gateway.oidc.allowed_algs (malformed jwt: unexpected signature algorithm "none"`},
		{"bad signature", oidcprovider.Sign(t, otherKey, jose.ES256, "key-1", claims(nil)), "bad signature"},
		{"unknown key", oidcprovider.Sign(t, otherKey, jose.ES256, "key-x", claims(nil)), "bad signature"},
		{"no sub", p.Mint(t, claims(func(c map[string]any) { delete(c, "sub") })), "no sub claim"},
		{"garbage", "a.b.c", "malformed"},
	} {
		_, err := v.Verify(ctx, tt.tok)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if (tt.want == "") != (err == nil) || !strings.Contains(got, tt.want) {
			t.Errorf("%s: Verify = %q; want %q", tt.name, got, tt.want)
		}
	}

	// A missing required scope: valid otherwise, refused as insufficient.
	_, err = v.Verify(ctx, p.Mint(t, claims(func(c map[string]any) { c["scope"] = "read" })))
	var ve *Error
	if !errors.As(err, &ve) || !ve.InsufficientScope || !strings.Contains(ve.Reason, `lacks the required scope "mcp"`) {
		t.Errorf("Verify(no mcp scope) = %v; want insufficient scope", err)
	}

	// Rotation: a token of a new key is accepted (its unknown kid
	// refetches the keys); once the old key is dropped, its tokens fail.
	oldKid := "key-1"
	p.AddKey(t, jose.ES256)
	if _, err := v.Verify(ctx, p.Mint(t, claims(nil))); err != nil {
		t.Errorf("Verify(a token of the rotated-in key) = %v", err)
	}
	p.DropKey(oldKid)
	p.AddKey(t, jose.RS256)
	if _, err := v.Verify(ctx, p.Mint(t, claims(nil))); err != nil {
		t.Errorf("Verify(a newer key, after the drop) = %v", err)
	}
	if _, err := v.Verify(ctx, old); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Errorf("Verify(a token of the dropped key) = %v; want bad signature", err)
	}

	// A key dropped with no new one is trusted from the cache until
	// keysMaxAge, then refused.
	last := p.Mint(t, claims(nil))
	p.DropKey("key-3")
	if _, err := v.Verify(ctx, last); err != nil {
		t.Errorf("Verify(a dropped key, still cached) = %v", err)
	}
	v.now = func() time.Time { return time.Now().Add(keysMaxAge) }
	if _, err := v.Verify(ctx, last); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Errorf("Verify(a dropped key, keysMaxAge later) = %v; want bad signature", err)
	}

	// A flood of tokens naming keys the issuer never published (anyone who
	// reaches the gateway can send them) becomes at most fetchBurst
	// requests to the issuer while the clock stands still; a rotated-in
	// key still works once the limit refills.
	fixed := time.Now()
	v3, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	v3.now = func() time.Time { return fixed }
	done3 := make(chan struct{})
	go func() { defer close(done3); v3.Discover(ctx) }()
	t.Cleanup(func() { cancel(); <-done3 })
	testutil.Eventually(t, "discovery", func() bool { _, err := v3.Verify(ctx, p.Mint(t, claims(nil))); return err == nil })
	before := p.JWKSRequests()
	for i := range 50 {
		if _, err := v3.Verify(ctx, oidcprovider.Sign(t, otherKey, jose.ES256, fmt.Sprintf("flood-%d", i), claims(nil))); err == nil {
			t.Fatal("a token of an unpublished key verified")
		}
	}
	if _, err := v3.Verify(ctx, oidcprovider.Sign(t, otherKey, jose.ES256, "key-2", claims(nil))); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Errorf("a forged token naming a published kid = %v; want bad signature", err)
	}
	if n := p.JWKSRequests() - before; n > fetchBurst {
		t.Errorf("50 tokens of unknown keys made %d JWKS requests; want at most %d (seen failing with go-oidc's RemoteKeySet)", n, fetchBurst)
	}
	if _, err := v3.Verify(ctx, p.Mint(t, claims(nil))); err != nil {
		t.Errorf("a valid token during the flood = %v", err)
	}
	p.AddKey(t, jose.ES256)
	rotated := p.Mint(t, claims(nil))
	fixed = fixed.Add(fetchEvery)
	if _, err := v3.Verify(ctx, rotated); err != nil {
		t.Errorf("a rotated-in key, a second after the flood = %v", err)
	}

	// An issuer whose discovery points the keys at cloud metadata (SSRF)
	// gets no request sent there: the guarded client refuses the address.
	p.SetJWKSURI("https://169.254.169.254/jwks")
	v2, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan struct{})
	go func() { defer close(done2); v2.Discover(ctx) }()
	t.Cleanup(func() { cancel(); <-done2 })
	testutil.Eventually(t, "discovery of the issuer pointing at 169.254.169.254", func() bool {
		_, err := v2.Verify(ctx, p.Mint(t, claims(nil)))
		return err == nil || !strings.Contains(err.Error(), "could not be reached")
	})
	if _, err := v2.Verify(ctx, p.Mint(t, claims(nil))); err == nil || !strings.Contains(err.Error(), "refusing to connect") || !strings.Contains(err.Error(), "link-local") {
		t.Errorf("Verify with jwks_uri at 169.254.169.254 = %v; want the guarded client's refusal", err)
	}
}
