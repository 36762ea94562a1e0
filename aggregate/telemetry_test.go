package aggregate_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/telemetry"
)

// TestTracing: Create, Load and Update each make a span named after the
// operation and the category, a child of the caller's; Update's loads are
// its children, a retried conflict is an event on it, and the events a
// command appends record its span (the memory store has no span of its
// own); a failed load is marked as an error.
func TestTracing(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	b := setup(t, aggregate.Config{TracerProvider: rec.TracerProvider})
	ctx, request := rec.TracerProvider.Tracer("test").Start(context.Background(), "request")

	if _, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatal(err)
	}
	conflicted := false
	if _, err := b.repo.Update(ctx, "o1", func(o *Order) error {
		if !conflicted {
			// Another writer slips in between this attempt's load and save.
			conflicted = true
			if _, err := b.store.Append(context.Background(), "order-o1", eventstore.Exact(1), []eventstore.Event{{Data: ItemAdded{SKU: "pear", Qty: 1}}}); err != nil {
				return err
			}
		}
		return o.AddItem("apple", 2)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.repo.Load(ctx, "missing"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("Load of a missing aggregate: %v", err)
	}
	request.End()

	create := rec.One(t, "create order")
	update := rec.One(t, "update order")
	for _, s := range []string{"create order", "update order"} {
		if sp := rec.One(t, s); !oteltest.ChildOf(sp, request.SpanContext()) {
			t.Errorf("%s span is not a child of the request span", s)
		}
	}
	if v, _ := oteltest.Attr(update, telemetry.KeyStreamVersion); v.AsInt64() != 3 {
		t.Errorf("update span's version %d, want 3", v.AsInt64())
	}
	if len(update.Events) != 1 || update.Events[0].Name != "retry after concurrency conflict" {
		t.Errorf("update span events %v, want one retry", update.Events)
	}
	loads := rec.Named("load order")
	var underUpdate, missing int
	for _, l := range loads {
		switch {
		case oteltest.ChildOf(l, update.SpanContext):
			underUpdate++
		case l.Status.Code == codes.Error:
			if v, _ := oteltest.Attr(l, "error.type"); v.AsString() == "not_found" {
				missing++
			}
		}
	}
	if underUpdate != 2 || missing != 1 {
		t.Errorf("load spans: %d under the update (want 2, one per attempt), %d failed not_found (want 1)", underUpdate, missing)
	}
	// 1: created, 2: the other writer's (no span), 3: the update's.
	want := map[int64]trace.SpanID{1: create.SpanContext.SpanID(), 3: update.SpanContext.SpanID()}
	for r, err := range b.store.ReadStream(context.Background(), "order-o1", 1) {
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Metadata.SpanContext().SpanID(); got != want[r.StreamVersion] {
			t.Errorf("event %d records span %v, want %v", r.StreamVersion, got, want[r.StreamVersion])
		}
	}
}
