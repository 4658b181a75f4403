package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/moatmcp/moat/internal/testutil"
)

// otlpReceiver is an OTLP/HTTP trace collector on loopback: it keeps every
// export request, decoded and raw (a canary is looked for in the raw bytes,
// so no field of a span or its resource escapes the search).
type otlpReceiver struct {
	srv *httptest.Server

	mu    sync.Mutex
	raw   [][]byte
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 16<<20))
		var msg coltracepb.ExportTraceServiceRequest
		if err == nil && req.URL.Path == "/v1/traces" {
			err = proto.Unmarshal(body, &msg)
		}
		if err != nil || req.URL.Path != "/v1/traces" {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.raw = append(r.raw, body)
		for _, rs := range msg.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) received() ([]*tracepb.Span, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...), append([][]byte(nil), r.raw...)
}

// tracingEnv is testutil.MoatEnv without any OTEL_* variable of the test's
// own environment, plus extra.
func tracingEnv(t *testing.T, extra ...string) []string {
	var env []string
	for _, e := range testutil.MoatEnv(t) {
		if !strings.HasPrefix(e, "OTEL_") {
			env = append(env, e)
		}
	}
	return append(env, extra...)
}

// callWithTrace calls tool of group test through call_dynamic_tool with a
// client's traceparent in the request's _meta.
func callWithTrace(t *testing.T, cs *mcp.ClientSession, traceparent, tool string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := &mcp.CallToolParams{Name: "call_dynamic_tool", Arguments: map[string]any{"group": "test", "name": tool, "args": args}}
	if traceparent != "" {
		p.Meta = mcp.Meta{"traceparent": traceparent, "tracestate": "vendor=opaque"}
	}
	res, err := cs.CallTool(ctx, p)
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return res
}

// upstreamMeta is the _meta the test server's meta tool received.
func upstreamMeta(t *testing.T, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	var meta map[string]any
	if err := json.Unmarshal([]byte(resultText(res)), &meta); err != nil {
		t.Fatalf("the meta tool's answer is not JSON: %v: %.300q", err, resultText(res))
	}
	return meta
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.GetStringValue()
		}
	}
	return ""
}

func findSpan(spans []*tracepb.Span, name string, match func(*tracepb.Span) bool) *tracepb.Span {
	for _, s := range spans {
		if s.Name == name && (match == nil || match(s)) {
			return s
		}
	}
	return nil
}

func spanNames(spans []*tracepb.Span) string {
	var names []string
	for _, s := range spans {
		names = append(names, fmt.Sprintf("%s[%s]", s.Name, attr(s, "gen_ai.tool.name")))
	}
	return strings.Join(names, ", ")
}

const (
	clientTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID  = "00f067aa0ba902b7"
	clientParent  = "00-" + clientTraceID + "-" + clientSpanID + "-01"
)

