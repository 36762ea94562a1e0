package shipping

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
)

// scope is the instrumentation scope of the consumer's tracer and meter.
const scope = "github.com/esox-go/esox/examples/ordering/shipping"

// consumerTelemetry is what the Consumer reports through OpenTelemetry: a
// span per message ("process <topic>", continuing the trace the message
// carries from the forwarder's publish), a span per shipment written, and
// the ordering.shipping.* counters.
type consumerTelemetry struct {
	tracer                        trace.Tracer
	messages, shipments, failures metric.Int64Counter
}

func newConsumerTelemetry(cfg Config) *consumerTelemetry {
	tp, mp := cfg.TracerProvider, cfg.MeterProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(scope)
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err != nil || c == nil {
			otel.Handle(err)
			return noop.Int64Counter{}
		}
		return c
	}
	return &consumerTelemetry{
		tracer:    tp.Tracer(scope),
		messages:  counter("ordering.shipping.messages", "{message}", "Broker messages the shipping consumer received, redeliveries included."),
		shipments: counter("ordering.shipping.shipments", "{shipment}", "Shipments the shipping consumer recorded."),
		failures:  counter("ordering.shipping.failures", "{message}", "Broker messages the shipping consumer failed on (redelivered)."),
	}
}

// process returns msg's context with a consumer span for it, a child of the
// span its metadata records (the forwarder's publish span), and that span.
func (t *consumerTelemetry) process(ctx context.Context, topic string, msg *message.Message) (context.Context, trace.Span) {
	if sc := eventstore.SpanContextFromMap(msg.Metadata); sc.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	ctx, span := t.tracer.Start(ctx, "process "+topic, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingOperationTypeProcess, semconv.MessagingDestinationName(topic),
			semconv.MessagingMessageID(msg.UUID), semconv.MessagingConsumerGroupName(ConsumerName))
	}
	return ctx, span
}

// write starts the span of a shipment's INSERT into table.
func (t *consumerTelemetry) write(ctx context.Context, table, orderID string) (context.Context, trace.Span) {
	ctx, span := t.tracer.Start(ctx, "INSERT "+table, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(semconv.DBSystemNamePostgreSQL, semconv.DBOperationName("INSERT"), semconv.DBCollectionName(table),
			attribute.String("ordering.order_id", orderID))
	}
	return ctx, span
}

// end ends span, marking err.
func end(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
