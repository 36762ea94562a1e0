package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/esox-go/esox/eventstore"
)

// AppendLatencyBuckets are the upper bounds, in seconds, of the append
// latency histogram.
var AppendLatencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// Metrics counts what the service does and renders it in the Prometheus
// text exposition format (version 0.0.4), written by hand: esox's packages
// import no metrics library, they expose Stats and Status instead, which
// collectors added with AddCollector turn into samples at scrape time.
// Safe for concurrent use.
type Metrics struct {
	mu             sync.Mutex
	appends        map[string]uint64 // by outcome
	appendBuckets  []uint64          // cumulative counts per AppendLatencyBuckets, then +Inf
	appendSum      float64
	appendCount    uint64
	requests       map[[2]string]uint64 // route, code
	collectors     []Collector
	collectTimeout time.Duration
}

// Collector adds samples at scrape time, e.g. projection lag from
// projector.Runner.Status. ctx bounds its queries. An error is reported as
// the esox_collector_errors_total counter and in a comment; the other
// samples are still served.
type Collector func(ctx context.Context, w *MetricsWriter) error

// NewMetrics returns empty Metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		appends:        map[string]uint64{},
		appendBuckets:  make([]uint64, len(AppendLatencyBuckets)+1),
		requests:       map[[2]string]uint64{},
		collectTimeout: 5 * time.Second,
	}
}

// AddCollector registers c, called on every scrape.
func (m *Metrics) AddCollector(c Collector) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.collectors = append(m.collectors, c)
}

// ObserveAppend records one append: its outcome ("ok", "conflict" or
// "error") and how long it took.
func (m *Metrics) ObserveAppend(outcome string, d time.Duration) {
	s := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.appends[outcome]++
	m.appendSum += s
	m.appendCount++
	for i, b := range AppendLatencyBuckets {
		if s <= b {
			m.appendBuckets[i]++
		}
	}
	m.appendBuckets[len(AppendLatencyBuckets)]++
}

// observeRequest counts one HTTP response by route pattern and status code.
func (m *Metrics) observeRequest(route string, code int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[[2]string{route, strconv.Itoa(code)}]++
}

// Store wraps an eventstore.Store so that every Append is counted and timed
// in m. Wrap the store the aggregate.Repository uses. When s implements
// eventstore.TxAppender, so does the wrapper, and AppendTx is counted too
// (an AppendTx that succeeded may still be rolled back by its caller), so
// the Repository's Tx forms keep working through it.
func (m *Metrics) Store(s eventstore.Store) eventstore.Store {
	ms := &meteredStore{Store: s, m: m}
	if ta, ok := s.(eventstore.TxAppender); ok {
		return &meteredTxStore{meteredStore: ms, ta: ta}
	}
	return ms
}

type meteredStore struct {
	eventstore.Store
	m *Metrics
}

func (s *meteredStore) Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	start := time.Now()
	res, err := s.Store.Append(ctx, streamID, expected, events)
	s.m.observeAppendResult(err, time.Since(start))
	return res, err
}

// meteredTxStore is a meteredStore over a store that can append in a
// caller's transaction.
type meteredTxStore struct {
	*meteredStore
	ta eventstore.TxAppender
}

func (s *meteredTxStore) AppendTx(ctx context.Context, tx eventstore.Tx, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	start := time.Now()
	res, err := s.ta.AppendTx(ctx, tx, streamID, expected, events)
	s.m.observeAppendResult(err, time.Since(start))
	return res, err
}

func (m *Metrics) observeAppendResult(err error, d time.Duration) {
	outcome := "ok"
	switch {
	case errors.Is(err, eventstore.ErrConcurrencyConflict):
		outcome = "conflict"
	case err != nil:
		outcome = "error"
	}
	m.ObserveAppend(outcome, d)
}

// ServeHTTP writes every metric.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mw := &MetricsWriter{}
	m.mu.Lock()
	mw.Family("esox_appends_total", "counter", "Appends to the event store by outcome (ok, conflict, error).")
	for _, o := range sortedKeys(m.appends) {
		mw.Sample("esox_appends_total", float64(m.appends[o]), "outcome", o)
	}
	mw.Family("esox_append_duration_seconds", "histogram", "Latency of appends to the event store.")
	for i, b := range AppendLatencyBuckets {
		mw.Sample("esox_append_duration_seconds_bucket", float64(m.appendBuckets[i]), "le", formatFloat(b))
	}
	mw.Sample("esox_append_duration_seconds_bucket", float64(m.appendBuckets[len(AppendLatencyBuckets)]), "le", "+Inf")
	mw.Sample("esox_append_duration_seconds_sum", m.appendSum)
	mw.Sample("esox_append_duration_seconds_count", float64(m.appendCount))
	mw.Family("ordering_http_requests_total", "counter", "HTTP responses by route and status code.")
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0]+" "+a[1], b[0]+" "+b[1]) })
	for _, k := range keys {
		mw.Sample("ordering_http_requests_total", float64(m.requests[k]), "route", k[0], "code", k[1])
	}
	collectors := slices.Clone(m.collectors)
	m.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), m.collectTimeout)
	defer cancel()
	var failed int
	for _, c := range collectors {
		if err := c(ctx, mw); err != nil {
			failed++
			mw.comment("collector error: " + strings.ReplaceAll(err.Error(), "\n", " "))
		}
	}
	mw.Family("esox_collector_errors", "gauge", "Collectors that failed during this scrape.")
	mw.Sample("esox_collector_errors", float64(failed))
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = mw.WriteTo(w)
}

// MetricsWriter builds a Prometheus text exposition. Declare each metric
// family once with Family, then add its samples. Not safe for concurrent use.
type MetricsWriter struct {
	b strings.Builder
}

// Family writes the HELP and TYPE lines of a metric family (typ is
// "counter", "gauge", "histogram" or "summary").
func (w *MetricsWriter) Family(name, typ, help string) {
	fmt.Fprintf(&w.b, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
}

// Sample writes one sample; labels are name, value pairs.
func (w *MetricsWriter) Sample(name string, value float64, labels ...string) {
	w.b.WriteString(name)
	if len(labels) > 1 {
		w.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.b.WriteByte(',')
			}
			fmt.Fprintf(&w.b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
		}
		w.b.WriteByte('}')
	}
	w.b.WriteByte(' ')
	w.b.WriteString(formatFloat(value))
	w.b.WriteByte('\n')
}

func (w *MetricsWriter) comment(s string) { fmt.Fprintf(&w.b, "# %s\n", s) }

// WriteTo writes the exposition to out.
func (w *MetricsWriter) WriteTo(out io.Writer) (int64, error) {
	n, err := io.WriteString(out, w.b.String())
	return int64(n), err
}

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
