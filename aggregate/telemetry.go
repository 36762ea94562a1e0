package aggregate

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/telemetry"
)

// Scope is the instrumentation scope of the Repository's tracer.
const Scope = telemetry.ScopePrefix + "/aggregate"

// spanNames are a Repository's span names, "<operation> <category>", built
// once.
type spanNames struct {
	load, create, update string
}

func newSpanNames(category string) spanNames {
	return spanNames{load: "load " + category, create: "create " + category, update: "update " + category}
}

// repoOp is one traced Repository operation; the zero value traces nothing.
type repoOp struct {
	span trace.Span
}

// startOp starts the span name of the aggregate id's operation, a child of
// ctx's span, and returns the context that carries it; with no tracer
// provider installed, none (telemetry.Gate).
func (r *Repository[T]) startOp(ctx context.Context, name, id string) (context.Context, repoOp) {
	if r.gate.Off() {
		return ctx, repoOp{}
	}
	ctx, span := r.tracer.Start(ctx, name)
	if span.IsRecording() {
		span.SetAttributes(telemetry.KeyStreamID.String(r.StreamID(id)), telemetry.KeyStreamCategory.String(r.category))
	}
	return ctx, repoOp{span: span}
}

// end records err and, when version is positive, the aggregate's version,
// and ends the span.
func (op repoOp) end(version int64, err error) {
	if op.span == nil {
		return
	}
	if op.span.IsRecording() {
		if version > 0 {
			op.span.SetAttributes(telemetry.KeyStreamVersion.Int64(version))
		}
		if err != nil {
			typ := "_OTHER"
			switch {
			case errors.Is(err, eventstore.ErrConcurrencyConflict):
				typ = "conflict"
			case errors.Is(err, eventstore.ErrStreamNotFound):
				typ = "not_found"
			}
			op.span.SetAttributes(semconv.ErrorTypeKey.String(typ))
			op.span.SetStatus(codes.Error, err.Error())
		}
	}
	op.span.End()
}

// noteRetry adds an event for the retry after attempt n to ctx's span.
func noteRetry(ctx context.Context, n int) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("retry after concurrency conflict", trace.WithAttributes(telemetry.KeyAttempts.Int(n)))
	}
}
