package projector_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/telemetry"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// TestTelemetry: with an SDK installed, each projection batch is a span
// linked to the spans that appended its events (once each), the handler
// runs under it, and the metrics report exactly the work done: events moved
// past, batches, parked events, leadership; and, from the workers' memory,
// lag 0 and state running for a projection that caught up, a growing lag
// and state stopped_with_error for one whose handler fails.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := newRegistry()
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema, Logger: testLogger(t), TracerProvider: rec.TracerProvider, MeterProvider: rec.MeterProvider})
	b := &bundle{db: db, schema: schema, reg: reg, store: store}

	// Two requests append: one 3 events at once, the other 1.
	tracer := rec.TracerProvider.Tracer("test")
	var last eventstore.AppendResult
	for _, n := range []int{3, 1} {
		ctx, span := tracer.Start(context.Background(), "request")
		evs := make([]eventstore.Event, n)
		for i := range evs {
			evs[i] = eventstore.Event{Data: Deposited{Account: "a1", Amount: 1}}
		}
		var err error
		if last, err = store.Append(ctx, "account-a1", eventstore.Any, evs); err != nil {
			t.Fatal(err)
		}
		span.End()
	}
	appends := rec.Named("append " + schema + ".events")
	if len(appends) != 2 {
		t.Fatalf("%d append spans, want 2", len(appends))
	}

	var handled []trace.SpanContext
	bal := b.balances("balances", "balances")
	inner := bal.Handler
	bal.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		handled = append(handled, trace.SpanContextFromContext(ctx))
		return inner.Handle(ctx, tx, recs)
	}, inner.EventTypes()...)
	broken := projector.Projection{Name: "broken", Handler: projector.Batch(func(context.Context, postgres.Tx, []eventstore.Record) error {
		return errors.New("boom")
	})}
	parking := projector.Projection{Name: "parking", DeadLetter: true, Handler: projector.Batch(func(context.Context, postgres.Tx, []eventstore.Record) error {
		return errors.New("cannot apply")
	})}
	cfg := fastConfig(t)
	cfg.MaxRetries, cfg.TracerProvider, cfg.MeterProvider = 1, rec.TracerProvider, rec.MeterProvider
	r, err := projector.NewRunner(store, cfg, bal, broken, parking)
	if err != nil {
		t.Fatal(err)
	}
	rr := start(t, r)
	waitFor(t, r, "balances", last.LastPosition)
	waitFor(t, r, "parking", last.LastPosition)

	proj := func(name string) []attribute.KeyValue {
		return []attribute.KeyValue{telemetry.KeyProjection.String(name), telemetry.KeyProjectionVersion.Int(1)}
	}
	with := func(name string, kv ...attribute.KeyValue) []attribute.KeyValue { return append(proj(name), kv...) }
	gauge := func(name, projection string, kv ...attribute.KeyValue) float64 {
		v, _ := rec.Lookup(t, name, with(projection, kv...)...)
		return v
	}
	state := func(projection string, s projector.State) float64 {
		return gauge("esox.projection.state", projection, telemetry.KeyProjectionState.String(string(s)))
	}
	// The gauges come from the workers' next reads.
	testwait.Until(t, "balances caught up in the gauges", func() bool {
		return gauge("esox.projection.position", "balances") == float64(last.LastPosition.Position) &&
			gauge("esox.projection.backlog", "balances") == 0 && state("balances", projector.StateRunning) == 1
	})
	if v := gauge("esox.projection.lag", "balances"); v != 0 {
		t.Errorf("balances lag %v s after catching up, want 0", v)
	}
	testwait.Until(t, "broken stopped with a growing lag in the gauges", func() bool {
		return state("broken", projector.StateStoppedWithError) == 1 && state("broken", projector.StateRunning) == 0 &&
			gauge("esox.projection.lag", "broken") > 0 && gauge("esox.projection.backlog", "broken") >= 1
	})
	for _, p := range []string{"balances", "broken", "parking"} {
		if v := gauge("esox.projection.leader", p); v != 1 {
			t.Errorf("%s leader gauge %v, want 1", p, v)
		}
		if v := rec.Value(t, "esox.leader.changes", append(proj(p), telemetry.KeyLeaderJob.String("projection"), telemetry.KeyLeaderChange.String("acquired"))...); v != 1 {
			t.Errorf("%s leadership acquired %v times, want 1", p, v)
		}
	}
	rr.stop(t)

	// Batch spans: balances applied the 4 events in one or more batches;
	// together they link to both appends, each batch to each at most once.
	var batches, linked int
	linkedTo := map[trace.SpanID]bool{}
	for _, s := range rec.Named("project balances") {
		batches++
		seen := map[trace.SpanID]bool{}
		for _, l := range s.Links {
			if seen[l.SpanContext.SpanID()] {
				t.Errorf("batch span links twice to %v", l.SpanContext.SpanID())
			}
			seen[l.SpanContext.SpanID()] = true
			linkedTo[l.SpanContext.SpanID()] = true
			linked++
		}
		if s.SpanKind != trace.SpanKindConsumer || s.Parent.IsValid() {
			t.Errorf("batch span kind %v parent %v, want a consumer root span", s.SpanKind, s.Parent)
		}
	}
	for _, a := range appends {
		if !linkedTo[a.SpanContext.SpanID()] {
			t.Errorf("no batch span links to append span %v", a.SpanContext.SpanID())
		}
	}
	if len(linkedTo) != 2 {
		t.Errorf("batch spans link to %d spans, want the 2 appends", len(linkedTo))
	}
	batchIDs := map[trace.SpanID]bool{}
	for _, s := range rec.Named("project balances") {
		batchIDs[s.SpanContext.SpanID()] = true
	}
	for _, sc := range handled {
		if !batchIDs[sc.SpanID()] {
			t.Errorf("the handler ran under span %v, not a batch span", sc.SpanID())
		}
	}
	if len(rec.Named("acquire leadership")) != 3 || len(rec.Named("release leadership")) != 3 {
		t.Errorf("%d acquire and %d release leadership spans, want 3 each", len(rec.Named("acquire leadership")), len(rec.Named("release leadership")))
	}

	ok := telemetry.KeyOutcome.String(telemetry.OutcomeOK)
	for _, c := range []struct {
		name  string
		attrs []attribute.KeyValue
		want  float64
	}{
		{"esox.projection.events", proj("balances"), 4},
		{"esox.projection.events", proj("parking"), 4},
		{"esox.projection.dead_letters", proj("parking"), 4},
		{"esox.projection.batch.duration", with("balances", ok), float64(batches)},
		// broken: the first try and one retry failed.
		{"esox.projection.batch.duration", with("broken", telemetry.KeyOutcome.String(telemetry.OutcomeError)), 2},
	} {
		if got := rec.Value(t, c.name, c.attrs...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.attrs, got, c.want)
		}
	}
	if _, found := rec.Lookup(t, "esox.projection.events", proj("broken")...); found {
		t.Errorf("esox.projection.events counts events for broken, which applied none")
	}
}

