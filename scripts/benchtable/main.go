// Command benchtable turns the output of `make bench` (go test -bench over
// the benchmarks built on internal/benchkit) into the tables of
// docs/benchmarks.md: for each measure the median of the per-round ratios
// esox/baseline, their spread, the target and whether it is met, plus the
// machine the run was made on. It rewrites the part of the document between
// the markers
//
//	<!-- benchtable:begin -->
//	<!-- benchtable:end -->
//
// and leaves the rest (the prose) alone. `make bench` runs it after the
// benchmarks; `make bench-doc` runs it alone on the last output.
//
//	go run ./scripts/benchtable -in .esox/bench.txt -doc docs/benchmarks.md -db "$ESOX_TEST_DATABASE_URL"
//
// Without -doc it prints the generated part to stdout; a -doc that does not
// exist yet is created with the generated part alone. -db is used only to
// note the PostgreSQL version and durability settings.
package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "github.com/lib/pq" // the "postgres" driver, to read the server's version
)

// Markers delimit the generated part of the document.
const (
	beginMarker = "<!-- benchtable:begin -->"
	endMarker   = "<!-- benchtable:end -->"
)

func main() {
	in := flag.String("in", ".esox/bench.txt", "the output of make bench (go test -bench)")
	doc := flag.String("doc", "", "the document whose generated part to rewrite; empty: print it")
	dbURL := flag.String("db", "", "the database the run used, to note the PostgreSQL version; empty: not noted")
	cmd := flag.String("cmd", "make bench", "the command that produced -in, as noted in the document")
	flag.Parse()
	if err := run(*in, *doc, *dbURL, *cmd); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(in, doc, dbURL, cmd string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	out, err := Parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(out.Results) == 0 {
		return fmt.Errorf("%s: no benchmark results", in)
	}
	m := machine(out, dbURL)
	m.Command = cmd
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ESOX_BENCH_") {
			m.Env = append(m.Env, kv)
		}
	}
	slices.Sort(m.Env)
	generated := Render(out, m)
	if doc == "" {
		_, err := io.WriteString(os.Stdout, generated)
		return err
	}
	updated := generated
	old, err := os.ReadFile(doc)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A new file (a quick run's scratch copy): the tables alone.
	case err != nil:
		return err
	default:
		if updated, err = Replace(string(old), generated); err != nil {
			return fmt.Errorf("%s: %w", doc, err)
		}
	}
	tmp := doc + ".tmp"
	if err := os.WriteFile(tmp, []byte(updated), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, doc)
}

// Output is what Parse reads from go test -bench output.
type Output struct {
	// CPU is the "cpu:" line go test prints, if any.
	CPU string
	// Results maps a benchmark's name, without the -GOMAXPROCS suffix, to
	// its metrics by unit.
	Results map[string]map[string]float64
}

// procsSuffix is the -GOMAXPROCS suffix go test appends to benchmark names.
var procsSuffix = regexp.MustCompile(`-\d+$`)

// Parse reads go test -bench output: result lines ("BenchmarkX-2  1  12.5
// unit  …") and the "cpu:" header. Other lines (logs, PASS, ok) are skipped.
// A benchmark that ran several times (-count) keeps its last result.
func Parse(r io.Reader) (*Output, error) {
	out := &Output{Results: map[string]map[string]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if cpu, ok := strings.CutPrefix(line, "cpu: "); ok {
			out.CPU = strings.TrimSpace(cpu)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		fields := strings.Fields(line)
		// name, iterations, then value-unit pairs.
		if len(fields) < 4 || len(fields)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(fields[1]); err != nil {
			continue
		}
		metrics := map[string]float64{}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: value %q: %w", line, fields[i], err)
			}
			metrics[fields[i+1]] = v
		}
		out.Results[procsSuffix.ReplaceAllString(fields[0], "")] = metrics
	}
	return out, sc.Err()
}

