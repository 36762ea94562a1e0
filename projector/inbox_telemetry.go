package projector

import (
	"context"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/telemetry"
)

// inboxTelemetry is what an Inbox reports through OpenTelemetry (see
// docs/observability.md): a span per message its handlers apply, and the
// esox.inbox.* counters.
type inboxTelemetry struct {
	tracer   trace.Tracer
	spanName string
	attrs    []attribute.KeyValue
	opt      metric.MeasurementOption // consumer

	applied, duplicates, outOfOrder, ignored metric.Int64Counter
}

func newInboxTelemetry(cfg InboxConfig) *inboxTelemetry {
	m := telemetry.Meter(cfg.MeterProvider, Scope)
	attrs := []attribute.KeyValue{telemetry.KeyInboxConsumer.String(cfg.Consumer)}
	counter := func(name, desc string) metric.Int64Counter {
		return telemetry.Int64Counter(m, name, metric.WithUnit("{message}"), metric.WithDescription(desc))
	}
	return &inboxTelemetry{
		tracer:   telemetry.Tracer(cfg.TracerProvider, Scope),
		spanName: "process " + cfg.Consumer,
		attrs:    attrs,
		opt:      metric.WithAttributeSet(attribute.NewSet(attrs...)),
		applied:  counter("esox.inbox.applied", "Messages an inbox recorded and committed (their effect is in the read model), by consumer."),
		duplicates: counter("esox.inbox.duplicates",
			"Messages an inbox acknowledged without effect because it had recorded them before (by message UUID or stream version), by consumer."),
		outOfOrder: counter("esox.inbox.out_of_order", "Messages an inbox's stream version guard refused (nacked), by consumer."),
		ignored:    counter("esox.inbox.ignored", "Messages of types the handler does not take, acknowledged untouched, by consumer."),
	}
}

// count adds one to c.
func (t *inboxTelemetry) count(ctx context.Context, c metric.Int64Counter) { c.Add(ctx, 1, t.opt) }

// duplicate counts a duplicate and marks ctx's span (the message's) as one.
func (t *inboxTelemetry) duplicate(ctx context.Context) {
	t.count(ctx, t.duplicates)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(telemetry.KeyDuplicate.Bool(true))
	}
}

// traced wraps an inbox handler in a span per message (kind consumer,
// "process <consumer>"), which the message's context carries while h runs:
// the inbox's transaction and the projection handler run under it. Its
// parent is the span of the message's context when there is one (a
// consumer's own span, say), else the span that the message's metadata
// records (the forwarder's publish span, or the span that appended the
// event; see eventstore.MetadataTraceParent); when both exist and differ,
// the span links to the one recorded in the metadata.
func (in *Inbox) traced(h message.NoPublishHandlerFunc) message.NoPublishHandlerFunc {
	t := in.tel
	return func(msg *message.Message) error {
		orig := msg.Context()
		ctx := orig
		var opts []trace.SpanStartOption
		if remote := eventstore.SpanContextFromMap(msg.Metadata); remote.IsValid() {
			if parent := trace.SpanContextFromContext(ctx); !parent.IsValid() {
				ctx = trace.ContextWithRemoteSpanContext(ctx, remote)
			} else if parent.SpanID() != remote.SpanID() {
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: remote}))
			}
		}
		opts = append(opts, trace.WithSpanKind(trace.SpanKindConsumer))
		ctx, span := t.tracer.Start(ctx, t.spanName, opts...)
		if span.IsRecording() {
			span.SetAttributes(t.attrs...)
			span.SetAttributes(semconv.MessagingOperationTypeProcess, semconv.MessagingMessageID(msg.UUID),
				semconv.MessagingConsumerGroupName(in.cfg.Consumer),
				telemetry.KeyEventType.String(msg.Metadata.Get(MessageEventType)),
				telemetry.KeyStreamID.String(msg.Metadata.Get(MessageStreamID)))
			if v, err := strconv.ParseInt(msg.Metadata.Get(MessageStreamVersion), 10, 64); err == nil {
				span.SetAttributes(telemetry.KeyStreamVersion.Int64(v))
			}
		}
		msg.SetContext(ctx)
		err := h(msg)
		msg.SetContext(orig)
		if err != nil && span.IsRecording() {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		return err
	}
}
