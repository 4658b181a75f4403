package doctor

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/moatmcp/moat/internal/netguard"
	"github.com/moatmcp/moat/internal/tracing"
)

// SectionTracing holds the checks of the OpenTelemetry trace exporter.
const SectionTracing = "tracing"

// tracingDialTimeout bounds the check that the collector accepts a
// connection.
const tracingDialTimeout = 3 * time.Second

// checkTracing reports what moat serve does with traces under the OTEL_*
// variables of this environment: nothing, or export to an endpoint; a
// setting serve would refuse (and serve without traces); an endpoint in
// cleartext off this host; and whether the endpoint accepts a connection.
func (d *run) checkTracing(ctx context.Context) {
	getenv := d.o.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	s, err := tracing.ReadSettings(func(k string) string { v, _ := getenv(k); return v })
	c := Check{Section: SectionTracing, Name: "tracing.exporter"}
	switch {
	case err != nil:
		c.Status, c.Message = Fail, "moat serve will not export traces: "+err.Error()
		c.Fix = "fix the variable (serve keeps serving, without traces)"
		d.add(c)
		return
	case !s.On:
		c.Status, c.Message = OK, "traces are off (set OTEL_EXPORTER_OTLP_ENDPOINT to export them over OTLP/HTTP)"
		d.add(c)
		return
	}
	u, _ := url.Parse(s.Endpoint) // ReadSettings checked it
	c.Status, c.Message = OK, fmt.Sprintf("traces are exported to %s over %s (from %s)", u.Redacted(), s.Protocol, s.EndpointVar)
	d.add(c)
	if u.Scheme == "http" && !netguard.IsLoopbackURL(s.Endpoint) {
		d.add(Check{Section: SectionTracing, Name: "tracing.cleartext", Status: Warn,
			Message: fmt.Sprintf("the trace endpoint %s is cleartext http to another host: spans and the OTEL_EXPORTER_OTLP_HEADERS (often an API key) can be read on the network", u.Host),
			Fix:     "use an https:// endpoint, or a collector on this host"})
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	dctx, cancel := context.WithTimeout(ctx, tracingDialTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		d.add(Check{Section: SectionTracing, Name: "tracing.reachable", Status: Warn,
			Message: fmt.Sprintf("the trace endpoint %s does not accept a connection: %v", addr, err),
			Fix:     "start the collector, or correct " + s.EndpointVar + " (serve drops spans it cannot send)"})
		return
	}
	conn.Close()
	d.add(Check{Section: SectionTracing, Name: "tracing.reachable", Status: OK, Message: fmt.Sprintf("the trace endpoint %s accepts connections", addr)})
}
