package projector

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/telemetry"
)

// Scope is the instrumentation scope of the projector's tracers and meters
// (Runner and Inbox).
const Scope = telemetry.ScopePrefix + "/projector"

// MaxBatchLinks is the most span links a projection batch's span carries:
// one to each distinct span that appended the batch's events (see
// eventstore.MetadataTraceParent), in feed order; the span's
// esox.links.dropped attribute counts those left out. OpenTelemetry's SDK
// keeps 128 links per span by default.
const MaxBatchLinks = 128

// runnerTelemetry is what a Runner reports through OpenTelemetry (see
// docs/observability.md): a span per batch, linked to the spans that
// appended its events, the batch metrics, and gauges of each projection's
// lag fed from the workers' memory, so that collecting them costs no query
// per projection (see telemetry.Head for the one query a collection may
// make).
type runnerTelemetry struct {
	tracer trace.Tracer
	meter  metric.Meter
	head   *telemetry.Head

	batchDuration metric.Float64Histogram
	events        metric.Int64Counter
	deadLetters   metric.Int64Counter
	lag           metric.Float64ObservableGauge
	backlog       metric.Int64ObservableGauge
	state         metric.Int64ObservableGauge
	leader        metric.Int64ObservableGauge
	position      metric.Int64ObservableGauge
}

func newRunnerTelemetry(r *Runner) *runnerTelemetry {
	m := telemetry.Meter(r.cfg.MeterProvider, Scope)
	return &runnerTelemetry{
		tracer: telemetry.Tracer(r.cfg.TracerProvider, Scope),
		meter:  m,
		head:   &telemetry.Head{Load: r.store.Head},
		batchDuration: telemetry.Float64Histogram(m, "esox.projection.batch.duration", metric.WithUnit("s"),
			metric.WithDescription("Duration of projection batches (read model and checkpoint in one transaction), by projection, version and outcome (ok, error)."),
			metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets...)),
		events: telemetry.Int64Counter(m, "esox.projection.events", metric.WithUnit("{event}"),
			metric.WithDescription("Events of the feed a projection moved past (applied, skipped by type, or parked), by projection and version.")),
		deadLetters: telemetry.Int64Counter(m, "esox.projection.dead_letters", metric.WithUnit("{event}"),
			metric.WithDescription("Events parked in the dead-letter table by this process, by projection and version.")),
		lag: telemetry.Float64Gauge(m, "esox.projection.lag", metric.WithUnit("s"),
			metric.WithDescription("Age of the oldest event a projection has not applied yet, 0 when caught up; reported by the process that leads it.")),
		backlog: telemetry.Int64Gauge(m, "esox.projection.backlog", metric.WithUnit("{event}"),
			metric.WithDescription("Events of the feed a projection has not applied yet (approximate: the difference of positions); reported by the process that leads it.")),
		state: telemetry.Int64Gauge(m, "esox.projection.state",
			metric.WithDescription("1 for the state a projection is in (running, catching_up, rebuilding, stopped_with_error, retired), 0 for the others; reported by the process that leads it.")),
		leader: telemetry.Int64Gauge(m, "esox.projection.leader",
			metric.WithDescription("1 when this process leads the projection version, 0 when it stands by.")),
		position: telemetry.Int64Gauge(m, "esox.projection.position", metric.WithUnit("{position}"),
			metric.WithDescription("Position of the last event a projection applied (its checkpoint); reported by the process that leads it.")),
	}
}

// stateSet are the states the state gauge reports, one series each.
var stateSet = []State{StateRunning, StateCatchingUp, StateRebuilding, StateStoppedWithError, StateRetired}

// workerTelemetry is one projection version's (partition's) share of
// runnerTelemetry.
type workerTelemetry struct {
	rt         *runnerTelemetry
	progress   telemetry.Progress
	leadership *telemetry.Leadership
	batchName  string
	attrs      []attribute.KeyValue
	opt        metric.MeasurementOption           // projection, version
	okOpt      metric.MeasurementOption           // and outcome ok
	errOpt     metric.MeasurementOption           // and outcome error
	stateOpts  map[State]metric.MeasurementOption // and state

	mu         sync.Mutex
	status     string // of the checkpoint row, as last loaded or applied
	rebuilding bool
}

func (rt *runnerTelemetry) newWorker(w *worker) *workerTelemetry {
	attrs := []attribute.KeyValue{telemetry.KeyProjection.String(w.p.Name), telemetry.KeyProjectionVersion.Int(w.version)}
	if w.partitions > 1 {
		// One series per partition: each is a worker of its own.
		attrs = append(attrs, telemetry.KeyProjectionPartition.Int(w.partition))
	}
	with := func(kv ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(kv, attrs...)...))
	}
	wt := &workerTelemetry{
		rt:         rt,
		leadership: telemetry.NewLeadership(rt.tracer, rt.meter, "projection", w.leaderKey, attrs...),
		batchName:  "project " + w.p.Name,
		attrs:      attrs,
		opt:        with(),
		okOpt:      with(telemetry.KeyOutcome.String(telemetry.OutcomeOK)),
		errOpt:     with(telemetry.KeyOutcome.String(telemetry.OutcomeError)),
		stateOpts:  map[State]metric.MeasurementOption{},
	}
	for _, s := range stateSet {
		wt.stateOpts[s] = with(telemetry.KeyProjectionState.String(string(s)))
	}
	return wt
}

