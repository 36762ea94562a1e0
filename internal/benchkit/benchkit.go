// Package benchkit runs esox's benchmarks the way docs/benchmarks.md reports
// them: each measure has named variants — esox, its raw-SQL baseline doing
// the same work, sometimes a third party such as watermill-sql — that run in
// interleaved rounds of a fixed duration, in one process, on the same tables
// for the whole run. The figure of a measure is the median of the per-round
// ratios esox/baseline, with their spread (min–max).
//
// # Rounds
//
// A run is Config.Rounds cycles. Every cycle runs each variant once, for
// Config.Round; even cycles in the order the variants are given, odd cycles
// in the reverse order, so two variants run A B B A A B … and a slow drift
// of the machine (a checkpoint, a neighbour's load, a growing table) weighs
// on both alike. Round i of a variant is paired with round i of the baseline,
// its neighbour in the same cycle, and the ratio of their rates is one
// sample; with three variants, put the baseline in the middle so it is next
// to both others in every cycle. Before the cycles each variant runs one
// warm-up round of Config.Warmup (connections opened, statements prepared,
// caches filled) that is not measured.
//
// # Use in a benchmark
//
// One Go benchmark per measure calls Run; the benchmark's b.N is ignored, so
// run it with -benchtime 1x (make bench does):
//
//	func BenchmarkX(b *testing.B) {
//		benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "raw", Variants: []benchkit.Variant{
//			{Name: "esox", Run: func(r *benchkit.Round) error {
//				for !r.Done() {
//					// one operation
//					r.Add(1)
//				}
//				return nil
//			}},
//			{Name: "raw", Run: ...},
//		}})
//	}
//
//	go test -run '^$' -bench X -benchtime 1x ./pkg
//	ESOX_BENCH_ROUND=200ms ESOX_BENCH_ROUNDS=2 go test -run '^$' -bench X -benchtime 1x ./pkg  # a quick check
//
// Run reports, through b.ReportMetric, for each variant v its median,
// smallest and largest per-round rate ("v-<unit>", "v-min-<unit>",
// "v-max-<unit>"), for each variant other than the baseline the median,
// smallest and largest per-round ratio to the baseline ("v/<baseline>-median",
// "v/<baseline>-min", "v/<baseline>-max"), and the configuration ("rounds",
// "round-s"). scripts/benchtable turns these lines into the tables of
// docs/benchmarks.md. The per-round rates are logged.
//
// Timings are measured, never asserted: nothing here fails because a
// variant is slow.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Defaults of Config, and the environment variables ConfigFromEnv reads.
const (
	// RoundDefault is the default Config.Round.
	RoundDefault = 3 * time.Second
	// RoundsDefault is the default Config.Rounds.
	RoundsDefault = 6
	// WarmupDefault is the default Config.Warmup.
	WarmupDefault = time.Second

	// EnvRound sets Config.Round: a Go duration such as "3s" or "200ms".
	EnvRound = "ESOX_BENCH_ROUND"
	// EnvRounds sets Config.Rounds: a positive integer.
	EnvRounds = "ESOX_BENCH_ROUNDS"
	// EnvWarmup sets Config.Warmup: a Go duration; "0" disables warm-up.
	EnvWarmup = "ESOX_BENCH_WARMUP"
)

// Config is how long a run is. The zero value means all defaults.
type Config struct {
	// Round is the duration of one round of one variant. Defaults to
	// RoundDefault.
	Round time.Duration
	// Rounds is the number of rounds each variant runs (the number of
	// cycles). Defaults to RoundsDefault.
	Rounds int
	// Warmup is the duration of the unmeasured round each variant runs
	// before the cycles. Defaults to WarmupDefault, capped at Round.
	Warmup time.Duration
	// DisableWarmup skips the warm-up rounds.
	DisableWarmup bool
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.Round <= 0 {
		c.Round = RoundDefault
	}
	if c.Rounds <= 0 {
		c.Rounds = RoundsDefault
	}
	if c.Warmup <= 0 {
		c.Warmup = WarmupDefault
	}
	c.Warmup = min(c.Warmup, c.Round)
	return c
}

