package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/oauth"
	"github.com/moatmcp/moat/internal/sandbox"
)

// conn is one live connection to an upstream: its session, the child
// process for stdio servers, and the lists read at connect time.
type conn struct {
	g       *Group
	session *mcp.ClientSession
	cancel  context.CancelFunc // ends the session's context
	proc    *sandbox.Process   // nil for remote servers
	lists   Lists
	// toolsWant is the group's toolsWant when this connection began: its
	// first tool list answers every list_changed before it.
	toolsWant uint64
	// level is the log level this connection asked the server for.
	level mcp.LoggingLevel

	limit    time.Duration // how long this start may take
	deadline time.Time     // when it runs out
}

// close ends the session and, for a child, stops its whole process group:
// SIGTERM, then SIGKILL after grace, then reap.
func (c *conn) close(grace time.Duration) {
	if c.session != nil {
		_ = c.session.Close()
	}
	if c.cancel != nil {
		c.cancel()
	}
	if c.proc != nil {
		_ = c.proc.Stop(grace)
		status, ru := c.proc.ExitStatus()
		detail := map[string]string{"pid": strconv.Itoa(c.proc.TargetPid()), "status": status}
		if ru != nil {
			detail["maxrss_kib"] = strconv.FormatInt(ru.Maxrss, 10)
			detail["user_ms"] = strconv.FormatInt(ru.Utime.Nano()/1e6, 10)
			detail["system_ms"] = strconv.FormatInt(ru.Stime.Nano()/1e6, 10)
		}
		c.g.m.event(c.g.name, "child_exit", detail)
		c.proc = nil
	}
}

// describe is the audit detail of a ready connection.
func (c *conn) describe(failures int) map[string]string {
	d := map[string]string{"transport": string(c.g.cfg.Type), "tools": strconv.Itoa(len(c.lists.Tools))}
	if ir := c.session.InitializeResult(); ir != nil {
		d["protocol"] = ir.ProtocolVersion
		if ir.ServerInfo != nil {
			d["server"] = ir.ServerInfo.Name + " " + ir.ServerInfo.Version
		}
	}
	if failures > 0 {
		d["recovered_after_failures"] = strconv.Itoa(failures)
	}
	return d
}

