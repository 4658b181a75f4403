package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/moatmcp/moat/audit"
	"github.com/moatmcp/moat/internal/guard"
	"github.com/moatmcp/moat/internal/proxy"
	"github.com/moatmcp/moat/internal/socket"
)

const connectUsage = `usage: moat connect [SOCKET]
  bridges stdio to a running Moat gateway, so that an MCP client's config
  names "moat connect" and every client of the user shares one Moat: one
  set of servers, one policy, one audit log
  SOCKET defaults to $MOAT_GATEWAY_SOCKET, else
  $XDG_RUNTIME_DIR/moat/gateway.sock (without XDG_RUNTIME_DIR: the same in
  /run/user/UID when it is yours); start the gateway with
  moat serve --listen unix:SOCKET CONFIG
exit status: 0 ok, 1 no gateway or the gateway went away, 2 usage error`

// listenSystemd stands, among listenArgs' results, for the sockets systemd
// passes (--listen systemd).
const listenSystemd = "systemd"

// listenTCP prefixes, among listenArgs' results, a HOST:PORT to serve
// Streamable HTTP on.
const listenTCP = "tcp:"

// listenArgs takes serve's --listen flags out of args. Each names a
// socket as unix:PATH ("unix:" alone is the default path), is "systemd"
// for socket activation, or is HOST:PORT for Streamable HTTP.
func listenArgs(args []string) (listen, rest []string, err error) {
	for i := 0; i < len(args); i++ {
		v, ok := strings.CutPrefix(args[i], "--listen=")
		if !ok && args[i] == "--listen" {
			if i+1 == len(args) {
				return nil, nil, errors.New("--listen needs an address, as in --listen unix:/run/user/1000/moat/gateway.sock or --listen 127.0.0.1:7733")
			}
			v, ok = args[i+1], true
			i++
		}
		if !ok {
			rest = append(rest, args[i])
			continue
		}
		if v == listenSystemd {
			listen = append(listen, v)
			continue
		}
		path, isUnix := strings.CutPrefix(v, "unix:")
		if !isUnix {
			addr, err := tcpAddr(v)
			if err != nil {
				return nil, nil, err
			}
			listen = append(listen, listenTCP+addr)
			continue
		}
		if path == "" {
			path = socket.DefaultPath()
		}
		listen = append(listen, path)
	}
	return listen, rest, nil
}