// ConfigFromEnv returns the Config set by EnvRound, EnvRounds and EnvWarmup
// as getenv reports them (os.Getenv in benchmarks), defaults filled in. An
// unset or empty variable means its default; a malformed one is an error
// naming it.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var c Config
	if v := getenv(EnvRound); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return Config{}, fmt.Errorf("benchkit: %s=%q: want a positive duration such as 3s or 200ms", EnvRound, v)
		}
		c.Round = d
	}
	if v := getenv(EnvRounds); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return Config{}, fmt.Errorf("benchkit: %s=%q: want a positive integer", EnvRounds, v)
		}
		c.Rounds = n
	}
	if v := getenv(EnvWarmup); v != "" {
		if v == "0" {
			c.DisableWarmup = true
		} else {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return Config{}, fmt.Errorf("benchkit: %s=%q: want a duration such as 1s, or 0 for none", EnvWarmup, v)
			}
			c.Warmup, c.DisableWarmup = d, d == 0
		}
	}
	return c.withDefaults(), nil
}

// Variant is one way of doing a measure's work: esox, or a baseline.
type Variant struct {
	// Name identifies the variant in metrics and logs: letters, digits
	// and '-', e.g. "esox", "raw", "watermill-sql".
	Name string
	// Run does the work for one round: typically it loops until r.Done(),
	// calling r.Add for each operation completed, and returns. Setup it
	// needs each round (starting a runner, rewinding a checkpoint) goes
	// before r.ResetTimer, teardown after r.StopTimer. An error fails the
	// benchmark. Run is called from one goroutine at a time; it may start
	// goroutines of its own, which must have ended when it returns.
	Run func(r *Round) error
}

// Measure is one benchmark: the variants compared and what they count.
type Measure struct {
	// Unit is what a variant's rate counts, e.g. "events/s"; it names the
	// rate metrics.
	Unit string
	// Baseline names the variant the others are divided by, usually
	// "raw". Empty means no ratios are reported (e.g. an idle measure
	// whose baseline does nearly nothing).
	Baseline string
	// Variants are run in this order in even cycles, in reverse in odd
	// ones. With three, put the baseline in the middle.
	Variants []Variant
	// AllowZero accepts rounds that complete no operation; by default such
	// a round fails the run (a broken workload, or a ratio over zero).
	AllowZero bool
}

func (m Measure) validate() error {
	if m.Unit == "" {
		return errors.New("benchkit: Measure.Unit is empty")
	}
	if len(m.Variants) == 0 {
		return errors.New("benchkit: Measure has no variants")
	}
	seen := map[string]bool{}
	for _, v := range m.Variants {
		if v.Name == "" || v.Run == nil {
			return fmt.Errorf("benchkit: variant %q: Name and Run are required", v.Name)
		}
		for _, c := range v.Name {
			if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return fmt.Errorf("benchkit: variant %q: a name is letters, digits and '-'", v.Name)
			}
		}
		if seen[v.Name] {
			return fmt.Errorf("benchkit: variant %q appears twice", v.Name)
		}
		seen[v.Name] = true
	}
	if m.Baseline != "" && !seen[m.Baseline] {
		return fmt.Errorf("benchkit: baseline %q is not a variant", m.Baseline)
	}
	return nil
}

// Round is one timed slice of one variant's work. The harness starts its
// clock before calling Variant.Run and stops it when Run returns; Run may
// restart it after its own setup (ResetTimer) and stop it before its
// teardown (StopTimer). Done, Deadline, Add and Wait are safe for
// concurrent use by the goroutines of one Run; ResetTimer and StopTimer are
// for the goroutine that called Run.
type Round struct {
	// Variant is the name of the variant this round runs.
	Variant string
	// Cycle is the round's cycle, from 0; -1 for the warm-up round.
	Cycle int

	d        time.Duration
	now      func() time.Time
	start    time.Time
	deadline atomic.Int64 // unix nanoseconds
	end      time.Time
	stopped  bool
	ops      atomic.Int64
}

// Warmup reports whether this is the unmeasured warm-up round.
func (r *Round) Warmup() bool { return r.Cycle < 0 }

// ResetTimer restarts the round's clock and its count of operations: the
// round now ends Config.Round from now. Call it after per-round setup that
// must not be measured.
func (r *Round) ResetTimer() {
	r.start = r.now()
	r.deadline.Store(r.start.Add(r.d).UnixNano())
	r.ops.Store(0)
	r.stopped = false
}