// endReason explains why a session ended, preferring the child's exit.
func (c *conn) endReason(err error) error {
	if c.proc != nil {
		select {
		case <-c.proc.Done():
			status, _ := c.proc.ExitStatus()
			return fmt.Errorf("server process exited (%s)", status)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err == nil {
		return errors.New("connection closed by the server")
	}
	return fmt.Errorf("connection lost: %w", err)
}

// connect runs one attempt: start the transport, initialize, read lists,
// all within limit (a *StartTimeoutError otherwise). On error nothing is
// left running.
func (g *Group) connect(ctx context.Context, limit time.Duration) (c *conn, err error) {
	c = &conn{g: g, limit: limit, deadline: time.Now().Add(limit), toolsWant: g.toolsWant.Load()}
	defer func() {
		if err != nil {
			c.close(g.m.opts.GracePeriod)
			c = nil
		}
	}()
	client, order := g.newClient()
	switch g.cfg.Type {
	case config.Stdio:
		err = g.connectStdio(ctx, client, c, order)
	case config.HTTP:
		err = g.connectHTTP(ctx, client, c, order)
	case config.SSE:
		err = g.connectSSE(ctx, client, c, order)
	default:
		err = fmt.Errorf("unknown transport %q", g.cfg.Type)
	}
	if err != nil {
		return c, err
	}
	caps := c.session.InitializeResult().Capabilities
	if caps == nil {
		caps = &mcp.ServerCapabilities{}
	}
	g.serverCaps.Store(caps)

	g.order.Store(order)
	g.clientMu.Lock()
	g.client = client
	g.rootURIs = nil
	g.clientMu.Unlock()
	_, roots, level := g.m.clientHooks()
	g.setRoots(roots)

	lctx, cancel := context.WithDeadline(ctx, c.deadline)
	defer cancel()
	if err := g.relist(lctx, c.session, listTools|listResources|listPrompts, &c.lists); err != nil {
		if errors.Is(lctx.Err(), context.DeadlineExceeded) {
			return c, g.timeoutError(PhaseLists, c.limit)
		}
		return c, err
	}
	if level != "" && caps.Logging != nil {
		if err := c.session.SetLoggingLevel(lctx, &mcp.SetLoggingLevelParams{Level: level}); err != nil {
			g.log.Debug("logging/setLevel not accepted", "err", err)
		}
		c.level = level
	}
	return c, nil
}

// handshake connects client over t. The session outlives the handshake, so
// the timeout cancels a context of the session's own rather than bounding
// the transport's lifetime (legacy SSE ties its stream to that context).
func (g *Group) handshake(ctx context.Context, client *mcp.Client, t mcp.Transport, c *conn) error {
	sctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(time.Until(c.deadline), cancel)
	cs, err := client.Connect(sctx, t, &mcp.ClientSessionOptions{ProtocolVersion: ProtocolVersion})
	if !timer.Stop() {
		cancel()
		if cs != nil {
			_ = cs.Close()
		}
		return g.timeoutError(PhaseInitialize, c.limit)
	}
	if err != nil {
		cancel()
		return fmt.Errorf("initialize: %w", err)
	}
	c.session, c.cancel = cs, cancel
	return nil
}

func (g *Group) connectStdio(ctx context.Context, client *mcp.Client, c *conn, order *notificationOrder) error {
	sctx, cancel := context.WithDeadline(ctx, c.deadline)
	defer cancel()
	path, err := sandbox.Resolve(g.cfg.Command, g.cfg.Env)
	if err != nil {
		return err
	}
	proc, err := sandbox.Start(sctx, &sandbox.Spec{
		Name:       g.name,
		Command:    path,
		Args:       g.cfg.Args,
		Env:        g.cfg.Env,
		InheritEnv: g.cfg.InheritEnv,
		Dir:        g.cfg.Cwd,
		Stderr:     g.stderrLines,
		Limits:     LimitsOf(g.cfg.Sandbox),
		Hide:       g.m.hideFor(g.name),
		RunAs:      g.cfg.RunAs,
	})
	if err != nil {
		if errors.Is(sctx.Err(), context.DeadlineExceeded) {
			return g.timeoutError(PhaseSpawn, c.limit)
		}
		return fmt.Errorf("start %q: %w", path, err)
	}
	c.proc = proc
	rep := proc.Enforced()
	g.log.Debug("started server process", "pid", proc.TargetPid(), "command", g.cfg.Command)
	var on, off []string
	for _, p := range rep.Protections {
		if p.Enforced {
			on = append(on, p.Name)
		} else {
			off = append(off, p.Name)
		}
	}
	g.m.event(g.name, "child_start", map[string]string{
		"command":      g.cfg.Command,
		"path":         path,
		"pid":          strconv.Itoa(proc.TargetPid()),
		"enforced":     strings.Join(on, ","),
		"not_enforced": strings.Join(off, ","),
	})
	limit := g.maxMessageBytes()
	stdout := newLimitReader(proc.Stdout(), limit, &lineFraming{what: "stdio line", drop: g.dropped})
	stdout.seen = order.seen
	t := &mcp.IOTransport{Reader: stdout, Writer: proc.Stdin(), MaxLineLength: limit + sdkSlack}
	if err := g.handshake(ctx, client, t, c); err != nil {
		select {
		case <-proc.Done():
			status, _ := proc.ExitStatus()
			return fmt.Errorf("server process exited during start-up (%s)", status)
		default:
		}
		return err
	}
	return nil
}

// LimitsOf maps the config's sandbox block to the sandbox's limits; zero
// values select the sandbox's safe defaults.
func LimitsOf(s config.Sandbox) sandbox.Limits {
	l := sandbox.Limits{
		Memory:      s.Memory,
		CPU:         s.CPU,
		MaxFiles:    s.MaxFiles,
		MaxProcs:    s.MaxProcs,
		MaxFileSize: s.MaxFileSize,
		FSRead:      s.FSRead,
		FSWrite:     s.FSWrite,
		NetConnect:  s.NetConnect,
		Network:     s.Network,
		Namespaces:  s.Namespaces,
	}
	if s.Mode == config.SandboxStrict {
		l.Mode = sandbox.Strict
	}
	return l
}

func (g *Group) connectHTTP(ctx context.Context, client *mcp.Client, c *conn, order *notificationOrder) error {
	hc, err := g.httpClient()
	if err != nil {
		return err
	}
	limit := g.maxMessageBytes()
	t := &mcp.StreamableClientTransport{
		Endpoint:     g.cfg.URL,
		HTTPClient:   g.limitClient(hc, limit, order),
		MaxRetries:   StreamRetries,
		MaxEventSize: limit + sdkSlack,
	}
	if g.m.opts.OAuth != nil {
		h, err := g.m.opts.OAuth(g.cfg)
		if err != nil {
			return err
		}
		if h != nil {
			t.OAuthHandler = h
		}
	}
	err = g.handshake(ctx, client, t, c)
	if err == nil || !g.cfg.TypeInferred || errors.Is(err, oauth.ErrLoginRequired) || g.cfg.TokenExchange != nil {
		// A server whose token is exchanged speaks streamable HTTP
		// (config requires it): SSE would go without the token.
		return err
	}
	// A url without a type may be a legacy HTTP+SSE server: the MCP spec's
	// backwards-compatibility rule is to try SSE when streamable HTTP fails.
	g.log.Debug("streamable HTTP failed; trying legacy SSE", "err", err)
	sseErr := g.connectSSE(ctx, client, c, order)
	if sseErr != nil {
		return fmt.Errorf("streamable HTTP: %v; legacy SSE: %w", err, sseErr)
	}
	return nil
}

func (g *Group) connectSSE(ctx context.Context, client *mcp.Client, c *conn, order *notificationOrder) error {
	hc, err := g.httpClient()
	if err != nil {
		return err
	}
	limit := g.maxMessageBytes()
	t := &mcp.SSEClientTransport{Endpoint: g.cfg.URL, HTTPClient: g.limitClient(hc, limit, order), MaxEventSize: limit + sdkSlack}
	return g.handshake(ctx, client, t, c)
}

// StreamRetries is how often go-sdk reconnects one interrupted streamable
// HTTP stream without progress (and retries one failed reconnection)
// before it gives the session up. SEP-1699 lets a server end a stream
// mid-call with "retry: <ms>" and expect the client to come back with
// Last-Event-ID; go-sdk then waits the server's delay and resumes, and
// every event that arrives resets the count, so only a server that keeps
// failing uses them up. Three retries of go-sdk's backoff (1 s growing by
// 1.5, with jitter) take at most 9.5 s, under the 30 s default connect
// timeout that the first standalone stream is opened within. The reconnections use
// the same netguard client (origin, address, TLS and redirect checks) and
// OAuth handler as the session's first request.
const StreamRetries = 3

// sdkSlack is how far above a server's max_message_bytes go-sdk's own cap
// is set. The framing in front of go-sdk passes nothing longer than the
// limit (its replacements are a few hundred bytes), so go-sdk's cap, which
// ends the whole session, never acts first.
const sdkSlack = 64 << 10

// maxMessageBytes is the server's limit on one message from it: the
// config's value (always set by the loader), else the Manager's default.
func (g *Group) maxMessageBytes() int {
	if n := g.cfg.MaxMessageBytes; n > 0 && n <= config.MaxMessageBytesCeiling {
		return int(n)
	}
	return g.m.opts.MaxMessageBytes
}

func (g *Group) httpClient() (_ *http.Client, err error) {
	if g.m.opts.HTTPClient == nil {
		return nil, errors.New("no HTTP client factory configured (a Moat wiring bug)")
	}
	return g.m.opts.HTTPClient(g.cfg)
}

// newClient builds the go-sdk client for one connection, declaring exactly
// the capabilities the downstream client has, and forwarding what the
// upstream sends to the client.
// newClient returns the client of one connection, with the notificationOrder
// its progress and log handlers report to.
func (g *Group) newClient() (*mcp.Client, *notificationOrder) {
	order := &notificationOrder{}
	hooks, _, _ := g.m.clientHooks()
	caps := &mcp.ClientCapabilities{}
	if hooks.Roots {
		caps.RootsV2 = &mcp.RootCapabilities{ListChanged: true}
	}
	name := g.name
	opts := &mcp.ClientOptions{
		Logger:       g.log,
		Capabilities: caps,
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			g.markDirty(listTools)
		},
		ResourceListChangedHandler: func(context.Context, *mcp.ResourceListChangedRequest) {
			g.markDirty(listResources)
		},
		PromptListChangedHandler: func(context.Context, *mcp.PromptListChangedRequest) {
			g.markDirty(listPrompts)
		},
	}
	if hooks.CreateMessage != nil {
		opts.CreateMessageHandler = func(ctx context.Context, r *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			return hooks.CreateMessage(ctx, name, r.Params)
		}
	}
	if hooks.Elicit != nil {
		opts.ElicitationHandler = func(ctx context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return hooks.Elicit(ctx, name, r.Params)
		}
	}
	opts.ProgressNotificationHandler = func(ctx context.Context, r *mcp.ProgressNotificationClientRequest) {
		defer order.done()
		if hooks.Progress != nil {
			hooks.Progress(ctx, name, r.Params)
		}
	}
	opts.LoggingMessageHandler = func(ctx context.Context, r *mcp.LoggingMessageRequest) {
		defer order.done()
		if hooks.Log != nil {
			hooks.Log(ctx, name, r.Params)
		}
	}
	if hooks.ResourceUpdated != nil {
		opts.ResourceUpdatedHandler = func(ctx context.Context, r *mcp.ResourceUpdatedNotificationRequest) {
			hooks.ResourceUpdated(ctx, name, r.Params)
		}
	}
	c := mcp.NewClient(&mcp.Implementation{Name: "moat", Version: Version}, opts)
	if hooks.Middleware != nil {
		c.AddReceivingMiddleware(hooks.Middleware(name))
	}
	return c, order
}

// Version is reported to upstreams as the client version; cmd/moat sets it.
var Version = "dev"

// relist reads every page of the lists named by kinds that the server
// offers and the config enables, into l.
func (g *Group) relist(ctx context.Context, cs *mcp.ClientSession, kinds listKind, l *Lists) error {
	caps := g.serverCaps.Load()
	if caps == nil {
		caps = &mcp.ServerCapabilities{}
	}
	f := g.cfg.Features
	if kinds&listTools != 0 && f.Tools && caps.Tools != nil {
		var tools []*mcp.Tool
		for t, err := range cs.Tools(ctx, nil) {
			if err != nil {
				return fmt.Errorf("tools/list: %w", err)
			}
			tools = append(tools, t)
		}
		l.Tools = tools
	}
	if kinds&listResources != 0 && f.Resources && caps.Resources != nil {
		var rs []*mcp.Resource
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				return fmt.Errorf("resources/list: %w", err)
			}
			rs = append(rs, r)
		}
		var ts []*mcp.ResourceTemplate
		for t, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				return fmt.Errorf("resources/templates/list: %w", err)
			}
			ts = append(ts, t)
		}
		l.Resources, l.Templates = rs, ts
	}
	if kinds&listPrompts != 0 && f.Prompts && caps.Prompts != nil {
		var ps []*mcp.Prompt
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				return fmt.Errorf("prompts/list: %w", err)
			}
			ps = append(ps, p)
		}
		l.Prompts = ps
	}
	return nil
}