// Machine is what the document notes about the run.
type Machine struct {
	CPU, Memory, PostgreSQL, Go, Commit, Date, Command string
	Cores                                              int
	Env                                                []string
}

// machine gathers the machine's description: CPU from the output (else
// /proc/cpuinfo), cores, memory, Go, the git commit, the date, and the
// PostgreSQL version and settings when dbURL answers.
func machine(out *Output, dbURL string) Machine {
	m := Machine{CPU: out.CPU, Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02"),
		Memory: "unknown", PostgreSQL: "not noted (no -db)", Commit: "unknown"}
	if m.CPU == "" {
		m.CPU = "unknown"
		if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
			for l := range strings.Lines(string(b)) {
				if v, ok := strings.CutPrefix(l, "model name"); ok {
					m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
					break
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb float64
				if _, err := fmt.Sscanf(strings.TrimSpace(v), "%f kB", &kb); err == nil {
					m.Memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
				}
			}
		}
	}
	if c, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(c))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
			m.Commit += " with uncommitted changes"
		}
	}
	if dbURL != "" {
		m.PostgreSQL = postgresInfo(dbURL)
	}
	return m
}

// postgresInfo returns the server's version and durability settings, or
// why they could not be read.
func postgresInfo(dbURL string) string {
	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		return "unknown: " + err.Error()
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var version, fsync, syncCommit, buffers, maxConn string
	err = db.QueryRowContext(ctx, `SELECT current_setting('server_version'), current_setting('fsync'),
		current_setting('synchronous_commit'), current_setting('shared_buffers'), current_setting('max_connections')`).
		Scan(&version, &fsync, &syncCommit, &buffers, &maxConn)
	if err != nil {
		return "unknown: " + err.Error()
	}
	return fmt.Sprintf("%s (`fsync=%s`, `synchronous_commit=%s`, `shared_buffers=%s`, `max_connections=%s`)", version, fsync, syncCommit, buffers, maxConn)
}

// row is one line of a table: a measure and where its figures are.
type row struct {
	measure string
	bench   string  // benchmark name without the -GOMAXPROCS suffix
	a, b    string  // variants: ratio a/b, or a's rate (b: its baseline)
	unit    string  // the rate unit of the variants
	goal    float64 // the target's number: the least median (ratios, rates) or the p99 bound (latency); 0 for none
	target  string  // the target as written
}

