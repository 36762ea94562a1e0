package storetest

import (
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
)

// testTraceContext appends under a span context and without one: each event
// appended under a span records a traceparent of that span's trace (the
// store's own append span, a child of it, may be the one recorded), which
// reads back through Metadata.SpanContext and RawRecord.SpanContext; one
// appended without a span records no trace key at all.
func testTraceContext(t *testing.T, b *bundle) {
	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
		SpanID:     trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31},
		TraceFlags: trace.FlagsSampled,
	})
	state, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	parent = parent.WithTraceState(state)
	ctx := trace.ContextWithSpanContext(b.ctx, parent)
	// A traceparent in the event's own metadata is replaced by the span's.
	stale := eventstore.Metadata{Extra: map[string]string{eventstore.MetadataTraceParent: "00-11111111111111111111111111111111-2222222222222222-01", "k": "v"}}
	traced, err := b.store.Append(ctx, "trace-1", eventstore.NoStream, []eventstore.Event{{Data: noted{N: 1}}, {Data: noted{N: 2}, Metadata: stale}})
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	plain := b.append(t, "trace-2", eventstore.NoStream, ev("plain", 3))

	for _, r := range b.readStream(t, "trace-1", 1) {
		sc := r.Metadata.SpanContext()
		if !sc.IsValid() || sc.TraceID() != parent.TraceID() || !sc.IsSampled() || !sc.IsRemote() {
			t.Errorf("event %d: recorded span context %v (traceparent %q), want one of trace %s, sampled",
				r.StreamVersion, sc, r.Metadata.Extra[eventstore.MetadataTraceParent], parent.TraceID())
		}
		if got := r.Metadata.Extra[eventstore.MetadataTraceState]; got != "vendor=value" {
			t.Errorf("event %d: tracestate %q, want vendor=value", r.StreamVersion, got)
		}
		if r.StreamVersion == 2 && r.Metadata.Extra["k"] != "v" {
			t.Errorf("event 2: user metadata %v lost", r.Metadata.Extra)
		}
	}
	for _, r := range b.readStream(t, "trace-2", 1) {
		if len(r.Metadata.Extra) != 0 || r.Metadata.SpanContext().IsValid() {
			t.Errorf("event appended without a span: metadata %v, want no trace context", r.Metadata.Extra)
		}
	}
	// The feed's raw records give the same span contexts.
	ids := map[string]bool{}
	for _, id := range traced.EventIDs {
		ids[id.String()] = true
	}
	feed := b.waitFeed(t, plain.EventIDs[0])
	for _, r := range feed {
		raw := eventstore.RawRecord{Metadata: mustJSON(t, r.Metadata)}
		if got, want := raw.SpanContext(), r.Metadata.SpanContext(); !got.Equal(want) {
			t.Errorf("event %s: RawRecord.SpanContext %v, Metadata.SpanContext %v", r.ID, got, want)
		}
		if ids[r.ID.String()] != r.Metadata.SpanContext().IsValid() {
			t.Errorf("event %s in the feed: span context %v", r.ID, r.Metadata.SpanContext())
		}
	}
}
