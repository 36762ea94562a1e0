package aggregate

import (
	"context"
	"testing"

	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/telemetry"
)

// TestNoProviderNoSpan: with no provider installed (this test binary
// installs no global one), a Repository operation starts no span, not even
// OpenTelemetry's no-op one: the context it runs under is the caller's.
// Given a provider of its own, it starts a recording span.
func TestNoProviderNoSpan(t *testing.T) {
	ctx := context.Background()
	r := &Repository[*counter]{category: "counter", names: newSpanNames("counter"), tracer: telemetry.Tracer(nil, Scope), gate: telemetry.NewTracerGate(nil)}
	if got, op := r.startOp(ctx, r.names.load, "c1"); got != ctx || op.span != nil {
		t.Fatal("an operation with no provider installed started a span")
	}
	rec := oteltest.New(t)
	r.tracer, r.gate = telemetry.Tracer(rec.TracerProvider, Scope), telemetry.NewTracerGate(rec.TracerProvider)
	_, op := r.startOp(ctx, r.names.load, "c1")
	if op.span == nil || !op.span.IsRecording() {
		t.Fatal("an operation with a provider of its own started no recording span")
	}
	op.end(0, nil)
	rec.One(t, "load counter")
}