// TestInboxTelemetry: each message an inbox handler takes gets a span that
// continues the trace its metadata records (or, when the message's context
// has a span, is that span's child and links to the recorded one), the
// projection handler runs under it, and the counters count applied and
// duplicate messages exactly.
func TestInboxTelemetry(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	db := pgtest.Open(t)
	b := &bundle{db: db, schema: pgtest.Schema(t, db), reg: newRegistry()}
	in := newInbox(t, b, projector.InboxConfig{Consumer: "traced", TracerProvider: rec.TracerProvider, MeterProvider: rec.MeterProvider})
	var under []trace.SpanContext
	h := projector.On(projector.NewHandlers(b.reg), func(ctx context.Context, _ postgres.Tx, _ eventstore.Record, _ Deposited) error {
		under = append(under, trace.SpanContextFromContext(ctx))
		return nil
	})
	handler, err := in.Handler(h)
	if err != nil {
		t.Fatal(err)
	}
	tracer := rec.TracerProvider.Tracer("test")
	_, published := tracer.Start(context.Background(), "publish")
	published.End()

	// A message carrying the publish span's trace context, delivered twice.
	first := eventMessage(t, uuid.New(), "deposited", Deposited{Account: "a", Amount: 1}, "account-a", 1, eventstore.Position{TransactionID: 1, Position: 1})
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), published.SpanContext()), propagation.MapCarrier(first.Metadata))
	for range 2 {
		msg := first.Copy()
		if err := handler(msg); err != nil {
			t.Fatal(err)
		}
	}
	// One whose context has a consumer's span already.
	second := eventMessage(t, uuid.New(), "deposited", Deposited{Account: "a", Amount: 2}, "account-a", 2, eventstore.Position{TransactionID: 1, Position: 2})
	propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), published.SpanContext()), propagation.MapCarrier(second.Metadata))
	cctx, consumer := tracer.Start(context.Background(), "consume")
	second.SetContext(cctx)
	if err := handler(second); err != nil {
		t.Fatal(err)
	}
	consumer.End()
	if second.Context() != cctx {
		t.Errorf("the handler left its span's context on the message")
	}

	spans := rec.Named("process traced")
	if len(spans) != 3 {
		t.Fatalf("%d inbox spans, want 3; spans: %s", len(spans), oteltest.Names(rec.Ended()))
	}
	for i, s := range spans[:2] {
		if !oteltest.ChildOf(s, published.SpanContext()) || s.SpanKind != trace.SpanKindConsumer {
			t.Errorf("delivery %d: span parent %v kind %v, want a consumer child of the publish span", i+1, s.Parent, s.SpanKind)
		}
		if v, _ := oteltest.Attr(s, "messaging.message.id"); v.AsString() != first.UUID {
			t.Errorf("delivery %d: messaging.message.id %q", i+1, v.AsString())
		}
	}
	if v, _ := oteltest.Attr(spans[1], telemetry.KeyDuplicate); !v.AsBool() {
		t.Errorf("the second delivery's span is not marked a duplicate")
	}
	if !oteltest.ChildOf(spans[2], consumer.SpanContext()) || !oteltest.LinksTo(spans[2], published.SpanContext()) {
		t.Errorf("a message with a consumer span: inbox span parent %v links %v, want the consumer's child linked to the publish span", spans[2].Parent, spans[2].Links)
	}
	if len(under) != 2 || under[0].SpanID() != spans[0].SpanContext.SpanID() || under[1].SpanID() != spans[2].SpanContext.SpanID() {
		t.Errorf("the projection handler ran under %v, want the inbox spans of the applied messages", under)
	}
	consumerAttr := telemetry.KeyInboxConsumer.String("traced")
	if got := rec.Value(t, "esox.inbox.applied", consumerAttr); got != 2 {
		t.Errorf("esox.inbox.applied = %v, want 2", got)
	}
	if got := rec.Value(t, "esox.inbox.duplicates", consumerAttr); got != 1 {
		t.Errorf("esox.inbox.duplicates = %v, want 1", got)
	}
}

