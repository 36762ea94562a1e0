// Package telemetry holds what esox's packages share to report through
// OpenTelemetry: provider defaults, attribute keys, cached measurement
// options, the in-memory feed progress behind the lag gauges, the feed's
// head for them, and leadership spans.
//
// It imports the OpenTelemetry API only, never an SDK or exporter: the
// application chooses those (docs/observability.md). With no provider
// installed every instrument and tracer here is OpenTelemetry's no-op.
package telemetry

import (
	"reflect"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
)

// ScopePrefix is the prefix of every instrumentation scope name of esox: the
// tracers and meters are named after their package,
// "github.com/esox-go/esox/eventstore/postgres" and so on.
const ScopePrefix = "github.com/esox-go/esox"

// Tracer returns the tracer of scope from tp, or from the global provider
// (otel.GetTracerProvider) when tp is nil.
func Tracer(tp trace.TracerProvider, scope string) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(scope)
}

// Meter returns the meter of scope from mp, or from the global provider
// (otel.GetMeterProvider) when mp is nil.
func Meter(mp metric.MeterProvider, scope string) metric.Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(scope)
}

// Gate tells a component whether its instrumentation can record anything,
// so that with no provider installed an instrumented call costs no more than
// an uninstrumented one: no span started (and no context allocated for it),
// no clock read for a duration, no metric looked at. The zero value is a
// component given providers of its own, which never skips.
type Gate struct {
	global bool // every provider the component uses is the global one
	meter  bool // the component uses a meter too
}

// NewGate returns the gate of a component that traces and measures,
// configured with tp and mp; nil means the global provider.
func NewGate(tp trace.TracerProvider, mp metric.MeterProvider) Gate {
	return Gate{global: tp == nil && mp == nil, meter: true}
}

// NewTracerGate returns the gate of a component that only traces,
// configured with tp; nil means the global provider.
func NewTracerGate(tp trace.TracerProvider) Gate {
	return Gate{global: tp == nil}
}

// Off reports whether nothing the component reports can be recorded: it
// uses the global providers and the application has installed none of
// those it uses (otel.SetTracerProvider, otel.SetMeterProvider). A provider
// installed after the component was created turns it on from the next
// call, as the global providers' delegation promises. The component then
// passes its callers' contexts on unchanged: the span they carry, if any,
// is the one its hooks and the events' trace context see, where a skipped
// no-op span would have been a non-recording copy of it.
//
// Two cases record while no provider seems installed:
//   - A default provider saved before an install and installed again: it
//     forwards to the first provider installed. Once any esox component has
//     seen an installed provider, gates stay on for the process's life;
//     one installed and replaced by the saved default before any esox call
//     goes unseen.
//   - OpenTelemetry's eBPF auto-instrumentation, which makes the default
//     global tracer record without an installed provider.
//
// A service in either case passes otel.GetTracerProvider() (and
// otel.GetMeterProvider()) in the components' Configs: a gate given a
// provider never skips (docs/observability.md).
func (g Gate) Off() bool {
	return g.global && defaultsKnown && !installed(&tracerSeen, otel.GetTracerProvider() != defaultTracerProvider) &&
		(!g.meter || !installed(&meterSeen, otel.GetMeterProvider() != defaultMeterProvider))
}

// installed reports whether a global provider is or was installed: now
// (and then it notes it in seen), or when an earlier call saw one.
func installed(seen *atomic.Bool, now bool) bool {
	if now {
		if !seen.Load() {
			seen.Store(true)
		}
		return true
	}
	return seen.Load()
}

// OpenTelemetry's global providers as this package found them. Until an
// application installs its own, they are delegates of package
// go.opentelemetry.io/otel/internal/global that record nothing; installing
// one replaces them (and they then forward to it), so comparing the current
// global with them tells whether one was installed. When the providers
// found are not those delegates (one was installed before this package was
// initialised, or a later OpenTelemetry names its package differently),
// defaultsKnown is false and Gate.Off never skips: a lost fast path, never
// a lost span. tracerSeen and meterSeen note that a gate saw one installed:
// the defaults forward to it from then on, even if installed again.
var (
	defaultTracerProvider = otel.GetTracerProvider()
	defaultMeterProvider  = otel.GetMeterProvider()
	defaultsKnown         = isGlobalDelegate(defaultTracerProvider) && isGlobalDelegate(defaultMeterProvider)

	tracerSeen, meterSeen atomic.Bool
)

func isGlobalDelegate(p any) bool {
	t := reflect.TypeOf(p)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global"
}

// Attribute keys esox sets on spans and metrics. Keys of OpenTelemetry's
// semantic conventions (db.*, messaging.*, error.type) come from semconv.
const (
	KeyStreamID        = attribute.Key("esox.stream.id")
	KeyStreamCategory  = attribute.Key("esox.stream.category")
	KeyStreamVersion   = attribute.Key("esox.stream.version")
	KeyEventType       = attribute.Key("esox.event.type")
	KeyEventID         = attribute.Key("esox.event.id")
	KeyEventCount      = attribute.Key("esox.event.count")
	KeyExpectedVersion = attribute.Key("esox.expected_version")
	// KeyPosition, KeyFirstPosition and KeyLastPosition are feed
	// positions: the identity values (eventstore.Position.Position).
	KeyPosition          = attribute.Key("esox.position")
	KeyFirstPosition     = attribute.Key("esox.position.first")
	KeyLastPosition      = attribute.Key("esox.position.last")
	KeyConflict          = attribute.Key("esox.append.conflict")
	KeyOutcome           = attribute.Key("esox.outcome")
	KeyProjection        = attribute.Key("esox.projection.name")
	KeyProjectionVersion = attribute.Key("esox.projection.version")
	KeyProjectionState   = attribute.Key("esox.projection.state")
	// KeyProjectionPartition is set on a projection of several partitions
	// (projector.Projection.Partitions) only.
	KeyProjectionPartition = attribute.Key("esox.projection.partition")
	KeyConsumerGroup       = attribute.Key("esox.forwarder.consumer_group")
	KeyInboxConsumer       = attribute.Key("esox.inbox.consumer")
	KeyDuplicate           = attribute.Key("esox.inbox.duplicate")
	KeyLeaderJob           = attribute.Key("esox.leader.job")
	KeyLeaderKey           = attribute.Key("esox.leader.key")
	KeyLeaderChange        = attribute.Key("esox.leader.change")
	KeyLinksDropped        = attribute.Key("esox.links.dropped")
	KeyAttempts            = attribute.Key("esox.attempts")
)

