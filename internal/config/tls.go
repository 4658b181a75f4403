package config

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/moatmcp/moat/internal/lazyregexp"
)

var (
	tlsKeys = []string{"min_version", "ca_file", "cert_file", "key_file", "pins"}

	// pinForm is "sha256/" and the padded standard base64 of 32 bytes: 43
	// characters whose last carries 4 bits (so its 2 low bits are zero)
	// and one '='. The schema uses the same pattern.
	pinForm = lazyregexp.New(`^sha256/[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$`)
)

// insecureHTTPHint is the fix for a plain http:// url to a remote host.
const insecureHTTPHint = `plain HTTP sends every request readable and changeable on the network; use https://, or set "allow_insecure_http": true for this server if you accept that`

const pinHint = `a pin is "sha256/" and the base64 of the SHA-256 of the server's public key (44 characters ending in "="), as Moat prints it when a pin does not match, or from: ` +
	"openssl x509 -pubkey -noout -in cert.pem | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"

func (c *checker) tls(s *Server, m *member, path, where string) {
	s.TLS.MinVersion = "1.2"
	if m == nil || !c.object(m, path, `"tls"`, tlsKeys, `"tls": {"min_version": "1.3"}`) {
		return
	}
	n := m.val
	if f := n.get("min_version"); f != nil {
		if v := c.enum(f, path+"/min_version", "tls.min_version", []string{"1.2", "1.3"}, `use "1.2" (the default) or "1.3", as a string`); v != "" {
			s.TLS.MinVersion = v
		}
	}
	for _, k := range []struct {
		key string
		dst *string
	}{{"ca_file", &s.TLS.CAFile}, {"cert_file", &s.TLS.CertFile}, {"key_file", &s.TLS.KeyFile}} {
		f := n.get(k.key)
		if f == nil {
			continue
		}
		raw, ok := c.str(f, path)
		if !ok || raw == "" {
			continue
		}
		if v, ok := c.filePath(raw, expansion{path + "/" + k.key, f.val.off, where + " tls." + k.key, nil, false, false}); ok {
			*k.dst = v
		}
	}
	cert, key := n.get("cert_file"), n.get("key_file")
	switch {
	case cert != nil && key == nil:
		c.ps.add(path+"/cert_file", cert.keyOff, `"tls.cert_file" is given without "tls.key_file"`, "give the client certificate and its private key together, or neither")
	case key != nil && cert == nil:
		c.ps.add(path+"/key_file", key.keyOff, `"tls.key_file" is given without "tls.cert_file"`, "give the client certificate and its private key together, or neither")
	case cert != nil && key != nil && cert.val.kind == kindString && key.val.kind == kindString && (cert.val.str == "") != (key.val.str == ""):
		c.ps.add(path, n.off, "one of tls.cert_file and tls.key_file is empty", "give the client certificate and its private key together, or neither")
	}
	if f := n.get("pins"); f != nil {
		s.TLS.Pins = []string{}
		c.stringList(f, path+"/pins", "tls.pins", `"pins": ["sha256/..."]`, func(i int, it *node, p string) {
			if !validPin(it.str) {
				c.ps.add(p, it.off, fmt.Sprintf("tls.pins[%d] %q is not sha256/ followed by the base64 of 32 bytes", i, it.str), pinHint)
				return
			}
			s.TLS.Pins = append(s.TLS.Pins, it.str)
		})
	}
}

func validPin(p string) bool {
	if !pinForm.MatchString(p) {
		return false
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(strings.TrimPrefix(p, "sha256/"))
	return err == nil && len(raw) == sha256.Size
}

// insecureHTTP says whether an expanded, well-formed url is plain http:// to
// a host that is not loopback. Loopback is 127.0.0.0/8, ::1 and the name
// localhost, as in internal/netguard (which checks again at connect time).
func insecureHTTP(v string) bool {
	u, err := url.Parse(v)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return false
	}
	host := strings.TrimSuffix(u.Hostname(), ".")
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.Unmap().IsLoopback()
}