// The tables' rows: the measures of docs/benchmarks.md and their targets.
var (
	ratioRows = []row{
		{"append, 1 event per commit, 1 writer", "BenchmarkAppend/events=1/writers=1", "esox", "raw", "events/s", 0.85, "≥ 0.85"},
		{"append, 1 event per commit, 8 writers", "BenchmarkAppend/events=1/writers=8", "esox", "raw", "events/s", 0.85, "≥ 0.85"},
		{"append, 10 events per commit, 1 writer", "BenchmarkAppend/events=10/writers=1", "esox", "raw", "events/s", 0.85, "≥ 0.85"},
		{"append, 10 events per commit, 8 writers", "BenchmarkAppend/events=10/writers=8", "esox", "raw", "events/s", 0.85, "≥ 0.85"},
		{"ReadAll, pages of 1,000, decoded, vs raw scan", "BenchmarkReadAll", "esox", "raw", "events/s", 0.6, "≥ 0.6"},
		{"ReadStream, 1,000 events, decoded, vs raw scan", "BenchmarkReadStream", "esox", "raw", "events/s", 0.6, "≥ 0.6"},
		{"ReadAll of 1,000,000 events, half of them one upcast step behind, vs all current", "BenchmarkReadUpcast", "upcast", "current", "events/s", 0.8, "≥ 0.8"},
		{"projection catch-up (batch insert handler) vs a hand-written loop, per 1,000", "BenchmarkCatchUp", "esox", "raw", "events/s", 0.85, "≥ 0.85"},
		{"forwarder to GoChannel vs a hand-written relay loop", "BenchmarkForward/gochannel", "esox", "raw", "events/s", 0, "—"},
		{"forwarder to RabbitMQ (forwarder/rabbitmq, confirms) vs a hand-written relay loop", "BenchmarkForward/rabbitmq-pipelined", "esox", "raw", "events/s", 0, "—"},
		{"forwarder to RabbitMQ (watermill-amqp, confirms) vs a hand-written relay loop", "BenchmarkForward/rabbitmq", "esox", "raw", "events/s", 0, "—"},
		{"forwarder to NATS JetStream vs a hand-written relay loop", "BenchmarkForward/nats", "esox", "raw", "events/s", 0, "—"},
	}
	rateRows = []row{
		{"forwarder to an in-process publisher (GoChannel), default config", "BenchmarkForward/gochannel", "esox", "raw", "events/s", 50_000, "≥ 50,000 events/s"},
		{"forwarder to RabbitMQ with publisher confirms (forwarder/rabbitmq), default config", "BenchmarkForward/rabbitmq-pipelined", "esox", "raw", "events/s", 10_000, "≥ 10,000 events/s"},
		{"forwarder to RabbitMQ with publisher confirms (watermill-amqp), default config", "BenchmarkForward/rabbitmq", "esox", "raw", "events/s", 0, "—"},
		{"forwarder to NATS JetStream, default config", "BenchmarkForward/nats", "esox", "raw", "events/s", 10_000, "≥ 10,000 events/s"},
	}
	watermillRows = []row{
		{"1 event per commit, 1 writer", "BenchmarkAppend/events=1/writers=1", "esox", "watermill-sql", "events/s", 1, "> 1"},
		{"1 event per commit, 8 writers", "BenchmarkAppend/events=1/writers=8", "esox", "watermill-sql", "events/s", 1, "> 1"},
		{"10 events per commit, 1 writer", "BenchmarkAppend/events=10/writers=1", "esox", "watermill-sql", "events/s", 1, "> 1"},
		{"10 events per commit, 8 writers", "BenchmarkAppend/events=10/writers=8", "esox", "watermill-sql", "events/s", 1, "> 1"},
	}
	partitionRows = []row{
		{"catch-up of a handler spending 1 ms per event: 8 partitions vs 1", "BenchmarkPartitionsCatchUp", "partitions-8", "partitions-1", "events/s", 6, "≥ 6"},
	}
	idleRows = []row{
		{"nothing running (background)", "BenchmarkIdleTransactions", "none", "", "tx/s", 0, "—"},
		{"1 forwarder and 1 projection", "BenchmarkIdleTransactions", "jobs-2", "none", "tx/s", 0, "—"},
		{"5 forwarders and 5 projections", "BenchmarkIdleTransactions", "jobs-10", "none", "tx/s", 0, "—"},
		{"25 forwarders and 25 projections", "BenchmarkIdleTransactions", "jobs-50", "none", "tx/s", 0, "—"},
	}
	otherRows = []row{
		{"4 appenders beside 1 idle projection, vs none", "BenchmarkPollCost", "idle-1", "none", "appends/s", 0, "—"},
		{"4 appenders beside 10 idle projections, vs none", "BenchmarkPollCost", "idle-10", "none", "appends/s", 0, "—"},
		{"8 appenders with a pg_notify trigger per append, vs without", "BenchmarkNotifyCost", "notify", "no-notify", "appends/s", 0, "—"},
	}
	telemetryRows = []row{
		{"append, 1 event per commit, 8 writers: no provider installed vs no instrumentation", "BenchmarkAppendTelemetry", "noop", "off", "events/s", 0.99, "≥ 0.99"},
		{"append, 1 event per commit, 8 writers: SDK (every trace sampled, metrics recorded, no-op exporters) vs no instrumentation", "BenchmarkAppendTelemetry", "sdk", "off", "events/s", 0.95, "≥ 0.95"},
		{"append, 1 event per commit, 8 writers: SDK as above, but no trace context in the events vs no instrumentation", "BenchmarkAppendTelemetry", "sdk-nocontext", "off", "events/s", 0, "—"},
	}
	trustRows = []row{
		{"append, 1 event per commit, 1 writer: chained vs unchained", "BenchmarkAppendChain/events=1/writers=1", "chained", "unchained", "events/s", 0.9, "≥ 0.9"},
		{"append, 1 event per commit, 8 writers: chained vs unchained", "BenchmarkAppendChain/events=1/writers=8", "chained", "unchained", "events/s", 0.9, "≥ 0.9"},
		{"append, 10 events per commit, 1 writer: chained vs unchained", "BenchmarkAppendChain/events=10/writers=1", "chained", "unchained", "events/s", 0.9, "≥ 0.9"},
		{"append, 10 events per commit, 8 writers: chained vs unchained", "BenchmarkAppendChain/events=10/writers=8", "chained", "unchained", "events/s", 0.9, "≥ 0.9"},
		{"ReadStream, 1,000 events with one personal field each: encrypted vs plaintext", "BenchmarkReadPersonal/ReadStream", "encrypted", "plaintext", "events/s", 0.7, "≥ 0.7"},
		{"ReadAll, pages of 1,000, 1,000 subjects: encrypted vs plaintext", "BenchmarkReadPersonal/ReadAll", "encrypted", "plaintext", "events/s", 0.7, "≥ 0.7"},
		{"Verify vs reading the same rows (nothing computed)", "BenchmarkVerify", "verify", "raw", "events/s", 0, "—"},
	}
	verifyRow   = row{"Verify of every stream (100,000 events)", "BenchmarkVerify", "verify", "raw", "events/s", 100_000, "≥ 100,000 events/s"}
	latencyRows = []row{
		{"commit to read model, appends from another process (10 ms poll)", "BenchmarkCommitToReadModelLatency/other_process", "", "", "", 20, "p99 < 20 ms"},
		{"commit to read model, appends through the runner's store", "BenchmarkCommitToReadModelLatency/same_store", "", "", "", 20, "p99 < 20 ms"},
		{"commit to publish, appends through the forwarder's store", "BenchmarkLatency/same-store", "", "", "", 20, "p99 < 20 ms"},
		{"commit to publish, appends from another store (10 ms poll)", "BenchmarkLatency/other-store", "", "", "", 20, "p99 < 20 ms"},
		{"watermill-sql default publisher and subscriber (baseline)", "BenchmarkLatency/watermill-sql-default", "", "", "", 0, "—"},
	}
)

