package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/oauth"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/upstream"
)

// stopGrace is how long a checked stdio server gets to exit after its
// session is closed, before its process tree is killed.
const stopGrace = 2 * time.Second

// checkServers checks every enabled server at once: each connect takes up
// to three connect timeouts, and servers must not wait for each other.
func (d *run) checkServers(ctx context.Context) {
	if d.cfg == nil {
		return
	}
	names := make([]string, 0, len(d.cfg.Servers))
	for name := range d.cfg.Servers {
		names = append(names, name)
	}
	slices.Sort(names)
	results := make([][]Check, len(names))
	var wg sync.WaitGroup
	var progressMu sync.Mutex // Progress calls never overlap
	done := 0
	for i, name := range names {
		s := d.cfg.Servers[name]
		if !s.Enabled {
			results[i] = []Check{{Section: "server " + name, Server: name, Name: "server.enabled", Status: OK, Message: "disabled (enabled: false): not checked"}}
			continue
		}
		if d.unshared[name] {
			results[i] = []Check{d.perUserServer(s)}
			continue
		}
		wg.Go(func() {
			sc := &serverCheck{run: d, s: s}
			if s.Type == config.Stdio {
				sc.stdio(ctx)
			} else {
				sc.remote(ctx)
			}
			results[i] = sc.checks
			if d.o.Progress != nil {
				progressMu.Lock()
				defer progressMu.Unlock()
				done++
				d.o.Progress(name, done, len(names))
			}
		})
	}
	wg.Wait()
	for _, r := range results {
		d.checks = append(d.checks, r...)
	}
}

// serverCheck collects the checks of one server.
type serverCheck struct {
	*run
	s      *config.Server
	checks []Check
}

func (sc *serverCheck) add(name string, st Status, msg, fix string) {
	sc.checks = append(sc.checks, Check{Section: "server " + sc.s.Name, Server: sc.s.Name, Name: name, Status: st, Message: msg, Fix: fix})
}

func (sc *serverCheck) client() *mcp.Client {
	return mcp.NewClient(&mcp.Implementation{Name: "moat-doctor", Version: upstream.Version}, nil)
}

// stdio resolves the command, starts it through the real sandbox, reports
// what the sandbox enforced for it, and talks MCP to it.
func (sc *serverCheck) stdio(ctx context.Context) {
	s := sc.s
	path, err := sandbox.Resolve(s.Command, s.Env)
	if err != nil {
		sc.add("server.command", Fail, fmt.Sprintf("command %q cannot be used: %v", s.Command, err),
			"install it, or set command to its absolute path (Moat searches only "+sandbox.CleanPath+")")
		return
	}
	sc.add("server.command", OK, "command: "+path, "")
	sctx, cancel := context.WithTimeout(ctx, sc.connectTimeout())
	defer cancel()
	proc, err := sandbox.Start(sctx, &sandbox.Spec{
		Name:       s.Name,
		Command:    path,
		Args:       s.Args,
		Env:        s.Env,
		InheritEnv: s.InheritEnv,
		Dir:        s.Cwd,
		// The server's stderr may echo its environment; doctor never
		// shows it (serve logs it at debug level).
		Stderr: io.Discard,
		Limits: upstream.LimitsOf(s.Sandbox),
	})
	if err != nil {
		fix := "run `MOAT_LOG=debug moat serve` to see the server's own output"
		if s.Sandbox.Mode == config.SandboxStrict {
			fix = "strict mode refuses what this kernel cannot enforce: see the machine section, or set sandbox.mode to best-effort"
		}
		sc.add("server.start", Fail, fmt.Sprintf("cannot start: %v", err), fix)
		return
	}
	defer proc.Stop(stopGrace)
	sc.sandboxChecks(proc.Enforced())
	t := &mcp.IOTransport{Reader: proc.Stdout(), Writer: proc.Stdin()}
	sc.handshake(ctx, t, func(err error) error {
		select {
		case <-proc.Done():
			status, _ := proc.ExitStatus()
			return fmt.Errorf("the server process exited during start-up (%s)", status)
		default:
			return err
		}
	})
}

