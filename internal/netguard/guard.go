package netguard

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/moatmcp/moat/internal/tracing"
)

// guard is the RoundTripper of every netguard client. It checks each request
// before the transport sees it, because go-sdk builds request URLs from what
// the server says (the legacy SSE `endpoint` event).
type guard struct {
	o       *Options
	bound   *origin // nil for the OAuth client
	secrets map[string]bool
	headers http.Header // canonical form of o.Headers
	base    *http.Transport
	proxies sync.Map // host:port of proxies the transport chose, for the dialer
}

func newGuard(o *Options, bound *origin, secrets map[string]bool) (*guard, error) {
	tc, err := tlsConfig(o.TLS)
	if err != nil {
		return nil, err
	}
	g := &guard{o: o, bound: bound, secrets: secrets, headers: http.Header{}}
	for k, v := range o.Headers {
		g.headers.Set(k, v)
	}
	d := &dialer{o: o, proxies: &g.proxies}
	if bound != nil {
		d.boundHost = bound.host
	}
	g.base = &http.Transport{
		Proxy:                  g.proxy,
		DialContext:            d.DialContext,
		TLSClientConfig:        tc,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    o.TLSHandshakeTimeout,
		ResponseHeaderTimeout:  o.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: o.MaxHeaderBytes,
		MaxIdleConns:           16,
		MaxIdleConnsPerHost:    defaultMaxIdleConnsPerHost,
		IdleConnTimeout:        defaultIdleConnTimeout,
		ExpectContinueTimeout:  time.Second,
	}
	return g, nil
}

// proxy is http.ProxyFromEnvironment that remembers the proxy addresses it
// hands out: the dialer connects to those without the address check, since
// the user chose them (see the package doc).
func (g *guard) proxy(req *http.Request) (*url.URL, error) {
	u, err := g.o.proxyFunc(req)
	if err != nil || u == nil {
		return u, err
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
	}
	g.proxies.Store(strings.ToLower(net.JoinHostPort(u.Hostname(), port)), true)
	return u, nil
}

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := g.check(req); err != nil {
		return nil, g.refuse(req, err)
	}
	// A request to an upstream carries its call's trace context in the
	// W3C headers too (go-sdk makes the request with the call's context);
	// OAuth endpoints are sent none.
	trace := g.bound != nil && tracing.HasContext(req.Context())
	if trace || len(g.headers) > 0 {
		r2 := *req
		r2.Header = req.Header.Clone()
		if r2.Header == nil {
			r2.Header = http.Header{}
		}
		if trace {
			tracing.InjectHeader(req.Context(), r2.Header)
		}
		for k, v := range g.headers {
			if k == "Authorization" && r2.Header.Get(k) != "" {
				continue // the OAuth handler's token wins over a configured one
			}
			r2.Header[k] = v
		}
		req = &r2
	}
	if err := g.checkSecrets(req); err != nil {
		return nil, g.refuse(req, err)
	}
	resp, err := g.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	return g.limit(resp)
}

func (g *guard) check(req *http.Request) error {
	got, err := originOf(req.URL)
	if err != nil {
		return fmt.Errorf("netguard: refusing request to %s: %v", redactURL(req.URL), err)
	}
	if req.Host != "" && !strings.EqualFold(req.Host, req.URL.Host) {
		return fmt.Errorf("netguard: refusing request to %s with a different Host header %q", got, req.Host)
	}
	if g.bound != nil && got != *g.bound {
		return fmt.Errorf("netguard: refusing request to %s: it is not the upstream origin %s "+
			"(the server pointed Moat elsewhere, e.g. in a legacy SSE endpoint event or a link; nothing was sent)", got, *g.bound)
	}
	loopback := isLoopbackHost(got.host)
	if got.scheme == "http" && !loopback && !g.o.AllowInsecureHTTP {
		return fmt.Errorf("netguard: refusing plain http:// request to %s: only https is allowed to non-loopback hosts", got)
	}
	// The dialer checks resolved addresses; an IP literal is checked here as
	// well because through a proxy Moat never dials it itself.
	if ip, err := netip.ParseAddr(got.host); err == nil {
		if why := refusal(ip, loopback, g.o.AllowPrivateNetwork); why != "" {
			return refusedError(got.host, ip, why)
		}
	}
	return nil
}

// checkSecrets refuses, rather than strips, secret headers on plain HTTP to a
// non-loopback host: a request silently sent without its credentials would
// fail in confusing ways, and a refusal names the fix.
func (g *guard) checkSecrets(req *http.Request) error {
	if !strings.EqualFold(req.URL.Scheme, "http") || isLoopbackHost(req.URL.Hostname()) {
		return nil
	}
	for name := range req.Header {
		if g.secrets[name] {
			return fmt.Errorf("netguard: refusing to send secret header %q over plain http:// to %s; "+
				"Moat never sends tokens or ${secret:…} values unencrypted: use https://", name, redactURL(req.URL))
		}
	}
	return nil
}

// refuse logs a refused request as well as returning err, because go-sdk
// does not always pass a transport error on to its caller intact.
func (g *guard) refuse(req *http.Request, err error) error {
	if req.Body != nil {
		req.Body.Close()
	}
	g.o.Logger.WarnContext(req.Context(), err.Error())
	return err
}
