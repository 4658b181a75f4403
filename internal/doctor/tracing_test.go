package doctor

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// tracingChecks runs doctor with the OTEL_* variables env and returns its
// tracing checks by name.
func tracingChecks(t *testing.T, env map[string]string) map[string]Check {
	t.Helper()
	f := newFixture(t, `{"mcpServers": {}}`)
	f.opts.Getenv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	out := map[string]Check{}
	for _, c := range Run(context.Background(), f.opts).Checks {
		if c.Section == SectionTracing {
			out[c.Name] = c
		}
	}
	return out
}

func TestTracingChecks(t *testing.T) {
	t.Run("off", func(t *testing.T) {
		got := tracingChecks(t, nil)
		if c := got["tracing.exporter"]; c.Status != OK || !strings.Contains(c.Message, "traces are off") || len(got) != 1 {
			t.Errorf("no OTEL_* variable: %v", got)
		}
	})

	t.Run("grpc", func(t *testing.T) {
		got := tracingChecks(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
		if c := got["tracing.exporter"]; c.Status != Fail || !strings.Contains(c.Message, "grpc is not supported") {
			t.Errorf("grpc: %+v", c)
		}
	})

	t.Run("not a URL", func(t *testing.T) {
		got := tracingChecks(t, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"})
		if c := got["tracing.exporter"]; c.Status != Fail || !strings.Contains(c.Message, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is not a valid URL") {
			t.Errorf("an endpoint that is no URL: %+v", c)
		}
	})

	t.Run("a collector on this host", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		defer srv.Close()
		got := tracingChecks(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL})
		if c := got["tracing.exporter"]; c.Status != OK || !strings.Contains(c.Message, srv.URL+"/v1/traces over http/protobuf") {
			t.Errorf("exporter: %+v", c)
		}
		if c := got["tracing.reachable"]; c.Status != OK {
			t.Errorf("reachable: %+v", c)
		}
		if c, ok := got["tracing.cleartext"]; ok {
			t.Errorf("cleartext to loopback is flagged: %+v", c)
		}
	})

	t.Run("nothing listens", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		got := tracingChecks(t, map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://" + addr + "/v1/traces"})
		if c := got["tracing.reachable"]; c.Status != Warn || !strings.Contains(c.Message, "does not accept a connection") {
			t.Errorf("reachable: %+v", c)
		}
	})

	t.Run("cleartext to another host", func(t *testing.T) {
		// A host name that cannot resolve: the connection check fails
		// fast, and the warning is about the scheme, not the answer.
		got := tracingChecks(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://user:pw@collector.invalid:4318"})
		c := got["tracing.cleartext"]
		if c.Status != Warn || !strings.Contains(c.Message, "cleartext") {
			t.Errorf("cleartext: %+v", c)
		}
		if e := got["tracing.exporter"]; strings.Contains(e.Message, "pw") {
			t.Errorf("the endpoint's password is in the report: %q", e.Message)
		}
	})
}
