package projector_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// concurrency counts the handlers running per partition, across runners,
// and the most seen at once.
type concurrency struct {
	mu      sync.Mutex
	in, max map[int]int
}

func (c *concurrency) enter(part int) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.in == nil {
		c.in, c.max = map[int]int{}, map[int]int{}
	}
	c.in[part]++
	c.max[part] = max(c.max[part], c.in[part])
	return func() { c.mu.Lock(); c.in[part]--; c.mu.Unlock() }
}

// streamOrder returns a projection that records, per stream, the last
// version applied, refusing (with a handler error, which stops the
// partition) any record that is not the stream's next version: a record
// applied twice, skipped or out of order shows. It counts its handlers
// running at once per partition in c.
func (b *bundle) streamOrder(name string, partitions int, c *concurrency) projector.Projection {
	tbl := b.q(name)
	return projector.Projection{
		Name:       name,
		Partitions: partitions,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+tbl+` (stream_id text PRIMARY KEY, version bigint NOT NULL, n bigint NOT NULL)`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+tbl)
			return err
		},
		Handler: projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
			if len(recs) == 0 {
				return nil
			}
			part := projector.PartitionOf(recs[0].StreamID, partitions)
			defer c.enter(part)()
			for _, r := range recs {
				if p := projector.PartitionOf(r.StreamID, partitions); p != part {
					return fmt.Errorf("partition %d got a record of stream %s, which belongs to partition %d", part, r.StreamID, p)
				}
				var applied int64
				err := tx.QueryRowContext(ctx, `INSERT INTO `+tbl+` AS t (stream_id, version, n) VALUES ($1, $2, 1)
					ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, n = t.n + 1
					WHERE t.version = excluded.version - 1 RETURNING version`, r.StreamID, r.StreamVersion).Scan(&applied)
				if errors.Is(err, sql.ErrNoRows) || (err == nil && applied != r.StreamVersion) {
					return fmt.Errorf("stream %s version %d is not the next one", r.StreamID, r.StreamVersion)
				}
				if err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

// streamVersions returns the last version of each stream in the events
// table, and the number of events.
func (b *bundle) streamVersions(t testing.TB) (map[string]int64, int64) {
	t.Helper()
	var rows []struct {
		Stream  string `db:"stream_id"`
		Version int64  `db:"version"`
	}
	if err := b.db.Select(&rows, `SELECT stream_id, max(stream_version) AS version FROM `+b.store.QualifiedEventsTable()+` GROUP BY 1`); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	var n int64
	for _, r := range rows {
		out[r.Stream] = r.Version
		n += r.Version
	}
	return out, n
}

// requireStreamOrder checks the model of streamOrder against the events
// table: every stream at its last version, every event applied once.
func (b *bundle) requireStreamOrder(t testing.TB, name string) {
	t.Helper()
	want, events := b.streamVersions(t)
	var rows []struct {
		Stream  string `db:"stream_id"`
		Version int64  `db:"version"`
		N       int64  `db:"n"`
	}
	if err := b.db.Select(&rows, `SELECT stream_id, version, n FROM `+b.q(name)); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, r := range rows {
		if want[r.Stream] != r.Version || r.N != r.Version {
			t.Fatalf("stream %s: version %d applied %d times, want version %d applied once each", r.Stream, r.Version, r.N, want[r.Stream])
		}
		n += r.N
	}
	if len(rows) != len(want) || n != events {
		t.Fatalf("%d streams, %d events applied; want %d streams, %d events", len(rows), n, len(want), events)
	}
}

// appendStreams appends n events round-robin over streams streams
// "account-s<i>", from several goroutines.
func (b *bundle) appendStreams(t testing.TB, n, streams int) {
	t.Helper()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				acct := fmt.Sprintf("s%d", i%streams)
				if _, err := b.store.Append(context.Background(), "account-"+acct, eventstore.Any,
					[]eventstore.Event{{Data: Deposited{Account: acct, Amount: 1}}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// partitionKey is the leader key of partition p of version 1 of a
// projection with more than one partition (see docs/operations.md).
func partitionKey(schema, name string, p int) string {
	return fmt.Sprintf("esox:projector:%s:%s:v1:p%d", schema, name, p)
}

// lockPid returns the pid of the session holding the advisory lock of key,
// 0 when none does.
func lockPid(t testing.TB, b *bundle, key string) int {
	t.Helper()
	k := uint64(postgres.LockKey(key))
	var pid int
	err := b.db.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = $1 AND objid = $2 AND objsubid = 1`, int64(k>>32), int64(k&0xffffffff)).Scan(&pid)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return pid
}

// TestPartitionsApplyEachStreamInOrderOnce: a projection of 4 partitions,
// run by two processes (each its own pool, and MaxPartitions 2, so both
// work) while writers append to 40 streams: every event is applied exactly
// once, each stream in version order, each partition by one handler at a
// time, and each process leads 2 partitions.
func TestPartitionsApplyEachStreamInOrderOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var c concurrency
	cfg := fastConfig(t)
	cfg.MaxPartitions = 2
	mk := func(db *bundle) *projector.Runner {
		r, err := projector.NewRunner(db.store, cfg, b.streamOrder("ordered", 4, &c))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r1 := mk(b)
	other := setupOn(t, pgtest.Open(t), b.schema, b.reg, nil)
	r2 := mk(other)
	start(t, r1)
	start(t, r2)
	b.appendStreams(t, 600, 40)
	waitFor(t, r1, "ordered", b.lastEvent(t))
	b.requireStreamOrder(t, "ordered")
	for part, n := range c.max {
		if n != 1 {
			t.Errorf("partition %d: %d handlers ran at once, want 1", part, n)
		}
	}
	testwait.Until(t, "each process to lead 2 partitions", func() bool {
		n1, n2 := 0, 0
		for _, s := range statusOfAll(t, r1, "ordered") {
			if s.Leading {
				n1++
			}
		}
		for _, s := range statusOfAll(t, r2, "ordered") {
			if s.Leading {
				n2++
			}
		}
		return n1 == 2 && n2 == 2
	})
	for _, s := range statusOfAll(t, r1, "ordered") {
		if s.Partitions != 4 || s.State != projector.StateRunning || !s.Live {
			t.Fatalf("status of partition %d = %+v", s.Partition, s)
		}
	}
}

// statusOfAll returns the Status entries of every partition of version 1
// of name.
func statusOfAll(t testing.TB, r *projector.Runner, name string) []projector.ProjectionStatus {
	t.Helper()
	st, err := r.Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	var out []projector.ProjectionStatus
	for _, s := range st {
		if s.Name == name && s.Version == 1 {
			out = append(out, s)
		}
	}
	return out
}

// TestPartitionTakenOverIndependently: process A leads 2 of 4 partitions
// (MaxPartitions 2), process B the other 2. A's lock session is killed:
// A's partitions get a new leader, B's keep theirs (the same session,
// never released), and every event is still applied exactly once.
func TestPartitionTakenOverIndependently(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var c concurrency
	cfgA := fastConfig(t)
	cfgA.MaxPartitions = 2
	rA, err := projector.NewRunner(b.store, cfgA, b.streamOrder("ordered", 4, &c))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rA)
	testwait.Until(t, "A to lead 2 partitions", func() bool {
		n := 0
		for _, s := range statusOfAll(t, rA, "ordered") {
			if s.Leading {
				n++
			}
		}
		return n == 2
	})
	other := setupOn(t, pgtest.Open(t), b.schema, b.reg, nil)
	rB, err := projector.NewRunner(other.store, fastConfig(t), b.streamOrder("ordered", 4, &c))
	if err != nil {
		t.Fatal(err)
	}
	start(t, rB)
	var ofA, ofB []int
	for _, s := range statusOfAll(t, rA, "ordered") {
		if s.Leading {
			ofA = append(ofA, s.Partition)
		} else {
			ofB = append(ofB, s.Partition)
		}
	}
	pids := map[int]int{}
	testwait.Until(t, "B to lead the other 2", func() bool {
		for _, p := range append(append([]int(nil), ofA...), ofB...) {
			pids[p] = lockPid(t, b, partitionKey(b.schema, "ordered", p))
		}
		return pids[ofB[0]] != 0 && pids[ofB[1]] != 0 && pids[ofB[0]] != pids[ofA[0]]
	})
	b.appendStreams(t, 200, 40)

	if _, err := b.db.Exec(`SELECT pg_terminate_backend($1)`, pids[ofA[0]]); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "A's partitions to be taken over", func() bool {
		for _, p := range ofA {
			if pid := lockPid(t, b, partitionKey(b.schema, "ordered", p)); pid == 0 || pid == pids[ofA[0]] {
				return false
			}
		}
		return true
	})
	for _, p := range ofB {
		if pid := lockPid(t, b, partitionKey(b.schema, "ordered", p)); pid != pids[p] {
			t.Fatalf("partition %d moved from session %d to %d although only A's session died", p, pids[p], pid)
		}
	}
	b.appendStreams(t, 200, 40)
	waitFor(t, rB, "ordered", b.lastEvent(t))
	b.requireStreamOrder(t, "ordered")
}

// TestChangingPartitionsIsABlueGreenRebuild: the partition count of a
// registered version cannot change (Run refuses with a *PartitionsError,
// writing nothing); a new Version with the new count fills beside the live
// one, switches live once all its partitions caught up, and retires the old
// one; Rebuild then replays every partition.
func TestChangingPartitionsIsABlueGreenRebuild(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r1, err := projector.NewRunner(b.store, fastConfig(t), b.blueGreen(1))
	if err != nil {
		t.Fatal(err)
	}
	run1 := start(t, r1)
	b.appendDeposits(t, 200, 6, 2)
	waitFor(t, r1, "bal", b.lastEvent(t))

	// Version 1 with 4 partitions: refused.
	v1of4 := b.blueGreen(1)
	v1of4.Partitions = 4
	bad, err := projector.NewRunner(b.store, fastConfig(t), v1of4)
	if err != nil {
		t.Fatal(err)
	}
	var pe *projector.PartitionsError
	if err := bad.Run(context.Background()); !errors.Is(err, projector.ErrPartitionsChanged) || !errors.As(err, &pe) ||
		pe.Registered != 1 || pe.Configured != 4 || !strings.Contains(err.Error(), "new Version") {
		t.Fatalf("Run with version 1 in 4 partitions = %v, want a *PartitionsError", err)
	}
	run1.stop(t)

	// Version 2 with 4 partitions beside version 1, while writers go on.
	v2 := b.blueGreen(2)
	v2.Partitions = 4
	r2, err := projector.NewRunner(b.store, fastConfig(t), b.blueGreen(1), v2)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r2)
	testwait.Until(t, "version 2 to go live", func() bool {
		st := statusOfVersion(t, r2, "bal", 2)
		live := len(st) == 4
		for _, s := range st {
			live = live && s.Live
		}
		if !live {
			b.appendDeposits(t, 4, 6, 2)
		}
		return live
	})
	waitFor(t, r2, "bal", b.lastEvent(t))
	equalBalances(t, "the view after the switch", b.model(t, "bal"), b.foldAll(t))
	if s := statusOf(t, r2, "bal", 1); s.State != projector.StateRetired {
		t.Fatalf("version 1 after the switch = %+v, want retired", s)
	}

	// An in-place Rebuild of the partitioned version replays every
	// partition: the model ends the same.
	if err := r2.Rebuild(context.Background(), "bal"); err != nil {
		t.Fatal(err)
	}
	b.appendDeposits(t, 20, 6, 2)
	waitFor(t, r2, "bal", b.lastEvent(t))
	equalBalances(t, "after the rebuild", b.model(t, "bal"), b.foldAll(t))
}

// statusOfVersion returns the Status entries of every partition of version
// v of name.
func statusOfVersion(t testing.TB, r *projector.Runner, name string, v int) []projector.ProjectionStatus {
	t.Helper()
	st, err := r.Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	var out []projector.ProjectionStatus
	for _, s := range st {
		if s.Name == name && s.Version == v {
			out = append(out, s)
		}
	}
	return out
}

// TestPartitionFailuresStayInTheirPartition: a poison event stops only the
// partition of its stream (the others apply their streams' later events),
// WaitFor says so, and Resume finishes it; with DeadLetter, it is parked in
// its partition's dead letters.
func TestPartitionFailuresStayInTheirPartition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var fixed atomic.Bool
	poisoned := func(name string, deadLetter bool) projector.Projection {
		p := b.balances(name, name)
		inner := p.Handler
		p.Handler = projector.Records(func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
			if r.Data.(Deposited).Account == "poison" && !fixed.Load() {
				return errors.New("poison")
			}
			return inner.Handle(ctx, tx, []eventstore.Record{r})
		}, "deposited")
		p.Partitions, p.DeadLetter = 3, deadLetter
		return p
	}
	cfg := fastConfig(t)
	cfg.MaxRetries = 1
	r, err := projector.NewRunner(b.store, cfg, poisoned("strict", false), poisoned("parking", true))
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	poison := projector.PartitionOf("account-poison", 3)
	if _, err := b.store.Append(context.Background(), "account-poison", eventstore.Any, []eventstore.Event{{Data: Deposited{Account: "poison", Amount: 5}}}); err != nil {
		t.Fatal(err)
	}
	last := b.appendDeposits(t, 60, 12, 2)
	waitFor(t, r, "parking", last.LastPosition)
	for _, s := range statusOfAll(t, r, "parking") {
		if want := int64(map[bool]int{true: 1}[s.Partition == poison]); s.DeadLetters != want {
			t.Fatalf("parking partition %d: %d dead letters, want %d", s.Partition, s.DeadLetters, want)
		}
	}

	testwait.Until(t, "the poison's partition of strict to stop", func() bool {
		for _, s := range statusOfAll(t, r, "strict") {
			if s.Partition == poison {
				return s.State == projector.StateStoppedWithError
			}
		}
		return false
	})
	// The other partitions apply their streams' events to the end.
	testwait.Until(t, "the other partitions of strict to catch up", func() bool {
		for _, s := range statusOfAll(t, r, "strict") {
			if s.Partition != poison && s.Checkpoint.Compare(last.LastPosition) < 0 {
				return false
			}
		}
		return true
	})
	if err := r.WaitFor(context.Background(), "strict", last.LastPosition); !errors.Is(err, projector.ErrStopped) {
		t.Fatalf("WaitFor(strict) = %v, want ErrStopped", err)
	}
	fixed.Store(true)
	if err := r.Resume(context.Background(), "strict"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "strict", last.LastPosition)
	equalBalances(t, "strict after resume", b.model(t, "strict"), b.foldAll(t))
}

// TestWakeUpWithoutPolling: an append through the runner's own Store wakes
// the projection at once (PollInterval is an hour: no poll happens). A
// fresh append becomes visible to the feed only once no older transaction
// is open on the server (other tests' included), so a wake-up may find
// nothing yet: each round appends again until the projection applies.
func TestWakeUpWithoutPolling(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var applied atomic.Int64
	cfg := fastConfig(t)
	cfg.PollInterval = time.Hour
	r, err := projector.NewRunner(b.store, cfg, projector.Projection{Name: "count", Handler: projector.Records(
		func(context.Context, postgres.Tx, eventstore.Record) error { applied.Add(1); return nil })})
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	testwait.Until(t, "the runner to lead", func() bool { return statusOf(t, r, "count", 1).Leading })
	for round := 0; applied.Load() == 0; round++ {
		if round == 40 {
			t.Fatal("no append was applied with an hour-long poll: the store's wake-up does not reach the projection")
		}
		b.appendDeposits(t, 1, 1, 1)
		deadline := time.Now().Add(500 * time.Millisecond)
		for applied.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// TestCommitElsewhereSeenByPoll: events appended through another Store (as
// by another process, which wakes nobody here) reach the projection through
// the store's feed watcher.
func TestCommitElsewhereSeenByPoll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r, err := projector.NewRunner(b.store, fastConfig(t), b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	other := setupOn(t, b.db, b.schema, b.reg, nil)
	res, err := other.store.Append(context.Background(), "account-x", eventstore.Any, []eventstore.Event{{Data: Deposited{Account: "x", Amount: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "balances", res.LastPosition)
	equalBalances(t, "model", b.model(t, "balances"), b.foldAll(t))
}

// isFeedRead reports whether q is postgres.Store.ReadFeed's query.
func isFeedRead(q string) bool {
	return strings.Contains(q, "WHERE (transaction_id, position) > ($1::xid8, $2::bigint)") && strings.Contains(q, "ORDER BY transaction_id, position LIMIT $3")
}

// TestReadsAheadWhileApplying: while a worker catching up applies a full
// batch, it already reads the next one: the handler of the first batch
// returns only once the second read was sent, which without the read-ahead
// happens only after the first batch commits.
func TestReadsAheadWhileApplying(t *testing.T) {
	t.Parallel()
	db, stmts := pgtest.OpenCounting(t)
	b := setupOn(t, db, pgtest.Schema(t, db), nil, nil)
	last := b.appendDeposits(t, 250, 5, 50)
	cfg := fastConfig(t)
	cfg.BatchSize = 100
	mark := stmts.Len()
	var first atomic.Bool
	p := b.balances("balances", "balances")
	inner := p.Handler
	p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		if first.CompareAndSwap(false, true) {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if _, err := stmts.Wait(wctx, mark, 2, isFeedRead); err != nil {
				t.Errorf("the next batch was not read while the first was applied: %v", err)
			}
		}
		return inner.Handle(ctx, tx, recs)
	}, "deposited")
	r, err := projector.NewRunner(b.store, cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	waitFor(t, r, "balances", last.LastPosition)
	equalBalances(t, "model", b.model(t, "balances"), b.foldAll(t))
}
