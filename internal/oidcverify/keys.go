package oidcverify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/time/rate"
)

// keysMaxAge is how long keys fetched from the JWKS are trusted before
// they are fetched again: a key the issuer dropped (rotated out) is
// refused from then on.
const keysMaxAge = 5 * time.Minute

// Fetches of the JWKS are bounded: a token naming a key not yet fetched
// (rotation) fetches at once, but a flood of such tokens, which anyone who
// can reach the gateway can send, becomes at most one request a second to
// the issuer, after a burst of fetchBurst.
const (
	fetchEvery = time.Second
	fetchBurst = 5
)

// keySet is the issuer's published keys (an oidc.KeySet). It replaces
// go-oidc's RemoteKeySet, which fetches the keys again for every token
// that fails to verify, without bound, and keeps a dropped key until a
// token fails with it.
type keySet struct {
	client *http.Client
	url    string
	algs   []jose.SignatureAlgorithm
	now    func() time.Time
	limit  *rate.Limiter

	fetch sync.Mutex // one fetch at a time; the others wait for its keys

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time // zero before the first fetch
}

func newKeySet(client *http.Client, url string, algs []string, now func() time.Time) *keySet {
	k := &keySet{client: client, url: url, now: now, limit: rate.NewLimiter(rate.Every(fetchEvery), fetchBurst)}
	for _, a := range algs {
		k.algs = append(k.algs, jose.SignatureAlgorithm(a))
	}
	return k
}

// VerifySignature returns the payload of jwt if a key of the issuer with
// its kid verifies it. The keys are fetched when stale, or when the kid is
// one they do not hold; a kid they hold whose key does not verify is a bad
// signature, without a fetch.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, k.algs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %v", err)
	}
	kid := jws.Signatures[0].Header.KeyID
	k.mu.Lock()
	keys, fetched := k.keys, k.fetched
	k.mu.Unlock()
	if !fetched.IsZero() && k.now().Sub(fetched) < keysMaxAge {
		if payload, ok := verifyWith(jws, kid, keys); ok {
			return payload, nil
		}
		if kid == "" || holds(keys, kid) {
			return nil, errors.New("failed to verify signature: the issuer's key of that kid does not verify it")
		}
	}
	keys, err = k.refresh(ctx, fetched)
	if err != nil {
		return nil, fmt.Errorf("failed to verify signature: fetching the issuer's keys: %w", err)
	}
	if payload, ok := verifyWith(jws, kid, keys); ok {
		return payload, nil
	}
	return nil, errors.New("failed to verify signature: no key of the issuer verifies it")
}

// refresh fetches the keys, unless another fetch did since seen (the keys
// the caller saw were fetched then): a burst of tokens of one new key
// fetches once.
func (k *keySet) refresh(ctx context.Context, seen time.Time) ([]jose.JSONWebKey, error) {
	k.fetch.Lock()
	defer k.fetch.Unlock()
	k.mu.Lock()
	keys, fetched := k.keys, k.fetched
	k.mu.Unlock()
	if fetched.After(seen) {
		return keys, nil
	}
	if !k.limit.AllowN(k.now(), 1) {
		return nil, fmt.Errorf("not fetched: the keys were fetched %d times in the last few seconds (at most one fetch a second)", fetchBurst)
	}
	keys, err := k.get(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	k.keys, k.fetched = keys, k.now()
	k.mu.Unlock()
	return keys, nil
}

func (k *keySet) get(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("%s answered %s", k.url, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, fmt.Errorf("%s is not a JWK set: %v", k.url, err)
	}
	var keys []jose.JSONWebKey
	for _, key := range set.Keys {
		if key.Valid() && key.IsPublic() && (key.Use == "" || key.Use == "sig") {
			keys = append(keys, key)
		}
	}
	return keys, nil
}

func verifyWith(jws *jose.JSONWebSignature, kid string, keys []jose.JSONWebKey) ([]byte, bool) {
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&key); err == nil {
			return payload, true
		}
	}
	return nil, false
}

func holds(keys []jose.JSONWebKey, kid string) bool {
	for _, key := range keys {
		if key.KeyID == kid {
			return true
		}
	}
	return false
}
