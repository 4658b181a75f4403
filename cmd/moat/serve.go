package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/term"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/auditlog"
	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/gate"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/importer"
	"github.com/moatmcp/moat/internal/metrics"
	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/oauth"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/redact"
	"github.com/moatmcp/moat/internal/sandbox"
	"github.com/moatmcp/moat/internal/secrets"
	"github.com/moatmcp/moat/internal/socket"
	"github.com/moatmcp/moat/internal/tracing"
	"github.com/moatmcp/moat/internal/upstream"
	"github.com/moatmcp/moat/policy"
)

func goVersion() string { return runtime.Version() }

// reloadDebounce lets an editor finish a save before Moat reads the file.
const reloadDebounce = 250 * time.Millisecond

// instance is one configured moat: what serve, tools and call share.
type instance struct {
	log      *slog.Logger
	cfg      *config.Config
	gs       *gate.Gate
	auditLog *auditLogCloser
	// mt counts what a serving moat does; nil when the config has no
	// "metrics" block, or for a one-shot command.
	mt *metrics.Metrics
	// opts build the proxy: one Server for a stdio client or the one-shot
	// commands, or a Gateway for serve --listen.
	opts proxy.Options
	p    *proxy.Server
	// tracer exports serve's spans; nil when tracing is off.
	tracer *tracing.Tracer
	// signIns hold the gateway's OIDC sign-in tokens for token_exchange
	// servers.
	signIns *signIns
}

