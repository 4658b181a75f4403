package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/secrets"
)

// Login runs the interactive authorization flow for one server and stores
// the token. It prints the URL to o.Prompt, opens a browser when it can, and
// waits at most o.LoginTimeout for the redirect.
func Login(ctx context.Context, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.LoginTimeout)
	defer cancel()

	cb, err := listen()
	if err != nil {
		return err
	}
	defer cb.close()
	redirect := cb.redirectURL()

	var (
		got      *record
		resource string
	)
	cfg := &auth.AuthorizationCodeHandlerConfig{
		RedirectURL:         redirect,
		Client:              o.HTTP,
		RequestRefreshToken: true,
		// A matching iss is what RFC 9207 asks clients to check; refusing it
		// only because the metadata does not advertise it helps nobody.
		AcceptUnadvertisedIss: true,
		AuthorizationCodeFetcher: func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
			u, err := url.Parse(args.URL)
			if err != nil {
				return nil, fmt.Errorf("oauth: the authorize URL does not parse: %v", err)
			}
			q := u.Query()
			resource = q.Get("resource")
			cb.expect(q.Get("state"))
			return waitForBrowser(ctx, &o, cb, args.URL)
		},
		NewTokenSource: func(_ context.Context, c *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			got = &record{
				AccessToken:  tok.AccessToken,
				RefreshToken: tok.RefreshToken,
				TokenType:    tok.TokenType,
				Expiry:       tok.Expiry,
				Obtained:     o.now(),
				URL:          o.URL,
				TokenURL:     c.Endpoint.TokenURL,
				AuthStyle:    int(c.Endpoint.AuthStyle),
				ClientID:     c.ClientID,
				ClientSecret: c.ClientSecret,
				Registered:   o.ClientID == "",
			}
			if s, ok := tok.Extra("scope").(string); ok {
				got.Scope = s
			} else {
				got.Scope = strings.Join(c.Scopes, " ")
			}
			return oauth2.StaticTokenSource(tok), nil
		},
	}
	if o.ClientID != "" {
		cfg.PreregisteredClient = &oauthex.ClientCredentials{ClientID: o.ClientID}
	} else {
		cfg.DynamicClientRegistrationConfig = &auth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				RedirectURIs:            []string{redirect},
				ClientName:              "Moat",
				GrantTypes:              []string{"authorization_code", "refresh_token"},
				ResponseTypes:           []string{"code"},
				TokenEndpointAuthMethod: "none",
			},
		}
	}
	if len(o.Scopes) > 0 {
		cfg.ScopeFilter = func([]string) []string { return o.Scopes }
	}
	flow, err := auth.NewAuthorizationCodeHandler(cfg)
	if err != nil {
		return fmt.Errorf("oauth: %v", err)
	}

	req, resp, err := probe(ctx, &o)
	if err != nil {
		return err
	}
	err = flow.Authorize(ctx, req, resp)
	if err == nil && got == nil {
		err = errors.New("the authorization flow ended without a token")
	}
	if err == nil {
		got.Resource = resource
		unlock := lockKey(o.key())
		err = save(ctx, &o, got)
		unlock()
	}
	cb.finish(err)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrLoginRequired) {
			return fmt.Errorf("oauth: login to %q did not finish within %s: %w", o.Server, o.LoginTimeout, err)
		}
		return fmt.Errorf("oauth: login to %q failed: %w", o.Server, err)
	}
	fmt.Fprintf(o.Prompt, "Logged in to %q (%s); the token is in the %s.\n", o.Server, hostOf(o.URL), o.Store.Backend())
	return nil
}

// waitForBrowser shows the URL, opens a browser, and waits for the verified
// callback.
func waitForBrowser(ctx context.Context, o *Options, cb *callback, authURL string) (*auth.AuthorizationResult, error) {
	fmt.Fprintf(o.Prompt, "To log in to %q, open this URL in a browser:\n\n  %s\n\n", o.Server, authURL)
	open := o.OpenBrowser
	if open == nil {
		open = func(u string) error { return openBrowser(ctx, u) }
	}
	if err := open(authURL); err != nil {
		fmt.Fprintf(o.Prompt, "(No browser opened: %s. Open the URL above by hand.)\n", clean(err.Error()))
	}
	deadline, _ := ctx.Deadline()
	fmt.Fprintf(o.Prompt, "Waiting for the login until %s...\n", deadline.Format(time.Kitchen))
	select {
	case r := <-cb.got:
		if r.err != nil {
			return nil, r.err
		}
		return r.res, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer from the browser: %w", ctx.Err())
	}
}

// openBrowser starts the desktop's URL opener and waits briefly for it.
func openBrowser(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.CommandContext(ctx, "open", u)
	case "windows":
		cmd = exec.CommandContext(ctx, "rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.CommandContext(ctx, "xdg-open", u)
	}
	return cmd.Run()
}

