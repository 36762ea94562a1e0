package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/gojson"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/benchkit"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
)

// The benchmarks pair each esox operation with a raw-SQL baseline doing the
// same work, through the same driver (lib/pq) and pool, with prepared
// statements and the same durability (autocommit, synchronous commit as the
// server is configured), on the same tables. internal/benchkit runs the
// variants in interleaved rounds (A B B A …, 6 rounds of 3 s each by
// default) and reports the median of the per-round ratios and their spread;
// docs/benchmarks.md tabulates them. b.N is ignored:
//
//	go test -run '^$' -bench . -benchtime 1x ./eventstore/postgres
//	ESOX_BENCH_ROUND=200ms ESOX_BENCH_ROUNDS=2 go test -run '^$' -bench . -benchtime 1x ./eventstore/postgres  # quick check

// benchEnv is a migrated store in a fresh schema.
type benchEnv struct {
	db     *sqlx.DB
	store  *postgres.Store
	schema string
}

func newBenchEnv(b *testing.B, conns int) *benchEnv {
	b.Helper()
	db := pgtest.Open(b)
	// Keep every writer's connection (and its prepared statements) in the
	// pool; database/sql keeps only 2 idle connections by default.
	db.SetMaxIdleConns(conns + 4)
	schema := pgtest.Schema(b, db)
	reg := testRegistry()
	if benchCodec(b) {
		reg.SetCodec(gojson.Codec{})
	}
	s := esoxtest.Store(b, db, reg, postgres.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	return &benchEnv{db: db, store: s, schema: schema}
}

// envCodec names the payload codec of the benchmarks' stores: unset for
// the default (encoding/json), "gojson" for eventstore/gojson.
const envCodec = "ESOX_BENCH_CODEC"

// benchCodec reports whether the benchmarks run with eventstore/gojson
// (ESOX_BENCH_CODEC=gojson).
func benchCodec(b *testing.B) bool {
	switch c := os.Getenv(envCodec); c {
	case "":
		return false
	case "gojson":
		return true
	default:
		b.Fatalf("%s=%q: want gojson or nothing", envCodec, c)
		return false
	}
}

// writers returns a round function that runs op from n goroutines until the
// round ends and counts events per successful op. Each writer w appends to
// its own streams of 100 events: op gets w and the writer's call count i,
// which continues from round to round, so every round appends to fresh
// stream versions of the same table.
func writers(n, events int, op func(w, i int) error) func(r *benchkit.Round) error {
	next := make([]int, n)
	return func(r *benchkit.Round) error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for w := range n {
			wg.Go(func() {
				for !r.Done() {
					if err := op(w, next[w]); err != nil {
						errs[w] = err
						return
					}
					next[w]++
					r.Add(int64(events))
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	}
}

// streamAt returns the stream and its current version for a writer's i-th
// append of events events, in streams of 100 events named prefix-w-k.
func streamAt(prefix string, w, i, events int) (string, int64) {
	return fmt.Sprintf("%s-%d-%d", prefix, w, i*events/100), int64(i * events % 100)
}

// BenchmarkAppend appends events per commit (1 or 10) from writers
// goroutines (1 or 8), in three variants that run interleaved on the same
// database:
//
//   - esox: Store.Append with an exact expected version, to the writer's own
//     streams of 100 events (the version check, the per-stream-order check
//     and RETURNING the positions, in one prepared statement).
//   - raw: the same rows INSERTed into the same events table by one prepared
//     multi-row INSERT of the same six columns (event_id, stream_id,
//     stream_version, event_type, payload, metadata), with no version check
//     and nothing returned; the event IDs (UUIDv7) and JSON payloads are
//     made the same way, per call.
//   - watermill-sql: watermill-sql's own PostgreSQL publisher (v4,
//     DefaultPostgreSQLSchema) publishing the same events as messages (UUIDv7
//     UUIDs, the same JSON payloads, no metadata) in one Publish per commit,
//     in autocommit: no expected version, no per-stream order.
//
// It reports events/s per variant and the ratios esox/raw,
// watermill-sql/raw and esox/watermill-sql.
func BenchmarkAppend(b *testing.B) {
	for _, events := range []int{1, 10} {
		for _, nw := range []int{1, 8} {
			b.Run(fmt.Sprintf("events=%d/writers=%d", events, nw), func(b *testing.B) {
				benchAppend(b, events, nw)
			})
		}
	}
}

func benchAppend(b *testing.B, events, nw int) {
	env := newBenchEnv(b, nw)
	ctx := context.Background()
	evs := items(events)

	var q strings.Builder
	q.WriteString(`INSERT INTO ` + env.store.QualifiedEventsTable() + ` (event_id, stream_id, stream_version, event_type, payload, metadata) VALUES `)
	for i := range events {
		if i > 0 {
			q.WriteString(", ")
		}
		p := 1 + 6*i
		fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d)", p, p+1, p+2, p+3, p+4, p+5)
	}
	insert, err := env.db.PreparexContext(ctx, q.String())
	if err != nil {
		b.Fatal(err)
	}
	defer insert.Close()

	schemaAdapter := wsql.DefaultPostgreSQLSchema{
		GenerateMessagesTableName: func(topic string) string {
			return postgres.QuoteIdentifier(env.schema) + "." + postgres.QuoteIdentifier("watermill_"+topic)
		},
	}
	pub, err := wsql.NewPublisher(wsql.BeginnerFromStdSQL(env.db.DB), wsql.PublisherConfig{SchemaAdapter: schemaAdapter, AutoInitializeSchema: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	const topic = "bench_append"
	messages := func() ([]*message.Message, error) {
		msgs := make([]*message.Message, len(evs))
		for i, e := range evs {
			id, err := uuid.NewV7()
			if err != nil {
				return nil, err
			}
			payload, err := json.Marshal(e.Data)
			if err != nil {
				return nil, err
			}
			msgs[i] = message.NewMessage(id.String(), payload)
		}
		return msgs, nil
	}
	// Create watermill-sql's table before the rounds (it creates it on the
	// first Publish).
	if msgs, err := messages(); err != nil {
		b.Fatal(err)
	} else if err := pub.Publish(topic, msgs...); err != nil {
		b.Fatal(err)
	}

	res := benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "raw", Variants: []benchkit.Variant{
		{Name: "esox", Run: writers(nw, events, func(w, i int) error {
			stream, version := streamAt("esox", w, i, events)
			_, err := env.store.Append(ctx, stream, eventstore.Exact(version), evs)
			return err
		})},
		{Name: "raw", Run: writers(nw, events, func(w, i int) error {
			stream, version := streamAt("raw", w, i, events)
			args := make([]any, 0, 6*events)
			for _, e := range evs {
				id, err := uuid.NewV7()
				if err != nil {
					return err
				}
				payload, err := json.Marshal(e.Data)
				if err != nil {
					return err
				}
				version++
				args = append(args, id.String(), stream, version, "item_added", string(payload), "{}")
			}
			_, err := insert.ExecContext(ctx, args...)
			return err
		})},
		{Name: "watermill-sql", Run: writers(nw, events, func(int, int) error {
			msgs, err := messages()
			if err != nil {
				return err
			}
			return pub.Publish(topic, msgs...)
		})},
	}})
	benchkit.ReportMetrics(b, res.RatioMetrics("esox", "watermill-sql"))
}

// fillStream appends n events to stream in batches of 100.
func fillStream(b *testing.B, env *benchEnv, stream string, n int) {
	b.Helper()
	ctx := context.Background()
	for v := 0; v < n; v += 100 {
		if _, err := env.store.Append(ctx, stream, eventstore.Exact(int64(v)), items(min(100, n-v))); err != nil {
			b.Fatal(err)
		}
	}
}

// recordColumns is the column list of esox's read statements.
const recordColumns = `position, transaction_id::text AS transaction_id_text, event_id, stream_version, event_type, payload, metadata, recorded_at`

// rawRow holds one scanned row of the raw baselines.
type rawRow struct {
	pos      int64
	txid     string
	id       uuid.UUID
	version  int64
	typ      string
	payload  []byte
	metadata []byte
	at       time.Time
	stream   string
}

// rawScan runs stmt and scans its rows into a new slice of rawRows (with
// stream_id, the last column, when withStream), without decoding anything.
func rawScan(ctx context.Context, stmt *sqlx.Stmt, withStream bool, args ...any) ([]rawRow, error) {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]rawRow, 0, 1000)
	for rows.Next() {
		var r rawRow
		dest := []any{&r.pos, &r.txid, &r.id, &r.version, &r.typ, &r.payload, &r.metadata, &r.at}
		if withStream {
			dest = append(dest, &r.stream)
		}
		if err := rows.Scan(dest...); err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// BenchmarkReadStream reads a stream of 1,000 events again and again:
//
//   - esox: Store.ReadStream, which decodes every payload into its
//     registered Go type (ItemAdded) with encoding/json.
//   - raw: the statement ReadStream runs (same columns, same WHERE, ORDER BY
//     and LIMIT, same arguments), prepared, its rows scanned into plain Go
//     values and not decoded.
//
// It reports events read per second and the ratio esox/raw.
func BenchmarkReadStream(b *testing.B) {
	const n = 1000
	env := newBenchEnv(b, 1)
	fillStream(b, env, "bench-1", n)
	ctx := context.Background()
	stmt, err := env.db.PreparexContext(ctx, `SELECT `+recordColumns+` FROM `+env.store.QualifiedEventsTable()+`
WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3`)
	if err != nil {
		b.Fatal(err)
	}
	defer stmt.Close()
	benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "raw", Variants: []benchkit.Variant{
		{Name: "esox", Run: func(r *benchkit.Round) error {
			for !r.Done() {
				got := 0
				for rec, err := range env.store.ReadStream(ctx, "bench-1", 1) {
					if err != nil {
						return err
					}
					if rec.Data.(ItemAdded).SKU == "" {
						return errors.New("not decoded")
					}
					got++
				}
				if got != n {
					return fmt.Errorf("read %d events, want %d", got, n)
				}
				r.Add(n)
			}
			return nil
		}},
		{Name: "raw", Run: func(r *benchkit.Round) error {
			for !r.Done() {
				// ReadStream asks for a page and one more row.
				rows, err := rawScan(ctx, stmt, false, "bench-1", 1, postgres.ReadStreamPageSizeDefault+1)
				if err != nil {
					return err
				}
				if len(rows) != n {
					return fmt.Errorf("read %d events, want %d", len(rows), n)
				}
				r.Add(n)
			}
			return nil
		}},
	}})
}

// BenchmarkReadAll reads the global feed in pages of 1,000 from a table of
// 10,000 events (100 streams), wrapping around at the end:
//
//   - esox: Store.ReadAll, which runs ReadFeed's gap-free query and decodes
//     every payload into its registered Go type.
//   - raw: the same query (same columns, the same keyset on the primary key
//     (transaction_id, position), the same transaction_id <
//     pg_snapshot_xmin(pg_current_snapshot()) condition, same LIMIT),
//     prepared, its rows scanned into plain Go values and not decoded.
//
// It reports events read per second and the ratio esox/raw.
func BenchmarkReadAll(b *testing.B) {
	const (
		page  = 1000
		total = 10_000
	)
	env := newBenchEnv(b, 1)
	for s := range total / 100 {
		fillStream(b, env, fmt.Sprintf("bench-%d", s), 100)
	}
	ctx := context.Background()
	stmt, err := env.db.PreparexContext(ctx, `SELECT `+recordColumns+`, stream_id FROM `+env.store.QualifiedEventsTable()+`
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position LIMIT $3`)
	if err != nil {
		b.Fatal(err)
	}
	defer stmt.Close()
	var pos eventstore.Position
	last := rawRow{txid: "0"}
	benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "raw", Variants: []benchkit.Variant{
		{Name: "esox", Run: func(r *benchkit.Round) error {
			for !r.Done() {
				recs, err := env.store.ReadAll(ctx, pos, page)
				if err != nil {
					return err
				}
				if len(recs) != page {
					return fmt.Errorf("page of %d events, want %d", len(recs), page)
				}
				if recs[0].Data.(ItemAdded).SKU == "" {
					return errors.New("not decoded")
				}
				pos = recs[page-1].Position
				if pos.Position >= total {
					pos = eventstore.Position{}
				}
				r.Add(page)
			}
			return nil
		}},
		{Name: "raw", Run: func(r *benchkit.Round) error {
			for !r.Done() {
				rows, err := rawScan(ctx, stmt, true, last.txid, last.pos, page)
				if err != nil {
					return err
				}
				if len(rows) != page {
					return fmt.Errorf("page of %d events, want %d", len(rows), page)
				}
				last = rows[page-1]
				if last.pos >= total {
					last = rawRow{txid: "0"}
				}
				r.Add(page)
			}
			return nil
		}},
	}})
}

