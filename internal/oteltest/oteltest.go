// Package oteltest gives esox's tests an OpenTelemetry SDK that records:
// every span, sampled and kept in memory as it ends, and metrics read on
// demand. It imports the SDK, so only tests may import it (the core's
// import graph is checked for that by esox's TestCoreImportsNoSDK).
package oteltest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Recorder is a tracer provider that samples every span and keeps each as
// it ends, and a meter provider read on demand. Safe for concurrent use.
type Recorder struct {
	Spans          *tracetest.InMemoryExporter
	Reader         *sdkmetric.ManualReader
	TracerProvider *sdktrace.TracerProvider
	MeterProvider  *sdkmetric.MeterProvider
}

// New returns a Recorder, shut down at t's cleanup.
func New(t testing.TB) *Recorder {
	r := &Recorder{Spans: tracetest.NewInMemoryExporter(), Reader: sdkmetric.NewManualReader()}
	r.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSyncer(r.Spans))
	r.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.Reader))
	t.Cleanup(func() {
		_ = r.TracerProvider.Shutdown(context.Background())
		_ = r.MeterProvider.Shutdown(context.Background())
	})
	return r
}

// Ended returns the spans ended so far, in the order they ended.
func (r *Recorder) Ended() tracetest.SpanStubs { return r.Spans.GetSpans() }

// Named returns the ended spans named name.
func (r *Recorder) Named(name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range r.Ended() {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// One returns the only ended span named name, failing t otherwise.
func (r *Recorder) One(t testing.TB, name string) tracetest.SpanStub {
	t.Helper()
	got := r.Named(name)
	if len(got) != 1 {
		t.Fatalf("%d spans named %q, want 1; spans: %s", len(got), name, Names(r.Ended()))
	}
	return got[0]
}

// Names lists the spans' names, for failure messages.
func Names(spans tracetest.SpanStubs) string {
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// Attr returns the value of span attribute key, and whether it is set.
func Attr(s tracetest.SpanStub, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// ChildOf reports whether child's parent is parent's span.
func ChildOf(child tracetest.SpanStub, parent trace.SpanContext) bool {
	return child.Parent.TraceID() == parent.TraceID() && child.Parent.SpanID() == parent.SpanID()
}

// LinksTo reports whether s links to the span sc.
func LinksTo(s tracetest.SpanStub, sc trace.SpanContext) bool {
	return slices.ContainsFunc(s.Links, func(l sdktrace.Link) bool {
		return l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID()
	})
}

// Collect reads every metric now.
func (r *Recorder) Collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect metrics: %v", err)
	}
	return rm
}

// Point is one data point of a metric: its attributes and value (a
// histogram's count, or the value of a sum or gauge).
type Point struct {
	Attrs attribute.Set
	Value float64
	// Sum is a histogram's sum (0 for the other kinds).
	Sum float64
}

// Points returns the data points of the metric name in rm.
func Points(rm metricdata.ResourceMetrics, name string) (points []Point, found bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			found = true
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					points = append(points, Point{Attrs: p.Attributes, Value: float64(p.Value)})
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					points = append(points, Point{Attrs: p.Attributes, Value: p.Value})
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					points = append(points, Point{Attrs: p.Attributes, Value: float64(p.Value)})
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					points = append(points, Point{Attrs: p.Attributes, Value: p.Value})
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					points = append(points, Point{Attrs: p.Attributes, Value: float64(p.Count), Sum: p.Sum})
				}
			}
		}
	}
	return points, found
}

// Value returns the value of the metric name's data point whose attributes
// are exactly attrs (a histogram's count), failing t when there is no such
// point.
func (r *Recorder) Value(t testing.TB, name string, attrs ...attribute.KeyValue) float64 {
	t.Helper()
	v, ok := r.Lookup(t, name, attrs...)
	if !ok {
		points, _ := Points(r.Collect(t), name)
		t.Fatalf("metric %s has no data point %v; it has %s", name, attrs, describe(points))
	}
	return v
}

// Lookup is Value without failing: ok is false when there is no such point.
func (r *Recorder) Lookup(t testing.TB, name string, attrs ...attribute.KeyValue) (v float64, ok bool) {
	t.Helper()
	want := attribute.NewSet(attrs...)
	points, _ := Points(r.Collect(t), name)
	for _, p := range points {
		if p.Attrs.Equals(&want) {
			return p.Value, true
		}
	}
	return 0, false
}

func describe(points []Point) string {
	if len(points) == 0 {
		return "none"
	}
	var b strings.Builder
	for _, p := range points {
		fmt.Fprintf(&b, "\n  %v = %v", p.Attrs.ToSlice(), p.Value)
	}
	return b.String()
}

// Sum returns the sum of the values of the metric name's data points whose
// attributes include attrs (histograms: their counts), and whether any
// point matched.
func (r *Recorder) Sum(t testing.TB, name string, attrs ...attribute.KeyValue) (sum float64, matched bool) {
	t.Helper()
	points, _ := Points(r.Collect(t), name)
	for _, p := range points {
		all := true
		for _, kv := range attrs {
			if v, ok := p.Attrs.Value(kv.Key); !ok || v != kv.Value {
				all = false
				break
			}
		}
		if all {
			sum += p.Value
			matched = true
		}
	}
	return sum, matched
}
