package telemetry

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Values of KeyLeaderChange.
const (
	LeaderAcquired = "acquired"
	LeaderReleased = "released"
)

// Leadership reports the leadership of one job (a projection version, a
// forwarder's consumer group): a short span when this process acquires it
// ("acquire leadership") and one when it releases it ("release
// leadership"), each its own trace, the counter esox.leader.changes, and
// whether this process leads now (Leading, for the jobs' leader gauges).
// Safe for concurrent use.
type Leadership struct {
	tracer             trace.Tracer
	changes            metric.Int64Counter
	attrs              []attribute.KeyValue
	acquired, released metric.MeasurementOption
	leading            atomic.Bool
}

// NewLeadership returns the Leadership of the job of kind job ("projection",
// "forwarder") whose leader key is key, described by attrs.
func NewLeadership(tracer trace.Tracer, meter metric.Meter, job, key string, attrs ...attribute.KeyValue) *Leadership {
	attrs = append([]attribute.KeyValue{KeyLeaderJob.String(job)}, attrs...)
	set := func(change string) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append([]attribute.KeyValue{KeyLeaderChange.String(change)}, attrs...)...))
	}
	return &Leadership{
		tracer: tracer,
		changes: Int64Counter(meter, "esox.leader.changes", metric.WithUnit("{change}"),
			metric.WithDescription("Leadership changes of esox jobs in this process: acquired or released.")),
		attrs:    append(attrs, KeyLeaderKey.String(key)),
		acquired: set(LeaderAcquired),
		released: set(LeaderReleased),
	}
}

// Leading reports whether this process leads the job now.
func (l *Leadership) Leading() bool { return l.leading.Load() }

// Wrap returns work reporting its leadership: work is what a leader runs
// while it leads (see internal/leader.Run), from acquiring to releasing.
// The spans do not become work's parent: work gets ctx as it is.
func (l *Leadership) Wrap(work func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		l.leading.Store(true)
		l.changes.Add(ctx, 1, l.acquired)
		_, span := l.tracer.Start(ctx, "acquire leadership", trace.WithAttributes(l.attrs...))
		span.End()

		err := work(ctx)

		l.leading.Store(false)
		l.changes.Add(ctx, 1, l.released)
		_, span = l.tracer.Start(context.WithoutCancel(ctx), "release leadership", trace.WithAttributes(l.attrs...))
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
		return err
	}
}
