package postgres

import (
	"context"
	"testing"

	"github.com/esox-go/esox/eventstore"
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
