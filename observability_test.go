package esox_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

// instrument is a metric instrument as created: its kind in the doc's
// terms (counter, histogram, gauge) and unit.
type instrument struct{ kind, unit string }

// instruments is a MeterProvider that records the instruments created
// through it and measures nothing.
type instruments struct {
	noop.MeterProvider
	mu   sync.Mutex
	seen map[string]instrument
}

func (p *instruments) Meter(string, ...metric.MeterOption) metric.Meter { return recordingMeter{p: p} }

func (p *instruments) add(name, kind, unit string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen[name] = instrument{kind, unit}
}

type recordingMeter struct {
	noop.Meter
	p *instruments
}

func (m recordingMeter) Int64Counter(name string, opts ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	m.p.add(name, "counter", metric.NewInt64CounterConfig(opts...).Unit())
	return noop.Int64Counter{}, nil
}

func (m recordingMeter) Float64Histogram(name string, opts ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	m.p.add(name, "histogram", metric.NewFloat64HistogramConfig(opts...).Unit())
	return noop.Float64Histogram{}, nil
}

func (m recordingMeter) Int64ObservableCounter(name string, opts ...metric.Int64ObservableCounterOption) (metric.Int64ObservableCounter, error) {
	m.p.add(name, "counter", metric.NewInt64ObservableCounterConfig(opts...).Unit())
	return noop.Int64ObservableCounter{}, nil
}

func (m recordingMeter) Int64ObservableGauge(name string, opts ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	m.p.add(name, "gauge", metric.NewInt64ObservableGaugeConfig(opts...).Unit())
	return noop.Int64ObservableGauge{}, nil
}

func (m recordingMeter) Float64ObservableGauge(name string, opts ...metric.Float64ObservableGaugeOption) (metric.Float64ObservableGauge, error) {
	m.p.add(name, "gauge", metric.NewFloat64ObservableGaugeConfig(opts...).Unit())
	return noop.Float64ObservableGauge{}, nil
}

// docMetric is a row of the metrics table of docs/observability.md.
type docMetric struct {
	name, kind, unit, prometheus string
	attributes                   []string
}

var backquoted = regexp.MustCompile("`([^`]*)`")

// readDocMetrics returns the table of the section "Metrics" of
// docs/observability.md, by OpenTelemetry name.
func readDocMetrics(t *testing.T) map[string]docMetric {
	t.Helper()
	f, err := os.Open("docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]docMetric{}
	sc := bufio.NewScanner(f)
	section := ""
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			section = line
		}
		if section != "## Metrics" || !strings.HasPrefix(line, "| `esox.") {
			continue
		}
		cols := strings.Split(strings.Trim(line, "|"), "|")
		if len(cols) != 6 {
			t.Fatalf("docs/observability.md: metric row with %d columns, want 6: %s", len(cols), line)
		}
		unquote := func(s string) string { return strings.Trim(strings.TrimSpace(s), "`") }
		m := docMetric{name: unquote(cols[0]), kind: strings.TrimSpace(cols[1]), unit: unquote(cols[2]), prometheus: unquote(cols[4])}
		for _, a := range backquoted.FindAllStringSubmatch(cols[3], -1) {
			m.attributes = append(m.attributes, a[1])
		}
		if _, dup := out[m.name]; dup {
			t.Errorf("docs/observability.md lists %s twice", m.name)
		}
		out[m.name] = m
	}
	if len(out) == 0 {
		t.Fatal("docs/observability.md: no metrics table found")
	}
	return out
}