// TestTracesFollowTheClientsTrace runs moat with an OTLP/HTTP endpoint
// set: the spans of a call reach the collector (flushed at exit) in the
// client's trace, under its span; the upstream receives a traceparent of
// the same trace whose parent is Moat's upstream span; a refusal's spans
// name the layer and rule.
func TestTracesFollowTheClientsTrace(t *testing.T) {
	rcv := newOTLPReceiver(t)
	srv := testServer(t, "test")
	srv["policy"] = map[string]any{"deny": []string{"fail"}}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": srv})
	m := startMoatEnv(t, cfg, tracingEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.srv.URL))

	meta := upstreamMeta(t, callWithTrace(t, m.cs, clientParent, "meta", nil))
	if res := callWithTrace(t, m.cs, clientParent, "fail", nil); !res.IsError {
		t.Fatalf("the denied tool ran: %q", resultText(res))
	}
	m.cs.Close() // moat exits, flushing its spans
	spans, _ := rcv.received()

	up := findSpan(spans, "tools/call meta", nil)
	if up == nil {
		t.Fatalf("no upstream span of the meta call among %s", spanNames(spans))
	}
	tp, _ := meta["traceparent"].(string)
	if want := "00-" + clientTraceID + "-" + hex.EncodeToString(up.SpanId) + "-01"; tp != want {
		t.Errorf("the upstream received traceparent %q, want %q (the client's trace, Moat's upstream span as parent)", tp, want)
	}
	if meta["tracestate"] != "vendor=opaque" {
		t.Errorf("the upstream received tracestate %v, want the client's", meta["tracestate"])
	}
	call := findSpan(spans, "tools/call call_dynamic_tool", func(s *tracepb.Span) bool { return attr(s, "gen_ai.tool.name") == "meta" })
	if call == nil {
		t.Fatalf("no span of the client's meta call among %s", spanNames(spans))
	}
	if hex.EncodeToString(call.TraceId) != clientTraceID || hex.EncodeToString(call.ParentSpanId) != clientSpanID {
		t.Errorf("the call's span is in trace %x under %x, want the client's %s under %s", call.TraceId, call.ParentSpanId, clientTraceID, clientSpanID)
	}
	if call.Kind != tracepb.Span_SPAN_KIND_SERVER || up.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("span kinds: call %v, upstream %v; want server and client", call.Kind, up.Kind)
	}
	if got := attr(call, "moat.group") + " " + attr(call, "mcp.method.name") + " " + attr(call, "moat.outcome"); got != "test tools/call ok" {
		t.Errorf("the call's span says group, method, outcome %q", got)
	}
	// The upstream span is under the innermost layer's, which is in the
	// call's trace.
	byID := map[string]*tracepb.Span{}
	for _, s := range spans {
		byID[string(s.SpanId)] = s
	}
	var chain []string
	for s := byID[string(up.ParentSpanId)]; s != nil && s != call; s = byID[string(s.ParentSpanId)] {
		chain = append(chain, attr(s, "moat.layer"))
	}
	if len(chain) < 5 || byID[string(up.ParentSpanId)] == nil {
		t.Errorf("between the call's span and the upstream's: layers %v, want one span per guard layer", chain)
	}

	denied := findSpan(spans, "tools/call call_dynamic_tool", func(s *tracepb.Span) bool { return attr(s, "gen_ai.tool.name") == "fail" })
	if denied == nil {
		t.Fatalf("no span of the denied call among %s", spanNames(spans))
	}
	if denied.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || attr(denied, "moat.layer") != "policy" || attr(denied, "moat.rule") == "" || attr(denied, "moat.outcome") != "denied" {
		t.Errorf("the denied call's span: status %v, layer %q, rule %q, outcome %q; want an error naming the policy layer and its rule",
			denied.Status, attr(denied, "moat.layer"), attr(denied, "moat.rule"), attr(denied, "moat.outcome"))
	}
	policy := findSpan(spans, "moat.layer policy", func(s *tracepb.Span) bool {
		return bytes.Equal(s.TraceId, denied.TraceId) && attr(s, "moat.rule") != ""
	})
	if policy == nil || policy.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("no policy layer span with an error status and a rule in the denied call's trace: %v", policy)
	}
	if findSpan(spans, "tools/call fail", nil) != nil {
		t.Error("a denied call has an upstream span")
	}
}

// TestTracesCarryNoValues sends canaries through every way a value could
// reach a span: argument values (of an allowed, a refused and a failing
// call, and the name of a property the schema refuses, which the refusal's
// reason quotes), a secret in the server's environment that a tool
// returns, and an upstream error's text. None may be in what the
// collector receives.
func TestTracesCarryNoValues(t *testing.T) {
	rcv := newOTLPReceiver(t)
	const (
		argCanary    = "arg-canary-5e1d"
		secretCanary = "secret-canary-93ab"
		errorCanary  = "error-canary-c07f"
		// endpointCanary is the password of the OTLP endpoint's URL.
		endpointCanary = "endpoint-canary-2b6e"
	)
	// The endpoint's password must not reach moat's log either.
	endpoint := strings.Replace(rcv.srv.URL, "http://", "http://user:"+endpointCanary+"@", 1)
	env := tracingEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+endpoint, "MOAT_PASSPHRASE=correct horse battery staple")
	set := exec.Command(testutil.BuildMoat(t), "secret", "set", "api-token")
	set.Env = env
	set.Stdin = strings.NewReader(secretCanary + "\n")
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("moat secret set: %v\n%s", err, out)
	}
	srv := testServer(t, "test")
	srv["env"] = map[string]string{"API_TOKEN": "${secret:api-token}"}
	srv["policy"] = map[string]any{"deny": []string{"fail"}}
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": srv})
	m := startMoatEnv(t, cfg, env)

	callWithTrace(t, m.cs, clientParent, "echo", map[string]any{"message": argCanary})
	callWithTrace(t, m.cs, "", "env", nil)
	if res := callWithTrace(t, m.cs, "", "fail", map[string]any{"x": argCanary}); !res.IsError {
		t.Fatal("the denied tool ran")
	}
	// A property echo's schema does not allow: the validate layer's
	// refusal names it in its reason, which no span may hold.
	if res := callWithTrace(t, m.cs, "", "echo", map[string]any{"message": "hi", argCanary: 1}); !res.IsError || !strings.Contains(resultText(res), argCanary) {
		t.Fatalf("the refusal's reason does not quote the property (so the canary test tests nothing): %q", resultText(res))
	}
	if res := callWithTrace(t, m.cs, "", "fail_with", map[string]any{"message": errorCanary}); !res.IsError || !strings.Contains(resultText(res), errorCanary) {
		t.Fatalf("the upstream error did not reach the client (so the canary test tests nothing): %q", resultText(res))
	}
	m.cs.Close()
	spans, raw := rcv.received()
	if findSpan(spans, "tools/call fail_with", nil) == nil || findSpan(spans, "tools/call env", nil) == nil {
		t.Fatalf("the calls' spans were not exported: %s", spanNames(spans))
	}
	if up := findSpan(spans, "tools/call fail_with", nil); up.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("the failed upstream call's span has status %v, want an error", up.Status)
	}
	if strings.Contains(m.stderr.String(), endpointCanary) {
		t.Error("moat's log holds the OTLP endpoint's password")
	}
	for _, b := range raw {
		for _, c := range []string{argCanary, secretCanary, errorCanary} {
			if bytes.Contains(b, []byte(c)) {
				t.Errorf("the exported spans hold the canary %q", c)
			}
		}
	}
}

