package main

import (
	"errors"
	"math"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/esox-go/esox/eventstore/postgres
cpu: Intel(R) Xeon(R) Processor
BenchmarkAppend/events=1/writers=1-2   	       1	      1600 esox-events/s	      1700 esox-max-events/s	      1500 esox-min-events/s	         0.90 esox/raw-max	         0.80 esox/raw-median	         0.70 esox/raw-min	         1.3 esox/watermill-sql-max	         1.2 esox/watermill-sql-median	         1.1 esox/watermill-sql-min	      2000 raw-events/s	      2100 raw-max-events/s	      1900 raw-min-events/s	         3.000 round-s	         6.000 rounds	      1300 watermill-sql-events/s	      1400 watermill-sql-max-events/s	      1200 watermill-sql-min-events/s	         0.7 watermill-sql/raw-max	         0.65 watermill-sql/raw-median	         0.6 watermill-sql/raw-min
--- BENCH: BenchmarkAppend/events=1/writers=1-2
    benchkit.go:418: esox round 1: 4800 in 3s = 1600.0 events/s
BenchmarkReadAll-2   	       1	    300000 esox-events/s	    310000 esox-max-events/s	    290000 esox-min-events/s	         0.66 esox/raw-max	         0.61 esox/raw-median	         0.58 esox/raw-min	    490000 raw-events/s	    500000 raw-max-events/s	    480000 raw-min-events/s	         3.000 round-s	         6.000 rounds
BenchmarkAppendTelemetryCPU-2   	       1	   1000000 noop-appends/s	   1250000 off-appends/s	    200000 sdk-appends/s	         3.000 round-s	         6.000 rounds
BenchmarkAppendTelemetry-2   	       1	      2000 noop-events/s	      2010 off-events/s	      1900 sdk-events/s	         0.995 noop/off-median	         0.98 noop/off-min	         1.01 noop/off-max	         0.94 sdk/off-median	         0.90 sdk/off-min	         0.97 sdk/off-max	         3.000 round-s	         6.000 rounds
pkg: github.com/esox-go/esox/forwarder
BenchmarkForward/gochannel-2   	       1	     45000 esox-events/s	     47000 esox-max-events/s	     43000 esox-min-events/s	         0.95 esox/raw-max	         0.9 esox/raw-median	         0.85 esox/raw-min	     50000 raw-events/s	     52000 raw-max-events/s	     48000 raw-min-events/s	         3.000 round-s	         6.000 rounds
BenchmarkIdleTransactions-2   	       1	       350 jobs-2-extra-tx/s	         1 jobs-2-lock-sessions	       400 jobs-2-max-tx/s	       300 jobs-2-min-tx/s	       352 jobs-2-tx/s	         4 none-max-tx/s	         0 none-min-tx/s	         2 none-tx/s	         3.000 round-s	         6.000 rounds
pkg: github.com/esox-go/esox/projector
BenchmarkPartitionsCatchUp-2   	       1	       800 partitions-1-events/s	       820 partitions-1-max-events/s	       780 partitions-1-min-events/s	      5600 partitions-8-events/s	      6000 partitions-8-max-events/s	      5200 partitions-8-min-events/s	         7.4 partitions-8/partitions-1-max	         7.0 partitions-8/partitions-1-median	         6.5 partitions-8/partitions-1-min	         3.000 round-s	         6.000 rounds
BenchmarkLatency/same-store-2 	       1	         1.1 p50-ms	        25.0 p99-ms
pkg: github.com/esox-go/esox/eventstore/postgres
BenchmarkAppendChain/events=1/writers=1-2   	       1	      1900 chained-events/s	      2000 unchained-events/s	         0.95 chained/unchained-median	         0.91 chained/unchained-min	         0.99 chained/unchained-max	         3.000 round-s	         6.000 rounds
BenchmarkVerify-2   	       1	    420000 verify-events/s	    400000 verify-min-events/s	    430000 verify-max-events/s	    450000 raw-events/s	         0.93 verify/raw-median	         0.90 verify/raw-min	         0.95 verify/raw-max	         3.000 round-s	         6.000 rounds
PASS
ok  	github.com/esox-go/esox/forwarder	100.1s
`

func TestParse(t *testing.T) {
	out, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if out.CPU != "Intel(R) Xeon(R) Processor" {
		t.Errorf("CPU %q", out.CPU)
	}
	a, ok := out.Results["BenchmarkAppend/events=1/writers=1"]
	if !ok {
		t.Fatalf("results %v: the -GOMAXPROCS suffix was not stripped", out.Results)
	}
	if a["esox/raw-median"] != 0.80 || a["rounds"] != 6 || a["watermill-sql-events/s"] != 1300 {
		t.Errorf("metrics %v", a)
	}
	if l := out.Results["BenchmarkLatency/same-store"]; l["p99-ms"] != 25 {
		t.Errorf("latency metrics %v (a '-' inside the name was cut?)", l)
	}
	if len(out.Results) != 10 {
		t.Errorf("%d results, want 10: log lines parsed as results?", len(out.Results))
	}
	if _, err := Parse(strings.NewReader("BenchmarkX-2  1  abc ratio\n")); err == nil {
		t.Error("a malformed value parsed")
	}
}

func TestRender(t *testing.T) {
	out, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	doc := Render(out, Machine{CPU: "Xeon", Cores: 2, Memory: "24 GiB", PostgreSQL: "15.20", Go: "go1.26", Commit: "abc1234", Date: "2026-12-01", Command: "make bench", Env: []string{"ESOX_BENCH_ROUND=200ms"}})
	for _, want := range []string{
		beginMarker, endMarker,
		"Run `make bench` with `ESOX_BENCH_ROUND=200ms`, 6 rounds of 3s per variant",
		"| CPU | Xeon, 2 cores |",
		// ratio row: median, spread, rates, target, verdict
		"| append, 1 event per commit, 1 writer | 0.80 | 0.70–0.90 | 1,600 events/s | 2,000 events/s | ≥ 0.85 | **no** |",
		"| ReadAll, pages of 1,000, decoded, vs raw scan | 0.61 | 0.58–0.66 | 300,000 events/s | 490,000 events/s | ≥ 0.6 | yes |",
		// a measure missing from the output
		"| append, 1 event per commit, 8 writers | not run |",
		// absolute target
		"| forwarder to an in-process publisher (GoChannel), default config | 45,000 events/s | 43,000–47,000 | ≥ 50,000 events/s | **no** |",
		// against watermill-sql: esox ahead
		"| 1 event per commit, 1 writer | 0.80 | 0.65 | 1.20 | 1.10–1.30 | > 1 | yes |",
		// idle
		"| nothing running (background) | 2.0 | 0.0–4.0 |  |  |",
		"| 1 forwarder and 1 projection | 352 | 300–400 | 350 | 1 |",
		// partitions
		"| catch-up of a handler spending 1 ms per event: 8 partitions vs 1 | 7.00 | 6.50–7.40 | 5,600 events/s | 800 events/s | ≥ 6 | yes |",
		"| 25 forwarders and 25 projections | not run |",
		// memory, from a benchmark missing here
		"| peak heap in use during the catch-up rounds | not run |",
		// telemetry: a met and a missed target
		"| append, 1 event per commit, 8 writers: no provider installed vs no instrumentation | 0.99 | 0.98–1.01 | 2,000 events/s | 2,010 events/s | ≥ 0.99 | yes |",
		"| append, 1 event per commit, 8 writers: SDK (every trace sampled, metrics recorded, no-op exporters) vs no instrumentation | 0.94 | 0.90–0.97 | 1,900 events/s | 2,010 events/s | ≥ 0.95 | **no** |",
		"| 0.80 µs | 1.00 µs | 5.00 µs |",
		// the hash chain and personal data
		"| append, 1 event per commit, 1 writer: chained vs unchained | 0.95 | 0.91–0.99 | 1,900 events/s | 2,000 events/s | ≥ 0.9 | yes |",
		"| ReadAll, pages of 1,000, 1,000 subjects: encrypted vs plaintext | not run |",
		"| Verify of every stream (100,000 events) | 420,000 events/s | 400,000–430,000 | ≥ 100,000 events/s | yes |",
		// latency over its bound
		"| commit to publish, appends through the forwarder's store | 1.1 ms | 25.0 ms | p99 < 20 ms | **no** |",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the generated part lacks %q:\n%s", want, doc)
		}
	}
}

func TestReplace(t *testing.T) {
	doc := "# Benchmarks\n\nprose before\n\n" + beginMarker + "\nold table\n" + endMarker + "\n\nprose after\n"
	got, err := Replace(doc, beginMarker+"\nnew table\n"+endMarker+"\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\nprose before\n\n" + beginMarker + "\nnew table\n" + endMarker + "\n\nprose after\n"
	if got != want {
		t.Errorf("Replace:\n%q\nwant\n%q", got, want)
	}
	if _, err := Replace("no markers", "x"); !errors.Is(err, errNoMarkers) {
		t.Errorf("no markers: %v", err)
	}
	if _, err := Replace(endMarker+beginMarker, "x"); !errors.Is(err, errNoMarkers) {
		t.Errorf("markers out of order: %v", err)
	}
}

func TestFormatting(t *testing.T) {
	for v, want := range map[float64]string{0: "0.0", 12.34: "12.3", 100: "100", 1234.4: "1,234", 1234567.8: "1,234,568", -2500: "-2,500"} {
		if got := fmtRate(v); got != want {
			t.Errorf("fmtRate(%v) = %q, want %q", v, got, want)
		}
	}
	if fmtRate(math.NaN()) != "?" || fmtRatio(math.NaN()) != "?" || fmtRatio(0.8149) != "0.81" {
		t.Error("NaN or ratio formatting")
	}
	for _, tc := range []struct {
		v, goal float64
		strict  bool
		want    string
	}{
		{0.85, 0.85, false, "yes"}, {0.84, 0.85, false, "**no**"}, {1, 1, true, "**no**"}, {1.01, 1, true, "yes"},
		{0.5, 0, false, "—"}, {math.NaN(), 0.6, false, ""},
	} {
		if got := met(tc.v, tc.goal, tc.strict); got != tc.want {
			t.Errorf("met(%v, %v, %v) = %q, want %q", tc.v, tc.goal, tc.strict, got, tc.want)
		}
	}
}
