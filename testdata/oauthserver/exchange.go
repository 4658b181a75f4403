package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
)

// stringList is a flag that may be given more than once.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// exchanger is the token-exchange configuration: whose subject tokens are
// trusted, and which client may exchange them.
type exchanger struct {
	issuer, audience       string
	clientID, clientSecret string
	refused                []string
	client                 *http.Client

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier // nil until the issuer is discovered
}

// newExchanger returns nil when issuer is "": token exchange is off.
func newExchanger(issuer, audience, client string, refused []string) (*exchanger, error) {
	if issuer == "" {
		return nil, nil
	}
	id, secret, ok := strings.Cut(client, ":")
	if !ok || id == "" || secret == "" {
		return nil, errors.New("-trust-issuer needs -exchange-client ID:SECRET")
	}
	if audience == "" {
		return nil, errors.New("-trust-issuer needs -subject-audience")
	}
	return &exchanger{
		issuer: issuer, audience: audience,
		clientID: id, clientSecret: secret,
		refused: refused,
		// The default transport trusts SSL_CERT_FILE, the test issuer's CA.
		client: &http.Client{Timeout: 10 * time.Second},
	}, nil
}

// subject verifies a subject token and returns its sub. The issuer is
// discovered on first use, and again after a failure, since it may start
// after this server.
func (x *exchanger) subject(ctx context.Context, raw string) (string, error) {
	x.mu.Lock()
	if x.verifier == nil {
		p, err := oidc.NewProvider(oidc.ClientContext(ctx, x.client), x.issuer)
		if err != nil {
			x.mu.Unlock()
			log.Printf("discovering the trusted issuer %s: %v", x.issuer, err)
			return "", errors.New("its issuer cannot be reached")
		}
		x.verifier = p.Verifier(&oidc.Config{ClientID: x.audience})
	}
	v := x.verifier
	x.mu.Unlock()
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return "", errors.New(strings.TrimPrefix(err.Error(), "oidc: "))
	}
	if tok.Subject == "" {
		return "", errors.New("it has no sub")
	}
	return tok.Subject, nil
}

// tokenExchange is the RFC 8693 grant: the exchange client trades a user's
// access token of the trusted issuer for an access token to the MCP server
// in that user's name.
func (as *authServer) tokenExchange(w http.ResponseWriter, r *http.Request) {
	x, f := as.exchange, r.PostForm
	refuse := func(status int, code, desc string) {
		body, reason := map[string]string{"error": code}, code
		if desc != "" {
			body["error_description"], reason = desc, code+": "+desc
		}
		as.rec.write(map[string]string{"event": "exchange_refused", "reason": reason})
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="oauthserver"`)
		}
		writeJSON(w, status, body)
	}

	id, secret, ok := clientCredentials(r)
	if !ok || id != x.clientID || secret != x.clientSecret {
		refuse(http.StatusUnauthorized, "invalid_client", "")
		return
	}
	switch typ := f.Get("subject_token_type"); {
	case typ != tokenTypeAccess && typ != tokenTypeJWT:
		refuse(http.StatusBadRequest, "invalid_request", "subject_token_type must be "+tokenTypeAccess+" or "+tokenTypeJWT)
		return
	case f.Get("subject_token") == "":
		refuse(http.StatusBadRequest, "invalid_request", "subject_token required")
		return
	}
	raw := f.Get("subject_token")
	sub, err := x.subject(r.Context(), raw)
	if err != nil {
		refuse(http.StatusBadRequest, "invalid_grant", "the subject token is not valid: "+err.Error())
		return
	}
	if len(f["resource"]) != 1 || f.Get("resource") != as.resource {
		refuse(http.StatusBadRequest, "invalid_target", "resource must be "+as.resource)
		return
	}
	if slices.Contains(x.refused, sub) {
		refuse(http.StatusBadRequest, "invalid_grant", fmt.Sprintf("subject %s may not use this resource", sub))
		return
	}
	scope := f.Get("scope")
	if scope == "" {
		scope = "tools"
	}
	at := "xt-" + rand.Text()
	as.mu.Lock()
	as.access[at] = grant{client: id, resource: as.resource, scope: scope, user: sub,
		expiry: time.Now().Add(time.Duration(as.expiresIn) * time.Second)}
	as.mu.Unlock()
	as.rec.write(map[string]string{"event": "issued", "grant_type": "token-exchange", "subject": sub, "subject_token": raw, "access_token": at})
	w.Header().Set("Cache-Control", "no-store")
	// No refresh token: the gateway exchanges the user's token again.
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": at, "issued_token_type": tokenTypeAccess, "token_type": "Bearer",
		"expires_in": as.expiresIn, "scope": scope,
	})
}

// clientCredentials are the client's id and secret from HTTP Basic or, in
// its absence, the client_id and client_secret form fields.
func clientCredentials(r *http.Request) (id, secret string, ok bool) {
	id, secret, basic := r.BasicAuth()
	if !basic {
		return r.PostForm.Get("client_id"), r.PostForm.Get("client_secret"), true
	}
	// RFC 6749 §2.3.1: both are form-urlencoded before base64.
	id, errID := url.QueryUnescape(id)
	secret, errSecret := url.QueryUnescape(secret)
	return id, secret, errID == nil && errSecret == nil
}
