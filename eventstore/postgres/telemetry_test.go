package postgres_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/telemetry"
)

// TestTelemetry: with an SDK installed, every append (Append, AppendTx,
// and an AppendTx made by an append hook) gets a span, a child of the
// caller's, whose trace context its events record; a ReadStream gets one
// too; and the append metrics count exactly the work done, by category,
// type and outcome.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	cfg := postgres.Config{TracerProvider: rec.TracerProvider, MeterProvider: rec.MeterProvider}
	b := setup(t, cfg)
	ctx := testCtx(t)
	// A second store on the same tables, without hooks, appends from the
	// first one's hook: the appends esox's hand-written metrics missed.
	cfg.Schema = b.schema
	inner, err := postgres.New(b.db, testRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AppendHooks = []postgres.AppendHook{func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		_, err := inner.AppendTx(ctx, tx, "audit-"+recs[0].StreamID, eventstore.Any, []eventstore.Event{placed("audit", 0)})
		return err
	}}
	hooked, err := postgres.New(b.db, testRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}

	ctx, request := rec.TracerProvider.Tracer("test").Start(ctx, "request")
	first, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("o1", 10), items(1)[0]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Append(ctx, "order-1", eventstore.Exact(2), items(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Append(ctx, "order-1", eventstore.NoStream, items(1)); !errors.Is(err, eventstore.ErrConcurrencyConflict) {
		t.Fatalf("append to an existing stream with NoStream: %v, want a conflict", err)
	}
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.AppendTx(ctx, tx, "cart-1", eventstore.NoStream, items(1)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := hooked.Append(ctx, "cart-2", eventstore.NoStream, items(1)); err != nil {
		t.Fatal(err)
	}
	var read []eventstore.Record
	for r, err := range b.store.ReadStream(ctx, "order-1", 1) {
		if err != nil {
			t.Fatal(err)
		}
		read = append(read, r)
	}
	request.End()

	// Spans: 3 Appends and an AppendTx of the test, the hooked Append and
	// its hook's AppendTx; one ReadStream.
	appendName := "append " + b.schema + ".events"
	spans := rec.Named(appendName)
	if len(spans) != 6 {
		t.Fatalf("%d append spans, want 6; spans: %s", len(spans), oteltest.Names(rec.Ended()))
	}
	byStream := map[string][]int{}
	for i, s := range spans {
		v, _ := oteltest.Attr(s, telemetry.KeyStreamID)
		byStream[v.AsString()] = append(byStream[v.AsString()], i)
		if s.SpanKind != trace.SpanKindClient {
			t.Errorf("append span kind %v, want client", s.SpanKind)
		}
		for key, want := range map[attribute.Key]string{"db.system.name": "postgresql", "db.operation.name": "append", "db.collection.name": b.schema + ".events"} {
			if v, _ := oteltest.Attr(s, key); v.AsString() != want {
				t.Errorf("append span %s = %q, want %q", key, v.AsString(), want)
			}
		}
	}
	orderSpans := byStream["order-1"]
	if len(orderSpans) != 3 {
		t.Fatalf("%d append spans of order-1, want 3", len(orderSpans))
	}
	for _, i := range orderSpans {
		if !oteltest.ChildOf(spans[i], request.SpanContext()) {
			t.Errorf("append span of order-1 is not a child of the request span")
		}
	}
	firstSpan := spans[orderSpans[0]]
	if v, _ := oteltest.Attr(firstSpan, telemetry.KeyEventCount); v.AsInt64() != 2 {
		t.Errorf("first append's %s = %d, want 2", telemetry.KeyEventCount, v.AsInt64())
	}
	if v, _ := oteltest.Attr(firstSpan, telemetry.KeyExpectedVersion); v.AsString() != eventstore.NoStream.String() {
		t.Errorf("first append's %s = %q", telemetry.KeyExpectedVersion, v.AsString())
	}
	conflict := spans[orderSpans[2]]
	if v, _ := oteltest.Attr(conflict, telemetry.KeyConflict); !v.AsBool() || conflict.Status.Code != codes.Error {
		t.Errorf("conflicting append's span: conflict %v, status %v; want true and Error", v.AsBool(), conflict.Status)
	}
	hookSpan, outer := spans[byStream["audit-cart-2"][0]], spans[byStream["cart-2"][0]]
	if !oteltest.ChildOf(hookSpan, outer.SpanContext) {
		t.Errorf("the hook's AppendTx span is not a child of the append that ran the hook")
	}

	// The events record the span that appended them.
	for _, r := range read {
		want := firstSpan.SpanContext
		if r.StreamVersion == 3 {
			want = spans[orderSpans[1]].SpanContext
		}
		if got := r.Metadata.SpanContext(); got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() {
			t.Errorf("event %d records span %v, want the append's %v", r.StreamVersion, got, want)
		}
	}
	if len(read) != 3 || read[0].ID != first.EventIDs[0] {
		t.Fatalf("read back %d events", len(read))
	}
	readSpan := rec.One(t, "read_stream "+b.schema+".events")
	if v, _ := oteltest.Attr(readSpan, "db.response.returned_rows"); v.AsInt64() != 3 || !oteltest.ChildOf(readSpan, request.SpanContext()) {
		t.Errorf("read_stream span: %d rows, parent %v", v.AsInt64(), readSpan.Parent)
	}

	// Metrics.
	cat := telemetry.KeyStreamCategory.String
	typ := telemetry.KeyEventType.String
	out := telemetry.KeyOutcome.String
	for _, c := range []struct {
		name  string
		attrs []attribute.KeyValue
		want  float64
	}{
		{"esox.append.events", []attribute.KeyValue{cat("order"), typ("order_placed")}, 1},
		{"esox.append.events", []attribute.KeyValue{cat("order"), typ("item_added")}, 2},
		{"esox.append.events", []attribute.KeyValue{cat("cart"), typ("item_added")}, 2},
		{"esox.append.events", []attribute.KeyValue{cat("audit"), typ("order_placed")}, 1},
		{"esox.append.conflicts", []attribute.KeyValue{cat("order")}, 1},
		{"esox.append.duration", []attribute.KeyValue{cat("order"), out("ok")}, 2},
		{"esox.append.duration", []attribute.KeyValue{cat("order"), out("conflict")}, 1},
		{"esox.append.duration", []attribute.KeyValue{cat("cart"), out("ok")}, 2},
		{"esox.append.duration", []attribute.KeyValue{cat("audit"), out("ok")}, 1},
	} {
		if got := rec.Value(t, c.name, c.attrs...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.attrs, got, c.want)
		}
	}
	if _, ok := rec.Lookup(t, "esox.append.conflicts", cat("cart")); ok {
		t.Errorf("esox.append.conflicts has a cart series without any conflict")
	}
}

// TestNoProviderNoSpans: with no provider installed (this test binary
// installs no global one), an append runs under no recording span and its
// events record no trace context; the store's hooks see a context without a
// valid span.
func TestNoProviderNoSpans(t *testing.T) {
	t.Parallel()
	var seen trace.SpanContext
	var recording bool
	hook := func(ctx context.Context, _ postgres.Tx, _ []eventstore.Record) error {
		seen, recording = trace.SpanContextFromContext(ctx), trace.SpanFromContext(ctx).IsRecording()
		return nil
	}
	b := setup(t, postgres.Config{AppendHooks: []postgres.AppendHook{hook}})
	ctx := testCtx(t)
	if _, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("o1", 1)}); err != nil {
		t.Fatal(err)
	}
	if seen.IsValid() || recording {
		t.Errorf("append without a provider ran under span %v (recording %v)", seen, recording)
	}
	var metadata string
	if err := b.db.GetContext(ctx, &metadata, `SELECT metadata::text FROM "`+b.schema+`".events`); err != nil {
		t.Fatal(err)
	}
	if metadata != "{}" {
		t.Errorf("stored metadata %s, want {}", metadata)
	}
}

// TestNoProviderKeepsCallersTraceContext: with no provider installed (this
// test binary installs no global one), an append whose context carries a
// span context propagated from elsewhere records that span context in its
// events, through Append and AppendTx alike: skipping the store's own span
// (telemetry.Gate) does not drop the caller's trace.
func TestNoProviderKeepsCallersTraceContext(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	ctx := trace.ContextWithRemoteSpanContext(testCtx(t), sc)
	if _, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("o1", 1)}); err != nil {
		t.Fatal(err)
	}
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := b.store.AppendTx(ctx, tx, "order-2", eventstore.NoStream, []eventstore.Event{placed("o2", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{"order-1", "order-2"} {
		recs := b.readStream(t, stream, 0)
		if len(recs) != 1 {
			t.Fatalf("%s: %d events, want 1", stream, len(recs))
		}
		if got := recs[0].Metadata.SpanContext(); !got.Equal(sc) {
			t.Errorf("%s: the event records span context %v, want the caller's %v", stream, got, sc)
		}
	}
}