// setup loads the config named by args (or the environment) and builds the
// proxy with its whole guard. On failure it has printed why and returns
// the exit code.
func setup(args []string, name string, gateway bool) (*instance, int) {
	if cfg, rest := configArg(args); len(cfg) == 1 {
		args = append(cfg, rest...)
	}
	if len(args) > 1 {
		return nil, usageError("%s takes one config path, got %d arguments", name, len(args))
	}
	log, err := newLogger()
	if err != nil {
		printError(os.Stderr, err)
		return nil, exitUsage
	}
	// Every secret Moat resolves is redacted from its log, its audit log and
	// what upstreams send back.
	redactor := redact.New()
	log = slog.New(redactor.SlogHandler(log.Handler()))
	gs := gate.New(log, redactor)
	secretSink = redactor.Add
	// Packages that log through slog's default (config.Watch, sandbox) must
	// reach the same handler: stderr, MOAT_LOG's level, redacted.
	slog.SetDefault(log)
	arg := ""
	if len(args) == 1 {
		arg = args[0]
	}
	path, source, err := config.ResolvePath(arg, os.LookupEnv)
	if err != nil {
		if errors.Is(err, config.ErrNoConfig) {
			fmt.Fprintln(os.Stderr, "moat: error: no config file given")
			fmt.Fprintln(os.Stderr, "moat: hint: run `moat path/to/moat.json`, or set MOAT_CONFIG (DYNAMIC_MCP_CONFIG also works)")
			fmt.Fprintln(os.Stderr)
			usage(os.Stderr)
			return nil, exitUsage
		}
		printError(os.Stderr, err)
		return nil, exitUsage
	}
	processStore.backend, processStore.require = peekSecrets(path)
	processStore.opened = func(s *secrets.Store) {
		args := []any{"protection", s.Protection().String(), "where", s.Backend()}
		if src := s.KeySource(); src != "" {
			args = append(args, "key_from", src)
		}
		log.Info("secret store open", args...)
	}
	cfg, err := config.Load(path, loadOptions(gateway))
	if err != nil {
		printError(os.Stderr, err)
		return nil, exitUsage
	}
	log.Info("config loaded", "path", path, "from", source, "servers", len(cfg.Servers))
	if err := nonDumpable(); err != nil {
		log.Warn("could not make moat non-dumpable", "err", err)
	}
	warnLiteralCredentials(cfg, log)

	// The server's start goes first in the log; the log opens in the
	// background, so serving never waits for a keychain or a passphrase.
	// The managed policy is read once for this load: the policy applied and
	// the one its policy_load record names are the same bytes.
	managed, managedErr := gate.ReadManaged()
	first := []*audit.Record{
		{Event: "server_start", Detail: map[string]string{"version": version, "command": name, "config": cfg.Path, "config_hash": cfg.Hash}},
		{Event: "policy_load", Detail: policyDetail(managed, managedErr)},
	}
	if managedErr == nil { // else the config is refused below, with that error
		first = append(first, optOuts(cfg, managed, log)...)
	}
	auditLog, err := openAuditLog(cfg, log, gs.Redactor.String, first...)
	if err != nil {
		printError(os.Stderr, err)
		return nil, exitUsage
	}
	gs.Audit = func(event, group string, detail map[string]string) { auditEvent(auditLog.Log, event, group, detail) }
	mt := newMetrics(cfg, name)
	mt.Audit(auditLog.Log)
	gs.Pins = openPins(gs.Audit)
	oauthEvent = func(server, event string) { auditEvent(auditLog.Log, "oauth_"+event, server, nil) }
	err = managedErr
	if err == nil {
		err = gs.Apply(cfg, managed)
	}
	if err != nil {
		auditLog.Close()
		printError(os.Stderr, err)
		return nil, exitUsage
	}
	upstream.Version = version
	var tracer *tracing.Tracer
	if name == "serve" {
		// A bad OTEL_* setting costs the traces, never the client's
		// service.
		if tracer, err = tracing.Setup(context.Background(), version, log); err != nil {
			log.Error("serving without traces", "err", err)
		}
		if tracer != nil {
			gs.Wrap = tracer.Layer
		}
	}
	opts := proxy.Options{
		Logger:  log,
		Version: version,
		// The metrics layer is outermost: it sees every refusal.
		Layers:  slices.Concat([]guard.Layer{mt.Layer()}, gs.Layers(auditLog.Layer(), auditLog.Intent())),
		Catalog: gs.Catalog,
		Permit:  gs.Permit,
		Tracer:  tracer,
		Refused: func(ctx context.Context, c *guard.Call, err error) {
			rule, outcome := "proxy:invalid-request", audit.OutcomeDenied
			switch {
			case errors.Is(err, context.Canceled):
				// The client cancelled while the group was starting.
				rule, outcome = "proxy:cancelled", audit.OutcomeCancelled
			case errors.Is(err, upstream.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
				rule, outcome = "proxy:unavailable", audit.OutcomeError
			}
			var denial *guard.Denial
			if errors.As(err, &denial) {
				mt.Refused(denial.Layer, denial.Rule)
			} else {
				mt.Refused(guard.LayerProxy, strings.TrimPrefix(rule, "proxy:"))
			}
			_ = auditLog.Refused(ctx, c, err, rule, outcome)
		},
		Incident: func(ctx context.Context, in proxy.Incident) {
			r := &audit.Record{Event: string(in.Kind), Group: in.Group, Outcome: audit.OutcomeError, Identity: auditIdentity(in.Identity),
				Detail: map[string]string{"method": in.Method, "error": in.Err.Error()}}
			if in.Kind == proxy.IncidentRefusedMessage {
				r.Decision, r.Outcome = "deny", audit.OutcomeDenied
			}
			_ = auditLog.Write(ctx, r)
		},
		// The client boundary: no message reaches the client with a
		// secret Moat resolved in it, whatever produced the message.
		Outbound: gs.Redactor.Message,
		Relay:    gs.Relay,
		KillOnTimeout: func(group, tool string) bool {
			p := gs.Policy(group)
			return p != nil && p.ToolSettings(tool).KillOnTimeout
		},
		Upstream: upstream.Options{
			StartWait: startWait(name),
			// A failed start's reason and a starting server's stderr
			// reach the model: the secrets Moat resolved never do.
			Redact:     gs.Redactor.String,
			HTTPClient: httpClientFor,
			OAuth:      oauthFor(log, ""),
			Hide:       hiddenPaths(cfg),
			OnEvent: func(e upstream.Event) {
				auditEvent(auditLog.Log, e.Kind, e.Group, e.Detail)
				mt.Upstream(e)
				if e.Kind == "per_user_retired" {
					// Its exchanged tokens are gone with it.
					redactor.Forget(oauth.ExchangedTokenName(e.Group, e.Detail["principal"]))
				}
			},
		},
	}
	return &instance{log: log, cfg: cfg, gs: gs, auditLog: auditLog, mt: mt, opts: opts, tracer: tracer}, exitOK
}

// cliStartWait is how long a one-shot command (tools, call, policy check)
// waits for a starting server: as long as its start may run (the start
// itself ends at its own limit, timeout.connect), so a first `moat call`
// while npx installs the server is not cut short. A serving moat answers
// the model sooner (upstream.DefaultStartWait) and keeps starting.
const cliStartWait = time.Hour

func startWait(command string) time.Duration {
	if command == "serve" {
		return 0
	}
	return cliStartWait
}

func runServe(ctx context.Context, args []string) int {
	listen, args, err := listenArgs(args)
	if err != nil {
		return usageError("%v", err)
	}
	m, code := setup(args, "serve", len(listen) > 0)
	if m == nil {
		return code
	}
	defer m.auditLog.Close()
	defer func() {
		if err := m.tracer.Shutdown(context.Background()); err != nil {
			m.log.Warn("flushing traces at exit failed", "err", err)
		}
	}()
	var (
		p   served
		ls  []*socket.Listener
		hls []*httpListener
	)
	if len(listen) > 0 {
		if hls, err = httpListeners(m.cfg, listen); err != nil {
			printError(os.Stderr, err)
			return exitFailure
		}
		if ls, err = listeners(m, listen); err != nil {
			for _, l := range hls {
				l.Close()
			}
			printError(os.Stderr, err)
			return exitFailure
		}
		// The gateway's sockets are hidden from every server it starts:
		// a server must not call other servers' tools through it.
		m.opts.Upstream.Hide = append(m.opts.Upstream.Hide, socketPaths(ls)...)
		path := m.cfg.Path
		m.signIns = newSignIns()
		logins := newSelfLogins(m.log, path, m.auditLog.Log)
		defer logins.close()
		m.opts.Login = logins.login
		m.opts.PerUser = func(identity string) (*config.Config, error) {
			return config.Load(path, identityLoadOptions(identity))
		}
		m.opts.PerUserOAuth = func(id *guard.Identity, s *config.Server) (auth.OAuthHandler, error) {
			if s.TokenExchange != nil {
				return exchangerFor(m.log, m.auditLog.Log, m.signIns, id, s)
			}
			return oauthFor(m.log, id.Name)(s)
		}
		p = proxy.NewGateway(m.opts)
	} else {
		m.p = proxy.New(m.opts)
		p = m.p
	}
	defer startProfile(m.log)()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	defer auditEvent(m.auditLog.Log, "server_stop", "", nil)
	noticeDynamicMCPTokens(m.log)
	// A restarted or newly added stdio server then starts through a
	// launcher that has already paid moat's own start-up.
	sandbox.KeepWarm()
	defer sandbox.CloseIdle()
	p.Apply(m.cfg)
	var wg sync.WaitGroup
	defer wg.Wait() // before server_stop and the log's close
	serveMetrics(ctx, m.log, m.cfg, m.mt, m.auditLog.Log, &wg)
	wg.Go(func() {
		for _, r := range isolationOptOut(m.cfg, m.log) {
			_ = m.auditLog.Log.Write(context.WithoutCancel(ctx), r)
		}
	})
	wg.Go(func() {
		// Where the secrets are, and how they are protected, is part of the
		// record of each session: a keychain that stops answering moves
		// Moat to the file store, a passphrase that goes away leaves it
		// protected by permissions only.
		if s, err := processStore.get(ctx); err == nil {
			detail := map[string]string{"backend": s.Backend(), "protection": s.Protection().String()}
			if src := s.KeySource(); src != "" {
				detail["key_from"] = src
			}
			_ = m.auditLog.Log.Write(context.WithoutCancel(ctx), &audit.Record{Event: "secret_store", Detail: detail})
		}
	})

	go watchConfig(ctx, m.log, m.cfg, p, m.auditLog.Log, m.gs, m.mt)
	go watchPins(ctx, m.log, p, m.auditLog.Log, m.gs)

	if gw, ok := p.(*proxy.Gateway); ok {
		return serveGateway(ctx, m, gw, ls, hls)
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		banner(m.cfg, auditLogPathOf(m.cfg))
	}
	if err := m.p.Run(ctx, m.p.Stdio(os.Stdin, os.Stdout)); err != nil && ctx.Err() == nil && !isEOF(err) {
		m.log.Error("serving the client failed", "err", err)
		return exitFailure
	}
	return exitOK
}

// served is what serve reloads: the stdio client's Server, or a Gateway.
type served interface {
	Apply(*config.Config)
	Invalidate()
}

// warnLiteralCredentials points at credentials written into the config
// itself (never their values): they belong in the secret store.
func warnLiteralCredentials(cfg *config.Config, log *slog.Logger) {
	im, err := importer.ReadFile(cfg.Path)
	if err != nil {
		return
	}
	for _, l := range im.Literals {
		log.Warn("the config holds a literal credential; store it with `moat secret set NAME` and write ${secret:NAME} instead", "group", l.Server, "where", l.Where, "looks_like", l.Reason)
	}
}

func isEOF(err error) bool {
	return errors.Is(err, mcp.ErrConnectionClosed) || strings.Contains(err.Error(), "EOF")
}

// httpClientFor builds the guarded HTTP client of one remote server.
func httpClientFor(s *config.Server) (*http.Client, error) {
	return netguard.NewClient(s.URL, netOptions(s))
}

func netOptions(s *config.Server) *netguard.Options {
	// A response may take as long as the server's longest timeout: the
	// guard must not cut a slow tool call that the config allows.
	longest := max(s.Timeout.Tools, s.Timeout.Resources, s.Timeout.Prompts)
	message := s.MaxMessageBytes
	if message == 0 { // the loader always sets it; a Server built by hand may not
		message = config.DefaultMaxMessageBytes
	}
	return &netguard.Options{
		AllowInsecureHTTP:   s.AllowInsecureHTTP,
		AllowPrivateNetwork: s.AllowPrivateNetwork,
		TLS: netguard.TLS{
			MinVersion: s.TLS.MinVersion,
			CAFile:     s.TLS.CAFile,
			CertFile:   s.TLS.CertFile,
			KeyFile:    s.TLS.KeyFile,
			Pins:       s.TLS.Pins,
		},
		Headers:               s.Headers,
		SecretHeaders:         s.SecretHeaders,
		ResponseHeaderTimeout: longest + 5*time.Second,
		// internal/upstream bounds each message by max_message_bytes and,
		// past it, fails only the call it answers while the rest streams by
		// unheld. The guard's own cuts, which end the stream, sit behind
		// that: a body one byte over the limit, and no cap per SSE event.
		MaxResponseBytes: int64(message) + 1,
		MaxEventBytes:    math.MaxInt64,
		Logger:           slog.Default(),
	}
}

// oauthEvent records OAuth refreshes in the audit log (serve sets it).
var oauthEvent func(server, event string)

// oauthFor gives a streamable HTTP server its OAuth handler when it has
// an oauth_client_id or a stored token (after `moat auth login`).
func oauthFor(log *slog.Logger, identity string) func(s *config.Server) (auth.OAuthHandler, error) {
	return func(s *config.Server) (auth.OAuthHandler, error) {
		if s.TokenExchange != nil {
			// Not on a gateway: there is no sign-in token to exchange.
			return exchangerFor(log, nil, nil, nil, s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
		defer cancel()
		store, err := processStore.get(ctx)
		if err != nil {
			if s.OAuthClientID != "" {
				return nil, fmt.Errorf("OAuth tokens live in the secret store, which cannot be opened: %w", err)
			}
			return nil, nil
		}
		oc, err := netguard.NewOAuthClient(netOptions(s))
		if err != nil {
			return nil, err
		}
		h, err := oauth.NewHandler(oauth.Options{
			Store: store, Server: s.Name, URL: s.URL, ClientID: s.OAuthClientID, Scopes: s.OAuthScopes, Identity: identity,
			HTTP: oc, Prompt: os.Stderr, Logger: log, OnToken: secretSink,
			OnEvent: func(event string) {
				if oauthEvent != nil {
					oauthEvent(s.Name, event)
				}
			},
			TryWithoutToken: s.OAuthClientID == "",
		})
		if err != nil {
			return nil, err
		}
		return h, nil
	}
}

// watchConfig reloads the config when its file or the managed policy
// changes: an administrator's change reaches every running moat, not only
// at its user's next edit. A config or policy that does not load is
// reported, audited and ignored: Moat keeps serving the last good one.
func watchConfig(ctx context.Context, log *slog.Logger, cfg *config.Config, p served, auditLog *auditlog.Log, gs *gate.Gate, mt *metrics.Metrics) {
	path, current := cfg.Path, cfg.Hash
	var mu sync.Mutex // the two watchers' reloads never overlap
	reload := func(trigger string) {
		mu.Lock()
		defer mu.Unlock()
		_, gateway := p.(*proxy.Gateway)
		next, err := config.Load(path, loadOptions(gateway))
		if err != nil {
			log.Error("config reload rejected; still serving the previous config", "path", path, "err", err)
			auditEvent(auditLog, "config_reload", "", map[string]string{"accepted": "false", "old_hash": current, "new_hash": fileHash(path), "error": err.Error()})
			return
		}
		managed, err := gate.ReadManaged()
		var prepared *gate.Prepared
		if err == nil {
			prepared, err = gs.Prepare(next, managed)
		}
		if err != nil {
			log.Error("config reload rejected: its policy does not load; still serving the previous config", "path", path, "err", err)
			auditEvent(auditLog, "config_reload", "", map[string]string{"accepted": "false", "old_hash": current, "new_hash": next.Hash, "error": err.Error()})
			return
		}
		// Recorded before it is in force: no call is judged by a policy
		// the log has not shown yet.
		_ = auditLog.Write(context.Background(), &audit.Record{Event: "policy_load", Detail: policyDetail(managed, nil)})
		log.Info("config reloaded", "path", path, "servers", len(next.Servers), "hash", next.Hash, "trigger", trigger)
		auditEvent(auditLog, "config_reload", "", map[string]string{"accepted": "true", "old_hash": current, "new_hash": next.Hash, "trigger": trigger})
		gs.Commit(prepared)
		current = next.Hash
		for _, r := range append(optOuts(next, managed, log), isolationOptOut(next, log)...) {
			_ = auditLog.Write(context.Background(), r)
		}
		p.Apply(next)
		p.Invalidate()
		mt.Retain(next)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if managed := gate.ManagedPolicyPath(); managed != "" {
		wg.Go(func() {
			err := config.Watch(ctx, managed, reloadDebounce, func() { reload("managed_policy") })
			if err != nil && ctx.Err() == nil {
				// Most hosts have no /etc/moat: nothing to watch.
				log.Debug("the managed policy is not watched; it is read again at each config reload", "path", managed, "err", err)
			}
		})
	}
	err := config.Watch(ctx, path, reloadDebounce, func() { reload("config") })
	if err != nil && ctx.Err() == nil {
		log.Error("watching the config failed; live reload is off", "path", path, "err", err)
	}
}

// watchPins picks up approvals made with `moat pins approve` while moat
// runs: the store is re-read and the client told the tools changed.
func watchPins(ctx context.Context, log *slog.Logger, p served, auditLog *auditlog.Log, gs *gate.Gate) {
	path, err := pinsPath()
	if err != nil {
		return
	}
	// Opening the store creates its directory, which the watch needs.
	if _, err := gs.Pins(); err != nil {
		return
	}
	err = config.Watch(ctx, path, reloadDebounce, func() {
		store, err := gs.Pins()
		if err != nil {
			return
		}
		if err := store.Reload(); err != nil {
			log.Error("the pin store changed and cannot be read; tools stay held", "path", path, "err", err)
			auditEvent(auditLog, "pins_reload", "", map[string]string{"accepted": "false", "error": err.Error()})
			p.Invalidate()
			return
		}
		auditEvent(auditLog, "pins_reload", "", map[string]string{"accepted": "true", "hash": fileHash(path)})
		p.Invalidate()
	})
	if err != nil && ctx.Err() == nil {
		log.Warn("watching the pin store failed: approvals take effect at the next start", "path", path, "err", err)
	}
}

// policyDetail describes the managed policy of a load for its policy_load
// record: its path and the SHA-256 of the bytes applied, so that an auditor
// sees when the administrator's policy changed between two loads; or why
// it could not be read (the load is then refused).
func policyDetail(m *config.Managed, err error) map[string]string {
	switch {
	case err != nil:
		return map[string]string{"managed_policy": gate.ManagedPolicyPath(), "managed_policy_error": err.Error()}
	case m == nil:
		return map[string]string{"managed_policy": "none"}
	}
	return map[string]string{"managed_policy": m.Path, "managed_policy_sha256": m.Hash}
}

func fileHash(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// optOuts says, at every start and reload, which protections the config
// turns off: warnings in the log, and the records for the audit log. The
// policy settings are read from each group's effective policy (the user's
// merged with the managed one), which is what the guard enforces.
func optOuts(cfg *config.Config, managed *config.Managed, log *slog.Logger) []*audit.Record {
	var recs []*audit.Record
	// A policy that does not load is refused by gs.Apply, with its own record.
	pols, _, _ := gate.EffectivePolicies(cfg, managed)
	for _, name := range sortedServerNames(cfg) {
		s := cfg.Servers[name]
		if !s.Enabled {
			continue
		}
		if p := pols[name]; p != nil {
			for _, o := range []struct{ setting, value, off, warn string }{
				{"pin", p.PinMode(), policy.PinOff, "a changed tool definition is no longer held"},
				{"redact", p.RedactMode(), policy.RedactOff, "credential patterns in its results reach the client"},
				{"on_invalid_schema", p.InvalidSchemaMode(), policy.InvalidSchemaPassthrough, "its calls are not validated against their schemas"},
			} {
				if o.value == o.off {
					log.Warn("a protection is off for this group: "+o.warn, "group", name, "setting", o.setting+"="+o.value)
					recs = append(recs, &audit.Record{Event: "opt_out", Group: name, Detail: map[string]string{"setting": o.setting + "=" + o.value}})
				}
			}
		}
		if s.AllowInsecureHTTP && !netguard.IsLoopbackURL(s.URL) {
			log.Warn("plain HTTP allowed to a non-loopback server: its traffic can be read and changed on the network", "group", name, "url", s.URL)
			recs = append(recs, &audit.Record{Event: "opt_out", Group: name, Detail: map[string]string{"setting": "allow_insecure_http", "url": s.URL}})
		}
		if s.AllowPrivateNetwork {
			recs = append(recs, &audit.Record{Event: "opt_out", Group: name, Detail: map[string]string{"setting": "allow_private_network"}})
		}
	}
	for _, name := range stdioServers(cfg) {
		if ns := cfg.Servers[name].Sandbox.Namespaces; ns != nil && !*ns {
			log.Warn("sandbox.namespaces is false for this group: it sees every process of this user and Moat's config, audit log and stores", "group", name)
			recs = append(recs, &audit.Record{Event: "opt_out", Group: name, Detail: map[string]string{"setting": "sandbox.namespaces=false"}})
		}
	}
	if cfg.Audit.OnFailure == "continue" {
		log.Warn("audit.on_failure is continue: calls go on when the audit log cannot be written")
		recs = append(recs, &audit.Record{Event: "opt_out", Detail: map[string]string{"setting": "audit.on_failure=continue"}})
	}
	if cfg.Audit.Fsync == "off" {
		log.Warn("audit.fsync is off: records of the last seconds can be lost when the machine crashes")
		recs = append(recs, &audit.Record{Event: "opt_out", Detail: map[string]string{"setting": "audit.fsync=off"}})
	}
	return recs
}

// hiddenPaths are what no stdio server sees in its mount namespace: Moat's
// config and its directory, the audit log, the secret and pin stores, the
// systemd credentials, and the user's runtime directory (its D-Bus socket
// reaches the keychain, its systemd socket starts processes outside any
// sandbox, its agents sign and decrypt for the user). Moat's own
// directories are made here (0700, as their writers would) so that they are
// hidden even before their first file; a path a server's environment names
// stays visible to it (sandbox.Spec.Hide).
func hiddenPaths(cfg *config.Config) []string {
	hide := []string{cfg.Path}
	own := func(dir string) {
		if dir != "" && os.MkdirAll(dir, 0o700) == nil {
			hide = append(hide, dir)
		}
	}
	if dir, err := os.UserConfigDir(); err == nil {
		if d := filepath.Join(dir, "moat"); isDir(d) {
			hide = append(hide, d)
		}
	}
	if dir, err := secrets.DefaultDir(); err == nil {
		own(filepath.Dir(dir)) // secrets/ and pins/
	}
	if path := auditLogPathOf(cfg); path != "" {
		hide = append(hide, auditHidden(path, own)...)
	}
	for _, env := range []string{"CREDENTIALS_DIRECTORY", "XDG_RUNTIME_DIR"} {
		if d := os.Getenv(env); filepath.IsAbs(d) {
			hide = append(hide, d)
		}
	}
	return hide
}

// isolationOptOut is the opt_out record (and a warning) of a machine that
// gives servers no namespaces of their own while cfg has a stdio server that
// wants them: best-effort servers start without, strict ones are refused as
// they start. The first call probes the machine (a launcher start), so serve
// makes it beside its start, not before it.
func isolationOptOut(cfg *config.Config, log *slog.Logger) []*audit.Record {
	want := slices.ContainsFunc(stdioServers(cfg), func(name string) bool {
		ns := cfg.Servers[name].Sandbox.Namespaces
		return ns == nil || *ns
	})
	if !want {
		return nil
	}
	ok, why := sandbox.Namespaces()
	if ok {
		return nil
	}
	log.Warn("stdio servers cannot get namespaces of their own on this machine: each sees the others' processes and Moat's files", "why", why)
	return []*audit.Record{{Event: "opt_out", Detail: map[string]string{"setting": "sandbox.namespaces", "unavailable": why}}}
}

// stdioServers are the names of the enabled stdio servers of cfg, sorted.
func stdioServers(cfg *config.Config) []string {
	var out []string
	for _, name := range sortedServerNames(cfg) {
		if s := cfg.Servers[name]; s.Enabled && s.Type == config.Stdio {
			out = append(out, name)
		}
	}
	return out
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// auditHidden hides the audit log's directory when it is Moat's own (named
// moat, as the default is), else every file named after the log: its rotated
// files, the torn tails Open moves aside (records too) and its lock. That is
// wider than audit.RotatedFiles on purpose.
func auditHidden(path string, own func(string)) []string {
	dir := filepath.Dir(path)
	if filepath.Base(dir) == "moat" {
		own(dir)
		return nil
	}
	out := []string{path}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if n := e.Name(); n != filepath.Base(path) && strings.HasPrefix(n, filepath.Base(path)) {
			out = append(out, filepath.Join(dir, n))
		}
	}
	return out
}

// noticeDynamicMCPTokens points users coming from dynamic-mcp at their
// plain-text tokens, once per start.
func noticeDynamicMCPTokens(log *slog.Logger) {
	home, err := os.UserHomeDir()
	if err != nil {
		return
	}
	if pending := secrets.PendingDynamicMCP(home); len(pending) > 0 {
		log.Warn("dynamic-mcp left OAuth tokens in plain text; run `moat secret migrate` to move them into the secret store and delete the files", "dir", secrets.DynamicMCPDir(home), "servers", strings.Join(pending, ","))
	}
}

// banner tells a person who started moat in a terminal what is going on:
// stdout is an MCP stream, so this goes to stderr.
func banner(cfg *config.Config, auditPath string) {
	w := os.Stderr
	fmt.Fprintf(w, "moat %s: serving MCP on stdin/stdout for an MCP client (this terminal is not a chat).\n", version)
	fmt.Fprintf(w, "Config: %s\n", cfg.Path)
	var on, off []string
	for _, name := range sortedServerNames(cfg) {
		s := cfg.Servers[name]
		if s.Enabled {
			on = append(on, fmt.Sprintf("  - %s (%s): %s", name, s.Type, oneLine(s.Description, 70)))
		} else {
			off = append(off, name)
		}
	}
	fmt.Fprintf(w, "Groups (%d):\n%s\n", len(on), strings.Join(on, "\n"))
	if len(off) > 0 {
		fmt.Fprintf(w, "Disabled: %s\n", strings.Join(off, ", "))
	}
	fmt.Fprintf(w, "Groups connect once a client has initialized the session.\n")
	if len(stdioServers(cfg)) > 0 {
		if ok, why := sandbox.Namespaces(); !ok {
			fmt.Fprintf(w, "Isolation: stdio servers get no namespaces of their own here, so each can see the others' processes and Moat's files: %s\n", why)
		}
	}
	fmt.Fprintf(w, "Audit log: %s (read it with `moat audit tail %s`)\n", auditPath, auditPath)
	ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
	if store, err := processStore.get(ctx); err == nil {
		fmt.Fprintf(w, "%s\n", strings.ToUpper(protectionNote(store)[:1])+protectionNote(store)[1:])
	} else {
		fmt.Fprintf(w, "Secrets: the store cannot be opened: %v\n", err)
	}
	cancel()
	fmt.Fprintf(w, "Connect a client, e.g. the MCP Inspector (pass what the config's ${VAR}s need with -e NAME=value;\n`make inspect` does it for this demo):\n  npx @modelcontextprotocol/inspector %s %s\n", selfPath(), cfg.Path)
	fmt.Fprintf(w, "or add {\"command\": %q, \"args\": [%q]} to Claude Desktop's mcpServers.\n", selfPath(), cfg.Path)
	fmt.Fprintf(w, "Press Ctrl-C (or Ctrl-D) to stop. Set MOAT_LOG=info to see groups connect.\n")
}

func selfPath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "moat"
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
