package tracing

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"
)

func TestReadSettings(t *testing.T) {
	for _, tt := range []struct {
		name     string
		env      map[string]string
		on       bool
		endpoint string
		err      string // a substring of the error; "" for none
	}{
		{name: "nothing set", env: nil},
		{name: "headers only", env: map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=b"}},
		{name: "general endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, on: true, endpoint: "http://collector:4318/v1/traces"},
		{name: "traces endpoint wins", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/x"}, on: true, endpoint: "https://b/x"},
		{name: "exporter otlp alone", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true, endpoint: DefaultEndpoint},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318"}},
		{name: "sdk disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318"}},
		{name: "other exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: "OTEL_TRACES_EXPORTER"},
		{name: "grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, err: "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"},
		{name: "grpc for traces", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, err: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf"},
		{name: "http/json", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, err: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "not a URL", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}, err: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is not a valid URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ReadSettings(func(k string) string { return tt.env[k] })
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.On != tt.on || (tt.on && (s.Endpoint != tt.endpoint || s.Protocol != "http/protobuf")) {
				t.Errorf("settings %+v, want on=%v endpoint %q over http/protobuf", s, tt.on, tt.endpoint)
			}
		})
	}
}

// TestSetupOffStartsNothing: with no OTEL_* variable Setup returns nil
// (every wrapper is then the identity) and starts no goroutine.
func TestSetupOffStartsNothing(t *testing.T) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	before := runtime.NumGoroutine()
	tr, err := Setup(context.Background(), "test", slog.New(slog.DiscardHandler))
	if err != nil || tr != nil {
		t.Fatalf("Setup = %v, %v; want nil, nil (off)", tr, err)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("tracing off started %d goroutines", n-before)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown of tracing off: %v", err)
	}
}