// probe asks the MCP server for the 401 whose WWW-Authenticate header starts
// discovery, with an initialize request and no token.
func probe(ctx context.Context, o *Options) (*http.Request, *http.Response, error) {
	c := o.MCPHTTP
	if c == nil {
		var err error
		if c, err = netguard.NewClient(o.URL, nil); err != nil {
			return nil, nil, err
		}
	}
	pctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"moat","version":"login"}}}`
	req, err := http.NewRequestWithContext(pctx, http.MethodPost, o.URL, strings.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("oauth: server %q: %v", o.Server, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("oauth: asking %q (%s) for its authorization requirements: %w", o.Server, hostOf(o.URL), err)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		// Authorize reads only the headers: keep them, drop the body now,
		// while the probe's deadline still holds.
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		resp.Body = http.NoBody
		return req, resp, nil
	}
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil, nil, fmt.Errorf("oauth: server %q (%s) answered without asking for a login (HTTP %d); it needs no OAuth token",
			o.Server, hostOf(o.URL), resp.StatusCode)
	}
	return nil, nil, fmt.Errorf("oauth: server %q (%s) answered HTTP %d instead of 401 with its authorization requirements",
		o.Server, hostOf(o.URL), resp.StatusCode)
}

// Logout removes the stored token of one server (its current url and client
// id). It does not contact the server.
func Logout(ctx context.Context, o Options) error {
	if o.Store == nil || o.Server == "" {
		return errors.New("oauth: logout needs a store and a server name")
	}
	unlock := lockKey(o.key())
	defer unlock()
	if err := o.Store.Delete(ctx, o.key()); err != nil {
		if errors.Is(err, secrets.ErrNotFound) {
			return fmt.Errorf("oauth: no token is stored for %q at %s: %w", o.Server, hostOf(o.URL), secrets.ErrNotFound)
		}
		return fmt.Errorf("oauth: removing the token of %q: %w", o.Server, err)
	}
	return nil
}

// TokenStatus describes the stored token of one server, never its value.
type TokenStatus struct {
	Server      string
	URL         string
	HasToken    bool
	Expiry      time.Time // zero: unknown or never
	Refreshable bool
	Scopes      []string
	Backend     string
	Err         error // reading the store failed
}

// Status reports, for each server with a url, whether a token is stored
// for its current url and client id.
func Status(ctx context.Context, store *secrets.Store, servers []*config.Server) []TokenStatus {
	var out []TokenStatus
	for _, s := range servers {
		if s == nil || s.URL == "" {
			continue
		}
		st := TokenStatus{Server: s.Name, URL: s.URL, Backend: store.Backend()}
		r, err := load(ctx, &Options{Store: store, Server: s.Name, URL: s.URL, ClientID: s.OAuthClientID})
		switch {
		case err != nil:
			st.Err = err
		case r != nil:
			st.HasToken = true
			st.Expiry = r.Expiry
			st.Refreshable = r.RefreshToken != "" && r.TokenURL != ""
			st.Scopes = strings.Fields(r.Scope)
		}
		out = append(out, st)
	}
	return out
}

// AdoptMigrated binds a dynamic-mcp token that `moat secret migrate` stored
// under secrets.DynamicMCPPrefix+server to (server, url, clientID), and
// removes the unbound item. dynamic-mcp bound tokens to nothing, so only an
// explicit command calls this, after telling the user which host the token
// will be sent to. dynamic-mcp kept no token endpoint, so an adopted token
// is used until it expires or is refused, then a login is needed.
func AdoptMigrated(ctx context.Context, store *secrets.Store, server, serverURL, clientID string) error {
	name := secrets.DynamicMCPPrefix + server
	v, err := store.Get(ctx, name)
	if errors.Is(err, secrets.ErrNotFound) {
		return &secrets.HintError{Err: fmt.Errorf("oauth: no migrated dynamic-mcp token for %q: %w", server, secrets.ErrNotFound)}
	}
	if err != nil {
		return fmt.Errorf("oauth: reading the migrated token of %q: %w", server, err)
	}
	var old secrets.DynamicMCPToken
	if json.Unmarshal([]byte(v.Reveal()), &old) != nil || old.AccessToken == "" {
		return fmt.Errorf("oauth: the migrated token of %q is unreadable", server)
	}
	r := &record{AccessToken: old.AccessToken, RefreshToken: old.RefreshToken, TokenType: "Bearer", URL: serverURL, ClientID: clientID}
	if len(old.ExpiresAt) > 0 && string(old.ExpiresAt) != "null" {
		var s string
		if json.Unmarshal(old.ExpiresAt, &s) != nil {
			return fmt.Errorf("oauth: the migrated token of %q has an unreadable expires_at", server)
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return fmt.Errorf("oauth: the migrated token of %q has an expires_at that is not RFC 3339", server)
		}
		r.Expiry = t
	}
	o := &Options{Store: store, Server: server, URL: serverURL, ClientID: clientID}
	unlock := lockKey(o.key())
	defer unlock()
	if err := save(ctx, o, r); err != nil {
		return err
	}
	if err := store.Delete(ctx, name); err != nil {
		return fmt.Errorf("oauth: the token of %q is bound to %s, but removing %q failed: %w", server, hostOf(serverURL), name, err)
	}
	return nil
}
