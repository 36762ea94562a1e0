package postgres

import (
	"context"
	"iter"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/testalloc"
)

// TestTelemetryNoProviderAddsNothing: with no provider installed (this
// test binary installs no global one), observing an append does nothing at
// all (telemetry.Gate): no span, so the context is the caller's, and no
// allocation — not even OpenTelemetry's no-op span, which allocates its
// context.
func TestTelemetryNoProviderAddsNothing(t *testing.T) {
	reg := eventstore.NewRegistry()
	type ev struct{ N int }
	eventstore.MustRegister[ev](reg, "ev")
	s := &Store{tel: newStoreTelemetry(Config{}.withDefaults())}
	events := []eventstore.Event{{Data: ev{1}}}
	ctx := context.Background()
	if got, op := s.startAppend(ctx, "order-1", eventstore.Any, events); got != ctx || op.t != nil {
		t.Fatal("an append with no provider installed is observed")
	}
	observed := testalloc.Least(100, func() {
		ctx, op := s.startAppend(ctx, "order-1", eventstore.Any, events)
		op.end(ctx, reg, eventstore.AppendResult{StreamID: "order-1"}, nil)
	})
	// Noise only adds to the count (see testalloc).
	if observed > 0 {
		t.Errorf("observing an append with no provider installed allocates %.0f times", observed)
	}
}

// TestReadStreamNoProviderNoSpan: with no provider installed, a ReadStream
// iteration reads with the caller's context (no span started); with a
// provider of the store's own, under a recording span of its own.
func TestReadStreamNoProviderNoSpan(t *testing.T) {
	ctx := context.Background()
	var readCtx context.Context
	read := func(ctx context.Context) iter.Seq2[eventstore.Record, error] {
		readCtx = ctx
		return func(func(eventstore.Record, error) bool) {}
	}
	s := &Store{tel: newStoreTelemetry(Config{}.withDefaults())}
	for range s.tracedReadStream(ctx, "order-1", 0, read) {
	}
	if readCtx != ctx {
		t.Error("a ReadStream with no provider installed read under a span")
	}
	rec := oteltest.New(t)
	cfg := Config{TracerProvider: rec.TracerProvider, MeterProvider: rec.MeterProvider}.withDefaults()
	s = &Store{tel: newStoreTelemetry(cfg)}
	for range s.tracedReadStream(ctx, "order-1", 0, read) {
	}
	if !trace.SpanFromContext(readCtx).SpanContext().IsValid() {
		t.Error("a ReadStream with a provider of its own read under no span")
	}
	rec.One(t, s.tel.readName)
}
