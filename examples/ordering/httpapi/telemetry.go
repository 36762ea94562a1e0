package httpapi

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// instrument wraps serve in OpenTelemetry's HTTP server instrumentation
// (otelhttp): each request gets a server span named "<method> <route>" (a
// child of the caller's span when the request carries a W3C traceparent),
// which the handlers run under, so that the commands, the appends and the
// events' trace context follow from it; and the http.server.* metrics, by
// route and status code. GET /metrics and GET /healthz are neither traced
// nor measured.
func instrument(cfg Config, serve http.HandlerFunc) http.Handler {
	return otelhttp.NewHandler(serve, "ordering",
		otelhttp.WithTracerProvider(cfg.TracerProvider),
		otelhttp.WithMeterProvider(cfg.MeterProvider),
		otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})),
		otelhttp.WithFilter(func(r *http.Request) bool {
			return r.URL.Path != "/metrics" && r.URL.Path != "/healthz"
		}))
}

// noteRoute sets http.route on the request's server span once the router
// has matched r (otelhttp names the span after it, but leaves the attribute
// to the router).
func noteRoute(r *http.Request) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	if _, route, ok := strings.Cut(r.Pattern, " "); ok {
		span.SetAttributes(semconv.HTTPRoute(route))
	}
}
