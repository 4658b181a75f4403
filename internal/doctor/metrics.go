package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moatmcp/moat/internal/config"
	"github.com/moatmcp/moat/internal/netguard"
)

// SectionMetrics holds the checks of the metrics listener.
const SectionMetrics = "metrics"

// metricsProbeTimeout bounds the look at what listens on metrics.listen.
const metricsProbeTimeout = 3 * time.Second

// checkMetrics checks the "metrics" block: who can reach the listener and
// how it is protected, whether its port is free or a moat already serves
// metrics there, and whether the tokens it names exist. It says nothing
// when the block is absent.
func (d *run) checkMetrics() {
	if d.cfg == nil || d.cfg.Metrics.Listen == "" {
		return
	}
	mc := d.cfg.Metrics
	c := Check{Section: SectionMetrics, Name: "metrics.listen", Status: OK}
	switch {
	case mc.TLS:
		c.Message = fmt.Sprintf("/metrics on %s over HTTPS (gateway.tls), for a bearer of %s", mc.Listen, strings.Join(mc.Tokens, ", "))
	case len(mc.Tokens) > 0:
		c.Message = fmt.Sprintf("/metrics on %s (loopback, plain HTTP), for a bearer of %s", mc.Listen, strings.Join(mc.Tokens, ", "))
	default:
		c.Message = fmt.Sprintf("/metrics on %s (loopback, plain HTTP): every local user and process can read it", mc.Listen)
	}
	d.add(c)
	d.checkMetricsPort(mc)
	d.checkMetricsTokens(mc)
}

// checkMetricsPort tries the port: free, a moat's metrics, or something
// else (then a serving moat warns and serves no metrics).
func (d *run) checkMetricsPort(mc config.Metrics) {
	c := Check{Section: SectionMetrics, Name: "metrics.port"}
	l, err := net.Listen("tcp", mc.Listen)
	if err == nil {
		l.Close()
		c.Status, c.Message = OK, fmt.Sprintf("%s is free: moat serve listens there when it starts", mc.Listen)
		d.add(c)
		return
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		c.Status, c.Message = Fail, fmt.Sprintf("moat cannot listen on %s: %v", mc.Listen, err)
		c.Fix = "give metrics.listen an address of this host (127.0.0.1:9464 for a local Prometheus)"
		d.add(c)
		return
	}
	if who := d.probeMetrics(mc); who != "" {
		c.Status, c.Message = OK, fmt.Sprintf("%s is in use by %s; another moat serving this config would serve no metrics (it warns)", mc.Listen, who)
	} else {
		c.Status, c.Message = Warn, fmt.Sprintf("%s is in use by something that does not answer as moat's metrics: moat would serve MCP without metrics", mc.Listen)
		c.Fix = "find what listens there (ss -tlnp) and stop it, or give metrics.listen another port"
	}
	d.add(c)
}

// probeMetrics asks what listens on mc.Listen for /metrics and says
// whether it is a moat ("" if not): moat's series, or moat's
// token challenge.
func (d *run) probeMetrics(mc config.Metrics) string {
	host, port, _ := net.SplitHostPort(mc.Listen)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	scheme := "http"
	o := &netguard.Options{ConnectTimeout: metricsProbeTimeout, ResponseHeaderTimeout: metricsProbeTimeout, AllowPrivateNetwork: true}
	if mc.TLS {
		scheme = "https"
		// The gateway's own certificate is the root it is checked against.
		o.TLS.CAFile = d.cfg.Gateway.TLS.CertFile
	}
	url := scheme + "://" + net.JoinHostPort(host, port) + "/metrics"
	client, err := netguard.NewClient(url, o)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), metricsProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	res, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusOK:
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		if strings.Contains(string(body), "# TYPE moat_") {
			return "a moat serving its metrics"
		}
	case http.StatusUnauthorized:
		if strings.Contains(res.Header.Get("WWW-Authenticate"), `realm="moat-metrics"`) {
			return "a moat serving its metrics (behind a token)"
		}
	}
	return ""
}

// checkMetricsTokens reports tokens metrics.tokens names that were never
// created: no scraper can present them.
func (d *run) checkMetricsTokens(mc config.Metrics) {
	if len(mc.Tokens) == 0 || d.o.Tokens == nil {
		return
	}
	c := Check{Section: SectionMetrics, Name: "metrics.tokens", Status: OK}
	if d.store == nil {
		c.Status, c.Message = Warn, "the metrics tokens cannot be checked: the secret store does not open"
		d.add(c)
		return
	}
	stored, err := d.o.Tokens(context.Background(), d.store)
	if err != nil {
		c.Status, c.Message = Fail, fmt.Sprintf("the tokens cannot be read from the secret store: %v", err)
		c.Fix = "every scrape would be refused; check the secret store (above)"
		d.add(c)
		return
	}
	var missing []string
	for _, tok := range mc.Tokens {
		if !slices.Contains(stored, tok) {
			missing = append(missing, fmt.Sprintf("token %q was never created: moat token create %s", tok, tok))
		}
	}
	c.Message = fmt.Sprintf("%d of the %d tokens metrics.tokens names exist", len(mc.Tokens)-len(missing), len(mc.Tokens))
	if len(missing) > 0 {
		c.Status, c.Details = Warn, missing
		c.Fix = "create the tokens listed and give them to the scraper, or remove them from metrics.tokens"
	}
	d.add(c)
}
