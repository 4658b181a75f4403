package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/moatmcp/moat/internal/testutil"
)

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape reads url's metrics as Prometheus would, or fails the test.
func scrape(t *testing.T, client *http.Client, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := client.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s", url, res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parsing the scrape of %s: %v", url, err)
	}
	return fams
}

// sample is the value of the series of family name with exactly labels
// (counter, gauge or a histogram's count); ok is false when it is absent.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		for _, l := range m.Label {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func wantSample(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string, want float64) {
	t.Helper()
	if got, ok := sample(fams, name, labels); !ok || got != want {
		t.Errorf("%s %v = %v (present: %v), want %v", name, labels, got, ok, want)
	}
}

// TestMetricsOfAStdioSession: a user's calls (allowed, refused by the
// policy, a tool error, an upstream that crashes) show in /metrics as the
// series and values a dashboard would read; no label holds a tool name.
func TestMetricsOfAStdioSession(t *testing.T) {
	addr := freeAddr(t)
	srv := testServer(t, "test")
	srv["policy"] = map[string]any{"deny": []string{"large"}}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": srv}, map[string]any{"metrics": map[string]any{"listen": addr}})
	m := startMoat(t, cfg)
	call := func(name string, args map[string]any) *mcp.CallToolResult {
		return m.call(t, "call_dynamic_tool", map[string]any{"group": "test", "name": name, "args": args})
	}
	for range 2 {
		if res := call("echo", map[string]any{"message": "hi"}); res.IsError {
			t.Fatalf("echo: %s", resultText(res))
		}
	}
	if res := call("large", map[string]any{"bytes": 1}); !res.IsError || !strings.Contains(resultText(res), "policy") {
		t.Fatalf("a denied call: isError=%v %q", res.IsError, resultText(res))
	}
	if res := call("fail", map[string]any{}); !res.IsError {
		t.Fatal("fail returned no tool error")
	}
	// The upstream crashes under a call; moat starts it again.
	if res := call("exit", map[string]any{"code": 3}); !res.IsError {
		t.Fatalf("a call whose server crashed: %q", resultText(res))
	}
	url := "http://" + addr + metricsPath
	testutil.Eventually(t, "the upstream to restart", func() bool {
		v, _ := sample(scrape(t, http.DefaultClient, url), "moat_upstream_restarts_total", map[string]string{"group": "test", "identity": ""})
		return v == 1
	})
	if res := call("echo", map[string]any{"message": "again"}); res.IsError {
		t.Fatalf("echo after the restart: %s", resultText(res))
	}

	fams := scrape(t, http.DefaultClient, url)
	tool := map[string]string{"group": "test", "kind": "tool"}
	with := func(k, v string) map[string]string {
		l := map[string]string{k: v}
		for k, v := range tool {
			l[k] = v
		}
		return l
	}
	wantSample(t, fams, "moat_calls_total", with("outcome", "ok"), 3)
	wantSample(t, fams, "moat_calls_total", with("outcome", "denied"), 1)
	wantSample(t, fams, "moat_calls_total", with("outcome", "error"), 2) // fail's tool error, exit's crash
	wantSample(t, fams, "moat_calls_total", with("outcome", "timeout"), 0)
	wantSample(t, fams, "moat_refusals_total", map[string]string{"layer": "policy", "rule": "deny"}, 1)
	wantSample(t, fams, "moat_call_duration_seconds", tool, 6)
	wantSample(t, fams, "moat_upstream_up", map[string]string{"group": "test", "identity": ""}, 1)
	wantSample(t, fams, "moat_upstream_child_exits_total", map[string]string{"group": "test", "identity": ""}, 1)
	if v, ok := sample(fams, "moat_audit_write_duration_seconds", nil); !ok || v < 6 {
		t.Errorf("moat_audit_write_duration_seconds count = %v (present: %v), want at least a write per call", v, ok)
	}
	if _, ok := sample(fams, "moat_audit_queue_depth", nil); !ok {
		t.Error("no moat_audit_queue_depth")
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s: the Go and process collectors are not registered", name)
		}
	}
	// Nothing the client or the upstream chose is a label value.
	for name, f := range fams {
		for _, mt := range f.Metric {
			for _, l := range mt.Label {
				for _, chosen := range []string{"echo", "large", "fail", "exit", "again"} {
					if strings.Contains(l.GetValue(), chosen) {
						t.Errorf("%s has label %s=%q: a value the client or upstream chose", name, l.GetName(), l.GetValue())
					}
				}
			}
		}
	}
	// Only /metrics is served.
	res, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET / = %s, want 404", res.Status)
	}
}