// StopTimer stops the round's clock: what Run does afterwards (teardown) is
// not measured, and operations added afterwards still count. Only the first
// call after ResetTimer stops the clock.
func (r *Round) StopTimer() {
	if !r.stopped {
		r.end, r.stopped = r.now(), true
	}
}

// Deadline returns when the round ends.
func (r *Round) Deadline() time.Time { return time.Unix(0, r.deadline.Load()) }

// Done reports whether the round's time is up.
func (r *Round) Done() bool { return r.now().UnixNano() >= r.deadline.Load() }

// Add counts n more operations done.
func (r *Round) Add(n int64) { r.ops.Add(n) }

// Ops returns the operations counted so far.
func (r *Round) Ops() int64 { return r.ops.Load() }

// Wait blocks until the round's deadline or until ctx is done, whichever
// comes first, for workloads that run by themselves (a runner, a forwarder)
// and are only counted at the end. It returns ctx's error if ctx ended first.
func (r *Round) Wait(ctx context.Context) error {
	t := time.NewTimer(time.Until(r.Deadline()))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// elapsed returns the measured duration of the round.
func (r *Round) elapsed() time.Duration { return r.end.Sub(r.start) }

// Order returns the order of the variants in each of cycles cycles: variant
// indexes 0..variants-1 in even cycles, the reverse in odd cycles. For two
// variants A and B that is A B, B A, A B, … — the sequence A B B A A B ….
func Order(variants, cycles int) [][]int {
	out := make([][]int, cycles)
	for c := range out {
		perm := make([]int, variants)
		for i := range perm {
			if c%2 == 0 {
				perm[i] = i
			} else {
				perm[i] = variants - 1 - i
			}
		}
		out[c] = perm
	}
	return out
}

// Result is what a run measured: per variant, its rate in each cycle. Its
// methods only read it, and are safe for concurrent use.
type Result struct {
	// Config is the configuration the run used, defaults filled in.
	Config Config
	// Unit is the Measure's Unit.
	Unit string
	// Baseline is the Measure's Baseline.
	Baseline string
	// Names are the variants' names, in the Measure's order.
	Names []string
	// Rates holds, per variant (in Names order), its rate in each cycle:
	// operations completed over the round's measured duration, per second.
	Rates [][]float64
}

func (res *Result) index(name string) int { return slices.Index(res.Names, name) }

// RatesOf returns the per-cycle rates of variant name, nil for an unknown
// name.
func (res *Result) RatesOf(name string) []float64 {
	i := res.index(name)
	if i < 0 {
		return nil
	}
	return res.Rates[i]
}

// Ratios returns, for each cycle, variant a's rate divided by variant b's
// rate in the same cycle (where each ran next to the other, or with the
// baseline between them); nil when a name is unknown.
func (res *Result) Ratios(a, b string) []float64 {
	ra, rb := res.RatesOf(a), res.RatesOf(b)
	if ra == nil || rb == nil {
		return nil
	}
	out := make([]float64, len(ra))
	for c := range ra {
		out[c] = ra[c] / rb[c]
	}
	return out
}

// Diffs returns, for each cycle, variant a's rate minus variant b's rate;
// nil when a name is unknown.
func (res *Result) Diffs(a, b string) []float64 {
	ra, rb := res.RatesOf(a), res.RatesOf(b)
	if ra == nil || rb == nil {
		return nil
	}
	out := make([]float64, len(ra))
	for c := range ra {
		out[c] = ra[c] - rb[c]
	}
	return out
}

// Summary is the median and the spread of a set of samples.
type Summary struct {
	N                int
	Median, Min, Max float64
}

// Summarize returns the median (the mean of the middle two for an even
// count), smallest and largest of xs; NaN fields for none.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Summary{N: n, Median: med, Min: s[0], Max: s[n-1]}
}

// Execute runs m's variants under cfg (zero fields take their defaults) and
// returns the rates measured; logf, if not nil, receives one line per round.
// It returns the first error of a Variant.Run, or an error for a round that
// did no work (unless m.AllowZero) or that measured no time. Calls are
// independent, but run one at a time: a round measures the whole machine.
func Execute(cfg Config, m Measure, logf func(format string, args ...any)) (*Result, error) {
	return execute(cfg, m, logf, time.Now)
}

