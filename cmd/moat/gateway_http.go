package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/time/rate"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/gate"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/hygiene"
	"github.com/moatmcp/moat/internal/metrics"
	"github.com/moatmcp/moat/internal/oidcverify"
	"github.com/moatmcp/moat/internal/proxy"
)

// mcpPath is where the gateway serves Streamable HTTP.
const mcpPath = "/mcp"

// tcpAddr checks a --listen HOST:PORT.
func tcpAddr(v string) (string, error) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", fmt.Errorf("--listen %s: not unix:PATH, systemd or HOST:PORT (%v); use --listen 127.0.0.1:7733 for Streamable HTTP, or --listen unix:PATH", v, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return "", fmt.Errorf("--listen %s: port %q is not a number from 0 to 65535", v, port)
	}
	if strings.ContainsAny(host, "/ ") {
		return "", fmt.Errorf("--listen %s: host %q is not a host name or IP address", v, host)
	}
	return net.JoinHostPort(host, port), nil
}

// httpListener is one --listen HOST:PORT, open.
type httpListener struct {
	net.Listener
	tls bool
}

// httpListeners opens serve's --listen HOST:PORT flags: TLS with the
// config's gateway.tls; plain HTTP only on a loopback address. On error it
// has closed what it opened.
func httpListeners(cfg *config.Config, listen []string) ([]*httpListener, error) {
	var ls []*httpListener
	fail := func(err error) ([]*httpListener, error) {
		for _, l := range ls {
			l.Close()
		}
		return nil, err
	}
	var tc *tls.Config
	for _, v := range listen {
		addr, ok := strings.CutPrefix(v, listenTCP)
		if !ok {
			continue
		}
		host, _, _ := net.SplitHostPort(addr)
		if cfg.Gateway.TLS == nil && !config.IsLoopback(host) {
			return fail(fmt.Errorf("--listen %s: plain HTTP on an address other machines can reach would send every token and call readable on the network; "+
				`set "gateway": {"tls": {"cert_file": "/path/cert.pem", "key_file": "/path/key.pem"}} in %s, or listen on 127.0.0.1 (or [::1]) only`, addr, cfg.Path))
		}
		if cfg.Gateway.TLS != nil && tc == nil {
			var err error
			if tc, err = gatewayTLS(cfg.Gateway.TLS); err != nil {
				return fail(err)
			}
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("--listen %s: %w", addr, err))
		}
		// "localhost" is a name: where the hosts file says otherwise, it
		// is not loopback, and plain HTTP must not follow it there.
		if ta, ok := l.Addr().(*net.TCPAddr); tc == nil && (!ok || !ta.IP.IsLoopback()) {
			l.Close()
			return fail(fmt.Errorf("--listen %s: %s is %s here, not a loopback address; plain HTTP is served on loopback only: listen on 127.0.0.1 (or [::1]), or set gateway.tls", addr, host, l.Addr()))
		}
		hl := &httpListener{Listener: l}
		if tc != nil {
			hl.Listener, hl.tls = tls.NewListener(l, tc), true
		}
		ls = append(ls, hl)
	}
	return ls, nil
}

// gatewayTLS is the server TLS config of gateway.tls.
func gatewayTLS(t *config.GatewayTLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("gateway.tls: loading %s and %s: %w (`moat doctor` checks them)", t.CertFile, t.KeyFile, err)
	}
	minVersion := uint16(tls.VersionTLS12)
	if t.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: minVersion}, nil
}

// httpAddrs are where ls listen, as URLs of the MCP endpoint.
func httpAddrs(ls []*httpListener) []string {
	var out []string
	for _, l := range ls {
		scheme := "http"
		if l.tls {
			scheme = "https"
		}
		out = append(out, scheme+"://"+l.Addr().String()+mcpPath)
	}
	return out
}

