package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	nc "github.com/nats-io/nats.go"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder/rabbitmq"
	"github.com/esox-go/esox/internal/benchkit"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// The throughput and idle benchmarks run their variants through
// internal/benchkit: interleaved rounds (A B B A …, 6 rounds of 3 s each by
// default) on the same tables, reporting medians and spreads; b.N is
// ignored:
//
//	go test -run '^$' -bench . -benchtime 1x ./forwarder
//	ESOX_BENCH_ROUND=200ms ESOX_BENCH_ROUNDS=2 ESOX_BENCH_BACKLOG=50000 ESOX_BENCH_SECONDS=1 go test -run '^$' -bench . -benchtime 1x ./forwarder  # quick check
//
// ESOX_BENCH_BACKLOG sets the backlog the throughput rounds replay (default
// 1,000,000), ESOX_BENCH_IDLE the idle measure's sizes, ESOX_BENCH_SECONDS
// the latency runs (default 10 s each).

// benchLogger keeps benchmark output to the figures.
var benchLogger = slog.New(slog.DiscardHandler)

// benchTopic is the category of the seeded streams, so the forwarder's
// default topic (the category) is this run's queue or subject.
var benchTopic = "esoxbench" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)

// latencyEvents is how many events a latency run appends, at 1,000/s:
// ESOX_BENCH_SECONDS (default 10) seconds' worth.
func latencyEvents(b *testing.B) int { return 1000 * pgtest.EnvInt(b, "ESOX_BENCH_SECONDS", 10) }

// countingPub counts publishes and closes done at target.
type countingPub struct {
	inner  message.Publisher // nil: count only
	n      atomic.Int64
	target int64
	done   chan struct{}
	once   sync.Once
	first  chan struct{} // closed at the first publish
	fonce  sync.Once
}

func newCountingPub(inner message.Publisher, target int) *countingPub {
	return &countingPub{inner: inner, target: int64(target), done: make(chan struct{}), first: make(chan struct{})}
}

func (p *countingPub) Publish(topic string, msgs ...*message.Message) error {
	if p.inner != nil {
		if err := p.inner.Publish(topic, msgs...); err != nil {
			return err
		}
	}
	p.fonce.Do(func() { close(p.first) })
	if p.n.Add(int64(len(msgs))) >= p.target {
		p.once.Do(func() { close(p.done) })
	}
	return nil
}

func (p *countingPub) Close() error { return nil }