// sandboxChecks reports the protections of one running child: the enforced
// ones on one line, those its sandbox block did not ask for on another,
// those this machine cannot give any child on a third (the machine section
// has their details), and every other missing one on its own line.
func (sc *serverCheck) sandboxChecks(rep sandbox.Report) {
	machine := map[string]bool{}
	for _, p := range sc.probe.NotEnforced() {
		machine[p.Name] = true
	}
	cgroup, _ := rep.Get(sandbox.PCgroup)
	var on, notAsked, notHere []string
	var fixes []string
	for _, p := range rep.Protections {
		switch {
		case p.Name == sandbox.PNProc && !p.Enforced && cgroup.Enforced:
			// root: RLIMIT_NPROC does not apply, its cgroup's pids.max does
			// the job, and "cgroup" is on the enforced line.
		case p.Enforced:
			on = append(on, p.Name)
		case strings.HasPrefix(p.Detail, "not asked"):
			notAsked = append(notAsked, p.Name)
			fixes = append(fixes, notAskedFix[p.Name])
		case machine[p.Name]:
			notHere = append(notHere, p.Name)
		default:
			sc.add("server.sandbox."+p.Name, Warn, fmt.Sprintf("%s not enforced: %s", p.Name, p.Detail), machineFix[p.Name])
		}
	}
	sc.add("server.sandbox", OK, "sandbox enforces: "+strings.Join(on, ", "), "")
	sc.checks[len(sc.checks)-1].Protections = rep.Protections
	if len(notAsked) > 0 {
		sc.add("server.sandbox.not_asked", Warn, "not asked for in its sandbox block: "+strings.Join(notAsked, ", "),
			"add to its \"sandbox\" block what it can live with: "+strings.Join(fixes, ", "))
	}
	if len(notHere) > 0 {
		sc.add("server.sandbox.not_available", Warn, "not enforced on this machine: "+strings.Join(notHere, ", ")+" (see Machine)", "")
	}
}

// notAskedFix is the config that asks for a protection.
var notAskedFix = map[string]string{
	sandbox.PLandlockFS:  `"fs": {"read": [...], "write": [...]}`,
	sandbox.PLandlockNet: `"net": {"connect": [443]}`,
	sandbox.PNetNS:       `"network": false`,
}

// remote reports the transport's safety settings and OAuth token, then
// connects as serve would (legacy SSE when streamable HTTP fails and the
// config did not name a type).
func (sc *serverCheck) remote(ctx context.Context) {
	s := sc.s
	sc.transportChecks()
	if s.TokenExchange != nil {
		sc.tokenExchange(ctx)
		return
	}
	sc.oauthCheck(ctx)
	if sc.o.HTTPClient == nil {
		sc.add("server.reachable", Warn, "not checked: no HTTP client configured (a Moat wiring bug)", "")
		return
	}
	hc, err := sc.o.HTTPClient(s)
	if err != nil {
		sc.add("server.reachable", Fail, fmt.Sprintf("cannot build its HTTP client: %v", err), "check its tls block (files must exist and be readable)")
		return
	}
	sse := func() mcp.Transport { return &mcp.SSEClientTransport{Endpoint: s.URL, HTTPClient: hc} }
	if s.Type == config.SSE {
		sc.handshake(ctx, sse(), nil)
		return
	}
	t := &mcp.StreamableClientTransport{Endpoint: s.URL, HTTPClient: hc, MaxRetries: -1}
	if sc.o.OAuth != nil {
		h, err := sc.o.OAuth(s)
		if err != nil {
			sc.add("server.reachable", Fail, fmt.Sprintf("OAuth is not usable: %v", err), "")
			return
		}
		if h != nil {
			t.OAuthHandler = h
		}
	}
	if !s.TypeInferred {
		sc.handshake(ctx, t, nil)
		return
	}
	var httpErr error
	if sc.connect(ctx, t, func(err error) error { httpErr = err; return err }) == nil {
		return
	}
	if errors.Is(httpErr, oauth.ErrLoginRequired) {
		sc.reportConnectError(httpErr)
		return
	}
	sc.handshake(ctx, sse(), func(err error) error {
		return fmt.Errorf("streamable HTTP: %v; legacy SSE: %w", httpErr, err)
	})
}