// serveHTTP serves Streamable HTTP on ls until ctx ends, then closes every
// session and waits for the servers.
func serveHTTP(ctx context.Context, m *instance, gw *proxy.Gateway, ls []*httpListener, counts *sessionCount, wg *sync.WaitGroup) {
	if len(ls) == 0 {
		return
	}
	a := &httpAuth{
		m:        m,
		origins:  m.cfg.Gateway.AllowedOrigins,
		tokens:   storeTokens(),
		refusals: newRefusalLog(m.auditLog.Log, m.log),
		counts:   counts,
		sessions: newBearerSessions(),
	}
	mux := http.NewServeMux()
	if o := m.cfg.Gateway.OIDC; o != nil {
		v, err := oidcverify.New(o, m.log)
		if err != nil {
			// The client is made of defaults only: this does not happen.
			m.log.Error("gateway.oidc: no HTTP client for the issuer; JWT access tokens are refused", "err", err)
		} else {
			a.oidc, a.oidcCfg = v, o
			wg.Go(func() { v.Discover(ctx) })
		}
		a.metadataURL = metadataURL(o.Resource)
		prm := auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
			Resource:               o.Resource,
			AuthorizationServers:   []string{o.Issuer},
			ScopesSupported:        o.RequiredScopes,
			BearerMethodsSupported: []string{"header"},
		})
		// RFC 9728 §3.1: the metadata of resource https://h/mcp is at
		// https://h/.well-known/oauth-protected-resource/mcp; some
		// clients ask at the root.
		mux.Handle(prmPath, prm)
		mux.Handle(prmPath+mcpPath, prm)
	}
	h := gw.HTTP(ctx, proxy.HTTPOptions{
		Identity: func(r *http.Request) *guard.Identity {
			who, _ := r.Context().Value(bearerKey{}).(*bearerOf)
			if who == nil {
				return nil
			}
			return who.id
		},
		Session: func(id *guard.Identity) proxy.SessionOptions { return sessionOptions(m, id) },
		Started: func(so proxy.SessionOptions, r *http.Request) {
			ended, leave := m.mt.SessionStarted(so.Identity.Name), takeSlot(r)
			who, _ := r.Context().Value(bearerKey{}).(*bearerOf)
			a.sessions.add(so.ID, who, func() { leave(); ended() })
			m.log.Info("gateway session", "session", so.ID, "identity", so.Identity.Name, "remote", r.RemoteAddr)
			_ = m.auditLog.Log.Write(context.WithoutCancel(ctx), &audit.Record{Event: "session_start", Session: so.ID, Identity: auditIdentity(so.Identity),
				Detail: requestDetail(r)})
		},
		Ended: func(so proxy.SessionOptions, d time.Duration) {
			detail := map[string]string{"transport": "http"}
			if reason := a.sessions.remove(so.ID); reason != "" {
				detail["reason"] = reason
			}
			_ = m.auditLog.Log.Write(context.WithoutCancel(ctx), &audit.Record{Event: "session_end", Session: so.ID, Identity: auditIdentity(so.Identity),
				DurationMS: d.Milliseconds(), Detail: detail})
		},
		Refused: func(r *http.Request, id *guard.Identity, reason string) {
			a.refused(r, metrics.AuthWrongSession, reason, auditIdentity(id))
		},
	})
	mux.Handle(mcpPath, a.wrap(h))
	// Sessions end with ctx; their last records are written before the
	// gateway closes the audit log.
	wg.Go(func() {
		<-ctx.Done()
		h.Wait()
	})
	wg.Go(func() { a.endStaleSessions(ctx, h) })
	for _, l := range ls {
		srv := &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			// A kept-alive connection with no request is closed, so that
			// idle connections (anyone's, before any token is checked) do
			// not pile up. No ReadTimeout or WriteTimeout: event streams
			// last.
			IdleTimeout:    2 * time.Minute,
			MaxHeaderBytes: 64 << 10,
			BaseContext:    func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
			ErrorLog:       slog.NewLogLogger(m.log.Handler(), slog.LevelDebug),
		}
		wg.Go(func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.log.Error("serving HTTP failed", "addr", l.Addr().String(), "err", err)
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			// Sessions end with ctx (Gateway.HTTP), which ends their
			// event streams; a request still running has a moment.
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
			}
		})
	}
}

