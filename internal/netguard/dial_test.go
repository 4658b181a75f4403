package netguard

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

// TestSSRFDialer resolves made-up names to the addresses under test. Every
// packet stays on loopback: the fake dial carries an allowed address to a
// local server and fails the test if a refused address is ever dialled.
func TestSSRFDialer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	at := func(ip string) string { return net.JoinHostPort(ip, port) }

	for _, tt := range []struct {
		name         string
		host         string
		resolves     []netip.Addr
		allowPrivate bool
		wantDials    []string // in order; the only ones the fake dial accepts
		wantErr      string   // "" means the request succeeds
	}{
		{"public address", "public.test", addrs("203.0.113.10"), false, []string{at("203.0.113.10")}, ""},
		{"cloud metadata", "metadata.test", addrs("169.254.169.254"), false, nil, "link-local"},
		{"cloud metadata even with private allowed", "metadata.test", addrs("169.254.169.254"), true, nil, "link-local"},
		{"IPv4-mapped metadata", "mapped.test", addrs("::ffff:169.254.169.254"), false, nil, "link-local"},
		{"NAT64 metadata", "nat64.test", addrs("64:ff9b::a9fe:a9fe"), false, nil, "link-local"},
		{"IPv6 link-local", "ll6.test", addrs("fe80::1"), false, nil, "link-local"},
		{"RFC 1918", "private.test", addrs("10.1.2.3"), false, nil, `"allow_private_network": true`},
		{"RFC 1918 allowed", "private.test", addrs("10.1.2.3"), true, []string{at("10.1.2.3")}, ""},
		{"192.168", "home.test", addrs("192.168.1.1"), false, nil, "private-network"},
		{"172.16/12", "docker.test", addrs("172.17.0.2"), false, nil, "private-network"},
		{"CGNAT", "cgnat.test", addrs("100.64.1.1"), false, nil, "carrier-grade NAT"},
		{"ULA", "ula.test", addrs("fd00::1"), false, nil, "private-network"},
		{"unspecified", "zero.test", addrs("0.0.0.0"), false, nil, "unspecified"},
		{"multicast", "mcast.test", addrs("224.0.0.1"), false, nil, "multicast"},
		{"broadcast", "bcast.test", addrs("255.255.255.255"), false, nil, "broadcast"},
		{"public name rebinding to loopback", "rebind.test", addrs("127.0.0.1"), true, nil, "loopback address behind a non-loopback name"},
		{"mixed answer dials only the good address", "mixed.test", addrs("169.254.169.254", "203.0.113.10"), false, []string{at("203.0.113.10")}, ""},
		{"localhost that is not loopback", "localhost", addrs("10.0.0.1"), true, nil, "not a loopback address"},
		{"localhost", "localhost", addrs("127.0.0.1"), false, []string{at("127.0.0.1")}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeNet{t: t, names: map[string][]netip.Addr{tt.host: tt.resolves}, allowed: map[string]bool{}, target: srv.Listener.Addr().String()}
			for _, d := range tt.wantDials {
				f.allowed[d] = true
			}
			url := "http://" + net.JoinHostPort(tt.host, port) + "/"
			c, err := NewClient(url, f.install(&Options{AllowInsecureHTTP: true, AllowPrivateNetwork: tt.allowPrivate}))
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			resp, err := c.Get(url)
			if err == nil {
				resp.Body.Close()
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("GET %s (resolving to %v) failed: %v", url, tt.resolves, err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("GET %s (resolving to %v) succeeded, want an error containing %q", url, tt.resolves, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("GET %s error = %v, want it to contain %q", url, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantDials, f.dials()); diff != "" {
				t.Errorf("addresses dialled (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIPLiteralUpstreamRefusedBeforeDial(t *testing.T) {
	f := &fakeNet{t: t, allowed: map[string]bool{}}
	for _, url := range []string{"https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/mcp", "https://[fe80::1]/mcp"} {
		c, err := NewClient(url, f.install(&Options{}))
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			t.Errorf("GET %s succeeded, want it refused", url)
		} else if !strings.Contains(err.Error(), "refusing to connect") {
			t.Errorf("GET %s error = %v, want a refusal", url, err)
		}
	}
	if d := f.dials(); len(d) != 0 {
		t.Errorf("dialled %v, want nothing", d)
	}
}

// TestProxy shows what is checked when HTTPS_PROXY/HTTP_PROXY apply: Moat
// dials only the proxy (the user's choice, not checked), leaves the upstream
// name to the proxy, and still refuses an IP-literal upstream itself.
func TestProxy(t *testing.T) {
	proxy := &recorder{}
	proxySrv := httptest.NewServer(proxy)
	defer proxySrv.Close()
	proxyURL, _ := url.Parse(proxySrv.URL)
	f := &fakeNet{t: t, allowed: map[string]bool{proxySrv.Listener.Addr().String(): true}, target: proxySrv.Listener.Addr().String()}
	viaProxy := func(*http.Request) (*url.URL, error) { return proxyURL, nil }

	c, err := NewClient("http://upstream.test/mcp", f.install(&Options{AllowInsecureHTTP: true, proxyFunc: viaProxy}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get("http://upstream.test/mcp")
	if err != nil {
		t.Fatalf("GET through the proxy: %v", err)
	}
	resp.Body.Close()
	if diff := cmp.Diff([]string{proxySrv.Listener.Addr().String()}, f.dials()); diff != "" {
		t.Errorf("dialled (-want +got):\n%s", diff)
	}

	c, err = NewClient("http://169.254.169.254/latest", f.install(&Options{AllowInsecureHTTP: true, proxyFunc: viaProxy}))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Get("http://169.254.169.254/latest"); err == nil {
		resp.Body.Close()
		t.Error("the metadata address was requested through the proxy")
	}
	if n := proxy.count(); n != 1 {
		t.Errorf("the proxy received %d requests, want only the first", n)
	}
}