// tokenExchange reports where a token_exchange server's tokens are
// exchanged. It does not connect: only a person's sign-in token, which
// doctor has not, gets a token for the server.
func (sc *serverCheck) tokenExchange(ctx context.Context) {
	s, te := sc.s, sc.s.TokenExchange
	const what = "each person's copy gets its token by exchanging their OIDC sign-in token"
	if te.TokenURL != "" {
		sc.add("server.token_exchange", OK, fmt.Sprintf("%s at %s (token_exchange.token_url); not connected here: doctor has no sign-in token", what, te.TokenURL), "")
		return
	}
	if sc.o.OAuthClient == nil {
		sc.add("server.token_exchange", Warn, "not checked: no OAuth client configured (a Moat wiring bug)", "")
		return
	}
	c, err := sc.o.OAuthClient(s)
	if err != nil {
		sc.add("server.token_exchange", Fail, fmt.Sprintf("cannot build its OAuth client: %v", err), "check its tls block")
		return
	}
	tokenURL, err := oauth.DiscoverTokenExchange(ctx, c, s.Name, te.Issuer)
	if err != nil {
		sc.add("server.token_exchange", Fail, strings.TrimPrefix(err.Error(), "oauth: "), "")
		return
	}
	sc.add("server.token_exchange", OK, fmt.Sprintf("%s at %s (authorization server %s); not connected here: doctor has no sign-in token", what, tokenURL, te.Issuer), "")
}

// transportChecks reports HTTPS or the plain-HTTP opt-in, TLS and pins.
func (sc *serverCheck) transportChecks() {
	s := sc.s
	u, err := url.Parse(s.URL)
	if err != nil {
		sc.add("server.transport", Fail, "the url does not parse", "")
		return
	}
	host := u.Host
	switch {
	case u.Scheme == "https":
		msg := fmt.Sprintf("HTTPS to %s, TLS >= %s", host, s.TLS.MinVersion)
		if s.TLS.CAFile != "" {
			msg += ", CA " + s.TLS.CAFile
		}
		if s.TLS.CertFile != "" {
			msg += ", client certificate"
		}
		sc.add("server.transport", OK, msg, "")
		if n := len(s.TLS.Pins); n > 0 {
			sc.add("server.pins", OK, fmt.Sprintf("TLS key pinned (%d %s)", n, plural(n, "pin")), "")
		} else {
			sc.add("server.pins", OK, "no TLS pins: the system's CAs decide", "")
		}
	case netguard.IsLoopbackURL(s.URL):
		sc.add("server.transport", OK, fmt.Sprintf("plain HTTP to %s (loopback: it never leaves this machine)", host), "")
	default:
		sc.add("server.transport", Warn, fmt.Sprintf("plain HTTP to %s, allowed by allow_insecure_http: anyone on the network can read and change its traffic", host),
			"use an https:// url and remove allow_insecure_http")
	}
	if s.AllowPrivateNetwork {
		sc.add("server.private_network", Warn, "allow_private_network: it may reach RFC 1918 and ULA addresses",
			"remove allow_private_network unless this server lives on your private network")
	}
}