// sessionOptions are what a gateway session of id is shown.
func sessionOptions(m *instance, id *guard.Identity) proxy.SessionOptions {
	return proxy.SessionOptions{
		Identity: id,
		Visible:  func(group string) bool { return m.gs.Visible(id, group) },
		Narrow: func(group string, entries []proxy.Entry, tools []*mcp.Tool) []proxy.Entry {
			return m.gs.ForIdentity(id, group, entries, tools)
		},
		Permit: m.gs.PermitFor(id),
	}
}

// requestDetail is what an audit record says of an HTTP request: where it
// came from, and the token's name when it had a valid one (or, for an
// OIDC token, its subject and issuer).
func requestDetail(r *http.Request) map[string]string {
	d := map[string]string{"transport": "http", "remote": r.RemoteAddr}
	if who, _ := r.Context().Value(bearerKey{}).(*bearerOf); who != nil {
		if who.oidc != nil {
			d["sub"], d["issuer"] = who.oidc.Subject, who.oidc.Issuer
		} else {
			d["token"] = who.token
		}
	}
	return d
}

// prmPath is where the gateway publishes its OAuth Protected Resource
// Metadata (RFC 9728) when gateway.oidc is set.
const prmPath = "/.well-known/oauth-protected-resource"

// metadataURL is the URL of resource's Protected Resource Metadata: the
// well-known path inserted between its host and its path (RFC 9728 §3.1).
func metadataURL(resource string) string {
	u, err := url.Parse(resource)
	if err != nil { // the loader checked it
		return ""
	}
	u.Path = prmPath + strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u.String()
}

// refusalRecordsPerSecond bounds the auth_refused records a flood of bad
// requests can write (each is durable: a write to disk); the ones over it
// are counted in the next record written.
const refusalRecordsPerSecond = 20

// httpAuth is the gateway's HTTP front: the Origin check, then the bearer
// token, which names the identity.
type httpAuth struct {
	m        *instance
	origins  []string
	tokens   *tokenVerifier
	refusals *refusalLog
	counts   *sessionCount
	sessions *bearerSessions
	// oidc verifies JWT access tokens when gateway.oidc is set (oidcCfg);
	// metadataURL is then named in every 401's challenge.
	oidc        *oidcverify.Verifier
	oidcCfg     *config.GatewayOIDC
	metadataURL string
}

// bearerOf is who an authenticated request is.
type bearerOf struct {
	token string             // a moat token's name
	sum   string             // and its SHA-256, as stored
	oidc  *oidcverify.Claims // or the verified JWT's claims
	id    *guard.Identity
}

type bearerKey struct{}

