package postgres

import (
	"context"
	"errors"
	"iter"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/telemetry"
)

// Scope is the instrumentation scope of the store's tracer and meter.
const Scope = telemetry.ScopePrefix + "/eventstore/postgres"

// storeTelemetry is what a Store reports through OpenTelemetry: a span per
// append (Append, AppendTx) and per ReadStream, and the append metrics
// (docs/observability.md). The instruments are created once, by New.
type storeTelemetry struct {
	gate       telemetry.Gate
	tracer     trace.Tracer
	collection string // db.collection.name: "schema.table"
	appendName string // the append span's name
	readName   string // the ReadStream span's name

	// The attributes every append span carries, built once.
	collectionAttr, appendOperation attribute.KeyValue

	events    metric.Int64Counter
	duration  metric.Float64Histogram
	conflicts metric.Int64Counter

	eventOpts    *telemetry.Options[[2]string] // category, event type
	durationOpts *telemetry.Options[[2]string] // category, outcome
	conflictOpts *telemetry.Options[string]    // category
}

func newStoreTelemetry(cfg Config) *storeTelemetry {
	meter := telemetry.Meter(cfg.MeterProvider, Scope)
	t := &storeTelemetry{
		gate:       telemetry.NewGate(cfg.TracerProvider, cfg.MeterProvider),
		tracer:     telemetry.Tracer(cfg.TracerProvider, Scope),
		collection: cfg.Schema + "." + cfg.EventsTable,
		events: telemetry.Int64Counter(meter, "esox.append.events", metric.WithUnit("{event}"),
			metric.WithDescription("Events appended (Append and AppendTx; an AppendTx whose transaction then rolls back is counted too), by stream category and event type.")),
		duration: telemetry.Float64Histogram(meter, "esox.append.duration", metric.WithUnit("s"),
			metric.WithDescription("Duration of appends (Append and AppendTx), by stream category and outcome (ok, conflict, error)."),
			metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets...)),
		conflicts: telemetry.Int64Counter(meter, "esox.append.conflicts", metric.WithUnit("{conflict}"),
			metric.WithDescription("Appends refused with a concurrency conflict, by stream category.")),
		eventOpts: telemetry.NewOptions([2]string{telemetry.Overflow, telemetry.Overflow}, func(k [2]string) attribute.Set {
			return attribute.NewSet(telemetry.KeyStreamCategory.String(k[0]), telemetry.KeyEventType.String(k[1]))
		}),
		durationOpts: telemetry.NewOptions([2]string{telemetry.Overflow, telemetry.OutcomeError}, func(k [2]string) attribute.Set {
			return attribute.NewSet(telemetry.KeyStreamCategory.String(k[0]), telemetry.KeyOutcome.String(k[1]))
		}),
		conflictOpts: telemetry.NewOptions(telemetry.Overflow, func(k string) attribute.Set {
			return attribute.NewSet(telemetry.KeyStreamCategory.String(k))
		}),
	}
	t.appendName = "append " + t.collection
	t.readName = "read_stream " + t.collection
	t.collectionAttr, t.appendOperation = semconv.DBCollectionName(t.collection), semconv.DBOperationName("append")
	return t
}

// clientSpan are the start options of the store's spans, shared so that a
// span start allocates no option slice.
var clientSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// appendOp is one append being observed; the zero value observes nothing.
type appendOp struct {
	t        *storeTelemetry
	span     trace.Span
	start    time.Time
	streamID string
	expected eventstore.ExpectedVersion
	events   []eventstore.Event
}