func execute(cfg Config, m Measure, logf func(string, ...any), now func() time.Time) (*Result, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res := &Result{Config: cfg, Unit: m.Unit, Baseline: m.Baseline, Rates: make([][]float64, len(m.Variants))}
	for i, v := range m.Variants {
		res.Names = append(res.Names, v.Name)
		res.Rates[i] = make([]float64, cfg.Rounds)
	}
	round := func(v Variant, cycle int, d time.Duration) (float64, error) {
		r := &Round{Variant: v.Name, Cycle: cycle, d: d, now: now}
		r.ResetTimer()
		err := v.Run(r)
		r.StopTimer()
		what := fmt.Sprintf("round %d", cycle+1)
		if cycle < 0 {
			what = "warm-up round"
		}
		if err != nil {
			return 0, fmt.Errorf("benchkit: %s, %s: %w", v.Name, what, err)
		}
		el := r.elapsed()
		if el <= 0 {
			return 0, fmt.Errorf("benchkit: %s, %s: no time measured", v.Name, what)
		}
		ops := r.ops.Load()
		if ops == 0 && !m.AllowZero {
			return 0, fmt.Errorf("benchkit: %s, %s: did no work in %s", v.Name, what, el)
		}
		rate := float64(ops) / el.Seconds()
		logf("%s %s: %d in %s = %.1f %s", v.Name, what, ops, el.Round(time.Millisecond), rate, m.Unit)
		return rate, nil
	}
	if !cfg.DisableWarmup {
		for _, v := range m.Variants {
			if _, err := round(v, -1, cfg.Warmup); err != nil {
				return nil, err
			}
		}
	}
	for c, perm := range Order(len(m.Variants), cfg.Rounds) {
		for _, i := range perm {
			rate, err := round(m.Variants[i], c, cfg.Round)
			if err != nil {
				return nil, err
			}
			res.Rates[i][c] = rate
		}
	}
	return res, nil
}

// Metric is one figure for b.ReportMetric.
type Metric struct {
	Value float64
	Unit  string
}

// Metrics returns the figures Run reports for res: the rounds and their
// duration, each variant's median, min and max rate, and each non-baseline
// variant's median, min and max ratio to the baseline.
func (res *Result) Metrics() []Metric {
	out := []Metric{
		{float64(res.Config.Rounds), "rounds"},
		{res.Config.Round.Seconds(), "round-s"},
	}
	for i, name := range res.Names {
		s := Summarize(res.Rates[i])
		out = append(out,
			Metric{s.Median, name + "-" + res.Unit},
			Metric{s.Min, name + "-min-" + res.Unit},
			Metric{s.Max, name + "-max-" + res.Unit})
	}
	if res.Baseline != "" {
		for _, name := range res.Names {
			if name != res.Baseline {
				out = append(out, res.RatioMetrics(name, res.Baseline)...)
			}
		}
	}
	return out
}

// RatioMetrics returns the median, min and max of a's per-cycle ratios to
// b, as the metrics "a/b-median", "a/b-min" and "a/b-max".
func (res *Result) RatioMetrics(a, b string) []Metric {
	s := Summarize(res.Ratios(a, b))
	p := a + "/" + b
	return []Metric{{s.Median, p + "-median"}, {s.Min, p + "-min"}, {s.Max, p + "-max"}}
}

// ReportMetrics reports ms on b.
func ReportMetrics(b *testing.B, ms []Metric) {
	for _, m := range ms {
		b.ReportMetric(m.Value, m.Unit)
	}
}

// Run runs m in a benchmark with the Config from the environment
// (ConfigFromEnv), logs each round's rate, reports res.Metrics() (and no
// ns/op, which would be meaningless) and returns the result for further
// metrics. It ignores b.N: run with -benchtime 1x. Any error fails b.
func Run(b *testing.B, m Measure) *Result {
	b.Helper()
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	if b.N > 1 {
		b.Logf("benchkit: b.N=%d is ignored; run with -benchtime 1x", b.N)
	}
	res, err := Execute(cfg, m, b.Logf)
	if err != nil {
		b.Fatal(err)
	}
	ReportMetrics(b, res.Metrics())
	b.ReportMetric(0, "ns/op")
	return res
}
