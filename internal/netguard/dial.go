package netguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
)

// A resolver looks up host names; *net.Resolver is one.
type resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var (
	cgnat      = netip.MustParsePrefix("100.64.0.0/10")
	thisNet    = netip.MustParsePrefix("0.0.0.0/8")
	reserved4  = netip.MustParsePrefix("240.0.0.0/4") // includes 255.255.255.255 broadcast
	siteLocal6 = netip.MustParsePrefix("fec0::/10")
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
)

// refusal says why ip may not be dialled, or "" if it may. toLoopback tells
// whether the URL named a loopback host.
func refusal(ip netip.Addr, toLoopback, allowPrivate bool) string {
	ip = ip.Unmap().WithZone("")
	if toLoopback {
		if ip.IsLoopback() {
			return ""
		}
		return "not a loopback address, though the URL names a loopback host"
	}
	if nat64.Contains(ip) {
		// A NAT64 gateway would carry this to the embedded IPv4 address.
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case ip.IsLoopback():
		// A public name resolving to this machine is DNS rebinding towards
		// local services; write a loopback URL if that is really meant.
		return "a loopback address behind a non-loopback name"
	case ip.IsUnspecified() || thisNet.Contains(ip):
		return "an unspecified address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address (this includes cloud metadata at 169.254.169.254)"
	case ip.IsMulticast():
		return "a multicast address"
	case reserved4.Contains(ip):
		return "a reserved or broadcast address"
	case allowPrivate:
		return ""
	case ip.IsPrivate() || siteLocal6.Contains(ip):
		return "a private-network address (RFC 1918 / ULA)"
	case cgnat.Contains(ip):
		return "a carrier-grade NAT address (100.64.0.0/10)"
	}
	return ""
}

// dialer connects only to addresses that pass refusal, checking the very
// address it dials, never a name, so a second DNS answer cannot sneak in.
type dialer struct {
	o         *Options
	boundHost string    // lower-case host of the one upstream, "" for the OAuth client
	proxies   *sync.Map // host:port of proxies in use, dialled unchecked
}

func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if _, ok := d.proxies.Load(strings.ToLower(addr)); ok {
		return d.o.dial(ctx, network, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("netguard: bad address %q: %w", addr, err)
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if d.boundHost != "" && host != d.boundHost {
		return nil, fmt.Errorf("netguard: refusing to connect to %q: this client only talks to %q", host, d.boundHost)
	}
	ips, err := d.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	toLoopback := isLoopbackHost(host)
	var errs []error
	for _, ip := range ips {
		if why := refusal(ip, toLoopback, d.o.AllowPrivateNetwork); why != "" {
			errs = append(errs, refusedError(host, ip, why))
			continue
		}
		target := net.JoinHostPort(ip.Unmap().WithZone("").String(), port)
		d.o.Logger.DebugContext(ctx, "netguard: dialling", slog.String("host", host), slog.String("addr", target))
		c, err := d.o.dial(ctx, network, target)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func (d *dialer) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	ips, err := d.o.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("netguard: resolving %q: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("netguard: %q has no address", host)
	}
	return ips, nil
}

func refusedError(host string, ip netip.Addr, why string) error {
	hint := ""
	if strings.HasPrefix(why, "a private") || strings.HasPrefix(why, "a carrier") {
		hint = `; if this server really lives on your private network, set "allow_private_network": true for it`
	}
	return fmt.Errorf("netguard: refusing to connect to %q at %s: it is %s%s", host, ip, why, hint)
}