// seedEvents inserts n events into the store's events table in one
// statement (INSERT ... SELECT generate_series) across 100 streams of
// category benchTopic.
func seedEvents(b *testing.B, store *postgres.Store, n int) {
	b.Helper()
	_, err := store.DB().Exec(`INSERT INTO `+store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, payload)
SELECT gen_random_uuid(), $2 || '-' || (g % 100), g / 100 + 1, 'item_added', '{"n": 1}'::jsonb FROM generate_series(0, $1::bigint - 1) g`, n, benchTopic)
	if err != nil {
		b.Fatalf("seed: %v", err)
	}
	if _, err := store.DB().Exec(`VACUUM ANALYZE ` + store.QualifiedEventsTable()); err != nil {
		b.Fatalf("analyze: %v", err)
	}
}

func benchSetup(b *testing.B) *bundle {
	b.Helper()
	db := pgtest.Open(b)
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(20)
	schema := pgtest.Schema(b, db)
	store := esoxtest.Store(b, db, testRegistry(), postgres.Config{Schema: schema, Logger: benchLogger})
	if _, err := migrate(context.Background(), store); err != nil {
		b.Fatal(err)
	}
	return &bundle{db: db, schema: schema, store: store}
}

// benchQueue declares the durable RabbitMQ queue benchTopic (skipping or
// failing as requireBroker does when RabbitMQ is unreachable), holding the
// broker's lock shared, and deletes the queue at cleanup.
func benchQueue(b *testing.B) {
	b.Helper()
	requireBroker(b, "RabbitMQ", "127.0.0.1:5672")
	pgtest.LockBroker(b, "rabbitmq", false)
	sub, err := amqp.NewSubscriber(rabbitConfig(), brokerLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Close() })
	if err := sub.SubscribeInitialize(benchTopic); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = exec.Command("rabbitmqctl", "delete_queue", benchTopic).Run() })
}

// BenchmarkForward replays a backlog of ESOX_BENCH_BACKLOG events (default
// 1,000,000, seeded once, 100 streams) to a publisher, from the start of the
// feed in every round; the setup (rewinding the offset, starting the
// forwarder and waiting for its first publish) is not timed:
//
//   - esox: a Forwarder with the default Config (batches of 100, 64
//     publishes in flight, topic = the stream's category), counting the
//     events its publisher accepted from the first publish on to the end of
//     the round.
//   - raw: a hand-written relay loop: per 100 events the same gap-free feed
//     query as postgres.Store.ReadFeed (prepared, the same columns), one
//     Watermill message per event with the same UUID, payload and metadata
//     as the forwarder's, published one after the other to the same
//     publisher and topic, then one autocommit UPDATE of its offset row.
//
// to each publisher: "gochannel" (Watermill's in-process GoChannel with no
// subscriber: the forwarder's own cost), "rabbitmq" (watermill-amqp's
// publisher: durable queue, persistent messages, publisher confirms, a
// channel per publish in flight), "rabbitmq-pipelined" (esox's
// forwarder/rabbitmq publisher, the reference service's: the same queue and
// confirms, pipelined on one channel) and "nats" (JetStream). The
// broker cases skip when the broker is unreachable. It reports events/s and
// the ratio esox/raw. A round that runs out of backlog fails: raise
// ESOX_BENCH_BACKLOG.
func BenchmarkForward(b *testing.B) {
	backlog := pgtest.EnvInt(b, "ESOX_BENCH_BACKLOG", 1_000_000)
	bb := benchSetup(b)
	start := time.Now()
	seedEvents(b, bb.store, backlog)
	b.Logf("seeded %d events in %s", backlog, time.Since(start).Round(time.Millisecond))

	b.Run("gochannel", func(b *testing.B) {
		gc := gochannel.NewGoChannel(gochannel.Config{}, nil) // no subscriber: measures the forwarder
		defer gc.Close()
		benchForward(b, bb, backlog, "gochannel", gc)
	})
	b.Run("rabbitmq", func(b *testing.B) {
		benchQueue(b)
		pub, err := amqp.NewPublisher(rabbitConfig(), brokerLogger(b))
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		benchForward(b, bb, backlog, "rabbitmq", pub)
	})
	b.Run("rabbitmq-pipelined", func(b *testing.B) {
		benchQueue(b)
		pub, err := rabbitmq.NewPublisher(rabbitmq.Config{
			URL:        amqpURI,
			Exchange:   func(string) string { return "" },
			RoutingKey: func(topic string) string { return topic },
			Mandatory:  true,
			Logger:     benchLogger,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		benchForward(b, bb, backlog, "rabbitmq-pipelined", pub)
	})
	b.Run("nats", func(b *testing.B) {
		requireBroker(b, "NATS", "127.0.0.1:4222")
		conn, err := nc.Connect(natsURL)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		js, err := conn.JetStream()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.AddStream(&nc.StreamConfig{Name: benchTopic, Subjects: []string{benchTopic}}); err != nil {
			b.Fatal(err)
		}
		defer js.DeleteStream(benchTopic)
		pub, err := wnats.NewPublisher(wnats.PublisherConfig{URL: natsURL, Marshaler: &wnats.NATSMarshaler{},
			JetStream: wnats.JetStreamConfig{TrackMsgId: true}}, brokerLogger(b))
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		benchForward(b, bb, backlog, "nats", pub)
	})
}

// benchForward runs the esox and raw variants of BenchmarkForward to pub,
// with consumer group (and raw offset row) group.
func benchForward(b *testing.B, bb *bundle, backlog int, group string, pub message.Publisher) {
	ctx := context.Background()
	exhausted := fmt.Errorf("the backlog of %d events ran out within a round: raise ESOX_BENCH_BACKLOG", backlog)

	esoxRound := func(r *benchkit.Round) error {
		cp := newCountingPub(pub, backlog)
		f, err := New(bb.store, cp, Config{ConsumerGroup: group, Logger: benchLogger})
		if err != nil {
			return err
		}
		if err := f.SetOffset(ctx, eventstore.Position{}); err != nil {
			return err
		}
		runCtx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- f.Run(runCtx) }()
		defer func() {
			cancel()
			if err := <-errc; err != nil {
				b.Error(err)
			}
		}()
		select {
		case <-cp.first:
		case err := <-errc:
			errc <- err
			return fmt.Errorf("Run returned before its first publish: %v", err)
		case <-time.After(time.Minute):
			return errors.New("no publish within a minute")
		}
		from := cp.n.Load()
		r.ResetTimer()
		if err := r.Wait(ctx); err != nil {
			return err
		}
		to := cp.n.Load()
		r.StopTimer()
		if to >= int64(backlog) {
			return exhausted
		}
		r.Add(to - from)
		return nil
	}

	offsets := postgres.QuoteIdentifier(bb.schema) + ".raw_offsets"
	if _, err := bb.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+offsets+` (consumer_group text PRIMARY KEY, transaction_id xid8 NOT NULL, position bigint NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	if _, err := bb.db.ExecContext(ctx, `INSERT INTO `+offsets+` VALUES ($1, '0', 0) ON CONFLICT DO NOTHING`, group); err != nil {
		b.Fatal(err)
	}
	feed, err := bb.db.PreparexContext(ctx, `SELECT position, transaction_id::text AS transaction_id_text, event_id, stream_version, event_type, payload, metadata, recorded_at, stream_id
FROM `+bb.store.QualifiedEventsTable()+`
WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id, position LIMIT $3`)
	if err != nil {
		b.Fatal(err)
	}
	defer feed.Close()
	rawRound := func(r *benchkit.Round) error {
		// The relay runs under a cancellable context, as the forwarder
		// does (lib/pq then watches each query for cancellation).
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if _, err := bb.db.ExecContext(ctx, `UPDATE `+offsets+` SET transaction_id = '0', position = 0 WHERE consumer_group = $1`, group); err != nil {
			return err
		}
		r.ResetTimer()
		txid, pos := "0", int64(0)
		for !r.Done() {
			n, err := relayBatch(ctx, feed, pub, &txid, &pos)
			if err != nil {
				return err
			}
			if n == 0 {
				return exhausted
			}
			if _, err := bb.db.ExecContext(ctx, `UPDATE `+offsets+` SET transaction_id = $1::xid8, position = $2 WHERE consumer_group = $3`, txid, pos, group); err != nil {
				return err
			}
			r.Add(int64(n))
		}
		return nil
	}

	benchkit.Run(b, benchkit.Measure{Unit: "events/s", Baseline: "raw", Variants: []benchkit.Variant{
		{Name: "esox", Run: esoxRound},
		{Name: "raw", Run: rawRound},
	}})
}

// relayBatch is the raw relay's batch: it reads up to BatchSizeDefault
// events after (txid, pos) with feed, publishes one message per event to
// pub, moves txid and pos to the last one and returns how many it
// published.
func relayBatch(ctx context.Context, feed *sqlx.Stmt, pub message.Publisher, txid *string, pos *int64) (int, error) {
	rows, err := feed.QueryContext(ctx, *txid, *pos, BatchSizeDefault)
	if err != nil {
		return 0, err
	}
	type row struct {
		pos, version      int64
		txid, typ, stream string
		id                uuid.UUID
		payload, metadata []byte
		at                time.Time
	}
	page := make([]row, 0, BatchSizeDefault)
	for rows.Next() {
		var e row
		if err := rows.Scan(&e.pos, &e.txid, &e.id, &e.version, &e.typ, &e.payload, &e.metadata, &e.at, &e.stream); err != nil {
			rows.Close()
			return 0, err
		}
		page = append(page, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	for _, e := range page {
		md := map[string]string{}
		if len(e.metadata) > 2 { // "{}": no user metadata
			if err := json.Unmarshal(e.metadata, &md); err != nil {
				return 0, err
			}
		}
		md[MetadataStreamID] = e.stream
		md[MetadataStreamVersion] = strconv.FormatInt(e.version, 10)
		md[MetadataEventType] = e.typ
		md[MetadataPosition] = strconv.FormatInt(e.pos, 10)
		md[MetadataTransactionID] = e.txid
		md[MetadataRecordedAt] = e.at.UTC().Format(time.RFC3339Nano)
		msg := message.NewMessage(e.id.String(), message.Payload(e.payload))
		msg.Metadata = md
		msg.SetContext(ctx)
		topic, _, _ := strings.Cut(e.stream, "-")
		if err := pub.Publish(topic, msg); err != nil {
			return 0, err
		}
	}
	if len(page) > 0 {
		*txid, *pos = page[len(page)-1].txid, page[len(page)-1].pos
	}
	return len(page), nil
}

// idlePollConns is how many pooled connections the idle measure's jobs
// share for their reads, beside the process's one lock session.
const idlePollConns = 10

// idleSizes returns the idle measure's sizes, ESOX_BENCH_IDLE: a
// comma-separated list of k, each run with k forwarders and k projections
// (default "1,5,25": 2, 10 and 50 jobs).
func idleSizes(b *testing.B) []int {
	v := os.Getenv("ESOX_BENCH_IDLE")
	if v == "" {
		return []int{1, 5, 25}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			b.Fatalf("ESOX_BENCH_IDLE=%q: want a comma-separated list of positive numbers", v)
		}
		out = append(out, k)
	}
	return out
}

// BenchmarkIdleTransactions counts what a process that runs k forwarders
// and k projections (one projector.Runner), all idle, costs the database
// in transactions per second: the delta of pg_stat_database.xact_commit
// (read-only statements count too) over each round, in a database of its
// own, so that nothing else on the server is counted. Variants: "none"
// (nothing running: the background) and "jobs-N" for N = 2k jobs, k from
// ESOX_BENCH_IDLE (default 1, 5 and 25: 2, 10 and 50 jobs), with the
// default configs (10 ms poll interval, 1 s leader interval), on a pool of
// idlePollConns connections plus one for the process's lock session. Before
// each round the jobs start and lead (they hold their advisory locks), and
// every round waits a second and a half, untimed, for the counters of what
// came before to be published. PostgreSQL publishes a session's counters
// at most once a second, so each round's count is off by up to a second's
// worth at either end; the median over the rounds evens that out.
//
// It reports tx/s per variant, "jobs-N-extra-tx/s", the median per round
// of jobs-N's rate minus that of the same cycle's "none" round, and
// "jobs-N-lock-sessions", the sessions holding the jobs' advisory locks (the
// connections leadership costs). A size that needs more connections than
// the server has free is left out, with a log line.
func BenchmarkIdleTransactions(b *testing.B) {
	main := pgtest.Open(b)
	dbName, dbURL := pgtest.Database(b, main)
	db, err := sqlx.Open("postgres", dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	store, err := postgres.New(db, testRegistry(), postgres.Config{Logger: benchLogger})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := migrate(ctx, store); err != nil {
		b.Fatal(err)
	}
	inbox, err := projector.NewInbox(db, store.Registry(), projector.InboxConfig{Schema: store.Schema(), Consumer: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := inbox.Migrate(ctx); err != nil { // the projector's tables
		b.Fatal(err)
	}
	xacts := func() (int64, error) {
		var n int64
		err := main.QueryRowContext(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = $1`, dbName).Scan(&n)
		return n, err
	}
	// count counts the transactions committed in the database over the
	// round, after a second and a half for the counters of what came
	// before (jobs starting or stopping) to be published.
	count := func(r *benchkit.Round) error {
		time.Sleep(1500 * time.Millisecond)
		x0, err := xacts()
		if err != nil {
			return err
		}
		r.ResetTimer()
		if err := r.Wait(ctx); err != nil {
			return err
		}
		x1, err := xacts()
		r.StopTimer()
		if err != nil {
			return err
		}
		r.Add(x1 - x0)
		return nil
	}
	var free int
	if err := main.QueryRowContext(ctx, `SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int - (SELECT count(*) FROM pg_stat_activity)`).Scan(&free); err != nil {
		b.Fatal(err)
	}
	gc := gochannel.NewGoChannel(gochannel.Config{}, nil)
	defer gc.Close()
	variants := []benchkit.Variant{{Name: "none", Run: count}}
	sessions := map[string]int{}
	for _, k := range idleSizes(b) {
		// The jobs' locks share one lock session, and their reads share
		// idlePollConns more; leave ten for everyone else.
		need := 1 + idlePollConns
		if need > free-10 {
			b.Logf("leaving out %d jobs: they need %d connections and the server has %d free", 2*k, need, free)
			continue
		}
		name := fmt.Sprintf("jobs-%d", 2*k)
		variants = append(variants, benchkit.Variant{Name: name, Run: func(r *benchkit.Round) error {
			// Kept open, so that no connection is opened or closed
			// during the round.
			db.SetMaxOpenConns(need)
			db.SetMaxIdleConns(need)
			stop, err := startIdleJobs(ctx, store, gc, k)
			if err != nil {
				return err
			}
			defer stop()
			if err := waitAdvisoryLocks(ctx, main, dbName, 2*k); err != nil {
				return err
			}
			if err := count(r); err != nil {
				return err
			}
			// Counted at the end of the round, when the sessions of the
			// jobs of earlier rounds are long gone.
			var n int
			if err := main.QueryRowContext(ctx, `SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1`, dbName).Scan(&n); err != nil {
				return err
			}
			sessions[name] = max(sessions[name], n)
			return nil
		}})
	}
	res := benchkit.Run(b, benchkit.Measure{Unit: "tx/s", AllowZero: true, Variants: variants})
	for _, v := range res.Names[1:] {
		b.ReportMetric(benchkit.Summarize(res.Diffs(v, "none")).Median, v+"-extra-tx/s")
		b.ReportMetric(float64(sessions[v]), v+"-lock-sessions")
	}
}

// startIdleJobs starts k forwarders (to gc, consumer groups idle-0…) and a
// runner of k projections (idle-0…, handlers that do nothing) on store, and
// returns a func that stops them and waits for them.
func startIdleJobs(ctx context.Context, store *postgres.Store, gc message.Publisher, k int) (stop func(), err error) {
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
	}
	var ps []projector.Projection
	for i := range k {
		ps = append(ps, projector.Projection{Name: fmt.Sprintf("idle_%d", i),
			Handler: projector.Batch(func(context.Context, postgres.Tx, []eventstore.Record) error { return nil })})
		f, err := New(store, gc, Config{ConsumerGroup: fmt.Sprintf("idle-%d", i), DisableMigrate: true, Logger: benchLogger})
		if err != nil {
			stop()
			return nil, err
		}
		wg.Go(func() { _ = f.Run(runCtx) })
	}
	runner, err := projector.NewRunner(store, projector.Config{Logger: benchLogger}, ps...)
	if err != nil {
		stop()
		return nil, err
	}
	wg.Go(func() { _ = runner.Run(runCtx) })
	return stop, nil
}

// waitAdvisoryLocks waits until n advisory locks are held in database
// dbName: every job started leads.
func waitAdvisoryLocks(ctx context.Context, db *sqlx.DB, dbName string, n int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var held int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1`, dbName).Scan(&held); err != nil {
			return err
		}
		if held >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d jobs lead after a minute", held, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// latencyRun appends n events at about 1000/s (one per append) with
// appendStore and reports the time from Append's return (commit) to the
// publish, p50 and p99. sameStore says whether the forwarder's Store is the
// appender's (in-process wake-up) or another one (found by polling, as for
// appends from another process).
func latencyRun(b *testing.B, sameStore bool) {
	n := latencyEvents(b)
	bb := benchSetup(b)
	appendStore := bb.store
	if !sameStore {
		other, err := postgres.New(bb.db, testRegistry(), postgres.Config{Schema: bb.schema})
		if err != nil {
			b.Fatal(err)
		}
		defer other.Close()
		appendStore = other
	}
	var mu sync.Mutex
	committed := make(map[string]time.Time, n)
	latencies := make([]time.Duration, 0, n)
	published := make(map[string]time.Time, n)
	cp := newCountingPub(nil, n+1) // +1: the warm-up event
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		mu.Lock()
		published[msg.UUID] = time.Now()
		mu.Unlock()
		return cp.Publish(topic, msg)
	}}
	f, err := New(bb.store, pub, Config{Logger: benchLogger})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx) }()
	// Warm up: wait until the forwarder leads and has published one event.
	if _, err := appendStore.Append(ctx, "warmup-1", eventstore.Any, []eventstore.Event{{Data: itemAdded{}}}); err != nil {
		b.Fatal(err)
	}
	for cp.n.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	b.ResetTimer()
	tick := time.NewTicker(time.Millisecond)
	for i := range n {
		<-tick.C
		res, err := appendStore.Append(ctx, "lat-"+strconv.Itoa(i%50), eventstore.Any, []eventstore.Event{{Data: itemAdded{N: i}}})
		if err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		committed[res.EventIDs[0].String()] = time.Now()
		mu.Unlock()
	}
	tick.Stop()
	select {
	case <-cp.done:
	case <-time.After(time.Minute):
		b.Fatal("not every event was published")
	}
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	mu.Lock()
	for id, c := range committed {
		latencies = append(latencies, max(0, published[id].Sub(c)))
	}
	mu.Unlock()
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkLatency is commit-to-publish latency at about 1000 events/s for
// ESOX_BENCH_SECONDS (default 10), one event per append: through the
// forwarder's own store (woken in-process), through another store (found by
// the forwarder's store's feed watcher, a head poll every 10 ms, as appends
// from another process), and, as a baseline, watermill-sql's default
// PostgreSQL publisher and subscriber. It reports the p50 and p99 in
// milliseconds; b.N is ignored.
func BenchmarkLatency(b *testing.B) {
	b.Run("same-store", func(b *testing.B) { latencyRun(b, true) })
	b.Run("other-store", func(b *testing.B) { latencyRun(b, false) })
	b.Run("watermill-sql-default", func(b *testing.B) {
		n := latencyEvents(b)
		bb := benchSetup(b)
		schemaAdapter, offsetsAdapter := baselineAdapters(bb.schema)
		topic := "baseline"
		sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(bb.db.DB), wsql.SubscriberConfig{
			SchemaAdapter: schemaAdapter, OffsetsAdapter: offsetsAdapter, InitializeSchema: true,
		}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		pub, err := wsql.NewPublisher(wsql.BeginnerFromStdSQL(bb.db.DB), wsql.PublisherConfig{SchemaAdapter: schemaAdapter, AutoInitializeSchema: true}, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		msgs, err := sub.Subscribe(ctx, topic)
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		committed := map[string]time.Time{}
		latencies := make([]time.Duration, 0, n)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range n {
				m := <-msgs
				now := time.Now()
				mu.Lock()
				c, ok := committed[m.UUID]
				mu.Unlock()
				if ok {
					latencies = append(latencies, max(0, now.Sub(c)))
				}
				m.Ack()
			}
		}()
		b.ResetTimer()
		tick := time.NewTicker(time.Millisecond)
		for range n {
			<-tick.C
			m := message.NewMessage(watermillUUID(), []byte(`{"n": 1}`))
			if err := pub.Publish(topic, m); err != nil {
				b.Fatal(err)
			}
			mu.Lock()
			committed[m.UUID] = time.Now()
			mu.Unlock()
		}
		tick.Stop()
		<-done
		b.StopTimer()
		slices.Sort(latencies)
		if len(latencies) > 0 {
			b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99-ms")
		}
		b.ReportMetric(0, "ns/op")
	})
}

var uuidSeq atomic.Int64

func watermillUUID() string {
	return fmt.Sprintf("00000000-0000-7000-8000-%012d", uuidSeq.Add(1))
}

// baselineAdapters are watermill-sql's default PostgreSQL schema and
// offsets adapters, with their tables in schema.
func baselineAdapters(schema string) (wsql.DefaultPostgreSQLSchema, wsql.DefaultPostgreSQLOffsetsAdapter) {
	q := postgres.QuoteIdentifier(schema) + "."
	return wsql.DefaultPostgreSQLSchema{
			GenerateMessagesTableName: func(topic string) string { return q + postgres.QuoteIdentifier("watermill_"+topic) },
		}, wsql.DefaultPostgreSQLOffsetsAdapter{
			GenerateMessagesOffsetsTableName: func(topic string) string { return q + postgres.QuoteIdentifier("watermill_offsets_"+topic) },
		}
}
