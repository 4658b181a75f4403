package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

var metricsKeys = []string{"listen", "tokens"}

// metrics reads the "metrics" block. It is read after "gateway": a listener
// other machines can reach needs gateway.tls.
func (c *checker) metrics(m *member, gw *Gateway) Metrics {
	var out Metrics
	const example = `"metrics": {"listen": "127.0.0.1:9464"}`
	if m == nil || !c.object(m, "/metrics", `"metrics"`, metricsKeys, example) {
		return out
	}
	n := m.val
	if f := n.get("tokens"); f != nil {
		out.Tokens = []string{}
		c.stringList(f, "/metrics/tokens", "metrics.tokens", `"tokens": ["prometheus"]`, func(i int, it *node, p string) {
			if !ValidTokenName(it.str) {
				c.ps.add(p, it.off, fmt.Sprintf("metrics.tokens[%d] %q is not a token name", i, it.str),
					"a token name is 1 to 64 letters, digits, '_', '.' or '-', as given to `moat token create NAME`")
				return
			}
			out.Tokens = append(out.Tokens, it.str)
		})
	}
	f := n.get("listen")
	if f == nil {
		c.ps.add("/metrics", n.off, `metrics has no "listen"`, `give the address to serve /metrics on: `+example)
		return out
	}
	v, ok := c.str(f, "/metrics")
	if !ok {
		return out
	}
	const path = "/metrics/listen"
	host, port, err := net.SplitHostPort(v)
	if err != nil || strings.ContainsAny(host, "/ ") {
		c.ps.add(path, f.val.off, fmt.Sprintf("metrics.listen %q is not HOST:PORT", v), `write "127.0.0.1:9464" (or "[::1]:9464")`)
		return out
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		c.ps.add(path, f.val.off, fmt.Sprintf("metrics.listen %q: port %q is not a number from 1 to 65535", v, port),
			`give the fixed port Prometheus scrapes, such as "127.0.0.1:9464"`)
		return out
	}
	if !IsLoopback(host) {
		if gw.TLS == nil {
			c.ps.add(path, f.val.off, fmt.Sprintf("metrics.listen %q is reachable from other machines, and plain HTTP would show the metrics to the network", v),
				`set "gateway": {"tls": {"cert_file": "...", "key_file": "..."}} (the metrics are then served over HTTPS with that certificate) and "metrics": {"tokens": ["NAME"]}, or listen on "127.0.0.1:`+port+`"`)
			return out
		}
		if len(out.Tokens) == 0 {
			c.ps.add(path, f.val.off, fmt.Sprintf("metrics.listen %q is reachable from other machines, and no metrics.tokens may scrape it", v),
				`make a token with `+"`moat token create prometheus`"+` and add "tokens": ["prometheus"] to "metrics", or listen on "127.0.0.1:`+port+`"`)
			return out
		}
		out.TLS = true
	}
	out.Listen = net.JoinHostPort(host, port)
	return out
}

// IsLoopback reports whether host names only this machine: localhost or a
// loopback IP. An empty host is every interface.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
