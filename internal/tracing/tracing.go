// Package tracing exports OpenTelemetry spans of the calls Moat proxies, so
// an operator can see in their own tracing backend which guard layer
// refused a call and how long an upstream took, in the trace of the client
// that asked. It is off unless the standard OTEL_* variables configure an
// OTLP/HTTP exporter (Setup); off, it starts nothing and its wrappers
// return what they wrap.
//
// What a span may say is narrow by design: the group, tool or prompt name,
// the call's kind and outcome, the gateway identity's name, and a refusing
// layer and rule. Never an argument value, a resource URI, a secret, an
// upstream's error text or a result: a tracing backend is read by more
// people than the audit log.
//
// Trace context crosses Moat whether or not tracing is on: a client's valid
// W3C traceparent (from the request's _meta, else the gateway's HTTP
// headers) is the parent of Moat's spans, and the upstream receives the
// trace in its request's _meta (with tracing off, the client's own
// traceparent unchanged), so Moat is not a hole in a trace that other
// services record.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// A Tracer makes Moat's spans and exports them. A nil *Tracer is tracing
// off: every method is then free and returns what it wraps.
type Tracer struct {
	tp *sdktrace.TracerProvider
	tr trace.Tracer
}

// Settings are the exporter settings the OTEL_* variables select, as Setup
// and moat doctor read them.
type Settings struct {
	On       bool
	Endpoint string // the traces URL the exporter posts to
	Protocol string // "http/protobuf"
	// Variable names where Endpoint came from (for messages).
	EndpointVar string
}

// DefaultEndpoint is the OTLP/HTTP traces URL when OTEL_TRACES_EXPORTER=otlp
// names no endpoint (the OTLP specification's default).
const DefaultEndpoint = "http://localhost:4318/v1/traces"

// ReadSettings reads the OTEL_* variables that decide whether spans are
// exported and where. An error names the variable and its fix.
func ReadSettings(getenv func(string) string) (Settings, error) {
	var s Settings
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return s, nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return s, nil
	case "", "otlp":
		s.On = exp == "otlp"
	default:
		return s, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: Moat exports traces with OTLP only; set it to otlp or none, or unset it", exp)
	}
	if v := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
		s.Endpoint, s.EndpointVar = v, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	} else if v := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		// The general endpoint is a base: the traces path is added to it.
		s.Endpoint, s.EndpointVar = strings.TrimSuffix(v, "/")+"/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT"
	}
	if s.Endpoint == "" && !s.On {
		return s, nil
	}
	s.On = true
	if s.Endpoint == "" {
		s.Endpoint, s.EndpointVar = DefaultEndpoint, "OTEL_TRACES_EXPORTER"
	}
	protoVar := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	s.Protocol = getenv(protoVar)
	if s.Protocol == "" {
		protoVar = "OTEL_EXPORTER_OTLP_PROTOCOL"
		s.Protocol = getenv(protoVar)
	}
	switch s.Protocol {
	case "", "http/protobuf":
		s.Protocol = "http/protobuf"
	case "grpc":
		return s, fmt.Errorf("%s=grpc is not supported: Moat exports OTLP over HTTP only; set %s=http/protobuf and point %s at the collector's OTLP/HTTP port (usually 4318)", protoVar, protoVar, s.EndpointVar)
	default:
		return s, fmt.Errorf("%s=%q is not supported: set it to http/protobuf", protoVar, s.Protocol)
	}
	u, err := url.Parse(s.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return s, fmt.Errorf("%s is not a valid URL: want http(s)://host:port[/path], e.g. http://localhost:4318", s.EndpointVar)
	}
	return s, nil
}

// Setup starts the exporter the OTEL_* variables configure, or returns nil
// (tracing off, nothing started) when none does. On error tracing is off
// too: the caller logs it and serves without traces. Shutdown the result.
func Setup(ctx context.Context, version string, log *slog.Logger) (*Tracer, error) {
	s, err := ReadSettings(os.Getenv)
	if err != nil || !s.On {
		return nil, err
	}
	// The exporter reads the endpoint, headers, TLS files and timeout from
	// the same variables; the endpoint is given explicitly so that the one
	// ReadSettings checked is the one used.
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(s.Endpoint))
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter (%s): %w", s.EndpointVar, err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "moat"), attribute.String("service.version", version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
	)
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES or OTEL_SERVICE_NAME: %w", err)
	}
	// The SDK's own errors (a failed export) go to Moat's log, by kind
	// only: they can quote a collector's response.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("exporting traces failed; check the collector at the OTLP endpoint", "endpoint_var", s.EndpointVar, "err", err)
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	u, _ := url.Parse(s.Endpoint) // ReadSettings checked it
	log.Info("exporting traces", "endpoint", u.Redacted(), "protocol", s.Protocol)
	return &Tracer{tp: tp, tr: tp.Tracer("github.com/moatmcp/moat")}, nil
}

// ShutdownTimeout bounds the flush of the spans not yet exported at exit.
const ShutdownTimeout = 5 * time.Second

// Shutdown exports the spans not yet sent, waiting at most ShutdownTimeout,
// and stops the exporter.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ShutdownTimeout)
	defer cancel()
	if err := t.tp.Shutdown(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("traces not exported within %s at exit; check the collector", ShutdownTimeout)
		}
		return err
	}
	return nil
}

// fail marks span failed with a description that holds no value: only
// the kind of failure Moat itself names.
func fail(span trace.Span, outcome string) {
	span.SetAttributes(attribute.String(attrErrorType, outcome))
	span.SetStatus(codes.Error, outcome)
}
