// Command oauthserver is the OAuth-protected MCP server that Moat's
// end-to-end tests log in to through the real moat binary.
//
// It runs two HTTP servers on 127.0.0.1, each on a random port:
//
//   - an authorization server: RFC 8414 metadata, RFC 7591 dynamic client
//     registration, an authorization endpoint that approves at once and
//     redirects to the registered redirect_uri with code, state and iss
//     (PKCE S256 and the RFC 8707 resource required), and a token endpoint
//     that verifies the PKCE verifier and the resource, and rotates refresh
//     tokens (a spent one is refused with invalid_grant);
//   - with -trust-issuer, the RFC 8693 token-exchange grant at the same
//     token endpoint, as a gateway uses it to get a token per user: a
//     statically registered confidential client (-exchange-client ID:SECRET,
//     HTTP Basic or form fields) exchanges a JWT access token of the trusted
//     OIDC issuer (signature, iss, exp, and aud containing -subject-audience
//     checked) for an access token to the MCP server (resource required),
//     with no refresh token; the subjects given with -refuse-subject (the
//     flag may be repeated) are refused with invalid_grant;
//   - a go-sdk streamable MCP server behind auth.RequireBearerToken, with
//     RFC 9728 protected-resource metadata, offering the tools whoami (the
//     token's user: alice, or the subject of an exchanged token) and
//     echo_auth (which returns the Authorization header it received, so a
//     test can check that Moat redacts a token echoed back).
//
// The first stdout line is "LISTEN <mcp url>". With -record FILE, every
// token issued and every Authorization header the MCP endpoint receives is
// appended to FILE as a JSON line, so a test can prove which token went
// where and scan for the values; a token exchange records the subject and
// the subject token it was issued for, and a refused one its reason. The
// tokens are test values; nothing here is meant for real use.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

func main() {
	record := flag.String("record", "", "append issued tokens and received Authorization headers to this file as JSON lines")
	expiresIn := flag.Int("expires-in", 3600, "lifetime of access tokens, in seconds")
	trustIssuer := flag.String("trust-issuer", "", "accept JWT access tokens of this OIDC issuer as token-exchange subject tokens")
	audience := flag.String("subject-audience", "", "the audience a subject token must carry (with -trust-issuer)")
	client := flag.String("exchange-client", "", "ID:SECRET of the confidential client allowed to exchange tokens (with -trust-issuer)")
	var refused stringList
	flag.Var(&refused, "refuse-subject", "a subject whose tokens are refused for exchange; may be repeated")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("oauthserver: ")

	x, err := newExchanger(*trustIssuer, *audience, *client, refused)
	if err != nil {
		log.Print(err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *record, *expiresIn, x); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(ctx context.Context, recordPath string, expiresIn int, x *exchanger) error {
	rec, err := openRecorder(recordPath)
	if err != nil {
		return err
	}
	defer rec.close()
	asLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the authorization server: %w", err)
	}
	mcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		asLn.Close()
		return fmt.Errorf("listen for the MCP server: %w", err)
	}
	base := "http://" + mcpLn.Addr().String()
	mcpURL := base + "/mcp"
	as := newAuthServer("http://"+asLn.Addr().String(), mcpURL, expiresIn, rec, x)

	servers := []*http.Server{
		{Handler: as.mux(), ReadHeaderTimeout: 10 * time.Second},
		{Handler: protectedMCP(as, rec, base, mcpURL), ReadHeaderTimeout: 10 * time.Second},
	}
	errc := make(chan error, 2)
	go func() { errc <- servers[0].Serve(asLn) }()
	go func() { errc <- servers[1].Serve(mcpLn) }()
	fmt.Fprintf(os.Stdout, "LISTEN %s\n", mcpURL)
	log.Printf("ready: authorization server %s, MCP server %s", as.issuer, mcpURL)

	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		if s.Shutdown(shutCtx) != nil {
			s.Close()
		}
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// recorder appends JSON lines to the -record file.
type recorder struct {
	mu sync.Mutex
	f  *os.File
}

func openRecorder(path string) (*recorder, error) {
	if path == "" {
		return &recorder{}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the record file: %w", err)
	}
	return &recorder{f: f}, nil
}

func (r *recorder) write(v map[string]string) {
	if r.f == nil {
		return
	}
	b, _ := json.Marshal(v)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.f.Write(append(b, '\n')); err != nil {
		log.Printf("writing the record file: %v", err)
	}
}

func (r *recorder) close() {
	if r.f != nil {
		r.f.Close()
	}
}

// authServer is the authorization server's state.
type authServer struct {
	issuer    string
	resource  string // the MCP server's URL, the one resource a token exchange may target
	expiresIn int
	rec       *recorder
	exchange  *exchanger // nil: no token exchange

	mu      sync.Mutex
	clients map[string][]string // client id -> registered redirect uris
	codes   map[string]codeGrant
	access  map[string]grant // live access tokens
	refresh map[string]grant // live refresh tokens
}

type codeGrant struct {
	challenge, client, redirect, resource, scope string
}

type grant struct {
	client, resource, scope string
	user                    string // whom the MCP server's whoami names
	expiry                  time.Time
}

func newAuthServer(issuer, resource string, expiresIn int, rec *recorder, x *exchanger) *authServer {
	return &authServer{
		issuer:    issuer,
		resource:  resource,
		expiresIn: expiresIn,
		rec:       rec,
		exchange:  x,
		clients:   map[string][]string{},
		codes:     map[string]codeGrant{},
		access:    map[string]grant{},
		refresh:   map[string]grant{},
	}
}

func (as *authServer) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", as.metadata)
	mux.HandleFunc("POST /register", as.register)
	mux.HandleFunc("GET /authorize", as.authorize)
	mux.HandleFunc("POST /token", as.token)
	return mux
}