// TestTracingOffPassesTheClientsTraceOn: with no OTEL_* variable (and with
// OTEL_SDK_DISABLED=true beside an endpoint), moat exports nothing and
// starts no exporter, and the upstream receives the client's traceparent
// unchanged; an invalid one is not passed on.
func TestTracingOffPassesTheClientsTraceOn(t *testing.T) {
	rcv := newOTLPReceiver(t)
	for _, tt := range []struct {
		name string
		env  []string
	}{
		{"unset", nil},
		{"disabled", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.srv.URL, "OTEL_SDK_DISABLED=true"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
			m := startMoatEnv(t, cfg, tracingEnv(t, tt.env...))
			meta := upstreamMeta(t, callWithTrace(t, m.cs, clientParent, "meta", nil))
			if meta["traceparent"] != clientParent || meta["tracestate"] != "vendor=opaque" {
				t.Errorf("the upstream received %v, want the client's trace context unchanged", meta)
			}
			bad := upstreamMeta(t, callWithTrace(t, m.cs, "00-"+strings.Repeat("0", 32)+"-"+clientSpanID+"-01", "meta", nil))
			if _, ok := bad["traceparent"]; ok {
				t.Errorf("an invalid traceparent was passed on: %v", bad)
			}
			m.cs.Close()
			if spans, raw := rcv.received(); len(raw) > 0 {
				t.Errorf("tracing is off but %d spans were exported", len(spans))
			}
			if strings.Contains(m.stderr.String(), "exporting traces") {
				t.Errorf("tracing is off but moat started an exporter:\n%s", m.stderr)
			}
		})
	}
}

