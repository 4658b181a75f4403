// Package oidcprovider is a local OpenID Connect issuer for tests: it
// serves discovery and a JWKS over TLS on loopback, mints access tokens
// with any claims (signed RS256 or ES256, or with alg none), and rotates
// its keys, so that the gateway's resource server is tested against a real
// HTTPS issuer rather than a mock.
package oidcprovider

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// Provider is a running issuer. Its URL is the issuer identifier.
type Provider struct {
	URL string
	// CAFile is a PEM file of the certificate the issuer serves: point
	// SSL_CERT_FILE at it for a moat that must trust the issuer.
	CAFile string

	srv *httptest.Server

	mu      sync.Mutex
	keys    []signingKey // published in the JWKS, newest last
	n       int
	down    bool   // discovery and JWKS answer 503
	jwksURI string // the discovery document's jwks_uri; "" is URL/jwks
	jwksN   int    // JWKS requests served
}

type signingKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

// Start runs an issuer with one RS256 key until the test ends.
func Start(t testing.TB) *Provider {
	t.Helper()
	p := &Provider{}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("/jwks", p.jwks)
	p.srv = httptest.NewTLSServer(mux)
	t.Cleanup(p.srv.Close)
	p.URL = p.srv.URL
	p.CAFile = filepath.Join(t.TempDir(), "issuer-ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(p.CAFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p.AddKey(t, jose.RS256)
	return p
}

// SetDown makes discovery and the JWKS answer 503 (down) or serve again.
func (p *Provider) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// SetJWKSURI makes the discovery document point the keys at u (a hostile
// issuer's SSRF attempt); "" restores the issuer's own.
func (p *Provider) SetJWKSURI(u string) {
	p.mu.Lock()
	p.jwksURI = u
	p.mu.Unlock()
}

// JWKSRequests is how many times the JWKS was fetched.
func (p *Provider) JWKSRequests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.jwksN
}

func (p *Provider) discovery(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	down, jwksURI := p.down, p.jwksURI
	p.mu.Unlock()
	if down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if jwksURI == "" {
		jwksURI = p.URL + "/jwks"
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                p.URL,
		"jwks_uri":                              jwksURI,
		"authorization_endpoint":                p.URL + "/authorize",
		"token_endpoint":                        p.URL + "/token",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
	})
}

func (p *Provider) jwks(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	down := p.down
	p.jwksN++
	var set jose.JSONWebKeySet
	for _, k := range p.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.key.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
	p.mu.Unlock()
	if down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(set)
}

// AddKey makes and publishes a new signing key of alg (RS256 or ES256)
// and returns its kid; Mint signs with the newest key.
func (p *Provider) AddKey(t testing.TB, alg jose.SignatureAlgorithm) string {
	t.Helper()
	var k crypto.Signer
	var err error
	switch alg {
	case jose.RS256:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		t.Fatalf("oidcprovider: no key of alg %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	kid := "key-" + strconv.Itoa(p.n)
	p.keys = append(p.keys, signingKey{kid: kid, alg: alg, key: k})
	return kid
}

// DropKey stops publishing the key kid (a rotation's second half); a
// token minted with it can be verified by no published key.
func (p *Provider) DropKey(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = slices.DeleteFunc(p.keys, func(k signingKey) bool { return k.kid == kid })
}

// Mint signs claims with the newest published key. A token of a key to
// be rotated out is minted before DropKey.
func (p *Provider) Mint(t testing.TB, claims map[string]any) string {
	t.Helper()
	p.mu.Lock()
	if len(p.keys) == 0 {
		p.mu.Unlock()
		t.Fatal("oidcprovider: no key to sign with")
	}
	k := p.keys[len(p.keys)-1]
	p.mu.Unlock()
	return Sign(t, k.key, k.alg, k.kid, claims)
}

// Sign signs claims with key as a JWT of alg and kid: a test can sign
// with a key the issuer never published (a bad signature).
func Sign(t testing.TB, key crypto.Signer, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", kid)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// MintNone is claims as an unsigned JWT (alg none), which no verifier
// may accept.
func MintNone(t testing.TB, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(b) + "."
}
