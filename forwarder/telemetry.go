package forwarder

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/telemetry"
)

// Scope is the instrumentation scope of the forwarder's tracer and meter.
const Scope = telemetry.ScopePrefix + "/forwarder"

// forwarderTelemetry is what a Forwarder reports through OpenTelemetry (see
// docs/observability.md): a span per publish, a child of the span that
// appended the event, whose trace context the message then carries; the
// counters of Stats; and gauges of its lag fed from its own reads, so that
// collecting them costs no query while it keeps up.
type forwarderTelemetry struct {
	tracer     trace.Tracer
	meter      metric.Meter
	progress   telemetry.Progress
	head       *telemetry.Head
	leadership *telemetry.Leadership
	attrs      []attribute.KeyValue
	opt        metric.MeasurementOption // consumer group

	published, filtered, poisoned, retries metric.Int64ObservableCounter
	lag                                    metric.Float64ObservableGauge
	backlog, leader, position              metric.Int64ObservableGauge
}

func newForwarderTelemetry(f *Forwarder) *forwarderTelemetry {
	cfg := f.cfg
	m := telemetry.Meter(cfg.MeterProvider, Scope)
	tracer := telemetry.Tracer(cfg.TracerProvider, Scope)
	attrs := []attribute.KeyValue{telemetry.KeyConsumerGroup.String(cfg.ConsumerGroup)}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		return telemetry.Int64ObservableCounter(m, name, metric.WithUnit(unit), metric.WithDescription(desc))
	}
	return &forwarderTelemetry{
		tracer:     tracer,
		meter:      m,
		head:       &telemetry.Head{Load: f.store.Head},
		leadership: telemetry.NewLeadership(tracer, m, "forwarder", LeaderKey(f.store.Schema(), cfg.ConsumerGroup), attrs...),
		attrs:      attrs,
		opt:        metric.WithAttributeSet(attribute.NewSet(attrs...)),
		published:  counter("esox.forwarder.published", "{event}", "Events the forwarder published to the broker (a re-publish after a restart counts again), by consumer group."),
		filtered:   counter("esox.forwarder.filtered", "{event}", "Events the forwarder skipped (Categories, EventTypes), by consumer group."),
		poisoned: counter("esox.forwarder.poison", "{event}",
			"Poison events: rejected by the topic function or refused permanently by the publisher, whether dead-lettered or stopping the forwarder, by consumer group."),
		retries: counter("esox.forwarder.retries", "{retry}", "Failed publishes the forwarder retried, by consumer group."),
		lag: telemetry.Float64Gauge(m, "esox.forwarder.lag", metric.WithUnit("s"),
			metric.WithDescription("Age of the oldest event the consumer group has not published yet, 0 when caught up; reported by the process that leads the group.")),
		backlog: telemetry.Int64Gauge(m, "esox.forwarder.backlog", metric.WithUnit("{event}"),
			metric.WithDescription("Events of the feed the consumer group has not published yet (approximate: the difference of positions); reported by the process that leads the group.")),
		leader: telemetry.Int64Gauge(m, "esox.forwarder.leader",
			metric.WithDescription("1 when this process leads the consumer group, 0 when it stands by.")),
		position: telemetry.Int64Gauge(m, "esox.forwarder.position", metric.WithUnit("{position}"),
			metric.WithDescription("Position of the consumer group's offset: every event up to it is published; reported by the process that leads the group.")),
	}
}

// observing registers the forwarder's instruments for as long as Run runs;
// call the returned function when it returns.
func (f *Forwarder) observing() (stop func()) {
	t := f.tel
	return telemetry.Register(t.meter, f.observe, t.published, t.filtered, t.poisoned, t.retries, t.lag, t.backlog, t.leader, t.position)
}

func (f *Forwarder) observe(ctx context.Context, o metric.Observer) error {
	t := f.tel
	st := f.Stats()
	o.ObserveInt64(t.published, st.Published, t.opt)
	o.ObserveInt64(t.filtered, st.Filtered, t.opt)
	o.ObserveInt64(t.poisoned, st.Poisoned, t.opt)
	o.ObserveInt64(t.retries, st.Retries, t.opt)
	if !t.leadership.Leading() {
		o.ObserveInt64(t.leader, 0, t.opt)
		return nil
	}
	o.ObserveInt64(t.leader, 1, t.opt)
	ps := t.progress.State()
	if !ps.Known {
		return nil
	}
	head := t.head.Get(ctx, ps.Behind())
	o.ObserveFloat64(t.lag, ps.Lag(time.Now()).Seconds(), t.opt)
	o.ObserveInt64(t.backlog, ps.Backlog(head), t.opt)
	o.ObserveInt64(t.position, ps.Done.Position, t.opt)
	return nil
}

// publish publishes msg to topic (see publishRetrying) under a span
// ("publish <topic>", kind producer) whose parent is the span that
// appended the event (eventstore.MetadataTraceParent in rec's metadata; a
// new root when none was recorded). The message then carries the publish
// span's trace context instead, so that its consumers continue the trace
// from the publish.
func (f *Forwarder) publish(ctx context.Context, topic string, msg *message.Message, rec eventstore.Record) error {
	t := f.tel
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	if appended := rec.Metadata.SpanContext(); appended.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, appended)
	} else {
		opts = append(opts, trace.WithNewRoot())
	}
	ctx, span := t.tracer.Start(ctx, "publish "+topic, opts...)
	if span.IsRecording() {
		span.SetAttributes(t.attrs...)
		span.SetAttributes(semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(topic), semconv.MessagingMessageID(msg.UUID),
			telemetry.KeyStreamID.String(rec.StreamID), telemetry.KeyEventType.String(rec.Type),
			telemetry.KeyPosition.Int64(rec.Position.Position))
	}
	if span.SpanContext().IsValid() && msg.Metadata != nil {
		propagation.TraceContext{}.Inject(ctx, propagation.MapCarrier(msg.Metadata))
	}
	err := f.publishRetrying(ctx, topic, msg, rec)
	if err != nil && span.IsRecording() {
		span.SetAttributes(semconv.ErrorTypeKey.String("_OTHER"))
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return err
}
