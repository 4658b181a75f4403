// Package netguard builds every http.Client Moat uses: the MCP streamable and
// legacy SSE transports and the OAuth discovery, registration and token calls.
// No other package may build an http.Client or http.Transport, or use
// http.DefaultClient; TestOnlyNetguardBuildsHTTPClients enforces this.
//
// A client from [NewClient] is bound to one upstream origin (scheme, host and
// port) and guarantees:
//
//   - Every request, not only redirects, goes to that origin. This is what makes
//     legacy SSE safe: go-sdk's SSEClientTransport posts to whatever URL the
//     server's `endpoint` event names, and the guard refuses any other origin.
//   - Redirects are followed only within the origin, so https never becomes
//     http and configured headers, Authorization and cookies never leave it.
//   - Plain http:// is allowed to loopback, or elsewhere only with
//     Options.AllowInsecureHTTP; even then a request carrying Authorization,
//     Cookie or a secret header is refused, not silently stripped.
//   - TLS 1.2 at least (1.3 if configured), system roots plus an optional CA
//     file, optional client certificate, optional SPKI pins checked against
//     the verified chain.
//   - The dialer resolves the host itself and checks the address it then
//     dials, so DNS rebinding between check and connect is impossible. A
//     non-loopback upstream may not reach loopback, link-local (cloud
//     metadata), unspecified, multicast, broadcast or reserved addresses, nor,
//     without Options.AllowPrivateNetwork, RFC 1918, CGNAT or ULA addresses.
//     A loopback upstream (127.0.0.0/8, ::1, localhost) may reach loopback only.
//   - Bodies are bounded: Options.MaxResponseBytes per response, except
//     text/event-stream responses, which are long-lived and bounded per event
//     (Options.MaxEventBytes) instead, so a stream of many small events lives
//     on while one oversized event is cut. Exceeding a limit returns a
//     [*LimitError] and closes the connection.
//
// [NewOAuthClient] gives the same dialer, TLS, HTTPS and size rules without the
// origin binding, because OAuth metadata, registration and token endpoints
// live on other origins than the MCP server; it never sends configured
// headers and follows no cross-origin redirect.
//
// # Proxies
//
// HTTPS_PROXY, HTTP_PROXY and NO_PROXY are honoured as http.ProxyFromEnvironment
// does (read once per process). When a request goes through a proxy, Moat dials
// only the proxy, which the user configured and is trusted as such: its address
// is not checked, and the upstream's address is resolved by the proxy, so the
// SSRF address check cannot apply to it. An upstream given as an IP literal is
// still checked before the request is sent.
package netguard

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Defaults used when the corresponding Options field is zero. Zero never
// means unlimited.
const (
	DefaultMaxResponseBytes      = 32 << 20
	DefaultMaxEventBytes         = 16 << 20 // go-sdk's DefaultMaxEventSize
	DefaultMaxHeaderBytes        = 1 << 20
	DefaultConnectTimeout        = 10 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	defaultIdleConnTimeout       = 90 * time.Second
	defaultMaxIdleConnsPerHost   = 4
	maxRedirects                 = 5
)

// Options configure one client. A nil *Options means all defaults.
type Options struct {
	// AllowInsecureHTTP permits http:// to a non-loopback upstream (config key
	// "allow_insecure_http"). Secrets are still never sent over it.
	AllowInsecureHTTP bool
	// AllowPrivateNetwork permits dialling RFC 1918, CGNAT (100.64.0.0/10) and
	// ULA (fc00::/7) addresses (config key "allow_private_network").
	AllowPrivateNetwork bool
	TLS                 TLS
	// Headers are set (never added) on every request to the upstream origin.
	// A configured Authorization yields to one already on the request (set by
	// the OAuth handler for this server).
	Headers map[string]string
	// SecretHeaders names headers whose values are secret (e.g. from
	// ${secret:…}); they are redacted in logs and never sent over plain HTTP
	// to a non-loopback host. Authorization and Cookie always count as secret.
	SecretHeaders []string
	// MaxResponseBytes bounds each non-stream response body.
	MaxResponseBytes int64
	// MaxEventBytes bounds each server-sent event of a text/event-stream
	// response. Keep it at or above the transport's MaxEventSize.
	MaxEventBytes int64
	// MaxHeaderBytes bounds the response header.
	MaxHeaderBytes int64
	// ConnectTimeout bounds each TCP connect, TLSHandshakeTimeout the TLS
	// handshake, ResponseHeaderTimeout the wait for response headers after
	// the request was written (for a JSON-mode streamable server that is the
	// whole tool call: keep it above the server's tool timeout).
	ConnectTimeout, TLSHandshakeTimeout, ResponseHeaderTimeout time.Duration
	// Logger receives a warning for insecure HTTP and the dialled IPs at debug
	// level. Nil means slog.Default().
	Logger *slog.Logger

	// Test hooks: resolver replaces DNS and dial replaces the network dial.
	// dial is only ever called with an address the guard has checked.
	resolver resolver
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	// proxyFunc replaces http.ProxyFromEnvironment, which reads the
	// environment only once per process.
	proxyFunc func(*http.Request) (*url.URL, error)
}

// TLS configures certificate checks for one upstream.
type TLS struct {
	// MinVersion is "1.2" (the default when empty) or "1.3".
	MinVersion string
	// CAFile is a PEM file of extra roots, trusted in addition to the system's.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and key; Cert is the
	// alternative for a certificate loaded from the secret store.
	CertFile, KeyFile string
	Cert              *tls.Certificate
	// Pins are "sha256/<base64 SPKI hash>" values; when set, at least one
	// certificate of the verified chain must match one of them. List backup
	// pins here too.
	Pins []string
}

