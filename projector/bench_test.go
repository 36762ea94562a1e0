package projector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// benchEvents is the number of events the catch-up benchmark seeds:
// ESOX_BENCH_EVENTS, default 1,000,000.
func benchEvents(b *testing.B) int { return pgtest.EnvInt(b, "ESOX_BENCH_EVENTS", 1_000_000) }

// peakHeap samples HeapInuse until stop is called and returns the maximum.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// BenchmarkCatchUp measures how fast a projection catches up with N events
// (ESOX_BENCH_EVENTS, default 1,000,000) spread over 1,000 accounts, into a
// SQL read model: with one upsert per event through the runner, with a raw
// SQL loop doing the same reads, upserts and checkpoint updates in the same
// batches of 1,000, and with a batch handler doing one multi-row upsert per
// batch. It reports events/s and the peak heap in use.
func BenchmarkCatchUp(b *testing.B) {
	n := benchEvents(b)
	db := pgtest.Open(b)
	// database/sql keeps only 2 idle connections by default: with a leader
	// connection, a worker and WaitFor, the pool would reconnect all the time.
	db.SetMaxIdleConns(16)
	bn := setupOn(b, db, pgtest.Schema(b, db), nil, nil)
	ctx := context.Background()
	seedStart := time.Now()
	if _, err := db.ExecContext(ctx, `INSERT INTO `+bn.store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, payload)
		SELECT gen_random_uuid(), 'account-a' || (g % 1000), g / 1000 + 1, 'deposited',
		       jsonb_build_object('account', 'a' || (g % 1000), 'amount', g % 7 + 1)
		FROM generate_series(0, $1 - 1) AS g`, n); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE `+bn.store.QualifiedEventsTable()); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d events in %s", n, time.Since(seedStart).Round(time.Millisecond))
	last := bn.lastEvent(b)
	const batch = 1000

	model := func(b *testing.B, table string) string {
		tbl := bn.q(table)
		if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS `+tbl+`; CREATE TABLE `+tbl+` (account text PRIMARY KEY, total bigint NOT NULL, n bigint NOT NULL)`); err != nil {
			b.Fatal(err)
		}
		return tbl
	}
	check := func(b *testing.B, table string) {
		var total, count int64
		if err := db.QueryRowContext(ctx, `SELECT coalesce(sum(total), 0), coalesce(sum(n), 0) FROM `+bn.q(table)).Scan(&total, &count); err != nil {
			b.Fatal(err)
		}
		if count != int64(n) {
			b.Fatalf("%s: model counts %d events, want %d", table, count, n)
		}
	}
	report := func(b *testing.B, elapsed time.Duration, peak uint64) {
		b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
		b.ReportMetric(0, "ns/op")
	}

	b.Run("raw_sql_loop", func(b *testing.B) {
		// A service runs its loop under a cancellable context, as the
		// runner does (lib/pq then watches each query for cancellation).
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var elapsed time.Duration
		var peak uint64
		for range b.N {
			tbl := model(b, "raw_model")
			upsert := `INSERT INTO ` + tbl + ` (account, total, n) VALUES ($1, $2, 1)
				ON CONFLICT (account) DO UPDATE SET total = ` + tbl + `.total + excluded.total, n = ` + tbl + `.n + 1`
			if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+bn.q("raw_checkpoint")+` (id int PRIMARY KEY, transaction_id xid8, position bigint);
				DELETE FROM `+bn.q("raw_checkpoint")+`; INSERT INTO `+bn.q("raw_checkpoint")+` VALUES (1, '0', 0)`); err != nil {
				b.Fatal(err)
			}
			feed := `SELECT position, transaction_id::text AS txid, payload FROM ` + bn.store.QualifiedEventsTable() + `
				WHERE (transaction_id, position) > ($1::xid8, $2::bigint) AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
				ORDER BY transaction_id, position LIMIT $3`
			stopPeak := peakHeap()
			start := time.Now()
			txid, pos := "0", int64(0)
			for {
				rows, err := db.QueryContext(ctx, feed, txid, pos, batch)
				if err != nil {
					b.Fatal(err)
				}
				type row struct {
					d Deposited
				}
				var page []row
				for rows.Next() {
					var payload []byte
					if err := rows.Scan(&pos, &txid, &payload); err != nil {
						b.Fatal(err)
					}
					var r row
					if err := json.Unmarshal(payload, &r.d); err != nil {
						b.Fatal(err)
					}
					page = append(page, r)
				}
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
				rows.Close()
				if len(page) == 0 {
					break
				}
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE `+bn.q("raw_checkpoint")+` SET transaction_id = $1::xid8, position = $2 WHERE id = 1`, txid, pos); err != nil {
					b.Fatal(err)
				}
				for _, r := range page {
					if _, err := tx.ExecContext(ctx, upsert, r.d.Account, r.d.Amount); err != nil {
						b.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			elapsed += time.Since(start)
			peak = max(peak, stopPeak())
			check(b, "raw_model")
		}
		report(b, elapsed, peak)
	})

	runProjection := func(b *testing.B, name, table string, h projector.Handler) {
		var elapsed time.Duration
		var peak uint64
		for i := range b.N {
			model(b, table)
			p := projector.Projection{Name: fmt.Sprintf("%s_%d", name, i), Handler: h}
			r, err := projector.NewRunner(bn.store, projector.Config{BatchSize: batch, Logger: testLogger(b)}, p)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.Migrate(ctx); err != nil {
				b.Fatal(err)
			}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			stopPeak := peakHeap()
			start := time.Now()
			go func() { done <- r.Run(runCtx) }()
			if err := r.WaitFor(ctx, p.Name, last); err != nil {
				b.Fatal(err)
			}
			elapsed += time.Since(start)
			peak = max(peak, stopPeak())
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			check(b, table)
		}
		report(b, elapsed, peak)
	}

	b.Run("projector_upsert_per_event", func(b *testing.B) {
		tbl := bn.q("per_event_model")
		upsert := `INSERT INTO ` + tbl + ` (account, total, n) VALUES ($1, $2, 1)
			ON CONFLICT (account) DO UPDATE SET total = ` + tbl + `.total + excluded.total, n = ` + tbl + `.n + 1`
		h := projector.On(projector.NewHandlers(bn.reg), func(ctx context.Context, tx postgres.Tx, _ eventstore.Record, e Deposited) error {
			_, err := tx.ExecContext(ctx, upsert, e.Account, e.Amount)
			return err
		})
		runProjection(b, "per_event", "per_event_model", h)
	})

	b.Run("projector_batch_upsert", func(b *testing.B) {
		tbl := bn.q("batch_model")
		upsert := `INSERT INTO ` + tbl + ` AS m (account, total, n)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
			ON CONFLICT (account) DO UPDATE SET total = m.total + excluded.total, n = m.n + excluded.n`
		h := projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
			idx := map[string]int{}
			var accts []string
			var totals, counts []int64
			for _, r := range recs {
				d := r.Data.(Deposited)
				i, ok := idx[d.Account]
				if !ok {
					i = len(accts)
					idx[d.Account] = i
					accts, totals, counts = append(accts, d.Account), append(totals, 0), append(counts, 0)
				}
				totals[i] += d.Amount
				counts[i]++
			}
			_, err := tx.ExecContext(ctx, upsert, pq.Array(accts), pq.Array(totals), pq.Array(counts))
			return err
		}, "deposited")
		runProjection(b, "batch", "batch_model", h)
	})
}