// notRun is what a cell shows for a benchmark missing from the output
// (skipped, failed, or not selected).
const notRun = "not run"

// Render returns the generated part of the document, markers included.
func Render(out *Output, m Machine) string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	p("%s\n<!-- Generated by scripts/benchtable from the output of `make bench`; edit the prose outside the markers only. -->\n\n", beginMarker)

	p("Run `%s`", m.Command)
	if len(m.Env) > 0 {
		p(" with `%s`", strings.Join(m.Env, " "))
	}
	p(", %s.\n\n", roundsNote(out))
	p("| | |\n|---|---|\n")
	p("| CPU | %s, %d cores |\n| memory | %s |\n| PostgreSQL | %s |\n| Go | %s |\n| esox commit | %s |\n| date | %s |\n\n",
		m.CPU, m.Cores, m.Memory, m.PostgreSQL, m.Go, m.Commit, m.Date)

	p("### esox against raw SQL\n\n")
	p("Median of the per-round ratios esox / raw, and their spread (min–max); the rates are the medians of the rounds.\n\n")
	p("| measure | esox / raw | spread | esox | raw | target | met? |\n|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range ratioRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | | | %s | |\n", r.measure, notRun, r.target)
			continue
		}
		med, lo, hi := ratio(res, r.a, r.b)
		p("| %s | %s | %s–%s | %s %s | %s %s | %s | %s |\n", r.measure, fmtRatio(med), fmtRatio(lo), fmtRatio(hi),
			fmtRate(res[r.a+"-"+r.unit]), r.unit, fmtRate(res[r.b+"-"+r.unit]), r.unit, r.target, met(med, r.goal, false))
	}

	p("\n### Absolute throughput\n\n")
	p("| measure | esox, median | spread | target | met? |\n|---|---:|---:|---:|---|\n")
	for _, r := range rateRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | %s | |\n", r.measure, notRun, r.target)
			continue
		}
		med := res[r.a+"-"+r.unit]
		p("| %s | %s %s | %s–%s | %s | %s |\n", r.measure, fmtRate(med), r.unit,
			fmtRate(res[r.a+"-min-"+r.unit]), fmtRate(res[r.a+"-max-"+r.unit]), r.target, met(med, r.goal, false))
	}

	p("\n### Appends against watermill-sql's publisher\n\n")
	p("The same events, in the same interleaved run, through watermill-sql's PostgreSQL publisher (default schema adapter, one `Publish` per commit in autocommit: no expected version, no per-stream order). esox must be ahead in every shape while keeping its checks.\n\n")
	p("| shape | esox / raw | watermill-sql / raw | esox / watermill-sql | spread | target | met? |\n|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range watermillRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | | | %s | |\n", r.measure, notRun, r.target)
			continue
		}
		e, _, _ := ratio(res, "esox", "raw")
		wm, _, _ := ratio(res, "watermill-sql", "raw")
		med, lo, hi := ratio(res, r.a, r.b)
		p("| %s | %s | %s | %s | %s–%s | %s | %s |\n", r.measure, fmtRatio(e), fmtRatio(wm), fmtRatio(med), fmtRatio(lo), fmtRatio(hi), r.target, met(med, r.goal, true))
	}

	p("\n### Parallel projections\n\n")
	p("Time to catch up with the same backlog, a projection split into partitions by stream against the same projection unsplit (median of the per-round ratios, and their spread).\n\n")
	p("| measure | ratio | spread | partitioned | unsplit | target | met? |\n|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range partitionRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | | | %s | |\n", r.measure, notRun, r.target)
			continue
		}
		med, lo, hi := ratio(res, r.a, r.b)
		p("| %s | %s | %s–%s | %s %s | %s %s | %s | %s |\n", r.measure, fmtRatio(med), fmtRatio(lo), fmtRatio(hi),
			fmtRate(res[r.a+"-"+r.unit]), r.unit, fmtRate(res[r.b+"-"+r.unit]), r.unit, r.target, met(med, r.goal, false))
	}

	p("\n### Idle load\n\n")
	p("Transactions per second committed in a database of its own (`pg_stat_database.xact_commit`) while the jobs of one process sit idle; \"above background\" is the median per round of the difference with the \"nothing running\" round of the same cycle; \"lock sessions\" counts the sessions holding the jobs' advisory locks. The design rule: idle load does not grow with the number of jobs.\n\n")
	p("| process runs | tx/s, median | spread | above background | lock sessions |\n|---|---:|---:|---:|---:|\n")
	for _, r := range idleRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | | |\n", r.measure, notRun)
			continue
		}
		med, ok := res[r.a+"-"+r.unit]
		if !ok {
			p("| %s | %s | | | |\n", r.measure, notRun)
			continue
		}
		extra, sessions := "", ""
		if r.b != "" {
			extra = fmtRate(res[r.a+"-extra-"+r.unit])
			if n, ok := res[r.a+"-lock-sessions"]; ok {
				sessions = strconv.Itoa(int(n))
			}
		}
		p("| %s | %s | %s–%s | %s | %s |\n", r.measure, fmtRate(med), fmtRate(res[r.a+"-min-"+r.unit]), fmtRate(res[r.a+"-max-"+r.unit]), extra, sessions)
	}

	p("\n### Other interleaved measures\n\n")
	p("| measure | ratio, median | spread | with | without |\n|---|---:|---:|---:|---:|\n")
	for _, r := range otherRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | | |\n", r.measure, notRun)
			continue
		}
		med, lo, hi := ratio(res, r.a, r.b)
		p("| %s | %s | %s–%s | %s %s | %s %s |\n", r.measure, fmtRatio(med), fmtRatio(lo), fmtRatio(hi),
			fmtRate(res[r.a+"-"+r.unit]), r.unit, fmtRate(res[r.b+"-"+r.unit]), r.unit)
	}

	p("\n### Telemetry\n\n")
	p("What OpenTelemetry costs an append (docs/observability.md): the same store code with instrumentation (no provider installed, or the SDK) against the store with its instrumentation switched off, interleaved in one run.\n\n")
	p("| measure | ratio, median | spread | with | without | target | met? |\n|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range telemetryRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | | | %s | |\n", r.measure, notRun, r.target)
			continue
		}
		med, lo, hi := ratio(res, r.a, r.b)
		p("| %s | %s | %s–%s | %s %s | %s %s | %s | %s |\n", r.measure, fmtRatio(med), fmtRatio(lo), fmtRatio(hi),
			fmtRate(res[r.a+"-"+r.unit]), r.unit, fmtRate(res[r.b+"-"+r.unit]), r.unit, r.target, met(med, r.goal, false))
	}

	p("\nThe client's CPU per append, without the database (`BenchmarkAppendTelemetryCPU`: encoding, span, metrics, on one goroutine; 1 / the median rate):\n\n")
	p("| without instrumentation | no provider | SDK |\n|---:|---:|---:|\n")
	if res, ok := out.Results["BenchmarkAppendTelemetryCPU"]; ok {
		perAppend := func(v string) string {
			rate := res[v+"-appends/s"]
			if rate <= 0 {
				return "?"
			}
			return strconv.FormatFloat(1e6/rate, 'f', 2, 64) + " µs"
		}
		p("| %s | %s | %s |\n", perAppend("off"), perAppend("noop"), perAppend("sdk"))
	} else {
		p("| %s | | |\n", notRun)
	}
	p("\n### Hash chain, seals and personal data\n\n")
	p("What the hash chain costs an append (the same store code with `DisableChain`, on the same table), what decrypting one personal field per event costs a read (the same JSON stored in the clear), and how fast `Verify` recomputes digests (docs/compliance.md).\n\n")
	p("| measure | ratio, median | spread | with | without | target | met? |\n|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range trustRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | | | %s | |\n", r.measure, notRun, r.target)
			continue
		}
		med, lo, hi := ratio(res, r.a, r.b)
		p("| %s | %s | %s–%s | %s %s | %s %s | %s | %s |\n", r.measure, fmtRatio(med), fmtRatio(lo), fmtRatio(hi),
			fmtRate(res[r.a+"-"+r.unit]), r.unit, fmtRate(res[r.b+"-"+r.unit]), r.unit, r.target, met(med, r.goal, false))
	}
	p("\n| measure | median | spread | target | met? |\n|---|---:|---:|---:|---|\n")
	if res, ok := out.Results[verifyRow.bench]; ok {
		med := res[verifyRow.a+"-"+verifyRow.unit]
		p("| %s | %s %s | %s–%s | %s | %s |\n", verifyRow.measure, fmtRate(med), verifyRow.unit,
			fmtRate(res[verifyRow.a+"-min-"+verifyRow.unit]), fmtRate(res[verifyRow.a+"-max-"+verifyRow.unit]), verifyRow.target, met(med, verifyRow.goal, false))
	} else {
		p("| %s | %s | | %s | |\n", verifyRow.measure, notRun, verifyRow.target)
	}

	p("\n### Memory\n\n")
	p("| measure | esox | raw | target |\n|---|---:|---:|---|\n")
	if res, ok := out.Results["BenchmarkCatchUp"]; ok {
		p("| peak heap in use during the catch-up rounds | %.1f MB | %.1f MB | flat in the number of events (compare runs with different `ESOX_BENCH_EVENTS`) |\n",
			res["esox-peak-heap-MB"], res["raw-peak-heap-MB"])
	} else {
		p("| peak heap in use during the catch-up rounds | %s | | flat in the number of events |\n", notRun)
	}

	p("\n### Latency\n\n")
	p("Not interleaved: each case appends about 1,000 events/s, one per append, for `ESOX_BENCH_SECONDS` (10 s by default).\n\n")
	p("| measure | p50 | p99 | target | met? |\n|---|---:|---:|---:|---|\n")
	for _, r := range latencyRows {
		res, ok := out.Results[r.bench]
		if !ok {
			p("| %s | %s | | %s | |\n", r.measure, notRun, r.target)
			continue
		}
		p99 := res["p99-ms"]
		verdict := "—"
		if r.goal > 0 {
			verdict = yesNo(p99 < r.goal)
		}
		p("| %s | %.1f ms | %.1f ms | %s | %s |\n", r.measure, res["p50-ms"], p99, r.target, verdict)
	}
	p("\n%s\n", endMarker)
	return w.String()
}