// TestBadTracingSettingKeepsServing: a gRPC protocol (not supported) is an
// error in the log naming the variable and its fix, and the client is
// served without traces.
func TestBadTracingSettingKeepsServing(t *testing.T) {
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")})
	m := startMoatEnv(t, cfg, tracingEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"))
	if res := callWithTrace(t, m.cs, "", "echo", map[string]any{"message": "hi"}); res.IsError {
		t.Fatalf("the call failed: %q", resultText(res))
	}
	if log := m.stderr.String(); !strings.Contains(log, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported") || !strings.Contains(log, "http/protobuf") {
		t.Errorf("moat's log does not name the grpc setting and its fix:\n%s", log)
	}
}

// headerTransport sets headers on every request of a go-sdk client.
type headerTransport struct{ h http.Header }

func (t headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range t.h {
		r.Header[k] = v
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestGatewayTakesTraceContextFromHTTPHeaders: on the gateway's HTTP
// listener the traceparent header is the parent of a call's span when the
// request's _meta has none; a _meta traceparent wins over the header. The
// call's span names the token's identity.
func TestGatewayTakesTraceContextFromHTTPHeaders(t *testing.T) {
	rcv := newOTLPReceiver(t)
	env := tracingEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT="+rcv.srv.URL)
	cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": testServer(t, "test")},
		map[string]any{"gateway": map[string]any{"identities": map[string]any{"alice": map[string]any{"tokens": []string{"laptop"}}}}})
	create := exec.Command(testutil.BuildMoat(t), "token", "create", "laptop")
	create.Env = append(env, "MOAT_CONFIG="+cfg)
	tok, err := create.Output()
	if err != nil {
		t.Fatalf("moat token create: %v", err)
	}
	gw := exec.Command(testutil.BuildMoat(t), "serve", "--listen", "127.0.0.1:0", cfg)
	stderr := &testutil.SyncBuffer{}
	gw.Env, gw.Stderr = env, stderr
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- gw.Wait() }()
	t.Cleanup(func() {
		gw.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("gateway stderr:\n%s", stderr)
		}
	})
	var url string
	testutil.Eventually(t, "the gateway's HTTP address", func() bool {
		m := regexp.MustCompile(`http=(http://\S+/mcp)`).FindStringSubmatch(stderr.String())
		if m != nil {
			url = m[1]
		}
		return m != nil
	})

	const headerTraceID = "0af7651916cd43dd8448eb211c80319c"
	h := http.Header{}
	h.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	h.Set("traceparent", "00-"+headerTraceID+"-b7ad6b7169203331-01")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: headerTransport{h}}}, nil)
	if err != nil {
		t.Fatalf("connect to the gateway: %v", err)
	}
	fromHeader := upstreamMeta(t, callWithTrace(t, cs, "", "meta", nil))
	fromMeta := upstreamMeta(t, callWithTrace(t, cs, clientParent, "meta", nil))
	cs.Close()
	if tp, _ := fromHeader["traceparent"].(string); !strings.HasPrefix(tp, "00-"+headerTraceID+"-") {
		t.Errorf("with the header only, the upstream received traceparent %q, want one in the header's trace %s", tp, headerTraceID)
	}
	if tp, _ := fromMeta["traceparent"].(string); !strings.HasPrefix(tp, "00-"+clientTraceID+"-") {
		t.Errorf("with both, the upstream received traceparent %q, want one in the _meta's trace %s (the _meta wins)", tp, clientTraceID)
	}
	gw.Process.Signal(syscall.SIGTERM) // the gateway flushes its spans as it exits
	if err := <-exited; err != nil {
		t.Errorf("the gateway exited with %v", err)
	}
	exited <- nil // for the cleanup
	spans, _ := rcv.received()
	call := findSpan(spans, "tools/call call_dynamic_tool", func(s *tracepb.Span) bool { return hex.EncodeToString(s.TraceId) == headerTraceID })
	if call == nil || hex.EncodeToString(call.ParentSpanId) != "b7ad6b7169203331" || attr(call, "moat.identity.name") != "alice" {
		t.Errorf("the header's call span: %v; want it under the header's span, naming identity alice (spans: %s)", call, spanNames(spans))
	}
}

// TestHTTPUpstreamsGetTheTraceInHeaders: an HTTP upstream receives the
// call's trace context as the W3C traceparent and tracestate headers too,
// the same as in _meta: Moat's upstream span as parent with tracing on,
// the client's own context with tracing off; a call without one sends no
// header (seen failing without netguard's injection).
func TestHTTPUpstreamsGetTheTraceInHeaders(t *testing.T) {
	rcv := newOTLPReceiver(t)
	url := testutil.StartHTTPServer(t, testutil.BuildTestServer(t))
	srv := map[string]any{"description": "Go test server over HTTP", "url": url}
	for _, tt := range []struct {
		name string
		env  []string
	}{
		{"on", []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.srv.URL}},
		{"off", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testutil.WriteConfig(t, t.TempDir(), map[string]any{"test": srv})
			m := startMoatEnv(t, cfg, tracingEnv(t, tt.env...))
			meta := upstreamMeta(t, callWithTrace(t, m.cs, clientParent, "meta", nil))
			tp, _ := meta["traceparent"].(string)
			if !strings.HasPrefix(tp, "00-"+clientTraceID+"-") || meta["http.traceparent"] != tp || meta["http.tracestate"] != "vendor=opaque" {
				t.Errorf("the HTTP upstream received _meta traceparent %q and headers traceparent %v, tracestate %v; want the same trace context in both", tp, meta["http.traceparent"], meta["http.tracestate"])
			}
			if tt.name == "off" && tp != clientParent {
				t.Errorf("tracing off: the upstream received %q, want the client's %q", tp, clientParent)
			}
			if none := upstreamMeta(t, callWithTrace(t, m.cs, "", "meta", nil)); none["http.traceparent"] != nil && tt.name == "off" {
				t.Errorf("a call without trace context sent the header %v", none["http.traceparent"])
			}
		})
	}
}
