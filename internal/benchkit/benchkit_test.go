package benchkit

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOrderAlternates(t *testing.T) {
	got := Order(2, 4)
	want := [][]int{{0, 1}, {1, 0}, {0, 1}, {1, 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Order(2, 4) = %v, want %v (A B B A A B B A)", got, want)
	}
	// Three variants: the middle one (the baseline) is next to both others
	// in every cycle, and each variant runs once per cycle.
	for c, perm := range Order(3, 5) {
		sorted := slices.Clone(perm)
		slices.Sort(sorted)
		if !slices.Equal(sorted, []int{0, 1, 2}) {
			t.Fatalf("cycle %d: %v is not a permutation of the variants", c, perm)
		}
		if perm[1] != 1 {
			t.Fatalf("cycle %d: %v: the middle variant is not in the middle", c, perm)
		}
		wantFirst := 0
		if c%2 == 1 {
			wantFirst = 2
		}
		if perm[0] != wantFirst {
			t.Fatalf("cycle %d starts with %d, want %d", c, perm[0], wantFirst)
		}
	}
}

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		in             []float64
		med, min, maxv float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{0.9, 0.7, 0.8}, 0.8, 0.7, 0.9},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{0.81, 0.79, 0.95, 0.60, 0.83, 0.80}, 0.805, 0.60, 0.95},
	} {
		s := Summarize(tc.in)
		if s.N != len(tc.in) || math.Abs(s.Median-tc.med) > 1e-12 || s.Min != tc.min || s.Max != tc.maxv {
			t.Errorf("Summarize(%v) = %+v, want median %v, min %v, max %v", tc.in, s, tc.med, tc.min, tc.maxv)
		}
	}
	if s := Summarize(nil); s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("Summarize(nil) = %+v, want NaN median", s)
	}
	in := []float64{3, 1, 2}
	Summarize(in)
	if !slices.Equal(in, []float64{3, 1, 2}) {
		t.Errorf("Summarize sorted its input: %v", in)
	}
}

func TestRatiosPairByCycle(t *testing.T) {
	res := &Result{
		Names: []string{"esox", "raw", "watermill-sql"},
		Rates: [][]float64{{80, 90, 70}, {100, 100, 50}, {40, 45, 25}},
	}
	if got, want := res.Ratios("esox", "raw"), []float64{0.8, 0.9, 1.4}; !slices.Equal(got, want) {
		t.Errorf("Ratios(esox, raw) = %v, want %v", got, want)
	}
	if got, want := res.Ratios("esox", "watermill-sql"), []float64{2, 2, 2.8}; !slices.Equal(got, want) {
		t.Errorf("Ratios(esox, watermill-sql) = %v, want %v", got, want)
	}
	if got, want := res.Diffs("esox", "raw"), []float64{-20, -10, 20}; !slices.Equal(got, want) {
		t.Errorf("Diffs(esox, raw) = %v, want %v", got, want)
	}
	if res.Ratios("esox", "nope") != nil || res.RatesOf("nope") != nil {
		t.Error("an unknown variant gave figures")
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := ConfigFromEnv(env())
	if err != nil || c != (Config{Round: 3 * time.Second, Rounds: 6, Warmup: time.Second}) {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	c, err = ConfigFromEnv(env(EnvRound, "200ms", EnvRounds, "2"))
	if err != nil || c != (Config{Round: 200 * time.Millisecond, Rounds: 2, Warmup: 200 * time.Millisecond}) {
		t.Fatalf("quick run: %+v, %v (the warm-up is capped at the round)", c, err)
	}
	c, err = ConfigFromEnv(env(EnvWarmup, "0"))
	if err != nil || !c.DisableWarmup {
		t.Fatalf("%s=0: %+v, %v", EnvWarmup, c, err)
	}
	for _, kv := range [][2]string{{EnvRound, "3"}, {EnvRound, "-1s"}, {EnvRounds, "0"}, {EnvRounds, "2x"}, {EnvWarmup, "soon"}} {
		if _, err := ConfigFromEnv(env(kv[0], kv[1])); err == nil || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%q: error %v, want one naming the variable", kv[0], kv[1], err)
		}
	}
}

// fakeClock advances by one second at every reading, so that every round
// the harness times lasts exactly one second and a rate equals the
// operations added.
func fakeClock() func() time.Time {
	t := time.Unix(1_000_000, 0)
	return func() time.Time {
		t = t.Add(time.Second)
		return t
	}
}

func TestExecuteInterleavesAndPairs(t *testing.T) {
	var calls []string
	variant := func(name string, ops func(cycle int) int64) Variant {
		return Variant{Name: name, Run: func(r *Round) error {
			calls = append(calls, fmt.Sprintf("%s%d", name, r.Cycle))
			r.Add(ops(r.Cycle))
			return nil
		}}
	}
	m := Measure{Unit: "events/s", Baseline: "raw", Variants: []Variant{
		variant("esox", func(c int) int64 { return 80 + int64(c) }),
		variant("raw", func(int) int64 { return 100 }),
		variant("watermill-sql", func(int) int64 { return 50 }),
	}}
	var logged []string
	res, err := execute(Config{Rounds: 4}, m, func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }, fakeClock())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"esox-1", "raw-1", "watermill-sql-1", // warm-up
		"esox0", "raw0", "watermill-sql0",
		"watermill-sql1", "raw1", "esox1",
		"esox2", "raw2", "watermill-sql2",
		"watermill-sql3", "raw3", "esox3",
	}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	if len(logged) != len(want) {
		t.Errorf("%d log lines, want one per round (%d)", len(logged), len(want))
	}
	if got := res.RatesOf("esox"); !slices.Equal(got, []float64{80, 81, 82, 83}) {
		t.Fatalf("esox rates %v: warm-up counted or rounds misplaced", got)
	}
	if got := res.Ratios("esox", "raw"); !slices.Equal(got, []float64{0.8, 0.81, 0.82, 0.83}) {
		t.Fatalf("ratios %v", got)
	}
	metrics := map[string]float64{}
	for _, m := range res.Metrics() {
		metrics[m.Unit] = m.Value
	}
	for unit, v := range map[string]float64{
		"rounds": 4, "round-s": 3,
		"esox-events/s": 81.5, "esox-min-events/s": 80, "esox-max-events/s": 83, "raw-events/s": 100,
		"esox/raw-median": 0.815, "esox/raw-min": 0.8, "esox/raw-max": 0.83,
		"watermill-sql/raw-median": 0.5,
	} {
		if got, ok := metrics[unit]; !ok || math.Abs(got-v) > 1e-9 {
			t.Errorf("metric %s = %v (present %v), want %v", unit, got, ok, v)
		}
	}
	if _, ok := metrics["raw/raw-median"]; ok {
		t.Error("the baseline was divided by itself")
	}
}

