package doctor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/moatmcp/moat/internal/metrics"
	"github.com/moatmcp/moat/internal/secrets"
)

// metricsChecks runs doctor on a config whose metrics block is body and
// returns its metrics checks by name.
func metricsChecks(t *testing.T, f *fixture, body string) map[string]Check {
	t.Helper()
	cfg := `{"mcpServers": {"off": {"description": "d", "command": "x", "enabled": false}}, "metrics": ` + body + `}`
	if err := os.WriteFile(f.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out := map[string]Check{}
	for _, c := range Run(context.Background(), f.opts).Checks {
		if c.Section == SectionMetrics {
			out[c.Name] = c
		}
	}
	return out
}

// serveOn serves h on a loopback port until the test ends, and returns
// its address.
func serveOn(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return l.Addr().String()
}

func TestMetricsChecks(t *testing.T) {
	t.Run("no metrics block: nothing said", func(t *testing.T) {
		f := newFixture(t, `{"mcpServers": {}}`)
		for _, c := range Run(context.Background(), f.opts).Checks {
			if c.Section == SectionMetrics {
				t.Errorf("a metrics check without a metrics block: %+v", c)
			}
		}
	})

	t.Run("free port", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		got := metricsChecks(t, newFixture(t, `{}`), fmt.Sprintf(`{"listen": %q}`, addr))
		if c := got["metrics.listen"]; c.Status != OK || !strings.Contains(c.Message, "every local user and process can read it") {
			t.Errorf("metrics.listen: %+v", c)
		}
		if c := got["metrics.port"]; c.Status != OK || !strings.Contains(c.Message, "is free") {
			t.Errorf("metrics.port: %+v", c)
		}
	})

	t.Run("a moat serves metrics there", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.New().Handler())
		addr := serveOn(t, mux)
		got := metricsChecks(t, newFixture(t, `{}`), fmt.Sprintf(`{"listen": %q}`, addr))
		if c := got["metrics.port"]; c.Status != OK || !strings.Contains(c.Message, "a moat serving its metrics") {
			t.Errorf("metrics.port: %+v", c)
		}
	})

	t.Run("something else listens", func(t *testing.T) {
		addr := serveOn(t, http.NotFoundHandler())
		got := metricsChecks(t, newFixture(t, `{}`), fmt.Sprintf(`{"listen": %q}`, addr))
		if c := got["metrics.port"]; c.Status != Warn || !strings.Contains(c.Message, "does not answer as moat's metrics") || c.Fix == "" {
			t.Errorf("metrics.port: %+v", c)
		}
	})

	t.Run("a token never created", func(t *testing.T) {
		f := newFixture(t, `{}`)
		f.opts.Tokens = func(context.Context, *secrets.Store) ([]string, error) { return []string{"prom"}, nil }
		got := metricsChecks(t, f, `{"listen": "127.0.0.1:1", "tokens": ["prom", "grafana"]}`)
		c := got["metrics.tokens"]
		if c.Status != Warn || !strings.Contains(strings.Join(c.Details, "\n"), `token "grafana" was never created: moat token create grafana`) || strings.Contains(strings.Join(c.Details, "\n"), `"prom"`) {
			t.Errorf("metrics.tokens: %+v", c)
		}
		if c := got["metrics.listen"]; !strings.Contains(c.Message, "for a bearer of prom, grafana") {
			t.Errorf("metrics.listen: %+v", c)
		}
	})
}