func (a *httpAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Browsers send Origin; MCP clients do not. A page the user
		// visits must not reach the gateway through the user's browser.
		if o := r.Header.Get("Origin"); o != "" && !slices.Contains(a.origins, o) {
			a.refused(r, metrics.AuthOrigin, fmt.Sprintf("origin %q is not in gateway.allowed_origins", o), nil)
			http.Error(w, "moat: requests from a browser origin are refused (gateway.allowed_origins)", http.StatusForbidden)
			return
		}
		tok, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			a.unauthorized(w, r, metrics.AuthNoToken, "no bearer token")
			return
		}
		var who *bearerOf
		if a.oidc != nil && oidcverify.LooksLikeJWT(tok) {
			if who = a.jwt(w, r, tok); who == nil {
				return
			}
		} else {
			name, err := a.tokens.verify(r.Context(), tok)
			if err != nil {
				a.unauthorized(w, r, metrics.AuthBadToken, err.Error())
				return
			}
			id, err := a.m.gs.IdentifyToken(name)
			if err != nil {
				a.m.log.Warn("refused a token of no identity", "token", name, "err", err)
				a.unauthorized(w, r, metrics.AuthNoIdentity, fmt.Sprintf("token %q is no identity's (gateway.identities.NAME.tokens)", name))
				return
			}
			who = &bearerOf{token: name, sum: tokenHash(tok), id: id}
		}
		id := who.id
		ctx := context.WithValue(r.Context(), bearerKey{}, who)
		if sid := r.Header.Get("Mcp-Session-Id"); sid != "" {
			a.sessions.renew(sid, who)
		}
		if r.Method == http.MethodPost && r.Header.Get("Mcp-Session-Id") == "" {
			// A new session: one identity may not take every other's room.
			// Its place is taken now, so that requests at once cannot all
			// pass the limit; Started keeps it for the session.
			leave, err := a.counts.enter(identityKey(id))
			if err != nil {
				a.refused(r, metrics.AuthTooMany, err.Error(), auditIdentity(id))
				http.Error(w, "moat: "+err.Error(), http.StatusTooManyRequests)
				return
			}
			slot := &sessionSlot{leave: leave}
			defer slot.give()
			ctx = context.WithValue(ctx, sessionSlotKey{}, slot)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// sessionSlot is the place in its identity's count of a session that a
// request may open: the session's once Started takes it, given back when
// the request opened none.
type sessionSlot struct {
	leave func()
}

type sessionSlotKey struct{}

// takeSlot returns the leave func of the slot of the session r opened.
func takeSlot(r *http.Request) (leave func()) {
	slot, _ := r.Context().Value(sessionSlotKey{}).(*sessionSlot)
	if slot == nil || slot.leave == nil {
		return func() {}
	}
	leave, slot.leave = slot.leave, nil
	return leave
}

// give returns the slot to the count unless a session took it.
func (s *sessionSlot) give() {
	if s.leave != nil {
		s.leave()
	}
}

// endStaleSessions ends, every tokenCacheTTL until ctx is done, the
// sessions whose credential is no longer good (bearerSessions.over).
func (a *httpAuth) endStaleSessions(ctx context.Context, h *proxy.HTTPSessions) {
	var skew time.Duration
	if a.oidcCfg != nil {
		skew = a.oidcCfg.MaxClockSkew
	}
	t := time.NewTicker(tokenCacheTTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tokens, oidc := a.sessions.kinds()
		if !tokens && !oidc {
			continue
		}
		var stored map[string]bool
		if tokens {
			// A store that cannot be read ends no session: its requests
			// are refused meanwhile.
			if toks, err := a.tokens.current(ctx); err == nil {
				stored = map[string]bool{}
				for _, t := range toks {
					stored[t.SHA256] = true
				}
			}
		}
		for _, id := range a.sessions.over(time.Now(), stored, skew) {
			a.m.log.Info("ending an HTTP session whose credential is no longer good", "session", id)
			h.End(id)
		}
	}
}

// jwt verifies an OIDC access token and finds its identity; when it
// cannot, it answers 401 (or 403 for a missing scope), records why and
// returns nil.
func (a *httpAuth) jwt(w http.ResponseWriter, r *http.Request, tok string) *bearerOf {
	c, err := a.oidc.Verify(r.Context(), tok)
	if err != nil {
		var ve *oidcverify.Error
		if errors.As(err, &ve) && ve.InsufficientScope {
			a.refused(r, metrics.AuthScope, "OIDC token of subject "+strconv.Quote(c.Subject)+": "+ve.Reason, nil)
			w.Header().Set("WWW-Authenticate", a.challenge(`error="insufficient_scope", error_description=`+strconv.Quote(ve.Reason)))
			http.Error(w, "moat: the token lacks a scope this gateway requires ("+ve.Reason+")", http.StatusForbidden)
			return nil
		}
		a.unauthorized(w, r, metrics.AuthBadToken, "OIDC token refused: "+err.Error())
		return nil
	}
	id, err := a.m.gs.IdentifyOIDC(gate.OIDCClaims{Issuer: c.Issuer, Subject: c.Subject, Groups: c.Groups, Scopes: c.Scopes})
	if err != nil {
		a.unauthorized(w, r, metrics.AuthNoIdentity, "OIDC token refused: "+strings.TrimPrefix(err.Error(), "gateway: "))
		return nil
	}
	id.Principal = "oidc " + c.Issuer + " " + c.Subject
	if a.m.signIns != nil {
		// What a token_exchange server's copy for this person exchanges.
		a.m.signIns.put(id.Principal, tok, c.Expiry)
	}
	return &bearerOf{oidc: c, id: id}
}

// challenge is the WWW-Authenticate value of a refusal with params: the
// realm, and with gateway.oidc the metadata URL and required scopes, so
// that an MCP client can find the issuer (RFC 9728 §5.1).
func (a *httpAuth) challenge(params string) string {
	c := `Bearer realm="moat"`
	if a.oidcCfg != nil {
		c += `, resource_metadata="` + a.metadataURL + `"`
		if len(a.oidcCfg.RequiredScopes) > 0 {
			c += `, scope="` + strings.Join(a.oidcCfg.RequiredScopes, " ") + `"`
		}
	}
	if params != "" {
		c += ", " + params
	}
	return c
}

// identityKey names an identity's sessions in a sessionCount.
func identityKey(id *guard.Identity) string { return "identity " + id.Name }

// unauthorized answers 401 as RFC 6750 says, and records why.
func (a *httpAuth) unauthorized(w http.ResponseWriter, r *http.Request, why metrics.AuthRefusal, reason string) {
	a.refused(r, why, reason, nil)
	params := ""
	if why != metrics.AuthNoToken {
		params = `error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", a.challenge(params))
	http.Error(w, "moat: a valid gateway token is required (Authorization: Bearer TOKEN; see `moat token create`)", http.StatusUnauthorized)
}

// refused records a refused HTTP request: where from and why, never its
// token or a hash of one; at most refusalRecordsPerSecond of them (the
// metrics count every one).
func (a *httpAuth) refused(r *http.Request, why metrics.AuthRefusal, reason string, id *audit.Identity) {
	a.m.mt.AuthRefused(why)
	a.refusals.write(r, id, map[string]string{"reason": reason})
}

// refusalLog writes the auth_refused records of one listener, and logs
// them: where a refused request came from and why, never its token or a
// hash of one; at most refusalRecordsPerSecond of them, since each is
// durable (a write to disk) and a flood must not become one; the ones over
// it are counted in the next record written.
type refusalLog struct {
	l   *auditlog.Log
	log *slog.Logger
	lim *rate.Limiter

	mu         sync.Mutex
	suppressed int
}

// maxRefusalReason bounds a refusal's reason, in runes: it may quote what
// the peer sent (an Origin, an unverified token's issuer), and a header
// may be 64 KiB.
const maxRefusalReason = 300

func newRefusalLog(l *auditlog.Log, log *slog.Logger) *refusalLog {
	return &refusalLog{l: l, log: log, lim: rate.NewLimiter(rate.Limit(refusalRecordsPerSecond), refusalRecordsPerSecond)}
}

// write records and logs r's refusal with detail (remote and method are
// added, the reason is cut to maxRefusalReason).
func (rl *refusalLog) write(r *http.Request, id *audit.Identity, detail map[string]string) {
	rl.mu.Lock()
	if !rl.lim.Allow() {
		rl.suppressed++
		rl.mu.Unlock()
		return
	}
	detail["reason"] = hygiene.Line(detail["reason"], maxRefusalReason)
	detail["remote"], detail["method"] = r.RemoteAddr, r.Method
	if rl.suppressed > 0 {
		detail["suppressed"] = strconv.Itoa(rl.suppressed)
		rl.suppressed = 0
	}
	rl.mu.Unlock()
	rl.log.Warn("refused an HTTP request", "listener", cmp.Or(detail["listener"], "gateway"), "remote", r.RemoteAddr, "reason", detail["reason"])
	_ = rl.l.Write(context.WithoutCancel(r.Context()), &audit.Record{Event: "auth_refused", Decision: "deny", Outcome: audit.OutcomeDenied,
		Identity: id, Detail: detail})
}
