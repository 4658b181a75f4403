package netguard

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

const pinPrefix = "sha256/"

// SPKIPin returns the pin of cert's public key: "sha256/" and the standard
// base64 of the SHA-256 of its SubjectPublicKeyInfo (the HPKP format, as
// printed by `openssl x509 -pubkey | openssl pkey -pubin -outform der |
// openssl dgst -sha256 -binary | base64`).
func SPKIPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return pinPrefix + base64.StdEncoding.EncodeToString(sum[:])
}

func parsePins(pins []string) ([][sha256.Size]byte, error) {
	out := make([][sha256.Size]byte, 0, len(pins))
	for _, p := range pins {
		b64, ok := strings.CutPrefix(p, pinPrefix)
		if !ok {
			return nil, fmt.Errorf("netguard: tls.pins entry %q must start with %q (a SHA-256 SPKI hash in base64)", p, pinPrefix)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("netguard: tls.pins entry %q is not sha256/ followed by 44 characters of base64 (32 bytes)", p)
		}
		out = append(out, [sha256.Size]byte(raw))
	}
	return out, nil
}

func tlsConfig(t TLS) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	switch t.MinVersion {
	case "", "1.2":
	case "1.3":
		c.MinVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("netguard: tls.min_version %q is not supported; use \"1.2\" or \"1.3\"", t.MinVersion)
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("netguard: reading tls.ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("netguard: tls.ca_file %q holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	switch {
	case t.Cert != nil && (t.CertFile != "" || t.KeyFile != ""):
		return nil, errors.New("netguard: give the client certificate either as tls.cert_file/key_file or from the secret store, not both")
	case t.Cert != nil:
		c.Certificates = []tls.Certificate{*t.Cert}
	case t.CertFile != "" || t.KeyFile != "":
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, errors.New("netguard: tls.cert_file and tls.key_file must be set together")
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("netguard: loading the client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if len(t.Pins) > 0 {
		pins, err := parsePins(t.Pins)
		if err != nil {
			return nil, err
		}
		c.VerifyConnection = verifyPins(pins)
	}
	return c, nil
}

// verifyPins runs after the normal chain and host name verification, so
// VerifiedChains holds only chains that end in a trusted root: a pin can
// narrow trust but never replace it.
func verifyPins(pins [][sha256.Size]byte) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		for _, chain := range cs.VerifiedChains {
			for _, cert := range chain {
				sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
				for _, p := range pins {
					if bytes.Equal(sum[:], p[:]) {
						return nil
					}
				}
			}
		}
		presented := "none"
		if len(cs.PeerCertificates) > 0 {
			presented = SPKIPin(cs.PeerCertificates[0])
		}
		return fmt.Errorf("netguard: TLS pin mismatch for %q: the server presented leaf key %s and no certificate of its "+
			"verified chain matches tls.pins; if the key was rotated on purpose, add the new pin", cs.ServerName, presented)
	}
}
