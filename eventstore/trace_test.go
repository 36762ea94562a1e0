package eventstore_test

import (
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/testalloc"
)

var testSpan = trace.NewSpanContext(trace.SpanContextConfig{
	TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
	SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	TraceFlags: trace.FlagsSampled,
})

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// TestEncodeAppendTraceContext: under a span, every event's metadata gets
// the span's traceparent (and no tracestate when the span has none);
// without a span, or with DisableTraceContext, the metadata is exactly what
// the caller gave.
func TestEncodeAppendTraceContext(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	events := []eventstore.Event{
		{Data: placed{OrderID: "o1"}},
		{Data: shipped{OrderID: "o1"}, Metadata: eventstore.Metadata{Extra: map[string]string{eventstore.MetadataTraceState: "stale=1", "k": "v"}}},
	}
	traced := trace.ContextWithSpanContext(context.Background(), testSpan)

	enc, err := eventstore.EncodeAppend(traced, reg, "order-1", eventstore.NoStream, events, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{
		`{"traceparent":"` + testTraceParent + `"}`,
		`{"k":"v","traceparent":"` + testTraceParent + `"}`,
	} {
		if string(enc[i].Metadata) != want {
			t.Errorf("event %d under a span: metadata %s, want %s", i, enc[i].Metadata, want)
		}
		if got := enc[i].Meta.SpanContext(); !got.Equal(testSpan.WithRemote(true)) {
			t.Errorf("event %d: Meta.SpanContext() = %v, want %v", i, got, testSpan)
		}
	}

	for name, tc := range map[string]struct {
		ctx  context.Context
		opts *eventstore.EncodeOpts
	}{
		"no span":             {context.Background(), nil},
		"DisableTraceContext": {traced, &eventstore.EncodeOpts{DisableTraceContext: true}},
	} {
		enc, err := eventstore.EncodeAppend(tc.ctx, reg, "order-1", eventstore.NoStream, events, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if string(enc[0].Metadata) != `{}` || string(enc[1].Metadata) != `{"k":"v","tracestate":"stale=1"}` {
			t.Errorf("%s: metadata %s and %s, want {} and the event's own", name, enc[0].Metadata, enc[1].Metadata)
		}
	}
}

// TestEncodeAppendNoSpanAllocatesNothingExtra: without a span in ctx,
// recording the trace context costs no allocation: EncodeAppend allocates
// no more than with DisableTraceContext.
func TestEncodeAppendNoSpanAllocatesNothingExtra(t *testing.T) {
	reg := newRegistry(t)
	events := []eventstore.Event{{Data: placed{OrderID: "o1"}}}
	ctx := eventstore.WithCorrelationID(context.Background(), "c1")
	run := func(opts *eventstore.EncodeOpts) float64 {
		return testalloc.Least(200, func() {
			if _, err := eventstore.EncodeAppend(ctx, reg, "order-1", eventstore.NoStream, events, opts); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Noise only adds to a count (see testalloc), so on must not exceed
	// off: CI's gojson run once saw 7 allocations off and 6 on when it
	// asked for equality.
	off, on := run(&eventstore.EncodeOpts{DisableTraceContext: true}), run(&eventstore.EncodeOpts{})
	if on > off {
		t.Errorf("EncodeAppend without a span: %.1f allocations, %.1f with DisableTraceContext", on, off)
	}
}

// TestSpanContextFromStoredMetadata reads the trace context back from
// metadata as PostgreSQL's jsonb prints it (spaces after colons and
// commas), as json.Marshal writes it, and refuses what is not a valid
// traceparent.
func TestSpanContextFromStoredMetadata(t *testing.T) {
	t.Parallel()
	withState := testSpan.WithRemote(true)
	state, _ := trace.ParseTraceState("a=1,b=2")
	withState = withState.WithTraceState(state)
	for _, tc := range []struct {
		metadata string
		want     trace.SpanContext
	}{
		{`{"actor": "x", "traceparent": "` + testTraceParent + `"}`, testSpan.WithRemote(true)},
		{`{"traceparent":"` + testTraceParent + `","tracestate":"a=1,b=2"}`, withState},
		{`{}`, trace.SpanContext{}},
		{`{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}`, trace.SpanContext{}},
		{`{"traceparent": "not a traceparent"}`, trace.SpanContext{}},
		{`{"traceparent": 7}`, trace.SpanContext{}},
		{`{"note": "mentions \"traceparent\" only in a value"}`, trace.SpanContext{}},
	} {
		raw := eventstore.RawRecord{Metadata: json.RawMessage(tc.metadata)}
		if got := raw.SpanContext(); !got.Equal(tc.want) {
			t.Errorf("RawRecord{Metadata: %s}.SpanContext() = %v, want %v", tc.metadata, got, tc.want)
		}
		var md eventstore.Metadata
		if err := json.Unmarshal([]byte(tc.metadata), &md); err != nil {
			t.Fatal(err)
		}
		if tc.want.IsValid() {
			if got := md.SpanContext(); !got.Equal(tc.want) {
				t.Errorf("Metadata %s: SpanContext() = %v, want %v", tc.metadata, got, tc.want)
			}
			if got := eventstore.SpanContextFromMap(md.Map()); !got.Equal(tc.want) {
				t.Errorf("SpanContextFromMap(%v) = %v, want %v", md.Map(), got, tc.want)
			}
		}
	}
}