// oauthCheck reports the stored OAuth token, never its value.
func (sc *serverCheck) oauthCheck(ctx context.Context) {
	s := sc.s
	if sc.store == nil || s.Type != config.HTTP {
		return
	}
	octx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	st := oauth.Status(octx, sc.store, []*config.Server{s})
	if len(st) == 0 {
		return
	}
	ts := st[0]
	login := "moat auth login " + s.Name
	switch {
	case ts.Err != nil:
		sc.add("server.oauth", Fail, fmt.Sprintf("cannot read its OAuth token: %v", ts.Err), "")
	case ts.HasToken && !ts.Expiry.IsZero() && time.Now().After(ts.Expiry) && !ts.Refreshable:
		sc.add("server.oauth", Warn, "OAuth token expired and cannot be refreshed", login)
	case ts.HasToken:
		msg := "OAuth token stored in the " + ts.Backend
		if !ts.Expiry.IsZero() {
			msg += ", expires " + ts.Expiry.Local().Format(time.DateTime)
		}
		if ts.Refreshable {
			msg += ", refreshable"
		}
		sc.add("server.oauth", OK, msg, "")
	case s.OAuthClientID != "":
		sc.add("server.oauth", Warn, "oauth_client_id is set but no OAuth token is stored", login)
	}
}

// handshake connects over t, lists the tools and reports both; onErr may
// explain a failure better (a child that exited).
func (sc *serverCheck) handshake(ctx context.Context, t mcp.Transport, onErr func(error) error) {
	if err := sc.connect(ctx, t, onErr); err != nil {
		sc.reportConnectError(err)
	}
}

// connect initializes a session over t and reports what the server is and
// offers. It returns the (explained) error instead of reporting it.
func (sc *serverCheck) connect(ctx context.Context, t mcp.Transport, onErr func(error) error) error {
	if onErr == nil {
		onErr = func(err error) error { return err }
	}
	timeout := sc.connectTimeout()
	start := time.Now()
	// The session outlives Connect (legacy SSE ties its stream to this
	// context): it is cancelled when the check is over.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(timeout, cancel)
	cs, err := sc.client().Connect(cctx, t, &mcp.ClientSessionOptions{ProtocolVersion: upstream.ProtocolVersion})
	if !timer.Stop() {
		if cs != nil {
			cs.Close()
		}
		return onErr(fmt.Errorf("no answer to initialize within %s; if the server needs longer to start, raise mcpServers.%s.timeout.connect", timeout, sc.s.Name))
	}
	if err != nil {
		return onErr(fmt.Errorf("initialize: %w", err))
	}
	defer cs.Close()
	took := time.Since(start).Round(time.Millisecond)
	ir := cs.InitializeResult()
	who := "unnamed server"
	if ir.ServerInfo != nil {
		who = strings.TrimSpace(ir.ServerInfo.Name + " " + ir.ServerInfo.Version)
	}
	sc.add("server.reachable", OK, fmt.Sprintf("reachable in %s: %s, protocol %s", took, oneLine(who, 80), ir.ProtocolVersion), "")
	if ir.Capabilities == nil || ir.Capabilities.Tools == nil {
		sc.add("server.tools", Warn, "the server offers no tools", "")
		return nil
	}
	lctx, lcancel := context.WithTimeout(ctx, timeout)
	defer lcancel()
	n := 0
	for _, err := range cs.Tools(lctx, nil) {
		if err != nil {
			sc.add("server.tools", Fail, fmt.Sprintf("tools/list failed after %d tools: %v", n, err), "")
			return nil
		}
		n++
	}
	msg := fmt.Sprintf("%d %s", n, plural(n, "tool"))
	if !sc.s.Features.Tools {
		msg += " (hidden from the model: features.tools is false)"
	}
	sc.add("server.tools", OK, msg, "")
	return nil
}

func (sc *serverCheck) reportConnectError(err error) {
	if errors.Is(err, oauth.ErrLoginRequired) {
		sc.add("server.reachable", Fail, "not connected: it needs an OAuth login first", "moat auth login "+sc.s.Name)
		return
	}
	sc.add("server.reachable", Fail, "not reachable: "+oneLine(err.Error(), 300),
		"check that the server runs and answers MCP; `MOAT_LOG=debug moat serve` shows more")
}

// connectTimeout bounds each phase of the check's connect: the server's
// timeout.connect when it sets one, else the doctor's.
func (sc *serverCheck) connectTimeout() time.Duration {
	if d := sc.s.Timeout.Connect; d > 0 {
		return d
	}
	return sc.o.ConnectTimeout
}

// oneLine keeps a server-provided text on one short line.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
