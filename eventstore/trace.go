package eventstore

import (
	"bytes"
	"context"
	"encoding/json"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Metadata keys of the W3C trace context (https://www.w3.org/TR/trace-context/)
// that stores record with every event appended under a span: the span that
// appended the event, so that whoever handles the event later (a projection,
// the forwarder, a broker consumer) can continue or link to its trace. They
// live in Metadata.Extra and travel, like every metadata key, into the
// broker message's metadata.
const (
	MetadataTraceParent = "traceparent"
	MetadataTraceState  = "tracestate"
)

// traceContextOf returns the W3C traceparent and tracestate of ctx's span,
// or "" when ctx carries no valid span context (no tracing, or no span):
// then nothing is recorded and nothing is allocated.
func traceContextOf(ctx context.Context) (parent, state string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return "", ""
	}
	var c traceCarrier
	propagation.TraceContext{}.Inject(ctx, &c)
	return c.parent, c.state
}

// withTraceContext returns md, which it may change (a fresh clone), with
// the trace context keys set to parent and state; a state of "" removes
// tracestate.
func withTraceContext(md Metadata, parent, state string) Metadata {
	if md.Extra == nil {
		md.Extra = make(map[string]string, 2)
	}
	md.Extra[MetadataTraceParent] = parent
	if state != "" {
		md.Extra[MetadataTraceState] = state
	} else {
		delete(md.Extra, MetadataTraceState)
	}
	return md
}

// traceCarrier is a propagation.TextMapCarrier of the two W3C keys.
type traceCarrier struct{ parent, state string }

func (c *traceCarrier) Get(key string) string {
	switch key {
	case MetadataTraceParent:
		return c.parent
	case MetadataTraceState:
		return c.state
	}
	return ""
}

func (c *traceCarrier) Set(key, value string) {
	switch key {
	case MetadataTraceParent:
		c.parent = value
	case MetadataTraceState:
		c.state = value
	}
}

func (c *traceCarrier) Keys() []string { return []string{MetadataTraceParent, MetadataTraceState} }

// SpanContextFromMap returns the remote span context that kv records under
// MetadataTraceParent and MetadataTraceState, e.g. a broker message's
// metadata as the forwarder publishes it. It returns the invalid
// SpanContext when kv has no traceparent or it does not parse.
func SpanContextFromMap(kv map[string]string) trace.SpanContext {
	parent := kv[MetadataTraceParent]
	if parent == "" {
		return trace.SpanContext{}
	}
	return spanContext(parent, kv[MetadataTraceState])
}

// SpanContext returns the remote span context of the span that appended the
// event m belongs to (see MetadataTraceParent), or the invalid SpanContext
// when none was recorded. Use it to link to that span, or to continue its
// trace with trace.ContextWithRemoteSpanContext.
func (m Metadata) SpanContext() trace.SpanContext { return SpanContextFromMap(m.Extra) }

// SpanContext returns the remote span context recorded in r's metadata (see
// Metadata.SpanContext) without decoding the rest of it; the invalid
// SpanContext when there is none. It parses the metadata only when it
// mentions a traceparent.
func (r RawRecord) SpanContext() trace.SpanContext {
	if !bytes.Contains(r.Metadata, []byte(`"`+MetadataTraceParent+`"`)) {
		return trace.SpanContext{}
	}
	var tc struct {
		Parent string `json:"traceparent"`
		State  string `json:"tracestate"`
	}
	if err := json.Unmarshal(r.Metadata, &tc); err != nil || tc.Parent == "" {
		return trace.SpanContext{}
	}
	return spanContext(tc.Parent, tc.State)
}

// spanContext parses a traceparent and tracestate with the W3C propagator.
func spanContext(parent, state string) trace.SpanContext {
	// The propagator reads from and writes to a context; this one only
	// carries the result out.
	ctx := propagation.TraceContext{}.Extract(context.Background(), &traceCarrier{parent: parent, state: state})
	return trace.SpanContextFromContext(ctx)
}
