package forwarder

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/oteltest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/telemetry"
	"github.com/esox-go/esox/internal/testwait"
)

// TestTelemetry: with an SDK installed, each publish (and dead letter) is a
// producer span, a child of the span that appended the event; the message
// carries the publish span's trace context to the broker; and the metrics
// count exactly what was published, retried and poisoned, with lag and
// backlog 0 and the offset's position once the group has caught up.
func TestTelemetry(t *testing.T) {
	t.Parallel()
	rec := oteltest.New(t)
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	store := esoxtest.Store(t, db, testRegistry(), postgres.Config{Schema: schema, Logger: testLogger(t), TracerProvider: rec.TracerProvider, MeterProvider: rec.MeterProvider})
	b := &bundle{db: db, schema: schema, store: store}

	ctx, request := rec.TracerProvider.Tracer("test").Start(testCtx(t), "request")
	var (
		last eventstore.AppendResult
		err  error
	)
	for _, a := range []struct {
		stream string
		n      int
	}{{"order-1", 2}, {"bad-1", 1}, {"order-2", 1}} {
		evs := make([]eventstore.Event, a.n)
		for i := range evs {
			evs[i] = eventstore.Event{Data: itemAdded{N: i}}
		}
		if last, err = store.Append(ctx, a.stream, eventstore.NoStream, evs); err != nil {
			t.Fatal(err)
		}
	}
	request.End()
	appendSpan := map[string]trace.SpanContext{} // by stream
	for _, s := range rec.Named("append " + schema + ".events") {
		v, _ := oteltest.Attr(s, telemetry.KeyStreamID)
		appendSpan[v.AsString()] = s.SpanContext
	}

	var mu sync.Mutex
	failed := map[string]bool{}
	pub := &recordingPublisher{before: func(_ string, msg *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if !failed[msg.UUID] { // every message fails once
			failed[msg.UUID] = true
			return errors.New("broker hiccup")
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{
		OnPoison: PoisonDeadLetter, DeadLetterTopic: "dead", RetryInterval: time.Millisecond, RetryMaxInterval: 2 * time.Millisecond,
		Topic: func(rec eventstore.Record) (string, error) {
			if eventstore.Category(rec.StreamID) == "bad" {
				return "", errors.New("unroutable")
			}
			return TopicByCategory(rec)
		},
		TracerProvider: rec.TracerProvider, MeterProvider: rec.MeterProvider,
	})
	stop, _, _ := runForwarder(t, f)
	testwait.Until(t, "every event", func() bool { return pub.len() == 4 })

	group := telemetry.KeyConsumerGroup.String(ConsumerGroupDefault)
	gauge := func(name string) float64 {
		v, _ := rec.Lookup(t, name, group)
		return v
	}
	testwait.Until(t, "the gauges to show the group caught up", func() bool {
		return gauge("esox.forwarder.position") == float64(last.LastPosition.Position) && gauge("esox.forwarder.backlog") == 0
	})
	if v := gauge("esox.forwarder.lag"); v != 0 {
		t.Errorf("esox.forwarder.lag = %v s after catching up, want 0", v)
	}
	for name, want := range map[string]float64{
		"esox.forwarder.published": 3, "esox.forwarder.retries": 4, "esox.forwarder.poison": 1, "esox.forwarder.filtered": 0, "esox.forwarder.leader": 1,
	} {
		if got := rec.Value(t, name, group); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	acquired := []attribute.KeyValue{group, telemetry.KeyLeaderJob.String("forwarder"), telemetry.KeyLeaderChange.String(telemetry.LeaderAcquired)}
	if got := rec.Value(t, "esox.leader.changes", acquired...); got != 1 {
		t.Errorf("leadership acquired %v times, want 1", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	publishes := append(rec.Named("publish order"), rec.Named("publish dead")...)
	if len(publishes) != 4 {
		t.Fatalf("%d publish spans, want 4; spans: %s", len(publishes), oteltest.Names(rec.Ended()))
	}
	delivered := map[string]delivery{}
	for _, d := range pub.all() {
		delivered[d.UUID] = d
	}
	for _, s := range publishes {
		id, _ := oteltest.Attr(s, "messaging.message.id")
		stream, _ := oteltest.Attr(s, telemetry.KeyStreamID)
		if !oteltest.ChildOf(s, appendSpan[stream.AsString()]) || s.SpanKind != trace.SpanKindProducer {
			t.Errorf("publish span of %s: parent %v kind %v, want a producer child of its append span %v", stream.AsString(), s.Parent, s.SpanKind, appendSpan[stream.AsString()])
		}
		d, ok := delivered[id.AsString()]
		if !ok {
			t.Fatalf("publish span for message %s, which was not delivered", id.AsString())
		}
		if got := eventstore.SpanContextFromMap(d.Metadata); got.SpanID() != s.SpanContext.SpanID() || got.TraceID() != s.SpanContext.TraceID() {
			t.Errorf("message %s carries trace context %v, want the publish span's %v", d.UUID, got, s.SpanContext)
		}
		if dest, _ := oteltest.Attr(s, "messaging.destination.name"); dest.AsString() != d.Topic {
			t.Errorf("publish span destination %q, message topic %q", dest.AsString(), d.Topic)
		}
	}
	if got := len(rec.Named("acquire leadership")); got != 1 {
		t.Errorf("%d acquire leadership spans, want 1", got)
	}
}

// TestPublishWithoutTraceContext: an event appended without a span gets a
// root publish span, whose context its message carries; without a
// provider, the message carries no trace context at all.
func TestPublishWithoutTraceContext(t *testing.T) {
	t.Parallel()
	b := setup(t) // no provider: the appends record no trace context
	b.appendSpread(t, []string{"order-1"}, 1)
	rec := oteltest.New(t)
	traced := &recordingPublisher{}
	f := newForwarder(t, b, traced, Config{ConsumerGroup: "traced", TracerProvider: rec.TracerProvider})
	stopTraced, _, _ := runForwarder(t, f)
	plain := &recordingPublisher{}
	runForwarder(t, newForwarder(t, b, plain, Config{ConsumerGroup: "plain"}))
	testwait.Until(t, "both groups' messages", func() bool { return traced.len() == 1 && plain.len() == 1 })
	if err := stopTraced(); err != nil {
		t.Fatal(err)
	}
	span := rec.One(t, "publish order")
	if span.Parent.IsValid() {
		t.Errorf("publish span of an event without trace context has parent %v", span.Parent)
	}
	if got := eventstore.SpanContextFromMap(traced.all()[0].Metadata); got.SpanID() != span.SpanContext.SpanID() {
		t.Errorf("message carries %v, want the publish span %v", got, span.SpanContext)
	}
	for _, k := range []string{eventstore.MetadataTraceParent, eventstore.MetadataTraceState} {
		if _, ok := plain.all()[0].Metadata[k]; ok {
			t.Errorf("without a provider the message has %s metadata", k)
		}
	}
}
