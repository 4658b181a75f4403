package netguard

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTLS(t *testing.T) {
	ca := newTestCA(t)
	good := ca.serverCert(t, "127.0.0.1")
	expired := ca.issue(t, []string{"127.0.0.1"}, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), x509.ExtKeyUsageServerAuth)
	wrongHost := ca.serverCert(t, "127.0.0.9", "upstream.example")
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	tls11 := func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }
	tls12 := func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }

	for _, tt := range []struct {
		name    string
		cert    tls.Certificate
		server  func(*tls.Config)
		tls     TLS
		wantErr string // "" means the request succeeds
	}{
		{"trusted CA", good, nil, TLS{CAFile: ca.pemFile}, ""},
		{"system roots only", good, nil, TLS{}, "unknown authority"},
		{"leaf pin", good, nil, TLS{CAFile: ca.pemFile, Pins: []string{SPKIPin(good.Leaf)}}, ""},
		{"backup pin on the CA", good, nil, TLS{CAFile: ca.pemFile, Pins: []string{"sha256/" + strings.Repeat("A", 43) + "=", SPKIPin(ca.cert)}}, ""},
		{"wrong pin prints the presented hash", good, nil, TLS{CAFile: ca.pemFile, Pins: []string{"sha256/" + strings.Repeat("A", 43) + "="}}, SPKIPin(good.Leaf)},
		{"expired certificate", expired, nil, TLS{CAFile: ca.pemFile}, "expired"},
		{"certificate for another host", wrongHost, nil, TLS{CAFile: ca.pemFile}, "valid for 127.0.0.9, not 127.0.0.1"},
		{"TLS 1.1 server", good, tls11, TLS{CAFile: ca.pemFile}, "protocol version"},
		{"TLS 1.2 server, 1.2 minimum", good, tls12, TLS{CAFile: ca.pemFile}, ""},
		{"TLS 1.2 server, 1.3 minimum", good, tls12, TLS{CAFile: ca.pemFile, MinVersion: "1.3"}, "protocol version"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := tlsServer(t, tt.cert, ok, tt.server)
			c, err := NewClient(s.URL, &Options{TLS: tt.tls})
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			defer c.CloseIdleConnections()
			resp, err := c.Get(s.URL)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("GET %s with %+v failed: %v", s.URL, tt.tls, err)
				}
				resp.Body.Close()
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET %s with %+v succeeded, want an error containing %q", s.URL, tt.tls, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("GET error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestClientCertificate(t *testing.T) {
	ca := newTestCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	s := tlsServer(t, ca.serverCert(t, "127.0.0.1"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		func(c *tls.Config) { c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool })

	client := ca.issue(t, nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	keyDER, err := x509.MarshalPKCS8PrivateKey(client.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: client.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

	for _, tt := range []struct {
		name   string
		tls    TLS
		wantOK bool
	}{
		{"no client certificate", TLS{CAFile: ca.pemFile}, false},
		{"from files", TLS{CAFile: ca.pemFile, CertFile: certFile, KeyFile: keyFile}, true},
		{"from the secret store", TLS{CAFile: ca.pemFile, Cert: &client}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(s.URL, &Options{TLS: tt.tls})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseIdleConnections()
			resp, err := c.Get(s.URL)
			if err == nil {
				resp.Body.Close()
			}
			if (err == nil) != tt.wantOK {
				t.Errorf("GET with %s: err = %v, want success %v", tt.name, err, tt.wantOK)
			}
		})
	}
}

func TestTLSConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		tls     TLS
		wantErr string
	}{
		{"bad version", TLS{MinVersion: "1.1"}, `"1.2" or "1.3"`},
		{"pin without prefix", TLS{Pins: []string{"abc"}}, `must start with "sha256/"`},
		{"short pin", TLS{Pins: []string{"sha256/AAAA"}}, "32 bytes"},
		{"missing CA file", TLS{CAFile: "/nonexistent/ca.pem"}, "tls.ca_file"},
		{"cert without key", TLS{CertFile: "/x.pem"}, "set together"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient("https://127.0.0.1/", &Options{TLS: tt.tls})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewClient with %+v: err = %v, want it to contain %q", tt.tls, err, tt.wantErr)
			}
		})
	}
}
