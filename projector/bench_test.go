package projector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	"github.com/esox-go/esox/internal/benchkit"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// The benchmarks run their variants through internal/benchkit: interleaved
// rounds (A B B A …, 6 rounds of 3 s each by default) on the same tables,
// reporting the median of the per-round ratios and their spread; b.N is
// ignored:
//
//	go test -run '^$' -bench . -benchtime 1x ./projector
//	ESOX_BENCH_ROUND=200ms ESOX_BENCH_ROUNDS=2 ESOX_BENCH_EVENTS=100000 go test -run '^$' -bench . -benchtime 1x ./projector  # quick check

// benchLogger keeps the runners' logs out of the benchmark output.
var benchLogger = slog.New(slog.DiscardHandler)

// newBenchStore returns a migrated store in a fresh schema of db, logging
// nowhere.
func newBenchStore(b *testing.B, db *sqlx.DB) *bundle {
	b.Helper()
	schema := pgtest.Schema(b, db)
	reg := newRegistry()
	store := esoxtest.Store(b, db, reg, postgres.Config{Schema: schema, Logger: benchLogger})
	return &bundle{db: db, schema: schema, reg: reg, store: store}
}

// startRunner runs r until the returned stop is called, and waits until this
// process leads every one of its projections (leader election and
// migrations are then behind it).
func startRunner(b *testing.B, r *projector.Runner) (stop func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := r.Status(ctx)
		if err != nil {
			stop()
			b.Fatal(err)
		}
		leading := len(st) > 0
		for _, s := range st {
			leading = leading && s.Leading
		}
		if leading {
			return stop
		}
		if time.Now().After(deadline) {
			stop()
			b.Fatal("the runner did not lead its projections within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkCatchUp measures how fast a projection with a batch insert
// handler catches up with a backlog: ESOX_BENCH_EVENTS (default 1,000,000)
// "deposited" events over 1,000 accounts, seeded once. Each round replays the
// feed from its start into an emptied read model; the setup (emptying the
// table, rewinding the checkpoint, starting the runner) is not timed, the
// replay is, until the round ends:
//
//   - esox: a projector.Runner (default Config: batches of 1,000) whose
//     projection's Batch handler inserts the batch's events in one
//     multi-row INSERT … SELECT FROM unnest($1, $2, $3) into a table keyed by
//     position. Before the round: Rebuild (checkpoint to the start, table
//     truncated), then Run until this process leads. The events counted are
//     the checkpoint's progress from then to the end of the round.
//   - raw: a hand-written loop doing the same work: before the round,
//     TRUNCATE the table and reset its checkpoint row in one transaction;
//     then per 1,000 events the same gap-free feed query as
//     postgres.Store.ReadFeed (prepared, the same columns), json.Unmarshal of
//     each payload into Deposited, and one transaction that UPDATEs the
//     checkpoint row and runs the same INSERT.
//
// It reports events applied per second and the ratio esox/raw, and the
// peak heap in use during each variant's rounds ("esox-peak-heap-MB",
// "raw-peak-heap-MB"), which must not grow with the backlog. A round that
// runs out of backlog fails: raise ESOX_BENCH_EVENTS.
func BenchmarkCatchUp(b *testing.B) {
	n := pgtest.EnvInt(b, "ESOX_BENCH_EVENTS", 1_000_000)
	db := pgtest.Open(b)
	// database/sql keeps only 2 idle connections by default: with a leader
	// connection, a worker and the raw loop, the pool would reconnect.
	db.SetMaxIdleConns(16)
	bn := newBenchStore(b, db)
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
	// One INSERT in a fresh table: positions run 1..n, so a checkpoint's
	// position is the number of events applied up to it.
	var lo, hi, count int64
	if err := db.QueryRowContext(ctx, `SELECT min(position), max(position), count(*) FROM `+bn.store.QualifiedEventsTable()).Scan(&lo, &hi, &count); err != nil {
		b.Fatal(err)
	}
	if lo != 1 || hi != int64(n) || count != int64(n) {
		b.Fatalf("seeded positions %d..%d (%d events), want 1..%d", lo, hi, count, n)
	}
	b.Logf("seeded %d events in %s", n, time.Since(seedStart).Round(time.Millisecond))

	model := func(table string) (create, insert string) {
		tbl := bn.q(table)
		return `CREATE TABLE IF NOT EXISTS ` + tbl + ` (position bigint PRIMARY KEY, account text NOT NULL, amount bigint NOT NULL)`,
			`INSERT INTO ` + tbl + ` (position, account, amount) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])`
	}
	exhausted := fmt.Errorf("the backlog of %d events ran out within a round: raise ESOX_BENCH_EVENTS", n)

	// esox: a runner with one projection, started per round.
	const name = "catchup"
	createEsox, insertEsox := model("esox_model")
	h := projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		pos := make([]int64, len(recs))
		accts := make([]string, len(recs))
		amounts := make([]int64, len(recs))
		for i, r := range recs {
			d := r.Data.(Deposited)
			pos[i], accts[i], amounts[i] = r.Position.Position, d.Account, d.Amount
		}
		_, err := tx.ExecContext(ctx, insertEsox, pq.Array(pos), pq.Array(accts), pq.Array(amounts))
		return err
	}, "deposited")
	runner, err := projector.NewRunner(bn.store, projector.Config{Logger: benchLogger}, projector.Projection{
		Name: name, Handler: h,
		Setup: func(ctx context.Context, tx postgres.Tx) error { _, err := tx.ExecContext(ctx, createEsox); return err },
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+bn.q("esox_model"))
			return err
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := runner.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	applied := func() (int64, error) {
		var pos int64
		err := db.QueryRowContext(ctx, `SELECT position FROM `+bn.q(projector.CheckpointsTable)+` WHERE projection = $1 AND status = 'active'`, name).Scan(&pos)
		return pos, err
	}
	esoxRound := func(r *benchkit.Round) error {
		// The checkpoint back to the start and the table emptied, before
		// the runner starts.
		if err := runner.Rebuild(ctx, name); err != nil {
			return err
		}
		stop := startRunner(b, runner)
		defer stop()
		// Time the replay once the runner leads: count from the
		// checkpoint it has reached by now.
		from, err := applied()
		if err != nil {
			return err
		}
		r.ResetTimer()
		if err := r.Wait(ctx); err != nil {
			return err
		}
		to, err := applied()
		r.StopTimer()
		if err != nil {
			return err
		}
		if to >= int64(n) {
			return exhausted
		}
		r.Add(to - from)
		return nil
	}

	// raw: the hand-written loop.
	createRaw, insertRaw := model("raw_model")
	checkpoint := bn.q("raw_checkpoint")
	if _, err := db.ExecContext(ctx, createRaw+`; CREATE TABLE `+checkpoint+` (id int PRIMARY KEY, transaction_id xid8 NOT NULL, position bigint NOT NULL);
		INSERT INTO `+checkpoint+` VALUES (1, '0', 0)`); err != nil {
		b.Fatal(err)
	}
	feed, err := db.PreparexContext(ctx, `SELECT position, transaction_id::text AS transaction_id_text, event_id, stream_version, event_type, payload, metadata, recorded_at, stream_id
FROM `+bn.store.QualifiedEventsTable()+`
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position LIMIT $3`)
	if err != nil {
		b.Fatal(err)
	}
	defer feed.Close()
	const batch = projector.BatchSizeDefault
	type row struct {
		pos, version      int64
		txid, typ, stream string
		id                uuid.UUID
		payload, metadata []byte
		at                time.Time
		d                 Deposited
	}
	rawRound := func(r *benchkit.Round) error {
		// A service runs its loop under a cancellable context, as the
		// runner does (lib/pq then watches each query for cancellation).
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `TRUNCATE `+bn.q("raw_model")); err != nil {
			_ = tx.Rollback()
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+checkpoint+` SET transaction_id = '0', position = 0 WHERE id = 1`); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		r.ResetTimer()
		txid, pos := "0", int64(0)
		for !r.Done() {
			rows, err := feed.QueryContext(ctx, txid, pos, batch)
			if err != nil {
				return err
			}
			page := make([]row, 0, batch)
			for rows.Next() {
				var e row
				if err := rows.Scan(&e.pos, &e.txid, &e.id, &e.version, &e.typ, &e.payload, &e.metadata, &e.at, &e.stream); err != nil {
					rows.Close()
					return err
				}
				if e.typ == "deposited" {
					if err := json.Unmarshal(e.payload, &e.d); err != nil {
						rows.Close()
						return err
					}
				}
				page = append(page, e)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(page) == 0 {
				return exhausted
			}
			txid, pos = page[len(page)-1].txid, page[len(page)-1].pos
			positions := make([]int64, 0, len(page))
			accts := make([]string, 0, len(page))
			amounts := make([]int64, 0, len(page))
			for _, e := range page {
				if e.typ == "deposited" {
					positions, accts, amounts = append(positions, e.pos), append(accts, e.d.Account), append(amounts, e.d.Amount)
				}
			}
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE `+checkpoint+` SET transaction_id = $1::xid8, position = $2 WHERE id = 1`, txid, pos); err != nil {
				_ = tx.Rollback()
				return err
			}
			if _, err := tx.ExecContext(ctx, insertRaw, pq.Array(positions), pq.Array(accts), pq.Array(amounts)); err != nil {
				_ = tx.Rollback()
				return err
			}
			if err := tx.Commit(); err != nil {
				return err
			}
			r.Add(int64(len(page)))
		}
		return nil
	}

	var esoxPeak, rawPeak uint64
	benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "raw", Variants: []benchkit.Variant{
		{Name: "esox", Run: withPeakHeap(&esoxPeak, esoxRound)},
		{Name: "raw", Run: withPeakHeap(&rawPeak, rawRound)},
	}})
	b.ReportMetric(float64(esoxPeak)/(1<<20), "esox-peak-heap-MB")
	b.ReportMetric(float64(rawPeak)/(1<<20), "raw-peak-heap-MB")
}

// withPeakHeap wraps a round function: while it runs, the process's
// HeapInuse is sampled every 20 ms and *peak raised to the largest value
// seen.
func withPeakHeap(peak *uint64, run func(r *benchkit.Round) error) func(r *benchkit.Round) error {
	return func(r *benchkit.Round) error {
		done := make(chan struct{})
		var seen atomic.Uint64
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > seen.Load() {
					seen.Store(ms.HeapInuse)
				}
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		})
		err := run(r)
		close(done)
		wg.Wait()
		*peak = max(*peak, seen.Load())
		return err
	}
}

// appendRound returns a round function in which writers goroutines append
// single events to their own streams through store until the round ends,
// counting appends.
func appendRound(store *postgres.Store, writers int) func(r *benchkit.Round) error {
	return func(r *benchkit.Round) error {
		ctx := context.Background()
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := 0; !r.Done(); i++ {
					if _, err := store.Append(ctx, fmt.Sprintf("account-w%d-%d", w, i%100), eventstore.Any,
						[]eventstore.Event{{Data: Deposited{Account: "x", Amount: 1}}}); err != nil {
						errs[w] = err
						return
					}
					r.Add(1)
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	}
}

// BenchmarkPollCost measures what idle projections cost concurrent
// appenders: 4 goroutines append single events, with no runner ("none",
// the baseline), and with a runner of 1 and of 10 idle projections
// ("idle-1", "idle-10") on another schema of the same server, started and
// leading before each round and stopped after it. The idle projections
// share their store's feed watcher: 100 head polls per second (10 ms) for
// either. It reports appends/s and the ratios to "none".
func BenchmarkPollCost(b *testing.B) {
	db := pgtest.Open(b)
	db.SetMaxIdleConns(32)
	bn := newBenchStore(b, db)
	idle := newBenchStore(b, db)
	ctx := context.Background()
	withIdle := func(k int) func(r *benchkit.Round) error {
		appendFor := appendRound(bn.store, 4)
		return func(r *benchkit.Round) error {
			var ps []projector.Projection
			for j := range k {
				ps = append(ps, projector.Projection{Name: fmt.Sprintf("idle_%d", j), Handler: projector.Batch(func(context.Context, postgres.Tx, []eventstore.Record) error { return nil })})
			}
			runner, err := projector.NewRunner(idle.store, projector.Config{Logger: benchLogger}, ps...)
			if err != nil {
				return err
			}
			if _, err := runner.Migrate(ctx); err != nil {
				return err
			}
			stop := startRunner(b, runner)
			defer stop()
			r.ResetTimer()
			err = appendFor(r)
			r.StopTimer()
			return err
		}
	}
	// The baseline in the middle: next to both others in every cycle.
	benchkit.Run(b, benchkit.Measure{Unit: "appends/s", Baseline: "none", Variants: []benchkit.Variant{
		{Name: "idle-1", Run: withIdle(1)},
		{Name: "none", Run: appendRound(bn.store, 4)},
		{Name: "idle-10", Run: withIdle(10)},
	}})
}

// BenchmarkNotifyCost measures what the alternative wake-up, NOTIFY on every
// append, would cost appenders: 8 goroutines append single events without
// ("no-notify", the baseline) and with ("notify") a statement-level trigger
// on the events table that calls pg_notify, created before the round and
// dropped after it, while a LISTEN connection drains the notifications.
// NOTIFY takes a lock held until commit that serialises every notifying
// transaction of the database, which is the cost docs/projections.md warns
// of ("Waking up: polling, not NOTIFY"); compare with BenchmarkPollCost, the wake-up esox uses. It reports
// appends/s and the ratio notify/no-notify.
func BenchmarkNotifyCost(b *testing.B) {
	db := pgtest.Open(b)
	db.SetMaxIdleConns(32)
	bn := newBenchStore(b, db)
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
	appendFor := appendRound(bn.store, 8)
	dropTrigger := `DROP TRIGGER IF EXISTS notify_append ON ` + bn.store.QualifiedEventsTable()
	benchkit.Run(b, benchkit.Measure{Unit: "appends/s", Baseline: "no-notify", Variants: []benchkit.Variant{
		{Name: "notify", Run: func(r *benchkit.Round) error {
			if _, err := db.ExecContext(ctx, `CREATE TRIGGER notify_append AFTER INSERT ON `+bn.store.QualifiedEventsTable()+` FOR EACH STATEMENT EXECUTE FUNCTION `+fn+`()`); err != nil {
				return err
			}
			r.ResetTimer()
			err := appendFor(r)
			r.StopTimer()
			if _, derr := db.ExecContext(ctx, dropTrigger); derr != nil {
				return errors.Join(err, derr)
			}
			return err
		}},
		{Name: "no-notify", Run: appendFor},
	}})
	b.Logf("notifications received: %d", got.Load())
}

// BenchmarkCommitToReadModelLatency appends about 1,000 events/s for
// ESOX_BENCH_SECONDS (default 10) and reports the p50 and p99 delay from an
// Append returning (its commit) to the projection's handler applying the
// event (its batch commits right after). The appends go through a second
// Store, so the runner is not woken in-process and relies on its store's
// feed watcher (a head poll every 10 ms), as with an appender in another
// process; the "same_store" case shows the in-process wake-up.
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
			r, err := projector.NewRunner(bn.store, projector.Config{Logger: benchLogger}, projector.Projection{Name: "lat", Handler: h})
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

// BenchmarkPartitionsCatchUp measures what Projection.Partitions buys a
// projection whose handler spends 1 ms per event (a sleep: simulated I/O,
// such as a call to another service): the time to catch up with a backlog
// of 2,000 events per second of ESOX_BENCH_ROUND (6,000 by default, at
// least 1,000; 1,000 streams, seeded once). "partitions-8" splits the
// projection into 8 partitions (8 workers, each reading the whole feed and
// applying its streams' events), "partitions-1" (the baseline) is the same
// projection unsplit; both have the default batch size. Each round: Rebuild
// (every partition's checkpoint to the start), Run until this process leads
// every partition (not timed), then the time until WaitFor sees every
// partition at the end of the backlog. A round's rate is the events applied
// in that time (those applied before the clock started, known from the
// partitions' checkpoints, are left out) over it, so rounds last as long as
// the catch-up takes, not ESOX_BENCH_ROUND. It reports events/s and the
// ratio partitions-8 / partitions-1; the target is at least 6.
func BenchmarkPartitionsCatchUp(b *testing.B) {
	bcfg, err := benchkit.ConfigFromEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	const streams = 1000
	n := max(1000, int(bcfg.Round.Seconds()*2000))
	db := pgtest.Open(b)
	db.SetMaxIdleConns(32)
	bn := newBenchStore(b, db)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO `+bn.store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, payload)
		SELECT gen_random_uuid(), 'account-a' || (g % $2), g / $2 + 1, 'deposited',
		       jsonb_build_object('account', 'a' || (g % $2), 'amount', 1)
		FROM generate_series(0, $1 - 1) AS g`, n, streams); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE `+bn.store.QualifiedEventsTable()); err != nil {
		b.Fatal(err)
	}
	end, err := bn.store.Head(ctx)
	if err != nil || end.Position != int64(n) {
		b.Fatalf("the feed ends at %s (%v), want position %d", end, err, n)
	}

	variant := func(parts int) func(r *benchkit.Round) error {
		name := fmt.Sprintf("slow_%d", parts)
		// applied returns the events the partitions' checkpoints say are
		// applied: position g+1 is an event of stream g % streams, so
		// partition p has pos/streams*cnt[p] + prefix[p][pos%streams]
		// events at positions 1..pos.
		cnt := make([]int64, parts)
		prefix := make([][]int64, parts) // prefix[p][j]: streams < j in partition p
		for p := range prefix {
			prefix[p] = make([]int64, streams+1)
		}
		for j := range streams {
			part := projector.PartitionOf(fmt.Sprintf("account-a%d", j), parts)
			cnt[part]++
			for p := range parts {
				prefix[p][j+1] = prefix[p][j]
			}
			prefix[part][j+1]++
		}
		applied := func() (int64, error) {
			var rows []struct {
				Partition int   `db:"partition"`
				Position  int64 `db:"position"`
			}
			if err := db.SelectContext(ctx, &rows, `SELECT partition, position FROM `+bn.q(projector.CheckpointsTable)+` WHERE projection = $1`, name); err != nil {
				return 0, err
			}
			var sum int64
			for _, row := range rows {
				sum += row.Position/streams*cnt[row.Partition] + prefix[row.Partition][row.Position%streams]
			}
			return sum, nil
		}
		h := projector.Records(func(context.Context, postgres.Tx, eventstore.Record) error {
			time.Sleep(time.Millisecond)
			return nil
		}, "deposited")
		runner, err := projector.NewRunner(bn.store, projector.Config{Logger: benchLogger}, projector.Projection{
			Name: name, Handler: h, Partitions: parts,
			Reset: func(context.Context, postgres.Tx) error { return nil },
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := runner.Migrate(ctx); err != nil {
			b.Fatal(err)
		}
		return func(r *benchkit.Round) error {
			if err := runner.Rebuild(ctx, name); err != nil {
				return err
			}
			stop := startRunner(b, runner)
			defer stop()
			from, err := applied()
			if err != nil {
				return err
			}
			r.ResetTimer()
			if err := runner.WaitFor(ctx, name, end); err != nil {
				return err
			}
			r.StopTimer()
			r.Add(int64(n) - from)
			return nil
		}
	}
	benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "partitions-1", Variants: []benchkit.Variant{
		{Name: "partitions-8", Run: variant(8)},
		{Name: "partitions-1", Run: variant(1)},
	}})
}