// listeners opens the sockets of serve's --listen flags, with the config's
// socket mode and group. On error it has closed what it opened.
func listeners(m *instance, listen []string) ([]*socket.Listener, error) {
	var ls []*socket.Listener
	fail := func(err error) ([]*socket.Listener, error) {
		for _, l := range ls {
			l.Close()
		}
		return nil, err
	}
	for _, v := range listen {
		if strings.HasPrefix(v, listenTCP) {
			continue // httpListeners'
		}
		if v == listenSystemd {
			got, err := socket.Activated()
			if err != nil {
				return fail(err)
			}
			ls = append(ls, got...)
			continue
		}
		l, err := socket.Listen(v, m.cfg.Gateway.SocketMode, m.cfg.Gateway.SocketGroup)
		if err != nil {
			return fail(err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// socketPaths are where ls listen.
func socketPaths(ls []*socket.Listener) []string {
	var paths []string
	for _, l := range ls {
		paths = append(paths, l.Path())
	}
	return paths
}

// serveGateway serves every client that connects to ls until ctx ends
// (SIGINT or SIGTERM): each connection's peer is identified by the
// kernel's credentials, mapped to an identity by the config, and served as
// a session of its own.
func serveGateway(ctx context.Context, m *instance, gw *proxy.Gateway, ls []*socket.Listener, hls []*httpListener) int {
	defer gw.Close()
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	paths := socketPaths(ls)
	gw.Open()
	detail := map[string]string{}
	if len(paths) > 0 {
		detail["sockets"] = strings.Join(paths, " ")
	}
	if len(hls) > 0 {
		detail["http"] = strings.Join(httpAddrs(hls), " ")
	}
	m.log.Info("gateway listening", "sockets", detail["sockets"], "http", detail["http"])
	auditEvent(m.auditLog.Log, "gateway_listen", "", detail)
	var wg sync.WaitGroup
	counts := &sessionCount{}
	serveHTTP(ctx, m, gw, hls, counts, &wg)
	for _, l := range ls {
		wg.Go(func() { accept(ctx, m, gw, l, counts, &wg) })
	}
	<-ctx.Done()
	for _, l := range ls {
		l.Close() // ends accept; sessions end with ctx
	}
	wg.Wait()
	return exitOK
}

// accept serves l's connections until l is closed. A failing accept (out
// of file descriptors) is retried after a pause that grows to a second,
// as net/http does.
func accept(ctx context.Context, m *instance, gw *proxy.Gateway, l *socket.Listener, counts *sessionCount, wg *sync.WaitGroup) {
	var pause time.Duration
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			m.log.Warn("accepting a gateway connection failed; retrying", "socket", l.Path(), "err", err, "pause", pause)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return
			}
			continue
		}
		pause = 0
		wg.Go(func() { serveConn(ctx, m, gw, l.Path(), c, counts) })
	}
}

// refuseWithin bounds how long a refused peer may take to send the request
// its refusal answers.
const refuseWithin = 5 * time.Second

// maxSessionsPerUser bounds the sessions one uid (on sockets) or one
// identity (over HTTP) holds at once, so that one user's runaway client
// cannot take the memory every other user's sessions need. A user's
// desktop clients hold a handful.
const maxSessionsPerUser = 256

// sessionCount counts the open sessions of each uid or identity, by a key
// that names it ("uid 1000", "identity alice").
type sessionCount struct {
	mu    sync.Mutex
	byKey map[string]int
}

// enter counts a session of key, or says why it is one too many.
func (s *sessionCount) enter(key string) (leave func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey[key] >= maxSessionsPerUser {
		return nil, fmt.Errorf("%s already has %d sessions open on this gateway, its most; close some clients", key, maxSessionsPerUser)
	}
	if s.byKey == nil {
		s.byKey = map[string]int{}
	}
	s.byKey[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.byKey[key]--; s.byKey[key] == 0 {
			delete(s.byKey, key)
		}
	}, nil
}

// notOwnServer refuses a peer that is a server this gateway started, where
// its sandbox could not hide the socket (it would call other servers'
// tools as the gateway's user), and a peer it cannot tell apart from one.
func notOwnServer(c *net.UnixConn, peer socket.Peer) error {
	own, err := socket.Descends(c, peer.PID, os.Getpid())
	if me := os.Geteuid(); err != nil && me != 0 && peer.UID != me {
		// Another user's process that this gateway may not read (/proc
		// mounted with hidepid): a gateway not run as root starts its
		// servers as its own user, and their sandbox gives setuid nothing
		// (no_new_privs), so it is not one of them.
		own, err = false, nil
	}
	switch {
	case err != nil:
		return fmt.Errorf("whether the peer is a server this gateway started cannot be told: %w", err)
	case own:
		return errors.New("a server started by this gateway may not connect to it")
	}
	return nil
}

// serveConn serves one connection as a session of the identity its peer
// is, or refuses it, saying why, when its peer is no identity.
func serveConn(ctx context.Context, m *instance, gw *proxy.Gateway, path string, c *net.UnixConn, counts *sessionCount) {
	peer, err := socket.PeerOf(c)
	var id *guard.Identity
	leave := func() {}
	if err == nil {
		err = notOwnServer(c, peer)
	}
	if err == nil {
		if id, err = m.gs.Identify(peer.UID, peer.GID, peer.PID); err == nil {
			leave, err = counts.enter("uid " + strconv.Itoa(peer.UID))
		}
	}
	if err != nil {
		defer c.Close()
		m.log.Warn("refused a gateway connection", "socket", path, "uid", peer.UID, "pid", peer.PID, "err", err)
		_ = m.auditLog.Log.Write(ctx, &audit.Record{Event: "session_refused", Decision: "deny", Outcome: audit.OutcomeDenied,
			Identity: auditIdentity(&guard.Identity{UID: peer.UID, GID: peer.GID, PID: peer.PID}),
			Detail:   map[string]string{"socket": path, "error": err.Error()}})
		_ = c.SetDeadline(time.Now().Add(refuseWithin))
		_ = proxy.Refuse(c, c, "moat gateway: "+err.Error())
		return
	}
	defer leave()
	defer m.mt.SessionStarted(id.Name)()
	sid := proxy.NewSessionID()
	m.log.Info("gateway session", "session", sid, "identity", id.Name, "uid", peer.UID, "pid", peer.PID)
	_ = m.auditLog.Log.Write(ctx, &audit.Record{Event: "session_start", Session: sid, Identity: auditIdentity(id), Detail: map[string]string{"socket": path}})
	start := time.Now()
	so := sessionOptions(m, id)
	so.ID = sid
	err = gw.Serve(ctx, c, so)
	detail := map[string]string{"socket": path}
	if err != nil && !isEOF(err) && ctx.Err() == nil {
		detail["error"] = err.Error()
	}
	_ = m.auditLog.Log.Write(context.WithoutCancel(ctx), &audit.Record{Event: "session_end", Session: sid, Identity: auditIdentity(id),
		DurationMS: time.Since(start).Milliseconds(), Detail: detail})
}

func runConnect(ctx context.Context, args []string) int {
	path := socket.DefaultPath()
	switch {
	case len(args) == 1 && strings.HasPrefix(args[0], "-"):
		return usageError("connect: unknown flag %s", args[0])
	case len(args) == 1:
		path = strings.TrimPrefix(args[0], "unix:")
	case len(args) > 1:
		return usageError("connect takes one socket path, got %d arguments", len(args))
	}
	c, err := socket.Dial(path)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			msg = fmt.Sprintf("no Moat gateway is listening on %s; start one with `moat serve --listen unix:%s CONFIG`, or enable the systemd user unit (README: the gateway)", path, path)
		}
		fmt.Fprintln(os.Stderr, "moat: error: "+msg)
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			// The client that started us shows this to its user.
			_ = proxy.Refuse(os.Stdin, os.Stdout, "moat connect: "+msg)
		}
		return exitFailure
	}
	defer c.Close()
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, os.Stdin)
		// The client is done: the gateway ends the session, then closes.
		_ = c.CloseWrite()
		sent <- err
	}()
	_, err = io.Copy(os.Stdout, c)
	select {
	case <-sent:
		return exitOK
	case <-ctx.Done():
		return exitOK
	default:
	}
	if err == nil {
		err = errors.New("it closed the connection")
	}
	fmt.Fprintf(os.Stderr, "moat: error: the gateway on %s went away: %v\n", path, err)
	return exitFailure
}

// auditIdentity is the identity as an audit record names it.
func auditIdentity(id *guard.Identity) *audit.Identity {
	if id == nil {
		return nil
	}
	return &audit.Identity{Name: id.Name, UID: known(id.UID), GID: known(id.GID), PID: known(id.PID)}
}

func known(n int) *int {
	if n < 0 {
		return nil
	}
	return &n
}
