package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

// The benchmarks compare each esox operation with a raw-SQL baseline in the
// same run: the same rows, through the same driver and pool, with prepared
// statements and the same durability (autocommit, synchronous commit as the
// server is configured). Both sides create their event IDs (UUIDv7) and
// encode payloads with encoding/json, as any application writing these rows
// must. Each reports events/s; the ratio esox/raw is what docs/benchmarks.md
// tabulates.
//
//	go test -run '^$' -bench . -benchtime 5s ./eventstore/postgres

// benchEnv is a store and a raw table of the same definition in a fresh
// schema.
type benchEnv struct {
	db    *sqlx.DB
	store *postgres.Store
	raw   string // quoted, qualified raw table
}

func newBenchEnv(b *testing.B, conns int) *benchEnv {
	b.Helper()
	db := pgtest.Open(b)
	// Keep every writer's connection (and its prepared statements) in the
	// pool; database/sql keeps only 2 idle connections by default.
	db.SetMaxIdleConns(conns + 2)
	schema := pgtest.Schema(b, db)
	s, err := postgres.New(db, testRegistry(), postgres.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	if _, err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	raw := postgres.QuoteIdentifier(schema) + `.raw_events`
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+raw+` (LIKE `+s.QualifiedEventsTable()+` INCLUDING ALL)`); err != nil {
		b.Fatal(err)
	}
	return &benchEnv{db: db, store: s, raw: raw}
}