// TestPartitionTelemetry: a projection of several partitions reports its
// gauges and leadership changes per partition (esox.projection.partition),
// one series each, instead of one series the partitions overwrite.
func TestPartitionTelemetry(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	b := setup(t)
	last := b.appendDeposits(t, 40, 8, 1)
	p := b.balances("balances", "balances")
	p.Partitions = 2
	cfg := fastConfig(t)
	cfg.TracerProvider, cfg.MeterProvider = rec.TracerProvider, rec.MeterProvider
	r, err := projector.NewRunner(b.store, cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	waitFor(t, r, "balances", last.LastPosition)
	attrs := func(part int, kv ...attribute.KeyValue) []attribute.KeyValue {
		return append([]attribute.KeyValue{telemetry.KeyProjection.String("balances"), telemetry.KeyProjectionVersion.Int(1),
			telemetry.KeyProjectionPartition.Int(part)}, kv...)
	}
	for part := range 2 {
		testwait.Until(t, fmt.Sprintf("partition %d at the end in the gauges", part), func() bool {
			v, _ := rec.Lookup(t, "esox.projection.position", attrs(part)...)
			return v == float64(last.LastPosition.Position)
		})
		if v := rec.Value(t, "esox.projection.leader", attrs(part)...); v != 1 {
			t.Errorf("partition %d leader gauge %v, want 1", part, v)
		}
		if v := rec.Value(t, "esox.leader.changes", attrs(part, telemetry.KeyLeaderJob.String("projection"), telemetry.KeyLeaderChange.String("acquired"))...); v != 1 {
			t.Errorf("partition %d leadership acquired %v times, want 1", part, v)
		}
	}
}