func TestExecuteTimerControl(t *testing.T) {
	// Setup before ResetTimer and teardown after StopTimer are not timed:
	// with the fake clock each reading is a second, so a round that reads
	// the clock during setup and teardown still measures one second.
	m := Measure{Unit: "ops/s", Variants: []Variant{{Name: "esox", Run: func(r *Round) error {
		r.Add(7)     // setup work, discarded by ResetTimer
		_ = r.Done() // a clock reading before the timer restarts
		r.ResetTimer()
		r.Add(10)
		r.StopTimer()
		_ = r.Done() // teardown reading the clock
		r.Add(2)     // counted: completed work
		return nil
	}}}}
	res, err := execute(Config{Rounds: 1, DisableWarmup: true}, m, nil, fakeClock())
	if err != nil {
		t.Fatal(err)
	}
	if got := res.RatesOf("esox"); !slices.Equal(got, []float64{12}) {
		t.Fatalf("rate %v, want [12]", got)
	}
}

func TestExecuteErrors(t *testing.T) {
	boom := errors.New("boom")
	ok := Variant{Name: "raw", Run: func(r *Round) error { r.Add(1); return nil }}
	for name, tc := range map[string]struct {
		m    Measure
		want string
	}{
		"run error":        {Measure{Unit: "x", Variants: []Variant{ok, {Name: "esox", Run: func(*Round) error { return boom }}}}, "esox, warm-up round: boom"},
		"no work":          {Measure{Unit: "x", Variants: []Variant{ok, {Name: "esox", Run: func(*Round) error { return nil }}}}, "did no work"},
		"no unit":          {Measure{Variants: []Variant{ok}}, "Unit"},
		"no variants":      {Measure{Unit: "x"}, "no variants"},
		"duplicate":        {Measure{Unit: "x", Variants: []Variant{ok, ok}}, "twice"},
		"bad name":         {Measure{Unit: "x", Variants: []Variant{{Name: "es ox", Run: ok.Run}}}, "letters"},
		"unknown baseline": {Measure{Unit: "x", Baseline: "pg", Variants: []Variant{ok}}, "baseline"},
	} {
		_, err := execute(Config{Rounds: 1}, tc.m, nil, fakeClock())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
		if name == "run error" && !errors.Is(err, boom) {
			t.Errorf("run error not wrapped: %v", err)
		}
	}
	// AllowZero accepts idle rounds.
	idle := Measure{Unit: "tx/s", AllowZero: true, Variants: []Variant{{Name: "none", Run: func(*Round) error { return nil }}}}
	if _, err := execute(Config{Rounds: 2}, idle, nil, fakeClock()); err != nil {
		t.Fatalf("AllowZero: %v", err)
	}
}