// loaded records the checkpoint row the worker read.
func (t *workerTelemetry) loaded(c checkpoint) {
	t.mu.Lock()
	t.status, t.rebuilding = c.status, c.rebuilding
	t.mu.Unlock()
}

// read records a read of the feed after the position after.
func (t *workerTelemetry) read(after eventstore.Position, raws []eventstore.RawRecord, limit int) {
	t.progress.Read(after, raws, limit)
}

// applyTraced is apply observed: a span over the batch (a root span,
// linked to the spans that appended its events, whose context the handler
// gets), its duration and, once it commits, the events it moved past.
func (w *worker) applyTraced(ctx context.Context, cp checkpoint, raws []eventstore.RawRecord, caughtUp, park bool) (checkpoint, error) {
	t := w.tel
	start := time.Now()
	ctx, span := t.rt.tracer.Start(ctx, t.batchName, trace.WithSpanKind(trace.SpanKindConsumer))
	if span.IsRecording() {
		span.SetAttributes(t.attrs...)
		span.SetAttributes(semconv.MessagingOperationTypeProcess, semconv.MessagingBatchMessageCount(len(raws)))
		if len(raws) > 0 {
			span.SetAttributes(telemetry.KeyFirstPosition.Int64(raws[0].Position.Position),
				telemetry.KeyLastPosition.Int64(raws[len(raws)-1].Position.Position))
		}
		if dropped := linkAppenders(span, raws); dropped > 0 {
			span.SetAttributes(telemetry.KeyLinksDropped.Int(dropped))
		}
	}
	next, err := w.apply(ctx, cp, raws, caughtUp, park)
	opt := t.okOpt
	if err != nil {
		opt = t.errOpt
		if span.IsRecording() {
			span.SetStatus(codes.Error, err.Error())
		}
	} else {
		t.rt.events.Add(ctx, int64(len(raws)), t.opt)
		t.loaded(next)
	}
	t.rt.batchDuration.Record(ctx, time.Since(start).Seconds(), opt)
	span.End()
	return next, err
}

// parked counts an event parked in the dead-letter table.
func (t *workerTelemetry) parked(ctx context.Context) { t.rt.deadLetters.Add(ctx, 1, t.opt) }

// linkAppenders links span to each distinct span that appended one of raws,
// up to MaxBatchLinks, and returns how many it left out.
func linkAppenders(span trace.Span, raws []eventstore.RawRecord) (dropped int) {
	var seen map[trace.SpanID]struct{}
	for _, rr := range raws {
		sc := rr.SpanContext()
		if !sc.IsValid() {
			continue
		}
		if seen == nil {
			seen = make(map[trace.SpanID]struct{})
		}
		if _, ok := seen[sc.SpanID()]; ok {
			continue
		}
		if len(seen) == MaxBatchLinks {
			dropped++
			continue
		}
		seen[sc.SpanID()] = struct{}{}
		span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
			telemetry.KeyEventID.String(rr.ID.String()), telemetry.KeyPosition.Int64(rr.Position.Position)}})
	}
	return dropped
}

// observe reports the gauges of every projection version of r.
func (r *Runner) observe(ctx context.Context, o metric.Observer) error {
	rt := r.tel
	now := time.Now()
	behind := false
	states := make([]telemetry.ProgressState, len(r.workers))
	for i, w := range r.workers {
		states[i] = w.tel.progress.State()
		if w.tel.leadership.Leading() && states[i].Behind() {
			behind = true
		}
	}
	// Readers that have caught up know their backlog is 0; the head is
	// read (at most once a second) only while one is behind.
	head := rt.head.Get(ctx, behind)
	for i, w := range r.workers {
		t := w.tel
		if !t.leadership.Leading() {
			o.ObserveInt64(rt.leader, 0, t.opt)
			continue
		}
		o.ObserveInt64(rt.leader, 1, t.opt)
		ps := states[i]
		if !ps.Known {
			continue
		}
		o.ObserveFloat64(rt.lag, ps.Lag(now).Seconds(), t.opt)
		o.ObserveInt64(rt.backlog, ps.Backlog(head), t.opt)
		o.ObserveInt64(rt.position, ps.Done.Position, t.opt)
		current := w.telemetryState(ps)
		for _, s := range stateSet {
			v := int64(0)
			if s == current {
				v = 1
			}
			o.ObserveInt64(rt.state, v, t.stateOpts[s])
		}
	}
	return nil
}

// telemetryState is the worker's State from its memory, as Status would
// report it from the database.
func (w *worker) telemetryState(ps telemetry.ProgressState) State {
	_, stopped := w.state()
	w.tel.mu.Lock()
	status, rebuilding := w.tel.status, w.tel.rebuilding
	w.tel.mu.Unlock()
	switch {
	case status == statusRetired:
		return StateRetired
	case stopped != nil:
		return StateStoppedWithError
	case rebuilding || status == statusBuilding:
		return StateRebuilding
	case ps.Full:
		return StateCatchingUp
	}
	return StateRunning
}

// observing registers the Runner's gauges for as long as Run runs; call
// the returned function when it returns.
func (r *Runner) observing() (stop func()) {
	rt := r.tel
	return telemetry.Register(rt.meter, r.observe, rt.lag, rt.backlog, rt.state, rt.leader, rt.position)
}