// roundsNote describes the rounds the harness ran, from its "rounds" and
// "round-s" metrics.
func roundsNote(out *Output) string {
	seen := map[string]bool{}
	var notes []string
	names := make([]string, 0, len(out.Results))
	for n := range out.Results {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		res := out.Results[n]
		rounds, ok1 := res["rounds"]
		secs, ok2 := res["round-s"]
		if !ok1 || !ok2 {
			continue
		}
		note := fmt.Sprintf("%d rounds of %s per variant", int(rounds), time.Duration(secs*float64(time.Second)))
		if !seen[note] {
			seen[note] = true
			notes = append(notes, note)
		}
	}
	if len(notes) == 0 {
		return "no interleaved rounds in the output"
	}
	return strings.Join(notes, "; ") + ", interleaved (A B B A …) after a warm-up round each"
}

// ratio returns the median, min and max of the ratio metrics a/b in res;
// NaN for missing ones.
func ratio(res map[string]float64, a, b string) (med, lo, hi float64) {
	get := func(suffix string) float64 {
		if v, ok := res[a+"/"+b+"-"+suffix]; ok {
			return v
		}
		return math.NaN()
	}
	return get("median"), get("min"), get("max")
}

// met says whether v reaches the target floor (strictly above it when
// strict); "—" without a target (floor 0), "" when v is missing.
func met(v, floor float64, strict bool) string {
	switch {
	case floor == 0:
		return "—"
	case math.IsNaN(v):
		return ""
	case strict:
		return yesNo(v > floor)
	default:
		return yesNo(v >= floor)
	}
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// fmtRatio formats a ratio with two decimals; "?" when missing.
func fmtRatio(v float64) string {
	if math.IsNaN(v) {
		return "?"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// fmtRate formats a rate: whole numbers with thousands separators from 100
// on, one decimal below.
func fmtRate(v float64) string {
	if math.IsNaN(v) {
		return "?"
	}
	if math.Abs(v) < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// errNoMarkers is returned by Replace for a document without both markers.
var errNoMarkers = errors.New("the document has no " + beginMarker + " … " + endMarker + " section to rewrite")

// Replace returns doc with the text from beginMarker to endMarker (both
// included) replaced by generated, which carries the markers itself.
func Replace(doc, generated string) (string, error) {
	i := strings.Index(doc, beginMarker)
	j := strings.Index(doc, endMarker)
	if i < 0 || j < i {
		return "", errNoMarkers
	}
	j += len(endMarker)
	if strings.HasPrefix(doc[j:], "\n") {
		j++
	}
	return doc[:i] + generated + doc[j:], nil
}