// BenchmarkPollCost measures what idle projections polling the feed cost
// concurrent appenders: 4 goroutines append single events for
// ESOX_BENCH_SECONDS (default 10) with no runner, with a runner of 1 and of
// 10 idle projections polling every 10 ms (100 and 1,000 polls/s) on
// another schema of the same server, and with none again. It reports
// appends/s for each.
func BenchmarkPollCost(b *testing.B) {
	secs := pgtest.EnvInt(b, "ESOX_BENCH_SECONDS", 10)
	db := pgtest.Open(b)
	db.SetMaxIdleConns(32)
	bn := setupOn(b, db, pgtest.Schema(b, db), nil, nil)
	idle := setupOn(b, db, pgtest.Schema(b, db), nil, nil)
	ctx := context.Background()

	appendFor := func(b *testing.B, d time.Duration) float64 { return appendRate(b, db, bn.store, 4, d) }
	// Interleaved, to see the machine's drift: none, 1, 10, none.
	for i, projections := range []int{0, 1, 10, 0} {
		b.Run(fmt.Sprintf("idle_projections_%d_run_%d", projections, i), func(b *testing.B) {
			if projections > 0 {
				var ps []projector.Projection
				for j := range projections {
					ps = append(ps, projector.Projection{Name: fmt.Sprintf("idle_%d_%d", i, j), Handler: projector.Batch(func(context.Context, postgres.Tx, []eventstore.Record) error { return nil })})
				}
				r, err := projector.NewRunner(idle.store, projector.Config{Logger: testLogger(b)}, ps...)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.Migrate(ctx); err != nil {
					b.Fatal(err)
				}
				rctx, cancel := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- r.Run(rctx) }()
				defer func() {
					cancel()
					<-done
				}()
				time.Sleep(200 * time.Millisecond) // let the workers start polling
			}
			var rate float64
			for range b.N {
				rate += appendFor(b, time.Duration(secs)*time.Second)
			}
			b.ReportMetric(rate/float64(b.N), "appends/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// appendRate has writers goroutines append single events to their own
// streams through store for d and returns the appends/s; it logs the
// server's transactions/s during the run.
func appendRate(b *testing.B, db *sqlx.DB, store *postgres.Store, writers int, d time.Duration) float64 {
	ctx := context.Background()
	xacts := func() int64 {
		var n int64
		if err := db.QueryRowContext(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	x0 := xacts()
	defer func() { b.Logf("server transactions/s during the run: %.0f", float64(xacts()-x0)/d.Seconds()) }()
	var n atomic.Int64
	actx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; actx.Err() == nil; i++ {
				_, err := store.Append(actx, fmt.Sprintf("account-w%d-%d", w, i%100), eventstore.Any,
					[]eventstore.Event{{Data: Deposited{Account: "x", Amount: 1}}})
				if err == nil {
					n.Add(1)
				} else if actx.Err() == nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// BenchmarkNotifyCost measures what the alternative wake-up, NOTIFY on every
// append, would cost appenders: 8 goroutines append single events for
// ESOX_BENCH_SECONDS (default 10), alternately without and with a
// statement-level trigger on the events table that calls pg_notify, while a
// LISTEN connection drains the notifications. NOTIFY takes a lock held
// until commit that serialises every notifying transaction of the database,
// which is the cost DESIGN's known traps warn of; compare with
// BenchmarkPollCost, the wake-up esox uses.
func BenchmarkNotifyCost(b *testing.B) {
	secs := pgtest.EnvInt(b, "ESOX_BENCH_SECONDS", 10)
	db := pgtest.Open(b)
	db.SetMaxIdleConns(32)
	bn := setupOn(b, db, pgtest.Schema(b, db), nil, nil)
	ctx := context.Background()
	channel := "esox_bench_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	fn := bn.q("notify_append")
	if _, err := db.ExecContext(ctx, `CREATE FUNCTION `+fn+`() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN PERFORM pg_notify('`+channel+`', ''); RETURN NULL; END$$`); err != nil {
		b.Fatal(err)
	}
	listener := pq.NewListener(pgtest.DatabaseURL(), 10*time.Millisecond, time.Second, nil)
	defer listener.Close()
	if err := listener.Listen(channel); err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range listener.Notify {
			got.Add(1)
		}
	}()
	defer func() { listener.Close(); <-drained }()
	for i, notify := range []bool{false, true, false, true} {
		name := "no_notify"
		if notify {
			name = "notify_per_append"
		}
		b.Run(fmt.Sprintf("%s_run_%d", name, i), func(b *testing.B) {
			trigger := `DROP TRIGGER IF EXISTS notify_append ON ` + bn.store.QualifiedEventsTable()
			if notify {
				trigger = `CREATE TRIGGER notify_append AFTER INSERT ON ` + bn.store.QualifiedEventsTable() + ` FOR EACH STATEMENT EXECUTE FUNCTION ` + fn + `()`
			}
			if _, err := db.ExecContext(ctx, trigger); err != nil {
				b.Fatal(err)
			}
			before := got.Load()
			var rate float64
			for range b.N {
				rate += appendRate(b, db, bn.store, 8, time.Duration(secs)*time.Second)
			}
			b.ReportMetric(rate/float64(b.N), "appends/s")
			b.ReportMetric(0, "ns/op")
			b.Logf("notifications received: %d", got.Load()-before)
		})
	}
}

// BenchmarkCommitToReadModelLatency appends about 1,000 events/s for
// ESOX_BENCH_SECONDS (default 10) and reports the p50 and p99 delay from an
// Append returning (its commit) to the projection's handler applying the
// event (its batch commits right after). The appends go through a second
// Store, so the runner is not woken in-process and relies on its 10 ms poll,
// as with an appender in another process; the "same_store" case shows the
// in-process wake-up.
func BenchmarkCommitToReadModelLatency(b *testing.B) {
	secs := pgtest.EnvInt(b, "ESOX_BENCH_SECONDS", 10)
	for _, sameStore := range []bool{false, true} {
		name := "other_process"
		if sameStore {
			name = "same_store"
		}
		b.Run(name, func(b *testing.B) {
			db := pgtest.Open(b)
			db.SetMaxIdleConns(16)
			bn := setupOn(b, db, pgtest.Schema(b, db), nil, nil)
			appender := bn.store
			if !sameStore {
				var err error
				if appender, err = postgres.New(db, bn.reg, postgres.Config{Schema: bn.schema}); err != nil {
					b.Fatal(err)
				}
			}
			var mu sync.Mutex
			committed := map[uuid.UUID]time.Time{}
			var lat []time.Duration
			applied := map[uuid.UUID]time.Time{}
			h := projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
				now := time.Now()
				mu.Lock()
				for _, r := range recs {
					applied[r.ID] = now
				}
				mu.Unlock()
				return nil
			}, "deposited")
			r, err := projector.NewRunner(bn.store, projector.Config{Logger: testLogger(b)}, projector.Projection{Name: "lat", Handler: h})
			if err != nil {
				b.Fatal(err)
			}
			rctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(rctx) }()
			defer func() {
				cancel()
				<-done
			}()
			if _, err := r.Migrate(context.Background()); err != nil {
				b.Fatal(err)
			}
			for range b.N {
				tick := time.NewTicker(time.Millisecond)
				end := time.Now().Add(time.Duration(secs) * time.Second)
				var last eventstore.Position
				for i := 0; time.Now().Before(end); i++ {
					<-tick.C
					id := uuid.Must(uuid.NewV7())
					res, err := appender.Append(context.Background(), fmt.Sprintf("account-%d", i%50), eventstore.Any, []eventstore.Event{{ID: id, Data: Deposited{Account: "l", Amount: 1}}})
					if err != nil {
						b.Fatal(err)
					}
					mu.Lock()
					committed[id] = time.Now()
					mu.Unlock()
					last = res.LastPosition
				}
				tick.Stop()
				if err := r.WaitFor(context.Background(), "lat", last); err != nil {
					b.Fatal(err)
				}
			}
			mu.Lock()
			for id, c := range committed {
				if a, ok := applied[id]; ok {
					lat = append(lat, max(a.Sub(c), 0))
				}
			}
			mu.Unlock()
			slices.Sort(lat)
			if len(lat) == 0 {
				b.Fatal("no latencies")
			}
			b.ReportMetric(float64(len(lat))/float64(secs*b.N), "events/s")
			b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