// runWriters runs op b.N times split over writers goroutines. Each writer
// appends events per call to its own streams of 100 events; op gets the
// stream and its current version. Before the timer starts, every writer
// runs op once on a warm-up stream, so that connections are open and
// statements prepared on both sides alike.
func runWriters(b *testing.B, writers, events int, op func(stream string, version int64) error) {
	b.Helper()
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		failed atomic.Pointer[error]
	)
	fail := func(err error) { failed.CompareAndSwap(nil, &err) }
	for w := range writers {
		wg.Go(func() {
			if err := op(fmt.Sprintf("warm-%d", w), 0); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		b.Fatal(*e)
	}
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for i := 0; next.Add(1) <= int64(b.N); i++ {
				stream := fmt.Sprintf("bench-%d-%d", w, i*events/100)
				if err := op(stream, int64(i*events%100)); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if e := failed.Load(); e != nil {
		b.Fatal(*e)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(b.N*events)/elapsed.Seconds(), "events/s")
}

// BenchmarkAppend appends events per commit from writers goroutines, each
// to its own streams of up to 100 events with an exact expected version,
// against a raw prepared multi-row INSERT of the same rows.
func BenchmarkAppend(b *testing.B) {
	for _, events := range []int{1, 10} {
		for _, writers := range []int{1, 8} {
			b.Run(fmt.Sprintf("events=%d/writers=%d", events, writers), func(b *testing.B) {
				b.Run("esox", func(b *testing.B) {
					env := newBenchEnv(b, writers)
					ctx := context.Background()
					evs := items(events)
					runWriters(b, writers, events, func(stream string, version int64) error {
						_, err := env.store.Append(ctx, stream, eventstore.Exact(version), evs)
						return err
					})
				})
				b.Run("raw", func(b *testing.B) {
					env := newBenchEnv(b, writers)
					ctx := context.Background()
					var q strings.Builder
					q.WriteString(`INSERT INTO ` + env.raw + ` (event_id, stream_id, stream_version, event_type, payload, metadata) VALUES `)
					for i := range events {
						if i > 0 {
							q.WriteString(", ")
						}
						p := 1 + 6*i
						fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d)", p, p+1, p+2, p+3, p+4, p+5)
					}
					stmt, err := env.db.PreparexContext(ctx, q.String())
					if err != nil {
						b.Fatal(err)
					}
					defer stmt.Close()
					evs := items(events)
					runWriters(b, writers, events, func(stream string, version int64) error {
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
						_, err := stmt.ExecContext(ctx, args...)
						return err
					})
				})
			})
		}
	}
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

type rawRow struct {
	pos      int64
	txid     string
	id       uuid.UUID
	stream   string
	version  int64
	typ      string
	payload  []byte
	metadata []byte
	at       time.Time
}

// BenchmarkReadStream reads a stream of 1,000 events: esox decodes every
// payload into its registered type, raw scans the same columns.
func BenchmarkReadStream(b *testing.B) {
	const n = 1000
	b.Run("events=1000/esox", func(b *testing.B) {
		env := newBenchEnv(b, 1)
		fillStream(b, env, "bench-1", n)
		ctx := context.Background()
		b.ResetTimer()
		for b.Loop() {
			got := 0
			for r, err := range env.store.ReadStream(ctx, "bench-1", 1) {
				if err != nil {
					b.Fatal(err)
				}
				if r.Data.(ItemAdded).SKU == "" {
					b.Fatal("not decoded")
				}
				got++
			}
			if got != n {
				b.Fatalf("read %d", got)
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("events=1000/raw", func(b *testing.B) {
		env := newBenchEnv(b, 1)
		fillStream(b, env, "bench-1", n)
		ctx := context.Background()
		stmt, err := env.db.PreparexContext(ctx, `SELECT position, transaction_id::text AS transaction_id_text, event_id, stream_version, event_type, payload, metadata, recorded_at
FROM `+env.store.QualifiedEventsTable()+` WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version LIMIT $3`)
		if err != nil {
			b.Fatal(err)
		}
		defer stmt.Close()
		b.ResetTimer()
		for b.Loop() {
			if got := len(rawScan(b, stmt, false, "bench-1", 1, n)); got != n {
				b.Fatalf("read %d", got)
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
	})
}

// rawScan runs stmt and scans its rows (with stream_id when withStream).
func rawScan(b *testing.B, stmt *sqlx.Stmt, withStream bool, args ...any) []rawRow {
	rows, err := stmt.QueryContext(context.Background(), args...)
	if err != nil {
		b.Fatal(err)
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
			b.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkReadAll reads the feed in pages of 1,000 from a table of 10,000
// events (100 streams): esox's gap-free query with decoding against a raw
// keyset SELECT by position of the same columns.
func BenchmarkReadAll(b *testing.B) {
	const (
		page  = 1000
		total = 10_000
	)
	fill := func(b *testing.B, env *benchEnv) {
		for s := range total / 100 {
			fillStream(b, env, fmt.Sprintf("bench-%d", s), 100)
		}
	}
	b.Run("page=1000/esox", func(b *testing.B) {
		env := newBenchEnv(b, 1)
		fill(b, env)
		ctx := context.Background()
		var pos eventstore.Position
		b.ResetTimer()
		for b.Loop() {
			recs, err := env.store.ReadAll(ctx, pos, page)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) != page {
				b.Fatalf("page of %d", len(recs))
			}
			pos = recs[page-1].Position
			if pos.Position >= total {
				pos = eventstore.Position{}
			}
		}
		b.ReportMetric(float64(b.N*page)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("page=1000/raw", func(b *testing.B) {
		env := newBenchEnv(b, 1)
		fill(b, env)
		ctx := context.Background()
		// The same keyset over the primary key as esox, without the
		// snapshot-xmin filter and without decoding.
		stmt, err := env.db.PreparexContext(ctx, `SELECT position, transaction_id::text AS transaction_id_text, event_id, stream_version, event_type, payload, metadata, recorded_at, stream_id
FROM `+env.store.QualifiedEventsTable()+` WHERE (transaction_id, position) > ($1::xid8, $2::bigint) ORDER BY transaction_id, position LIMIT $3`)
		if err != nil {
			b.Fatal(err)
		}
		defer stmt.Close()
		last := rawRow{txid: "0"}
		b.ResetTimer()
		for b.Loop() {
			rows := rawScan(b, stmt, true, last.txid, last.pos, page)
			if len(rows) != page {
				b.Fatalf("page of %d", len(rows))
			}
			last = rows[page-1]
			if last.pos >= total {
				last = rawRow{txid: "0"}
			}
		}
		b.ReportMetric(float64(b.N*page)/b.Elapsed().Seconds(), "events/s")
	})
}