func (as *authServer) metadata(w http.ResponseWriter, _ *http.Request) {
	grants, methods := []string{"authorization_code", "refresh_token"}, []string{"none"}
	if as.exchange != nil {
		grants = append(grants, grantTokenExchange)
		methods = append(methods, "client_secret_basic")
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                         as.issuer,
		"authorization_endpoint":                         as.issuer + "/authorize",
		"token_endpoint":                                 as.issuer + "/token",
		"registration_endpoint":                          as.issuer + "/register",
		"response_types_supported":                       []string{"code"},
		"grant_types_supported":                          grants,
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          methods,
		"scopes_supported":                               []string{"tools", "offline_access"},
		"authorization_response_iss_parameter_supported": true,
	})
}

func (as *authServer) register(w http.ResponseWriter, r *http.Request) {
	var m oauthex.ClientRegistrationMetadata
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil || len(m.RedirectURIs) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata"})
		return
	}
	id := "dcr-" + rand.Text()
	as.mu.Lock()
	as.clients[id] = m.RedirectURIs
	as.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{"client_id": id, "redirect_uris": m.RedirectURIs, "token_endpoint_auth_method": "none"})
}

// authorize approves at once, as a user clicking "allow" would.
func (as *authServer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	as.mu.Lock()
	defer as.mu.Unlock()
	uris, ok := as.clients[q.Get("client_id")]
	redirect := q.Get("redirect_uri")
	switch {
	case !ok:
		http.Error(w, "unknown client", http.StatusBadRequest)
		return
	case !slices.Contains(uris, redirect):
		http.Error(w, "redirect_uri not registered", http.StatusBadRequest)
		return
	case q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		http.Error(w, "PKCE S256 required", http.StatusBadRequest)
		return
	case q.Get("state") == "":
		http.Error(w, "state required", http.StatusBadRequest)
		return
	case q.Get("resource") == "":
		http.Error(w, "resource required (RFC 8707)", http.StatusBadRequest)
		return
	}
	code := rand.Text()
	as.codes[code] = codeGrant{q.Get("code_challenge"), q.Get("client_id"), redirect, q.Get("resource"), q.Get("scope")}
	back, _ := url.Parse(redirect)
	back.RawQuery = url.Values{"code": {code}, "state": {q.Get("state")}, "iss": {as.issuer}}.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (as *authServer) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	f := r.PostForm
	if f.Get("grant_type") == grantTokenExchange && as.exchange != nil {
		// Not under as.mu: verifying the subject token may wait on the
		// trusted issuer.
		as.tokenExchange(w, r)
		return
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	var g grant
	switch f.Get("grant_type") {
	case "authorization_code":
		c, ok := as.codes[f.Get("code")]
		delete(as.codes, f.Get("code")) // a code is good once
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case !ok || c.client != f.Get("client_id") || c.redirect != f.Get("redirect_uri"):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "PKCE verifier does not match"})
			return
		case c.resource != f.Get("resource"):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_target"})
			return
		}
		// The authorization endpoint approves as one user, alice.
		g = grant{client: c.client, resource: c.resource, scope: c.scope, user: "alice"}
	case "refresh_token":
		old, ok := as.refresh[f.Get("refresh_token")]
		if !ok || old.client != f.Get("client_id") || old.resource != f.Get("resource") {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "refresh token unknown or spent"})
			return
		}
		delete(as.refresh, f.Get("refresh_token")) // rotation: the old one is spent
		g = old
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	at, rt := "at-"+rand.Text(), "rt-"+rand.Text()
	g.expiry = time.Now().Add(time.Duration(as.expiresIn) * time.Second)
	as.access[at] = g
	as.refresh[rt] = g
	as.rec.write(map[string]string{"event": "issued", "grant_type": f.Get("grant_type"), "access_token": at, "refresh_token": rt})
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": at, "token_type": "Bearer", "expires_in": as.expiresIn,
		"refresh_token": rt, "scope": g.scope,
	})
}