// TestMetricsPortTakenKeepsServingMCP: a second stdio moat of the same
// config (a second client) finds the metrics port taken: it warns, naming
// the fix, and serves its client all the same.
func TestMetricsPortTakenKeepsServingMCP(t *testing.T) {
	addr := freeAddr(t)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")}, map[string]any{"metrics": map[string]any{"listen": addr}})
	env := testutil.MoatEnv(t)
	first := startMoatEnv(t, cfg, env)
	testutil.Eventually(t, "the first moat to serve metrics", func() bool {
		res, err := http.Get("http://" + addr + metricsPath)
		if err == nil {
			res.Body.Close()
		}
		return err == nil && res.StatusCode == http.StatusOK
	})
	second := startMoatEnv(t, cfg, env)
	if res := second.call(t, "call_dynamic_tool", map[string]any{"group": "test", "name": "echo", "args": map[string]any{"message": "hi"}}); res.IsError {
		t.Fatalf("the second moat's call: %s", resultText(res))
	}
	testutil.Eventually(t, "the warning", func() bool {
		return strings.Contains(second.stderr.String(), addr+" is already in use")
	})
	if s := second.stderr.String(); !strings.Contains(s, "give each config its own metrics.listen port") {
		t.Errorf("the warning names no fix:\n%s", testutil.Tail(s, 2000))
	}
	_ = first
}

// TestMetricsOffLoopbackNeedAToken: metrics served on an address other
// machines reach are HTTPS with gateway.tls, and refuse a scrape without a
// token of metrics.tokens.
func TestMetricsOffLoopbackNeedAToken(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := testutil.WriteSelfSignedCert(t, dir, time.Now().Add(time.Hour), "127.0.0.1")
	// 0.0.0.0 is off loopback for the config; the test reaches it on 127.0.0.1.
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	cfg := testutil.WriteConfig(t, dir, map[string]any{"test": testServer(t, "test")}, map[string]any{
		"gateway": map[string]any{"tls": map[string]any{"cert_file": certFile, "key_file": keyFile}},
		"metrics": map[string]any{"listen": "0.0.0.0:" + port, "tokens": []string{"prom"}},
	})
	env := testutil.MoatEnv(t)
	token := func(name string) string {
		cmd := exec.Command(testutil.BuildMoat(t), "token", "create", name)
		cmd.Env = append(slices.Clone(env), "MOAT_CONFIG="+cfg)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("moat token create %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	prom, other := token("prom"), token("other")
	startMoatEnv(t, cfg, env)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	url := "https://127.0.0.1:" + port + metricsPath
	var res *http.Response
	testutil.Eventually(t, "the metrics listener", func() bool {
		var err error
		res, err = client.Get(url)
		return err == nil
	})
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("a scrape without a token: %s (WWW-Authenticate %q), want 401 with a Bearer challenge", res.Status, res.Header.Get("WWW-Authenticate"))
	}
	for what, tok := range map[string]string{"an unknown token": "moat_not-a-token", "a token not in metrics.tokens": other} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("a scrape with %s: %s, want 401", what, res.Status)
		}
	}
	if fams := scrape(t, &http.Client{Transport: bearerTransport{client.Transport, prom}}, url); fams["go_goroutines"] == nil {
		t.Error("a scrape with a metrics token has no go_goroutines")
	}
	// Each refusal is audited (written before the 401 is sent), without
	// the token (seen failing with refusals only logged).
	auditPath := filepath.Join(testutil.EnvValue(env, "XDG_STATE_HOME"), "moat", "audit.jsonl")
	var reasons []string
	for _, r := range testutil.ReadAudit(t, auditPath) {
		if d, _ := r["detail"].(map[string]any); r["event"] == "auth_refused" && d["listener"] == "metrics" {
			reason, _ := d["reason"].(string)
			reasons = append(reasons, reason)
		}
	}
	slices.Sort(reasons)
	if want := []string{"no bearer token", "token \"other\" is not in metrics.tokens"}; len(reasons) != 3 || !slices.Contains(reasons, want[0]) || !slices.Contains(reasons, want[1]) {
		t.Errorf("auth_refused records of the metrics listener: %q; want three, among them %q", reasons, want)
	}
	if b, _ := os.ReadFile(auditPath); bytes.Contains(b, []byte(other)) || bytes.Contains(b, []byte("moat_not-a-token")) {
		t.Error("the audit log holds a refused scrape's token")
	}
	// Plain HTTP is not served there.
	if res, err := http.Get("http://127.0.0.1:" + port + metricsPath); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Error("metrics off loopback are served over plain HTTP")
		}
	}
}