// origin is scheme://host:port with the default port filled in and the host
// lower-cased, for exact comparison.
type origin struct {
	scheme, host, port string
}

func (o origin) String() string {
	return o.scheme + "://" + net.JoinHostPort(o.host, o.port)
}

func originOf(u *url.URL) (origin, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return origin{}, fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if host == "" {
		return origin{}, errors.New("no host")
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if scheme == "http" {
			port = "80"
		}
	}
	return origin{scheme: scheme, host: host, port: port}, nil
}

// IsLoopbackURL reports whether raw names a loopback host: an address in
// 127.0.0.0/8 or ::1 (also IPv4-mapped), or "localhost". The dialer makes
// sure "localhost" really resolves to loopback.
func IsLoopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	return isLoopbackHost(u.Hostname())
}

func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// CheckURL is the config-load check of an upstream URL: https is accepted,
// http only to loopback unless allowInsecureHTTP is set.
func CheckURL(raw string, allowInsecureHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("netguard: upstream URL %q does not parse: %v", raw, err)
	}
	if _, err := originOf(u); err != nil {
		return fmt.Errorf("netguard: upstream URL %q: %v; use https://host/path", raw, err)
	}
	if u.User != nil {
		return fmt.Errorf("netguard: upstream URL %q carries credentials (user:password@); "+
			"put them in a header with a ${secret:…} value instead", redactURL(u))
	}
	if strings.EqualFold(u.Scheme, "http") && !isLoopbackHost(u.Hostname()) && !allowInsecureHTTP {
		return fmt.Errorf("netguard: upstream URL %q uses plain http:// to a non-loopback host, so anyone on the path "+
			"can read and change the traffic; use https://, or if you accept that risk set "+
			"\"allow_insecure_http\": true for this server (tokens and secret headers are still never sent over it)", raw)
	}
	return nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// RedactHeaders returns a copy of h fit for logs: the values of
// Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key and of the
// given secret header names are replaced by "REDACTED".
func RedactHeaders(h http.Header, secret ...string) http.Header {
	out := h.Clone()
	if out == nil {
		return nil
	}
	redact := func(name string) {
		k := http.CanonicalHeaderKey(name)
		if vs, ok := out[k]; ok {
			for i := range vs {
				vs[i] = "REDACTED"
			}
		}
	}
	for _, name := range alwaysSecret {
		redact(name)
	}
	for _, name := range secret {
		redact(name)
	}
	return out
}

var alwaysSecret = []string{"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key"}

// NewClient returns the client for one upstream. Every request it sends must
// go to upstream's origin; see the package doc for what else it guarantees.
// The client has no overall timeout, because SSE streams are long-lived: use
// contexts to bound calls.
func NewClient(upstream string, o *Options) (*http.Client, error) {
	o = withDefaults(o)
	if err := CheckURL(upstream, o.AllowInsecureHTTP); err != nil {
		return nil, err
	}
	u, _ := url.Parse(upstream) // CheckURL parsed it
	org, _ := originOf(u)
	loopback := isLoopbackHost(org.host)
	insecure := org.scheme == "http" && !loopback
	secrets := secretNames(o.SecretHeaders)
	if insecure {
		for name := range o.Headers {
			if secrets[http.CanonicalHeaderKey(name)] {
				return nil, fmt.Errorf("netguard: upstream %s is plain http:// to a non-loopback host, and header %q is secret; "+
					"Moat never sends secrets unencrypted: use https://", org, name)
			}
		}
		o.Logger.Warn("netguard: plain HTTP to a non-loopback upstream (allow_insecure_http is set): traffic can be read and changed on the way",
			"upstream", org.String())
	}
	rt, err := newGuard(o, &org, secrets)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Transport:     rt,
		CheckRedirect: sameOriginRedirect(org),
	}, nil
}

// NewOAuthClient returns the client for OAuth discovery, registration and
// token requests. It is not bound to one origin, because those endpoints live
// elsewhere than the MCP server, but it has the same dialer, TLS and size
// rules, requires https except to loopback (AllowInsecureHTTP is ignored),
// sends no configured headers and follows redirects only within an origin.
func NewOAuthClient(o *Options) (*http.Client, error) {
	o = withDefaults(o)
	o.Headers = nil
	o.AllowInsecureHTTP = false
	rt, err := newGuard(o, nil, secretNames(o.SecretHeaders))
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Transport: rt,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			org, err := originOf(via[0].URL)
			if err != nil {
				return err
			}
			return sameOriginRedirect(org)(req, via)
		},
	}, nil
}

func sameOriginRedirect(org origin) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("netguard: stopped after %d redirects", maxRedirects)
		}
		got, err := originOf(req.URL)
		if err != nil || got != org {
			return fmt.Errorf("netguard: refusing redirect from %s to %s: only same-origin redirects are followed, "+
				"so headers and tokens never reach another host", org, redactURL(req.URL))
		}
		return nil
	}
}

func secretNames(extra []string) map[string]bool {
	m := map[string]bool{"Authorization": true, "Cookie": true, "Proxy-Authorization": true}
	for _, n := range extra {
		m[http.CanonicalHeaderKey(n)] = true
	}
	return m
}

func withDefaults(in *Options) *Options {
	var o Options
	if in != nil {
		o = *in
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = DefaultMaxEventBytes
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.TLSHandshakeTimeout <= 0 {
		o.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.resolver == nil {
		o.resolver = net.DefaultResolver
	}
	if o.proxyFunc == nil {
		o.proxyFunc = http.ProxyFromEnvironment
	}
	if o.dial == nil {
		d := &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second}
		o.dial = d.DialContext
	}
	return &o
}