// BenchmarkAppendTelemetry measures what OpenTelemetry costs an append: 1
// event per commit from 8 writers, each variant with a store of its own on
// the same table, interleaved:
//
//   - off: the store with its instrumentation switched off
//     (DisableTelemetry): no span started, no metric, no trace context, as a
//     build without instrumentation — the baseline;
//   - noop: the store as built, with no provider installed (the global
//     no-op providers, as in a service that does not use OpenTelemetry);
//   - sdk: the store with the OpenTelemetry SDK: every trace sampled
//     (AlwaysSample; each append a root span, batched to an exporter that
//     drops them), the metrics recorded (a manual reader never collected),
//     and the trace context written into each event's metadata;
//   - sdk-nocontext: the same, but without the trace context in the
//     events (DisableTraceContext): what recording it costs, apart from
//     the spans and metrics.
//
// It reports the ratios noop/off, sdk/off (targets: 0.99 and 0.95) and
// sdk-nocontext/off.
func BenchmarkAppendTelemetry(b *testing.B) {
	const nw = 8
	env := newBenchEnv(b, 4*nw)
	ctx := context.Background()
	evs := items(1)
	store := func(cfg postgres.Config) *postgres.Store {
		cfg.Schema, cfg.Logger = env.schema, slog.New(slog.DiscardHandler)
		s, err := postgres.New(env.db, testRegistry(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	off := store(postgres.Config{})
	postgres.DisableTelemetry(off)
	noop := store(postgres.Config{})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	sdk := store(postgres.Config{TracerProvider: tp, MeterProvider: mp})
	sdkNoContext := store(postgres.Config{TracerProvider: tp, MeterProvider: mp})
	postgres.DisableTraceContext(sdkNoContext)
	variant := func(name string, s *postgres.Store) benchkit.Variant {
		return benchkit.Variant{Name: name, Run: writers(nw, 1, func(w, i int) error {
			stream, version := streamAt("tel"+name, w, i, 1)
			_, err := s.Append(ctx, stream, eventstore.Exact(version), evs)
			return err
		})}
	}
	// The baseline second, next to the two variants with targets (noop and
	// sdk) in every cycle.
	benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "off", Variants: []benchkit.Variant{
		variant("noop", noop), variant("off", off), variant("sdk", sdk), variant("sdk-nocontext", sdkNoContext),
	}})
}

// ItemAddedV2 is item_added at schema version 2 in BenchmarkReadUpcast: it
// gained a unit, which version 1 lacked ("piece" by default).
type ItemAddedV2 struct {
	SKU  string `json:"sku"`
	N    int    `json:"n"`
	Unit string `json:"unit"`
}

// BenchmarkReadUpcast reads ESOX_BENCH_UPCAST_EVENTS events (default
// 1,000,000, in streams of 100) from the global feed with ReadAll in pages
// of 1,000, wrapping around at the end, from two tables of the same size,
// in the same run:
//
//   - current: every event stored at its type's registered version (2),
//     decoded into its Go type;
//   - upcast: every other event stored at version 1, as an older release
//     wrote it, upcast one step (eventstore.AddField) before decoding, the
//     others at version 2.
//
// It reports events read per second and the ratio upcast/current: what
// reading a history half of which needs a one-step upcast costs against
// one that needs none (the target is 0.8 or more).
func BenchmarkReadUpcast(b *testing.B) {
	const page = 1000
	n := pgtest.EnvInt(b, "ESOX_BENCH_UPCAST_EVENTS", 1_000_000)
	db := pgtest.Open(b)
	schema := pgtest.Schema(b, db)
	reg := eventstore.NewRegistry()
	eventstore.MustRegisterVersion[ItemAddedV2](reg, "item_added", 2)
	if err := reg.Upcast("item_added", 1, eventstore.AddField("unit", "piece")); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	open := func(table string, everyOther int) *postgres.Store {
		s := esoxtest.Store(b, db, reg, postgres.Config{Schema: schema, EventsTable: table, SnapshotsTable: table + "_snapshots", Logger: slog.New(slog.DiscardHandler)})
		// Rows as the releases wrote them: version 1 without a unit,
		// version 2 with one. everyOther 0: none at version 1.
		if _, err := db.ExecContext(ctx, `INSERT INTO `+s.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, schema_version, payload)
			SELECT gen_random_uuid(), 'bench-' || (i / 100), i % 100 + 1, 'item_added',
				CASE WHEN $2 > 0 AND i % $2 = 1 THEN 1 ELSE 2 END,
				CASE WHEN $2 > 0 AND i % $2 = 1 THEN jsonb_build_object('sku', 'sku', 'n', i)
					ELSE jsonb_build_object('sku', 'sku', 'n', i, 'unit', 'piece') END
			FROM generate_series(0, $1 - 1) AS i`, n, everyOther); err != nil {
			b.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `ANALYZE `+s.QualifiedEventsTable()); err != nil {
			b.Fatal(err)
		}
		return s
	}
	current, upcast := open("events_current", 0), open("events_upcast", 2)
	reader := func(s *postgres.Store) func(r *benchkit.Round) error {
		var pos eventstore.Position
		return func(r *benchkit.Round) error {
			for !r.Done() {
				recs, err := s.ReadAll(ctx, pos, page)
				if err != nil {
					return err
				}
				if len(recs) == 0 {
					pos = eventstore.Position{} // wrap around
					continue
				}
				if e := recs[0].Data.(ItemAddedV2); e.Unit != "piece" {
					return fmt.Errorf("decoded %+v, want the unit", e)
				}
				pos = recs[len(recs)-1].Position
				r.Add(int64(len(recs)))
			}
			return nil
		}
	}
	benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "current", Variants: []benchkit.Variant{
		{Name: "upcast", Run: reader(upcast)},
		{Name: "current", Run: reader(current)},
	}})
}
