package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// serviceName is the service's name in traces and metrics, unless
// OTEL_SERVICE_NAME says otherwise.
const serviceName = "ordering"

// telemetry is the service's OpenTelemetry: the application, not esox,
// chooses the SDK and the exporters (docs/observability.md). Metrics go to
// a Prometheus registry served on GET /metrics; traces go where the
// standard environment says (see tracesExporter). setupTelemetry installs
// both providers and the W3C propagators as OpenTelemetry's globals, which
// every esox component and the HTTP instrumentation use by default.
type telemetry struct {
	// Metrics serves the Prometheus exposition of every metric: esox's,
	// the HTTP server's, the shipping consumer's, Go's runtime's.
	Metrics http.Handler
	// Traces names the trace exporter: "otlp", "console" or "none" ("test"
	// in tests).
	Traces   string
	tracer   *sdktrace.TracerProvider // nil when Traces is "none"
	meter    *sdkmetric.MeterProvider
	shutdown []func(context.Context) error
}

// spanExporterForTest, when set, receives the spans instead of the exporter
// the environment names (tests only).
var spanExporterForTest sdktrace.SpanExporter

// setupTelemetry builds the service's telemetry from the environment
// (getenv) and installs it as OpenTelemetry's globals; console traces are
// written to stdout. Call Shutdown when the service stops, to flush the
// last spans.
func setupTelemetry(ctx context.Context, getenv func(string) string, stdout io.Writer) (*telemetry, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(serviceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	t := &telemetry{}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Without the otel_scope_* labels on every series: esox names its
	// metrics uniquely, so the PromQL of docs/observability.md stays short.
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	t.meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	t.shutdown = append(t.shutdown, t.meter.Shutdown)
	t.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	var spans sdktrace.SpanExporter
	if t.Traces, err = tracesExporter(getenv); err != nil {
		return nil, err
	}
	switch t.Traces {
	case "otlp":
		// otlptracehttp reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT,
		// _HEADERS, _TIMEOUT, _COMPRESSION and the TLS settings itself.
		if spans, err = otlptracehttp.New(ctx); err != nil {
			return nil, fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
		}
	case "console":
		if spans, err = stdouttrace.New(stdouttrace.WithWriter(stdout)); err != nil {
			return nil, fmt.Errorf("telemetry: console trace exporter: %w", err)
		}
	}
	var processor sdktrace.SpanProcessor
	switch {
	case spanExporterForTest != nil:
		processor, t.Traces = sdktrace.NewSimpleSpanProcessor(spanExporterForTest), "test"
	case spans != nil:
		processor = sdktrace.NewBatchSpanProcessor(spans)
	}
	if processor != nil {
		// The sampler is the SDK's default, ParentBased(AlwaysSample),
		// unless OTEL_TRACES_SAMPLER (and _ARG) set another.
		t.tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(processor), sdktrace.WithResource(res))
		t.shutdown = append(t.shutdown, t.tracer.Shutdown)
		otel.SetTracerProvider(t.tracer)
	}
	otel.SetMeterProvider(t.meter)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return t, nil
}

// tracesExporter returns the trace exporter the standard environment
// variables name:
//
//   - OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none: none;
//   - OTEL_TRACES_EXPORTER=otlp: OTLP over HTTP (protobuf), to
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT,
//     by default http://localhost:4318;
//   - OTEL_TRACES_EXPORTER=console: JSON lines on stdout, for local runs;
//   - OTEL_TRACES_EXPORTER unset: OTLP when one of the endpoint variables
//     is set, none otherwise, so that a plain `make run` exports nothing.
//
// Another exporter, or OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL other than
// http/protobuf, is an error.
func tracesExporter(getenv func(string) string) (string, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return "none", nil
	}
	kind := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	if kind == "" {
		kind = "none"
		if getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
			kind = "otlp"
		}
	}
	switch kind {
	case "none", "console":
		return kind, nil
	case "otlp":
		protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if protocol == "" {
			protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		if protocol != "" && protocol != "http/protobuf" {
			return "", fmt.Errorf("telemetry: OTLP protocol %q is not supported: this service exports OTLP over http/protobuf", protocol)
		}
		return kind, nil
	}
	return "", fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q: want otlp, console or none", kind)
}

// Shutdown flushes the spans not yet exported and stops the providers;
// ctx bounds it.
func (t *telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// traceLogHandler adds trace_id and span_id to every record logged with a
// context that carries a valid span (the *Context logging methods), so
// logs and traces can be joined.
type traceLogHandler struct{ slog.Handler }

// withTraceIDs returns h adding the trace and span IDs of the record's
// context.
func withTraceIDs(h slog.Handler) slog.Handler { return traceLogHandler{h} }

func (h traceLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceLogHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceLogHandler) WithGroup(name string) slog.Handler {
	return traceLogHandler{h.Handler.WithGroup(name)}
}