// startAppend starts observing an append: its span, a child of ctx's span,
// is in the returned context, so that the events record it as the span that
// appended them (eventstore.MetadataTraceParent). The span's attributes are
// set when it ends, in one call. With no provider installed it observes
// nothing (telemetry.Gate).
func (s *Store) startAppend(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (context.Context, appendOp) {
	t := s.tel
	if t == nil || t.gate.Off() {
		return ctx, appendOp{}
	}
	ctx, span := t.tracer.Start(ctx, t.appendName, clientSpan...)
	return ctx, appendOp{t: t, span: span, start: time.Now(), streamID: streamID, expected: expected, events: events}
}

// end records the append's outcome and ends its span; it returns res and
// err unchanged.
func (op appendOp) end(ctx context.Context, reg *eventstore.Registry, res eventstore.AppendResult, err error) (eventstore.AppendResult, error) {
	t := op.t
	if t == nil {
		return res, err
	}
	category := eventstore.Category(op.streamID)
	outcome := telemetry.OutcomeOK
	conflict := errors.Is(err, eventstore.ErrConcurrencyConflict)
	switch {
	case conflict:
		outcome = telemetry.OutcomeConflict
	case err != nil:
		outcome = telemetry.OutcomeError
	}
	if t.duration.Enabled(ctx) {
		t.duration.Record(ctx, time.Since(op.start).Seconds(), t.durationOpts.Get([2]string{category, outcome}))
	}
	if conflict && t.conflicts.Enabled(ctx) {
		t.conflicts.Add(ctx, 1, t.conflictOpts.Get(category))
	}
	if err == nil && t.events.Enabled(ctx) {
		for _, e := range op.events {
			typ, terr := reg.NameOf(e.Data)
			if terr != nil {
				typ = telemetry.Overflow // cannot happen: the append encoded it
			}
			t.events.Add(ctx, 1, t.eventOpts.Get([2]string{category, typ}))
		}
	}
	if op.span.IsRecording() {
		// The SDK pays for every attribute several times (a copy, a
		// de-duplication map, the snapshot at End): the span carries what
		// identifies the append and what semconv asks, no more. The stream's
		// category is in the ID, the new stream version on the
		// repository's span, the events' positions on the spans that
		// publish and project them.
		attrs := make([]attribute.KeyValue, 0, 8)
		attrs = append(attrs, semconv.DBSystemNamePostgreSQL, t.appendOperation, t.collectionAttr,
			telemetry.KeyStreamID.String(op.streamID),
			telemetry.KeyEventCount.Int(len(op.events)), telemetry.KeyExpectedVersion.String(op.expected.String()))
		switch {
		case conflict:
			attrs = append(attrs, telemetry.KeyConflict.Bool(true), semconv.ErrorTypeKey.String("conflict"))
			op.span.SetStatus(codes.Error, err.Error())
		case err != nil:
			attrs = append(attrs, semconv.ErrorTypeKey.String(errorType(err)))
			op.span.SetStatus(codes.Error, err.Error())
		}
		op.span.SetAttributes(attrs...)
	}
	op.span.End()
	return res, err
}

// errorType is the error.type of a failed store call: low-cardinality
// names of the errors callers match.
func errorType(err error) string {
	switch {
	case errors.Is(err, eventstore.ErrOutcomeUnknown):
		return "outcome_unknown"
	case errors.Is(err, eventstore.ErrInvalidArgument), errors.Is(err, eventstore.ErrInvalidStreamID):
		return "invalid_argument"
	case errors.Is(err, eventstore.ErrUnknownEventType), errors.Is(err, eventstore.ErrMalformedPayload):
		return "payload"
	case errors.Is(err, eventstore.ErrEventTooLarge):
		return "event_too_large"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "_OTHER"
}

// tracedReadStream is read, a ReadStream, with a span over its iteration:
// it starts when the iteration does and ends with it, and records the
// records yielded.
func (s *Store) tracedReadStream(ctx context.Context, streamID string, from int64, read func(context.Context) iter.Seq2[eventstore.Record, error]) iter.Seq2[eventstore.Record, error] {
	t := s.tel
	if t == nil {
		return read(ctx)
	}
	return func(yield func(eventstore.Record, error) bool) {
		if t.gate.Off() { // no provider installed when the iteration starts
			read(ctx)(yield)
			return
		}
		ctx, span := t.tracer.Start(ctx, t.readName, clientSpan...)
		defer span.End()
		recording := span.IsRecording()
		if recording {
			span.SetAttributes(semconv.DBSystemNamePostgreSQL, semconv.DBOperationName("read_stream"), t.collectionAttr,
				telemetry.KeyStreamID.String(streamID), telemetry.KeyStreamCategory.String(eventstore.Category(streamID)),
				attribute.Int64("esox.stream.from_version", from))
		}
		n := 0
		for rec, err := range read(ctx) {
			if err != nil && recording {
				span.SetAttributes(semconv.ErrorTypeKey.String(errorType(err)))
				span.SetStatus(codes.Error, err.Error())
			} else if err == nil {
				n++
			}
			if !yield(rec, err) {
				break
			}
		}
		if recording {
			span.SetAttributes(semconv.DBResponseReturnedRows(n))
		}
	}
}
