package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// How to run @modelcontextprotocol/server-everything 2026.8.31 (pinned in
// testdata/package.json; read from its dist/index.js and dist/transports/*.js):
//
//   - bin: testdata/node_modules/.bin/mcp-server-everything (dist/index.js).
//   - stdio: no argument, or the argument "stdio". It writes only
//     "Starting default (STDIO) server..." to stderr.
//   - streamable HTTP: the argument "streamableHttp"; it serves POST, GET and
//     DELETE on /mcp (stateful sessions, Mcp-Session-Id), and logs to stdout.
//   - legacy HTTP+SSE: the argument "sse"; GET /sse, POST /message.
//   - port: the PORT environment variable (default 3001). PORT=0 is not
//     usable: it would print "port 0", not the port it got.
//   - host: none can be set; Express listens on every interface. Our tests
//     preload loopbackPreload so it binds 127.0.0.1 only.
//   - Its echo tool answers "Echo: <message>". It negotiates 2025-11-25 (TS
//     SDK 1.32); its prompts are simple-prompt, args-prompt, completable-prompt
//     and resource-prompt; its resources are demo://resource/... (text and blob).
//
// @modelcontextprotocol/server-filesystem 2026.8.31: bin mcp-server-filesystem,
// stdio only, arguments are the allowed directories.

// EverythingBin is the npm bin name of server-everything.
const EverythingBin = "mcp-server-everything"

// loopbackPreload makes Node listeners that name no host bind to 127.0.0.1,
// so that a test server is never reachable from another machine.
const loopbackPreload = `'use strict';
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const p = args[0];
  if (typeof p === 'number' || (typeof p === 'string' && /^[0-9]+$/.test(p))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
    args[0] = Number(p);
  }
  return listen.apply(this, args);
};
`

// StartEverythingHTTP starts server-everything in streamable HTTP mode on a
// free 127.0.0.1 port, waits until it answers HTTP, and returns its MCP URL
// (http://127.0.0.1:PORT/mcp). It is stopped when the test ends. It skips (or
// under CI=true fails) the test when Node or the npm package is missing.
func StartEverythingHTTP(t testing.TB) string {
	t.Helper()
	bin := NodeBin(t, EverythingBin)
	preload, err := writePreload()
	if err != nil {
		t.Fatal(err)
	}
	// Another process may take the free port before Node binds it; then Node
	// exits with EADDRINUSE and we try another port.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "streamableHttp")
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "NODE_OPTIONS=--require "+preload)
		stdout := startGroup(t, cmd)
		go io.Copy(io.Discard, stdout) // its request log; never let the pipe fill
		exited := make(chan struct{})
		go func() {
			// Process.Wait would race with the cleanup's cmd.Wait; poll /proc instead.
			for ProcessAlive(cmd.Process.Pid) {
				time.Sleep(50 * time.Millisecond)
			}
			close(exited)
		}()
		url := fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
		if lastErr = waitHTTP(url, exited); lastErr == nil {
			return url
		}
	}
	t.Fatalf("server-everything did not start over streamable HTTP: %v (its stderr is in the log)", lastErr)
	return ""
}

// waitHTTP polls until the server accepts TCP connections on url's host
// (Express listens only once it is ready to serve), the process exits, or
// startTimeout passes. It dials rather than sending HTTP so that no HTTP
// client exists outside internal/netguard.
func waitHTTP(url string, exited <-chan struct{}) error {
	host := strings.TrimPrefix(url, "http://")
	host = host[:strings.IndexByte(host, '/')]
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("it exited before answering on %s", url)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer on %s within %v", url, startTimeout)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// writePreload writes loopbackPreload into the private cache directory once.
func writePreload() (string, error) {
	dir, err := cacheDir()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(loopbackPreload))
	p := filepath.Join(dir, "loopback-"+hex.EncodeToString(sum[:8])+".cjs")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	f, err := os.CreateTemp(dir, "loopback.*.tmp")
	if err != nil {
		return "", fmt.Errorf("write node preload: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(loopbackPreload); err != nil {
		f.Close()
		return "", fmt.Errorf("write node preload: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write node preload: %w", err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return "", fmt.Errorf("write node preload: %w", err)
	}
	return p, nil
}