// Values of KeyOutcome.
const (
	OutcomeOK       = "ok"
	OutcomeConflict = "conflict"
	OutcomeError    = "error"
)

// DurationBuckets are the explicit bucket boundaries, in seconds, of esox's
// duration histograms: 1 ms to 10 s.
var DurationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Report passes err, an instrument that could not be created, to
// OpenTelemetry's error handler (otel.Handle). The instruments are created
// with fixed valid names, so this does not happen with a conforming SDK.
func Report(err error) {
	if err != nil {
		otel.Handle(err)
	}
}

// Int64Counter returns m's counter name, or a no-op one when m refuses it.
func Int64Counter(m metric.Meter, name string, opts ...metric.Int64CounterOption) metric.Int64Counter {
	c, err := m.Int64Counter(name, opts...)
	if err != nil || c == nil {
		Report(err)
		return noop.Int64Counter{}
	}
	return c
}

// Float64Histogram returns m's histogram name, or a no-op one when m refuses
// it.
func Float64Histogram(m metric.Meter, name string, opts ...metric.Float64HistogramOption) metric.Float64Histogram {
	h, err := m.Float64Histogram(name, opts...)
	if err != nil || h == nil {
		Report(err)
		return noop.Float64Histogram{}
	}
	return h
}

// MaxCachedOptions bounds an Options cache: keys beyond it share one
// overflow option, so that stream IDs without a category (their own
// category) cannot grow the cache or the metric's series without bound.
const MaxCachedOptions = 1000

// Overflow is the attribute value that stands for every key beyond
// MaxCachedOptions.
const Overflow = "_other"

// Options caches metric measurement options by key, so that recording a
// measurement with attributes seen before allocates nothing. build makes a
// key's attributes; overflow's are used beyond MaxCachedOptions keys. Safe
// for concurrent use.
type Options[K comparable] struct {
	build    func(K) attribute.Set
	overflow K

	m sync.Map // K -> metric.MeasurementOption
	n sync.Mutex
	k int
}

// NewOptions returns an empty cache whose options carry build(key), and
// build(overflow) beyond MaxCachedOptions keys.
func NewOptions[K comparable](overflow K, build func(K) attribute.Set) *Options[K] {
	return &Options[K]{build: build, overflow: overflow}
}

// Get returns the option of key.
func (o *Options[K]) Get(key K) metric.MeasurementOption {
	if v, ok := o.m.Load(key); ok {
		return v.(metric.MeasurementOption)
	}
	o.n.Lock()
	defer o.n.Unlock()
	if v, ok := o.m.Load(key); ok {
		return v.(metric.MeasurementOption)
	}
	if o.k >= MaxCachedOptions && key != o.overflow {
		key = o.overflow
		if v, ok := o.m.Load(key); ok {
			return v.(metric.MeasurementOption)
		}
	}
	opt := metric.WithAttributeSet(o.build(key))
	o.m.Store(key, opt)
	o.k++
	return opt
}

// Int64Gauge returns m's observable gauge name, or a no-op one when m
// refuses it.
func Int64Gauge(m metric.Meter, name string, opts ...metric.Int64ObservableGaugeOption) metric.Int64ObservableGauge {
	g, err := m.Int64ObservableGauge(name, opts...)
	if err != nil || g == nil {
		Report(err)
		return noop.Int64ObservableGauge{}
	}
	return g
}

// Float64Gauge returns m's observable gauge name, or a no-op one when m
// refuses it.
func Float64Gauge(m metric.Meter, name string, opts ...metric.Float64ObservableGaugeOption) metric.Float64ObservableGauge {
	g, err := m.Float64ObservableGauge(name, opts...)
	if err != nil || g == nil {
		Report(err)
		return noop.Float64ObservableGauge{}
	}
	return g
}

// Int64ObservableCounter returns m's observable counter name, or a no-op one
// when m refuses it.
func Int64ObservableCounter(m metric.Meter, name string, opts ...metric.Int64ObservableCounterOption) metric.Int64ObservableCounter {
	c, err := m.Int64ObservableCounter(name, opts...)
	if err != nil || c == nil {
		Report(err)
		return noop.Int64ObservableCounter{}
	}
	return c
}

// Register registers f as the callback of insts on m and returns the
// function that unregisters it (which does nothing when m refused it).
func Register(m metric.Meter, f metric.Callback, insts ...metric.Observable) (unregister func()) {
	reg, err := m.RegisterCallback(f, insts...)
	if err != nil || reg == nil {
		Report(err)
		return func() {}
	}
	return func() { Report(reg.Unregister()) }
}