// TestObservabilityDoc: docs/observability.md lists exactly the metrics
// the store, the runner, the forwarder and an inbox create, with their
// kind, unit and the name the OpenTelemetry Prometheus exporter gives them;
// its alert rules and the Grafana dashboard docs/grafana/esox.json query
// only those metrics and their attributes; the dashboard is well-formed.
func TestObservabilityDoc(t *testing.T) {
	t.Parallel()
	rec := &instruments{seen: map[string]instrument{}}
	db, err := sqlx.Open("postgres", "postgres://unused.invalid/none") // nothing here connects
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := registry()
	store, err := postgres.New(db, reg, postgres.Config{MeterProvider: rec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := projector.NewRunner(store, projector.Config{MeterProvider: rec}, balances(reg, "esox")); err != nil {
		t.Fatal(err)
	}
	if _, err := forwarder.New(store, noopPublisher{}, forwarder.Config{MeterProvider: rec}); err != nil {
		t.Fatal(err)
	}
	if _, err := projector.NewInbox(db, reg, projector.InboxConfig{Consumer: "c", MeterProvider: rec}); err != nil {
		t.Fatal(err)
	}

	doc := readDocMetrics(t)
	namer := otlptranslator.NewMetricNamer("", otlptranslator.UnderscoreEscapingWithSuffixes)
	types := map[string]otlptranslator.MetricType{"counter": otlptranslator.MetricTypeMonotonicCounter, "histogram": otlptranslator.MetricTypeHistogram, "gauge": otlptranslator.MetricTypeGauge}
	for name, inst := range rec.seen {
		d, ok := doc[name]
		if !ok {
			t.Errorf("%s (%s, %q) is not in docs/observability.md", name, inst.kind, inst.unit)
			continue
		}
		if d.kind != inst.kind || d.unit != inst.unit {
			t.Errorf("docs/observability.md: %s is a %s in %q, the code makes a %s in %q", name, d.kind, d.unit, inst.kind, inst.unit)
		}
		prom, err := namer.Build(otlptranslator.Metric{Name: name, Unit: inst.unit, Type: types[inst.kind]})
		if err != nil || prom != d.prometheus {
			t.Errorf("docs/observability.md: %s is %s in Prometheus, the exporter names it %s (%v)", name, d.prometheus, prom, err)
		}
	}
	for name := range doc {
		if _, ok := rec.seen[name]; !ok {
			t.Errorf("docs/observability.md lists %s, which esox does not create", name)
		}
	}

	// The names a query may use: the Prometheus metrics (histograms with
	// their series' suffixes) and labels.
	known := map[string]bool{}
	for _, d := range doc {
		known[d.prometheus] = true
		if d.kind == "histogram" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[d.prometheus+s] = true
			}
		}
		for _, a := range d.attributes {
			known[strings.ReplaceAll(a, ".", "_")] = true
		}
	}
	checkQuery := func(where, expr string) {
		t.Helper()
		if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
			t.Errorf("%s: unbalanced brackets in %s", where, expr)
		}
		names := regexp.MustCompile(`esox_[a-z_]+`).FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q queries no esox metric", where, expr)
		}
		for _, n := range names {
			if !known[n] {
				t.Errorf("%s: %q uses %s, which esox does not export", where, expr, n)
			}
		}
	}

	// The alert rules.
	text, err := os.ReadFile("docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	rules := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(text)
	if rules == nil {
		t.Fatal("docs/observability.md has no yaml block of alert rules")
	}
	exprs := regexp.MustCompile(`(?m)^\s+expr: (?:\|\n((?:\s{10}.*\n)+)|(.*)\n)`).FindAllSubmatch(rules[1], -1)
	if len(exprs) < 8 {
		t.Fatalf("found %d alert expressions in docs/observability.md, want at least 8", len(exprs))
	}
	for _, e := range exprs {
		checkQuery("alert rule", string(e[1])+string(e[2]))
	}

	// The dashboard.
	var dash struct {
		Title         string `json:"title"`
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct{ Name, Type, Query string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource *struct{ Type, UID string }
			GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
			Targets    []struct {
				RefID      string `json:"refId"`
				Expr       string `json:"expr"`
				Datasource *struct{ Type, UID string }
			} `json:"targets"`
		} `json:"panels"`
	}
	raw, err := os.ReadFile("docs/grafana/esox.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("docs/grafana/esox.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || dash.SchemaVersion < 36 {
		t.Errorf("dashboard title %q uid %q schemaVersion %d", dash.Title, dash.UID, dash.SchemaVersion)
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v struct{ Name, Type, Query string }) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Errorf("dashboard has no prometheus datasource variable")
	}
	ids := map[int]bool{}
	cells := map[[2]int]int{} // grid cell -> panel id
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		where := fmt.Sprintf("dashboard panel %d %q", p.ID, p.Title)
		if p.ID == 0 || ids[p.ID] || p.Title == "" || p.Type == "" {
			t.Errorf("%s: id, title and type must be set, the id unique", where)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("%s: gridPos %+v out of the 24-column grid", where, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, taken := cells[[2]int{x, y}]; taken {
					t.Errorf("%s overlaps panel %d", where, other)
				}
				cells[[2]int{x, y}] = p.ID
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("%s: want the ${datasource} variable and at least one query", where)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.RefID == "" || refs[q.RefID] {
				t.Errorf("%s: query refId %q empty or repeated", where, q.RefID)
			}
			refs[q.RefID] = true
			checkQuery(where, q.Expr)
			for _, n := range regexp.MustCompile(`esox_[a-z_]+`).FindAllString(q.Expr, -1) {
				queried[n] = true
			}
		}
	}
	for _, must := range []string{"esox_projection_lag_seconds", "esox_forwarder_lag_seconds", "esox_forwarder_poison_total", "esox_append_conflicts_total"} {
		if !queried[must] {
			t.Errorf("the dashboard does not show %s", must)
		}
	}
}

// noopPublisher is a Watermill publisher that is never called.
type noopPublisher struct{}

func (noopPublisher) Publish(string, ...*message.Message) error { return nil }
func (noopPublisher) Close() error                              { return nil }
