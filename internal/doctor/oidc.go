package doctor

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/moatmcp/moat/internal/oidcverify"
)

// oidcTimeout bounds doctor's discovery and JWKS requests to the issuer.
const oidcTimeout = 10 * time.Second

// checkOIDC checks gateway.oidc's issuer as the gateway would reach it:
// its discovery document answers and names the configured issuer, and
// its JWKS holds a key of an allowed algorithm.
func (d *run) checkOIDC(ctx context.Context) {
	if d.cfg == nil || d.cfg.Gateway.OIDC == nil {
		return
	}
	o := d.cfg.Gateway.OIDC
	c := Check{Section: SectionGateway, Name: "gateway.oidc"}
	defer func() { d.add(c) }()
	client := d.o.OIDCClient
	if client == nil {
		var err error
		if client, err = oidcverify.NewClient(); err != nil {
			c.Status, c.Message = Fail, fmt.Sprintf("no HTTP client for the issuer: %v", err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(ctx, oidcTimeout)
	defer cancel()
	p, err := oidcverify.Provider(ctx, client, o.Issuer)
	if err != nil {
		c.Status = Fail
		if strings.Contains(err.Error(), "did not match the issuer URL returned by provider") {
			c.Message = fmt.Sprintf("the issuer's discovery document names another issuer: %v", err)
			c.Fix = "set gateway.oidc.issuer to exactly the issuer its discovery document names (tokens' iss claim), trailing slash included or not"
			return
		}
		c.Message = fmt.Sprintf("the issuer %s cannot be reached for discovery (%s/.well-known/openid-configuration): %v; the gateway refuses JWT access tokens until it can",
			o.Issuer, strings.TrimSuffix(o.Issuer, "/"), err)
		c.Fix = "check gateway.oidc.issuer, that this host reaches it over https, and that its certificate is trusted (a private CA: SSL_CERT_FILE)"
		return
	}
	var doc struct {
		JWKS string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil || doc.JWKS == "" {
		c.Status, c.Message = Fail, fmt.Sprintf("the issuer %s publishes no jwks_uri in its discovery document, so no token's signature can be checked", o.Issuer)
		c.Fix = "point gateway.oidc.issuer at an OpenID Connect issuer (one that publishes its signing keys)"
		return
	}
	keys, err := fetchJWKS(ctx, client, doc.JWKS)
	if err != nil {
		c.Status, c.Message = Fail, fmt.Sprintf("the issuer's keys (%s) cannot be fetched: %v", doc.JWKS, err)
		c.Fix = "check that this host reaches the issuer's jwks_uri over https"
		return
	}
	var usable, other []string
	for _, k := range keys.Keys {
		if alg := keyAlg(k); slices.Contains(o.AllowedAlgs, alg) {
			usable = append(usable, k.KeyID)
		} else {
			other = append(other, alg)
		}
	}
	if len(usable) == 0 {
		c.Status = Fail
		c.Message = fmt.Sprintf("the issuer's JWKS has %d keys, none of an algorithm gateway.oidc.allowed_algs allows (%s; the keys' are %s), so every token would be refused",
			len(keys.Keys), strings.Join(o.AllowedAlgs, ", "), strings.Join(other, ", "))
		c.Fix = "add the algorithm the issuer signs with to gateway.oidc.allowed_algs (never none or HS*)"
		return
	}
	c.Status = OK
	c.Message = fmt.Sprintf("the issuer %s is reachable and publishes %d usable signing keys; tokens must have aud %q", o.Issuer, len(usable), o.Audience)
}

// fetchJWKS reads a JSON Web Key Set.
func fetchJWKS(ctx context.Context, client *http.Client, url string) (*jose.JSONWebKeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %v", err)
	}
	return &set, nil
}

// keyAlg is the algorithm a key is for: its alg, else the usual one of
// its type (as go-oidc would try it).
func keyAlg(k jose.JSONWebKey) string {
	if k.Algorithm != "" {
		return k.Algorithm
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		return "RS256"
	case *ecdsa.PublicKey:
		return map[int]string{256: "ES256", 384: "ES384", 521: "ES512"}[pub.Curve.Params().BitSize]
	case ed25519.PublicKey:
		return "EdDSA"
	}
	return fmt.Sprintf("a key of type %T", k.Key)
}
