package postgres

import (
	"context"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/testalloc"
)

// TestTelemetryNoProviderAddsNothing: with no provider installed (this
// test binary installs no global one), observing an append (span start,
// metrics, span end) allocates nothing beyond the start of OpenTelemetry's
// own no-op span: the metrics check Enabled and record nothing, no
// attribute is built.
func TestTelemetryNoProviderAddsNothing(t *testing.T) {
	reg := eventstore.NewRegistry()
	type ev struct{ N int }
	eventstore.MustRegister[ev](reg, "ev")
	s := &Store{tel: newStoreTelemetry(Config{}.withDefaults())}
	events := []eventstore.Event{{Data: ev{1}}}
	ctx := context.Background()
	observed := testalloc.Least(100, func() {
		ctx, op := s.startAppend(ctx, "order-1", eventstore.Any, events)
		op.end(ctx, reg, eventstore.AppendResult{StreamID: "order-1"}, nil)
	})
	noopSpan := testalloc.Least(100, func() {
		_, span := s.tel.tracer.Start(ctx, s.tel.appendName, clientSpan...)
		span.End()
	})
	// Noise only adds to either count (see testalloc).
	if observed > noopSpan {
		t.Errorf("an observed append allocates %.0f times, OpenTelemetry's no-op span %.0f", observed, noopSpan)
	}
}
