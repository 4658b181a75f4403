package testutil

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moatmcp/moat/internal/netguard"
)

// MoatPassphrase is the encrypted file store's passphrase in MoatEnv.
const MoatPassphrase = "moat test passphrase"

// MoatEnv is the environment of a moat under test: HOME, its audit log and
// its secret store in fresh temp dirs, the file store (no keychain, so tests
// never share one) protected by permissions only, as on a headless host
// (tests of the encrypted store add MOAT_PASSPHRASE=MoatPassphrase: its
// Argon2id derivation costs every moat process a second of CPU), no HTTP
// proxy (nothing is dialled but the upstreams), no managed policy, and
// MOAT_LOG=debug.
func MoatEnv(t testing.TB) []string {
	dir := t.TempDir()
	env := slices.DeleteFunc(os.Environ(), func(e string) bool {
		name, _, _ := strings.Cut(e, "=")
		return strings.HasSuffix(strings.ToUpper(name), "_PROXY")
	})
	return append(env,
		"HOME="+filepath.Join(dir, "home"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"DBUS_SESSION_BUS_ADDRESS=disabled:",
		"MOAT_PASSPHRASE=",
		"CREDENTIALS_DIRECTORY=",
		"MOAT_MANAGED_POLICY=",
		"MOAT_LOG=debug")
}

// SetSecret stores value as the secret name with `moat secret set`, in the
// store of a moat with env.
func SetSecret(t testing.TB, env []string, name, value string) {
	t.Helper()
	cmd := exec.Command(BuildMoat(t), "secret", "set", name)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(value + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("moat secret set %s: %v\n%s", name, err, out)
	}
}

// Browse plays the user's browser on an authorize URL of the oauthserver,
// which approves at once: it follows the redirect to moat's loopback
// callback and returns the callback page's status and text.
func Browse(t *testing.T, authURL string) (int, string) {
	t.Helper()
	c, err := netguard.NewOAuthClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	// netguard follows only same-origin redirects, so the hop to moat's
	// callback, on another port, is the browser's second request.
	resp, err := c.Get(authURL)
	if resp == nil {
		t.Fatalf("browser: authorize: %v", err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc == nil || loc.Hostname() != "127.0.0.1" || loc.Path != "/callback" {
		t.Fatalf("browser: authorize answered %s with Location %q; want a redirect to moat's loopback callback", resp.Status, resp.Header.Get("Location"))
	}
	resp, err = c.Get(loc.String())
	if err != nil {
		t.Fatalf("browser: callback: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(page)
}

// EnvValue is the value of key in env (the last one wins, as for exec).
func EnvValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// WriteConfig writes dir/moat.json with servers and any other top-level
// keys, the way editors save (see ReplaceFile), and returns its path.
func WriteConfig[S any](t testing.TB, dir string, servers map[string]S, top ...map[string]any) string {
	t.Helper()
	doc := map[string]any{"mcpServers": servers}
	for _, m := range top {
		for k, v := range m {
			doc[k] = v
		}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "moat.json")
	ReplaceFile(t, path, b)
	return path
}

// ReplaceFile writes data to path the way editors save: a temp file renamed
// over the old one.
func ReplaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// SyncBuffer is a bytes.Buffer safe for a process's output and a test
// reading it at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Tail is the last n bytes of s, for failure output that stays bounded
// however much a process logged.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// Eventually waits until cond holds, checking every 10 ms, and fails the
// test naming what it waited for after 30 seconds: a condition that holds
// on a quiet machine at once may take that long on a busy one.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ReadAudit returns the records of the audit log at path, each decoded as
// a JSON object, for tests that look for one.
func ReadAudit(t testing.TB, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %.300q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return out
}

// WriteSelfSignedCert writes a self-signed ECDSA certificate for hosts
// (names or IP addresses) valid until notAfter, and its key (0600), into
// dir, and returns their paths: a TLS listener's files for a test, and the
// file a client trusts.
func WriteSelfSignedCert(t testing.TB, dir string, notAfter time.Time, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "moat test"},
		NotBefore:             notAfter.Add(-365 * 24 * time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so a client can trust it as its own root
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