// bearerTransport sends its token with every request.
type bearerTransport struct {
	http.RoundTripper
	token string
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.RoundTripper.RoundTrip(r)
}

// TestMetricsConfigErrors: a metrics block moat cannot serve safely is a
// config error naming the fix, before anything starts.
func TestMetricsConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		metrics map[string]any
		want    string
	}{
		{"off loopback, plain HTTP", map[string]any{"listen": "0.0.0.0:9464", "tokens": []string{"p"}}, `set "gateway": {"tls"`},
		{"no port", map[string]any{"listen": "127.0.0.1"}, `is not HOST:PORT`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")}, map[string]any{"metrics": tt.metrics})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, testutil.BuildMoat(t), "serve", cfg)
			cmd.Env = testutil.MoatEnv(t)
			out, err := cmd.CombinedOutput()
			code := -1
			if e, ok := err.(*exec.ExitError); ok {
				code = e.ExitCode()
			}
			if code != exitUsage || !strings.Contains(string(out), tt.want) || !strings.Contains(string(out), "/metrics/listen") {
				t.Errorf("exit %d (%v), output:\n%s\nwant exit %d and %q", code, err, testutil.Tail(string(out), 2000), exitUsage, tt.want)
			}
		})
	}
}

// TestMetricsOfAGateway: a gateway's metrics count the sessions open per
// identity (named in the config) and the HTTP requests refused at its
// front, by reason.
func TestMetricsOfAGateway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: runs clients as other users, which needs root")
	}
	addr, httpAddr := freeAddr(t), freeAddr(t)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"alpha": testServer(t, "alpha"), "beta": testServer(t, "beta")},
		map[string]any{
			"gateway": map[string]any{"socket_mode": "0660", "socket_group": "4300", "identities": map[string]any{
				"alice": map[string]any{"uids": []int{uidAlice}},
				"bob":   map[string]any{"uids": []int{uidBob}, "servers": []string{"beta"}},
			}},
			"metrics": map[string]any{"listen": addr},
		})
	g := startGateway(t, cfg, httpAddr)
	for _, uid := range []int{uidAlice, uidAlice, uidBob} {
		if _, err := g.connectAs(t, uid, nil); err != nil {
			t.Fatalf("connecting as %d: %v", uid, err)
		}
	}
	// A request without a token, twice.
	for range 2 {
		res, err := http.Post("http://"+httpAddr+"/mcp", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a request without a token: %s", res.Status)
		}
	}
	url := "http://" + addr + metricsPath
	testutil.Eventually(t, "three sessions", func() bool {
		fams := scrape(t, http.DefaultClient, url)
		a, _ := sample(fams, "moat_gateway_sessions", map[string]string{"identity": "alice"})
		b, _ := sample(fams, "moat_gateway_sessions", map[string]string{"identity": "bob"})
		return a == 2 && b == 1
	})
	wantSample(t, scrape(t, http.DefaultClient, url), "moat_gateway_auth_refusals_total", map[string]string{"reason": "no_token"}, 2)
}
