package esox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// restoreBundle is one restore scenario's schema: a store, the projections
// and the consumer groups a service runs, and the events appended before
// the "dump".
type restoreBundle struct {
	db     *sqlx.DB
	schema string
	reg    *eventstore.Registry
	store  *postgres.Store
	events []eventstore.AppendResult
}

func (b *restoreBundle) q(table string) string {
	return postgres.QuoteIdentifier(b.schema) + "." + postgres.QuoteIdentifier(table)
}

// counting is a projection recording how many times it applied each event
// in <table> (event_id, n): a replay shows as n = 2, a loss as a missing
// row. With deadLetter, events of amount 13 fail its handler and are
// parked.
func (b *restoreBundle) counting(name, table string, version, partitions int, deadLetter bool) projector.Projection {
	tbl := b.q(table)
	return projector.Projection{
		Name: name, Version: version, Partitions: partitions, DeadLetter: deadLetter,
		Handler: projector.Records(func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
			if deadLetter && r.Data.(Deposited).Amount == 13 {
				return errors.New("13 is unlucky")
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO `+tbl+` (event_id, n) VALUES ($1, 1)
				ON CONFLICT (event_id) DO UPDATE SET n = `+tbl+`.n + 1`, r.ID)
			return err
		}, "deposited"),
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+tbl+` (event_id uuid PRIMARY KEY, n int NOT NULL)`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+tbl)
			return err
		},
	}
}

// applied returns what table recorded: event ID to count.
func (b *restoreBundle) applied(t *testing.T, table string) map[uuid.UUID]int {
	t.Helper()
	var rows []struct {
		ID uuid.UUID `db:"event_id"`
		N  int       `db:"n"`
	}
	if err := b.db.Select(&rows, `SELECT event_id, n FROM `+b.q(table)); err != nil {
		t.Fatal(err)
	}
	out := map[uuid.UUID]int{}
	for _, r := range rows {
		out[r.ID] = r.N
	}
	return out
}

func (b *restoreBundle) runner(t *testing.T, ps ...projector.Projection) *projector.Runner {
	t.Helper()
	r, err := projector.NewRunner(b.store, projector.Config{PollInterval: 5 * time.Millisecond, LeaderRetryInterval: 100 * time.Millisecond,
		RetryBackoff: time.Millisecond, DisableRetries: true, Logger: quiet()}, ps...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runUntil runs fn's job (a runner's or forwarder's Run) until cond holds.
func runUntil(t *testing.T, what string, run func(context.Context) error, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stopped := false
	defer func() { // also when the wait fails the test
		if !stopped {
			cancel()
			<-done
		}
	}()
	testwait.Until(t, what, cond)
	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Fatalf("%s: Run = %v", what, err)
	}
}

func (b *restoreBundle) forward(t *testing.T, group string, until eventstore.Position) *publisher {
	t.Helper()
	pub := newPublisher()
	f, err := forwarder.New(b.store, pub, forwarder.Config{ConsumerGroup: group, PollInterval: 5 * time.Millisecond,
		LeaderRetryInterval: 100 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, "consumer group "+group+" to reach "+until.String(), f.Run, func() bool {
		off, err := f.Offset(context.Background())
		return err == nil && !off.Less(until)
	})
	return pub
}

// lastPosition is the position of the feed's last event, read from the
// table (the head would wait for unrelated open transactions).
func (b *restoreBundle) lastPosition(t *testing.T) eventstore.Position {
	t.Helper()
	var txid string
	var p eventstore.Position
	if err := b.db.QueryRow(`SELECT transaction_id::text, position FROM `+b.store.QualifiedEventsTable()+`
		ORDER BY transaction_id DESC, position DESC LIMIT 1`).Scan(&txid, &p.Position); err != nil {
		t.Fatal(err)
	}
	fmt.Sscan(txid, &p.TransactionID)
	return p
}

// checkpoints returns name's status (none before a runner registers it).
func (b *restoreBundle) checkpoints(t *testing.T, name string) []projector.ProjectionStatus {
	t.Helper()
	st, err := projector.ListProjections(testCtx(t), b.store)
	if err != nil {
		t.Fatal(err)
	}
	return slices.DeleteFunc(st, func(s projector.ProjectionStatus) bool { return s.Name != name })
}

// caughtUp reports whether every partition of name's version has reached p.
func (b *restoreBundle) caughtUp(t *testing.T, name string, version int, p eventstore.Position) bool {
	n := 0
	for _, s := range b.checkpoints(t, name) {
		if s.Version != version {
			continue
		}
		if s.Checkpoint.Less(p) || s.RebuildRequested {
			return false
		}
		n++
	}
	return n > 0
}

// TestResetAfterRestore simulates a logical restore into a younger cluster
// (the stored transaction ids, checkpoints, offsets, dead letters and a
// pending skip far ahead of the cluster's next transaction id), then runs
// ResetAfterRestore and checks that every reader resumes without loss or
// replay: a live projection, a blue/green version still building
// (partitioned, with a skip pending), a projection whose checkpoint has no
// exact equivalent (rebuilt) and two consumer groups (one of them moved
// back, republishing). A dry run changes nothing, a running leader is
// refused, and a second run finds nothing to do.
//
// "straddling": the first three events keep transaction ids below the
// cluster's next one (the old cluster's ids straddle the new one's).
func TestResetAfterRestore(t *testing.T) {
	t.Parallel()
	t.Run("all ahead", func(t *testing.T) { t.Parallel(); testResetAfterRestore(t, 0) })
	t.Run("straddling", func(t *testing.T) { t.Parallel(); testResetAfterRestore(t, 3) })
}

func testResetAfterRestore(t *testing.T, keep int) {
	db := pgtest.Open(t)
	b := &restoreBundle{db: db, schema: pgtest.Schema(t, db), reg: registry()}
	b.store = esoxtest.Store(t, db, b.reg, postgres.Config{Schema: b.schema, Logger: quiet()})
	ctx := testCtx(t)
	live := b.counting("live", "live", 1, 0, false)
	audit := b.counting("audit", "audit", 1, 0, true)
	green := b.counting("live", "live_v2", 2, 2, false)
	// Ten events, each its own transaction and stream; the third parks in
	// audit.
	for i := range 10 {
		amount := i + 1
		if i == 2 {
			amount = 13
		}
		res, err := b.store.Append(ctx, fmt.Sprintf("account-%d", i), eventstore.NoStream, []eventstore.Event{{Data: Deposited{Account: fmt.Sprint(i), Amount: amount}}})
		if err != nil {
			t.Fatal(err)
		}
		b.events = append(b.events, res)
	}
	ev := func(i int) eventstore.AppendResult { return b.events[i] }
	last := ev(9).LastPosition
	r1 := b.runner(t, live, audit)
	runUntil(t, "the projections to catch up", r1.Run, func() bool {
		return b.caughtUp(t, "live", 1, last) && b.caughtUp(t, "audit", 1, last)
	})
	b.forward(t, "main", last)
	b.forward(t, "second", last)
	// A blue/green version registered and built up to the fourth event,
	// with a skip of the ninth pending.
	if _, err := b.runner(t, green).Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := projector.SetCheckpoint(ctx, b.store, projector.Target{Projection: "live", Version: 2}, ev(3).LastPosition, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := projector.Skip(ctx, b.store, projector.Target{Projection: "live", Version: 2}, ev(8).EventIDs[0]); err != nil {
		t.Fatal(err)
	}

	// The "restore": every id past the keep-th event moves 2^40 ahead.
	const shift = "1099511627776"
	kt, kp := "0", int64(0)
	if keep > 0 {
		kt, kp = fmt.Sprint(ev(keep-1).LastPosition.TransactionID), ev(keep-1).LastPosition.Position
	}
	bump := func(col string) string { return col + ` = ((` + col + `::text)::numeric + ` + shift + `)::text::xid8` }
	past := func(tx, pos string) string {
		return `(` + tx + `, ` + pos + `) > ('` + kt + `'::xid8, ` + fmt.Sprint(kp) + `)`
	}
	for _, stmt := range []string{
		`UPDATE ` + b.store.QualifiedEventsTable() + ` SET ` + bump("transaction_id") + ` WHERE ` + past("transaction_id", "position"),
		`UPDATE ` + b.q(projector.CheckpointsTable) + ` SET ` + bump("transaction_id") + ` WHERE position > 0 AND ` + past("transaction_id", "position"),
		`UPDATE ` + b.q(projector.CheckpointsTable) + ` SET ` + bump("skip_transaction_id") + ` WHERE ` + past("skip_transaction_id", "skip_position"),
		`UPDATE ` + b.q(projector.DeadLettersTable) + ` SET ` + bump("transaction_id") + ` WHERE ` + past("transaction_id", "position"),
		`UPDATE ` + b.q(forwarder.OffsetsTable) + ` SET ` + bump("transaction_id") + ` WHERE position > 0 AND ` + past("transaction_id", "position"),
		// The ninth event committed after the tenth in the old cluster
		// (its transaction id is the larger), and audit and the second
		// group had read up to the tenth only: their checkpoint has no
		// exact equivalent by position.
		`UPDATE ` + b.store.QualifiedEventsTable() + ` SET transaction_id = ((e.transaction_id::text)::numeric + 1)::text::xid8
			FROM ` + b.store.QualifiedEventsTable() + ` e WHERE e.position = ` + fmt.Sprint(ev(9).LastPosition.Position) +
			` AND ` + b.store.QualifiedEventsTable() + `.position = ` + fmt.Sprint(ev(8).LastPosition.Position),
		`UPDATE ` + b.q(projector.CheckpointsTable) + ` c SET transaction_id = e.transaction_id, position = e.position FROM ` +
			b.store.QualifiedEventsTable() + ` e WHERE e.position = ` + fmt.Sprint(ev(9).LastPosition.Position) + ` AND c.projection = 'audit'`,
		// The others had read everything: up to the ninth, now the last.
		`UPDATE ` + b.q(projector.CheckpointsTable) + ` c SET transaction_id = e.transaction_id, position = e.position FROM ` +
			b.store.QualifiedEventsTable() + ` e WHERE e.position = ` + fmt.Sprint(ev(8).LastPosition.Position) + ` AND c.projection = 'live' AND c.version = 1`,
		`UPDATE ` + b.q(forwarder.OffsetsTable) + ` o SET transaction_id = e.transaction_id, position = e.position FROM ` +
			b.store.QualifiedEventsTable() + ` e WHERE e.position = ` + fmt.Sprint(ev(8).LastPosition.Position) + ` AND o.consumer_group = 'main'`,
		`UPDATE ` + b.q(forwarder.OffsetsTable) + ` o SET transaction_id = e.transaction_id, position = e.position FROM ` +
			b.store.QualifiedEventsTable() + ` e WHERE e.position = ` + fmt.Sprint(ev(9).LastPosition.Position) + ` AND o.consumer_group = 'second'`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	txids := func() string {
		var s string
		if err := db.Get(&s, `SELECT string_agg(transaction_id::text, ',' ORDER BY position) FROM `+b.store.QualifiedEventsTable()); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := txids()

	// A dry run reports and changes nothing.
	dry, err := esox.ResetAfterRestore(ctx, b.store, &esox.RestoreOpts{DryRun: true})
	if err != nil || !dry.Restored || dry.Events != 10 || len(dry.Checkpoints) != 4 || len(dry.Offsets) != 2 {
		t.Fatalf("dry run = %+v, %v", dry, err)
	}
	if txids() != before {
		t.Fatal("the dry run renumbered events")
	}

	// A leader holding its lock (here: a session holding the key) is refused.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, postgres.LockKey(projector.LeaderKey(b.schema, "live", 2, 1, 2))); err != nil {
		t.Fatal(err)
	}
	var lr *esox.LeaderRunningError
	if _, err := esox.ResetAfterRestore(ctx, b.store, nil); !errors.Is(err, esox.ErrLeaderRunning) || !errors.As(err, &lr) ||
		!slices.Equal(lr.Jobs, []string{`projection "live" version 2 partition 1`}) {
		t.Fatalf("reset while a leader runs = %v", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, postgres.LockKey(projector.LeaderKey(b.schema, "live", 2, 1, 2))); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if txids() != before {
		t.Fatal("a refused reset renumbered events")
	}

	var progress []int64
	rep, err := esox.ResetAfterRestore(ctx, b.store, &esox.RestoreOpts{BatchSize: 3, Progress: func(done, total int64) {
		if total != 10 {
			t.Errorf("progress total = %d, want 10", total)
		}
		progress = append(progress, done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Restored || rep.Events != 10 || rep.DeadLetters != 1 || rep.Skips != 1 || !slices.Equal(progress, []int64{0, 3, 6, 9, 10}) {
		t.Fatalf("report = %+v, progress %v", rep, progress)
	}
	at := func(i int) eventstore.Position {
		return eventstore.Position{TransactionID: esox.RestoredTransactionID, Position: ev(i).LastPosition.Position}
	}
	wantCheckpoints := []esox.RestoredCheckpoint{
		{Projection: "audit", Version: 1, Status: "live", To: eventstore.Position{TransactionID: 1, Position: ev(8).LastPosition.Position - 1}, RebuildRequested: true},
		{Projection: "live", Version: 1, Status: "live", To: at(9), Exact: true},
		{Projection: "live", Version: 2, Partition: 0, Status: "building", To: at(3), Exact: true},
		{Projection: "live", Version: 2, Partition: 1, Status: "building", To: at(3), Exact: true},
	}
	for i, c := range rep.Checkpoints {
		c.From = eventstore.Position{}
		if c != wantCheckpoints[i] {
			t.Fatalf("checkpoint %d = %+v, want %+v", i, c, wantCheckpoints[i])
		}
	}
	if len(rep.Offsets) != 2 || rep.Offsets[0].To != at(9) || !rep.Offsets[0].Exact || rep.Offsets[1].ConsumerGroup != "second" ||
		rep.Offsets[1].Exact || rep.Offsets[1].To.Position != ev(8).LastPosition.Position-1 {
		t.Fatalf("offsets = %+v", rep.Offsets)
	}
	if again, err := esox.ResetAfterRestore(ctx, b.store, nil); err != nil || again.Restored || len(again.Checkpoints) != 0 || again.Events != 0 {
		t.Fatalf("second reset = %+v, %v; want nothing to do", again, err)
	}

	// The service again: new events flow, restored ones are neither lost
	// nor applied twice.
	var fresh []uuid.UUID
	for i := range 3 {
		res, err := b.store.Append(ctx, fmt.Sprintf("account-new-%d", i), eventstore.NoStream, []eventstore.Event{{Data: Deposited{Account: "new", Amount: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		fresh = append(fresh, res.EventIDs[0])
	}
	end := b.lastPosition(t)
	r2 := b.runner(t, live, audit)
	runUntil(t, "live and audit to catch up", r2.Run, func() bool {
		return b.caughtUp(t, "live", 1, end) && b.caughtUp(t, "audit", 1, end)
	})
	all := map[uuid.UUID]int{}
	for _, e := range b.events {
		all[e.EventIDs[0]] = 1
	}
	for _, id := range fresh {
		all[id] = 1
	}
	if got := b.applied(t, "live"); !mapsEqual(got, all) {
		t.Fatalf("live applied %v, want each event once: %v", got, all)
	}
	unlucky := ev(2).EventIDs[0]
	delete(all, unlucky)
	if got := b.applied(t, "audit"); !mapsEqual(got, all) {
		t.Fatalf("audit (rebuilt) applied %v, want each event once: %v", got, all)
	}
	if dls, err := projector.ListDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "audit"}); err != nil || len(dls) != 1 || dls[0].EventID != unlucky {
		t.Fatalf("audit's dead letters after the rebuild = %+v, %v", dls, err)
	}
	r3 := b.runner(t, green)
	runUntil(t, "the building version to catch up and go live", r3.Run, func() bool {
		st := b.checkpoints(t, "live")
		return len(st) > 0 && st[len(st)-1].Live && b.caughtUp(t, "live", 2, end)
	})
	want := map[uuid.UUID]int{}
	for i := 4; i < 10; i++ {
		if i != 8 {
			want[ev(i).EventIDs[0]] = 1
		}
	}
	for _, id := range fresh {
		want[id] = 1
	}
	if got := b.applied(t, "live_v2"); !mapsEqual(got, want) {
		t.Fatalf("the building version applied %v, want the events after its checkpoint but the skipped one, once: %v", got, want)
	}
	// The forwarder publishes different streams in parallel: compare sets.
	if got := sorted(b.forward(t, "main", end).uuids()); !slices.Equal(got, sorted(uuidStrings(fresh))) {
		t.Fatalf("main published %v after the reset, want only the new events %v", got, fresh)
	}
	wantSecond := sorted(append([]string{ev(8).EventIDs[0].String(), ev(9).EventIDs[0].String()}, uuidStrings(fresh)...))
	if got := sorted(b.forward(t, "second", end).uuids()); !slices.Equal(got, wantSecond) {
		t.Fatalf("second published %v after the reset, want the two it may have missed and the new events %v", got, wantSecond)
	}
}

func mapsEqual(a, b map[uuid.UUID]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}

func uuidStrings(ids []uuid.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}