// verify is the MCP server's token check: a live access token issued for
// this resource.
func (as *authServer) verify(resource string) auth.TokenVerifier {
	return func(_ context.Context, tok string, _ *http.Request) (*auth.TokenInfo, error) {
		as.mu.Lock()
		defer as.mu.Unlock()
		g, ok := as.access[tok]
		if !ok || time.Now().After(g.expiry) || g.resource != resource {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{Expiration: g.expiry, Scopes: strings.Fields(g.scope), UserID: g.user}, nil
	}
}

// protectedMCP is the MCP server at mcpURL behind bearer-token auth, with
// its RFC 9728 metadata under base.
func protectedMCP(as *authServer, rec *recorder, base, mcpURL string) http.Handler {
	server := mcp.NewServer(&mcp.Implementation{Name: "protected", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "Who the bearer token belongs to."},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			who := "nobody"
			if req.Extra != nil && req.Extra.TokenInfo != nil {
				who = req.Extra.TokenInfo.UserID
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: who}}}, nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "echo_auth", Description: "Returns the Authorization header of the request, as a careless server might."},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			h := ""
			if req.Extra != nil {
				h = req.Extra.Header.Get("Authorization")
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "you sent: " + h}}}, nil, nil
		})
	const prmPath = "/.well-known/oauth-protected-resource/mcp"
	protected := auth.RequireBearerToken(as.verify(mcpURL), &auth.RequireBearerTokenOptions{ResourceMetadataURL: base + prmPath})(
		mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	mux := http.NewServeMux()
	mux.Handle(prmPath, auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource:             mcpURL,
		AuthorizationServers: []string{as.issuer},
		ScopesSupported:      []string{"tools"},
	}))
	mux.Handle("/mcp", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.write(map[string]string{"event": "mcp_request", "method": r.Method, "authorization": r.Header.Get("Authorization")})
		protected.ServeHTTP(w, r)
	}))
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
