package testutil

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// checkEverything calls echo and lists prompts and resources, as a user of
// server-everything through Moat would.
func checkEverything(t *testing.T, cs *mcp.ClientSession) {
	t.Helper()
	ctx := context.Background()
	if got := textOf(t, call(t, cs, "echo", map[string]any{"message": "moat"})); got != "Echo: moat" {
		t.Errorf("echo = %q, want %q", got, "Echo: moat")
	}
	var prompts []string
	for p, err := range cs.Prompts(ctx, nil) {
		if err != nil {
			t.Fatalf("list prompts: %v", err)
		}
		prompts = append(prompts, p.Name)
	}
	for _, want := range []string{"simple-prompt", "args-prompt"} {
		if !slices.Contains(prompts, want) {
			t.Errorf("prompts %v lack %q", prompts, want)
		}
	}
	n := 0
	for r, err := range cs.Resources(ctx, nil) {
		if err != nil {
			t.Fatalf("list resources: %v", err)
		}
		if n == 0 {
			if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: r.URI}); err != nil {
				t.Errorf("read %s: %v", r.URI, err)
			}
		}
		n++
	}
	if n == 0 {
		t.Error("server-everything listed no resources")
	}
}

func TestEverythingStdio(t *testing.T) {
	bin := NodeBin(t, EverythingBin)
	cs := connect(t, stdioTransport(t, bin, "stdio"), nil, "")
	checkEverything(t, cs)
}

func TestEverythingStreamableHTTPOnLoopbackOnly(t *testing.T) {
	endpoint := StartEverythingHTTP(t)
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "127.0.0.1" || u.Path != "/mcp" {
		t.Errorf("endpoint %s, want http://127.0.0.1:PORT/mcp", endpoint)
	}
	port, _ := strconv.Atoi(u.Port())
	if addrs := listenAddrs(t, port); len(addrs) == 0 || slices.ContainsFunc(addrs, func(a string) bool { return a != "0100007F" }) {
		t.Errorf("port %d listens on %v (hex, from /proc/net/tcp*), want only 127.0.0.1 (0100007F)", port, addrs)
	}
	cs := connect(t, &mcp.StreamableClientTransport{Endpoint: endpoint}, nil, "")
	checkEverything(t, cs)
}

// listenAddrs returns the local addresses (as hex in /proc/net/tcp{,6}) of
// sockets listening on port.
func listenAddrs(t *testing.T, port int) []string {
	t.Helper()
	var out []string
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			// fields: sl local_address rem_address st ...; st 0A is LISTEN.
			if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], suffix) {
				out = append(out, strings.TrimSuffix(fields[1], suffix))
			}
		}
	}
	return out
}
