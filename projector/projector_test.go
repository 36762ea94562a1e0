package projector_test

import (
	"context"
	"errors"
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
	"github.com/jmoiron/sqlx"
)

func TestCatchUpFollowStatusAndWaitFor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendDeposits(t, 450, 7, 3)
	r, err := projector.NewRunner(b.store, fastConfig(t), b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := statusOf(t, r, "balances", 1); s.State != projector.StateNotRunning || s.LagEvents == 0 || s.Lag <= 0 || !s.Live {
		t.Fatalf("status before Run = %+v, want not_running, live, lagging", s)
	}
	start(t, r)
	last := b.appendDeposits(t, 50, 7, 5)
	waitFor(t, r, "balances", last.LastPosition)
	equalBalances(t, "after catch-up", b.model(t, "balances"), b.foldAll(t))

	s := statusOf(t, r, "balances", 1)
	if s.State != projector.StateRunning || !s.Leading || s.LagEvents != 0 || s.Lag != 0 || s.Checkpoint.Compare(last.LastPosition) < 0 || s.Head.Compare(last.LastPosition) < 0 {
		t.Fatalf("status after catch-up = %+v", s)
	}

	// Live follow: each append is visible to WaitFor and the model.
	for i := range 5 {
		res, err := b.store.Append(context.Background(), "account-live", eventstore.Any, []eventstore.Event{{Data: Deposited{Account: "live", Amount: int64(i + 1)}}})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, r, "balances", res.LastPosition)
		if got := b.model(t, "balances")["live"]; got.N != int64(i+1) {
			t.Fatalf("after append %d the model has %+v", i, got)
		}
	}

	// WaitFor gives up with ctx, and refuses unknown projections.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := r.WaitFor(ctx, "balances", eventstore.Position{TransactionID: 1 << 62}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor far ahead = %v, want DeadlineExceeded", err)
	}
	if err := r.WaitFor(context.Background(), "nope", last.LastPosition); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("WaitFor unknown = %v, want ErrInvalidArgument", err)
	}
}

func TestUnhandledTypesArePassedOver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var seen atomic.Int64
	p := b.balances("balances", "balances")
	inner := p.Handler
	p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		for _, r := range recs {
			if r.Type != "deposited" {
				return errors.New("got a type the projection does not handle: " + r.Type)
			}
		}
		seen.Add(int64(len(recs)))
		return inner.Handle(ctx, tx, recs)
	}, "deposited")
	r, err := projector.NewRunner(b.store, fastConfig(t), p)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	b.appendDeposits(t, 10, 2, 5)
	// A registered but unhandled type, and one no Go type is registered
	// for (written by another service): neither is decoded nor stops the
	// projection, and the checkpoint moves past both.
	res, err := b.store.Append(context.Background(), "note-1", eventstore.Any, []eventstore.Event{{Data: Noted{Text: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Exec(`INSERT INTO ` + b.store.QualifiedEventsTable() + ` (event_id, stream_id, stream_version, event_type, payload)
		VALUES (gen_random_uuid(), 'alien-1', 1, 'alien_type', '{"not": "decodable"}')`); err != nil {
		t.Fatal(err)
	}
	var head eventstore.Position
	testwait.Until(t, "the alien event to be visible", func() bool {
		head, err = b.store.Head(context.Background())
		return err == nil && head.Compare(res.LastPosition) > 0
	})
	waitFor(t, r, "balances", head)
	if seen.Load() != 10 {
		t.Fatalf("handler saw %d records, want 10", seen.Load())
	}
	equalBalances(t, "model", b.model(t, "balances"), b.foldAll(t))
}

func TestPoisonedEventStopsOnlyItsProjectionAndDeadLetterParksIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var fixed atomic.Bool
	poisoned := func(name, table string, deadLetter bool) projector.Projection {
		p := b.balances(name, table)
		inner := p.Handler
		p.Handler = projector.Records(func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
			if d := r.Data.(Deposited); d.Account == "poison" && !fixed.Load() {
				return errors.New("amount of the poison account cannot be applied")
			}
			return inner.Handle(ctx, tx, []eventstore.Record{r})
		}, "deposited")
		p.DeadLetter = deadLetter
		return p
	}
	cfg := fastConfig(t)
	cfg.MaxRetries = 2
	r, err := projector.NewRunner(b.store, cfg,
		poisoned("strict", "strict", false),
		poisoned("parking", "parking", true),
		b.balances("healthy", "healthy"))
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	b.appendDeposits(t, 20, 3, 4)
	bad, err := b.store.Append(context.Background(), "account-poison", eventstore.Any, []eventstore.Event{{Data: Deposited{Account: "poison", Amount: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	last := b.appendDeposits(t, 20, 3, 4)

	waitFor(t, r, "healthy", last.LastPosition)
	waitFor(t, r, "parking", last.LastPosition)
	equalBalances(t, "healthy", b.model(t, "healthy"), b.foldAll(t))
	want := b.foldAll(t)
	delete(want, "poison")
	equalBalances(t, "parking", b.model(t, "parking"), want)
	if s := statusOf(t, r, "parking", 1); s.DeadLetters != 1 || s.State != projector.StateRunning {
		t.Fatalf("parking status = %+v, want 1 dead letter and running", s)
	}
	var dl struct {
		EventID string `db:"event_id"`
		Error   string `db:"error"`
	}
	if err := b.db.Get(&dl, `SELECT event_id::text, error FROM `+b.q(projector.DeadLettersTable)+` WHERE projection = 'parking'`); err != nil {
		t.Fatal(err)
	}
	if dl.EventID != bad.EventIDs[0].String() || !strings.Contains(dl.Error, "poison account") {
		t.Fatalf("dead letter = %+v, want event %s with the handler's error", dl, bad.EventIDs[0])
	}

	// The strict projection stopped short of the poison with a readable
	// error; WaitFor says so instead of waiting forever.
	testwait.Until(t, "strict to stop", func() bool {
		return statusOf(t, r, "strict", 1).State == projector.StateStoppedWithError
	})
	s := statusOf(t, r, "strict", 1)
	if !strings.Contains(s.LastError, "poison account") || !strings.Contains(s.LastError, bad.EventIDs[0].String()) || !strings.Contains(s.LastError, "deposited") {
		t.Fatalf("LastError %q should name the event and the handler's error", s.LastError)
	}
	if s.Checkpoint.Compare(bad.LastPosition) >= 0 {
		t.Fatalf("strict checkpoint %s passed the poison at %s", s.Checkpoint, bad.LastPosition)
	}
	var we *projector.WaitError
	if err := r.WaitFor(context.Background(), "strict", last.LastPosition); !errors.Is(err, projector.ErrStopped) || !errors.Is(err, projector.ErrNotProgressing) ||
		!errors.As(err, &we) || !strings.Contains(we.LastError, "poison account") || we.State != projector.StateStoppedWithError ||
		we.Checkpoint != s.Checkpoint || we.Position != last.LastPosition || we.Version != 1 {
		t.Fatalf("WaitFor(strict) = %v (%+v), want a WaitError naming the stop, the checkpoint and the position", err, we)
	}
	want = b.foldAll(t)
	delete(want, "poison")
	equalBalances(t, "strict before the fix", b.model(t, "strict"), b.fold(t, s.Checkpoint))

	// After the fix, Resume applies the rest exactly once.
	fixed.Store(true)
	if err := r.Resume(context.Background(), "strict"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "strict", last.LastPosition)
	equalBalances(t, "strict after resume", b.model(t, "strict"), b.foldAll(t))
	if s := statusOf(t, r, "strict", 1); s.State != projector.StateRunning || s.LastError != "" {
		t.Fatalf("strict after resume = %+v", s)
	}
}

func TestRebuildWhileWritersAppend(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r, err := projector.NewRunner(b.store, fastConfig(t), b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	// Rebuild below needs the tables and the live version Run registers;
	// migrate first so it cannot race Run's start.
	if _, err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	start(t, r)
	b.appendDeposits(t, 300, 5, 3)

	ctx, stopWriters := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Stop the writers before the schema is dropped, also when a check
	// below fails the test early.
	t.Cleanup(func() { stopWriters(); wg.Wait() })
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				acct := []string{"x", "y", "z"}[w]
				if _, err := b.store.Append(ctx, "account-"+acct, eventstore.Any, []eventstore.Event{{Data: Deposited{Account: acct, Amount: int64(i%5 + 1)}}}); err != nil && ctx.Err() == nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // let writers and the runner interleave
	// A row no event produces: only the Reset that Rebuild runs removes it.
	if _, err := b.db.Exec(`INSERT INTO ` + b.q("balances") + ` (account, total, n) VALUES ('sentinel', 0, 0)`); err != nil {
		t.Fatal(err)
	}
	before := statusOf(t, r, "balances", 1).Checkpoint
	if err := r.Rebuild(context.Background(), "balances"); err != nil {
		t.Fatal(err)
	}
	var sentinels int
	if err := b.db.Get(&sentinels, `SELECT count(*) FROM `+b.q("balances")+` WHERE account = 'sentinel'`); err != nil || sentinels != 0 {
		t.Fatalf("sentinel rows after Rebuild = %d (%v): Rebuild did not reset the model", sentinels, err)
	}
	if after := statusOf(t, r, "balances", 1).Checkpoint; before.Position > 0 && after.Compare(before) >= 0 {
		t.Fatalf("checkpoint right after Rebuild %s is not below the one before %s", after, before)
	}
	testwait.Until(t, "the rebuild to show in Status", func() bool {
		s := statusOf(t, r, "balances", 1)
		return s.State == projector.StateRebuilding || s.Checkpoint.Position > 0
	})
	time.Sleep(200 * time.Millisecond)
	stopWriters()
	wg.Wait()
	waitFor(t, r, "balances", b.lastEvent(t))
	equalBalances(t, "after rebuild", b.model(t, "balances"), b.foldAll(t))
	testwait.Until(t, "rebuild to finish", func() bool {
		return statusOf(t, r, "balances", 1).State == projector.StateRunning
	})

	noReset := b.balances("other", "other")
	noReset.Reset = nil
	r2, err := projector.NewRunner(b.store, fastConfig(t), noReset)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r2.Rebuild(context.Background(), "other"); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("Rebuild without Reset = %v, want ErrInvalidArgument", err)
	}
}

// blueGreen returns version v of a projection writing bal_v<v>, whose
// Activate points the view "bal" at its table.
func (b *bundle) blueGreen(v int) projector.Projection {
	table := "bal_v" + string(rune('0'+v))
	p := b.balances("bal", table)
	p.Version = v
	p.Activate = func(ctx context.Context, tx postgres.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE OR REPLACE VIEW `+b.q("bal")+` AS SELECT account, total, n FROM `+b.q(table))
		return err
	}
	setup := p.Setup
	p.Setup = func(ctx context.Context, tx postgres.Tx) error {
		if err := setup(ctx, tx); err != nil {
			return err
		}
		// The first version creates the view readers use.
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_views WHERE schemaname = $1 AND viewname = 'bal')`, b.schema).Scan(&exists); err != nil || exists {
			return err
		}
		_, err := tx.ExecContext(ctx, `CREATE VIEW `+b.q("bal")+` AS SELECT account, total, n FROM `+b.q(table))
		return err
	}
	return p
}

func TestBlueGreenSwitchesOnlyWhenCaughtUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := fastConfig(t)
	cfg.BatchSize = 20
	r1, err := projector.NewRunner(b.store, cfg, b.blueGreen(1))
	if err != nil {
		t.Fatal(err)
	}
	run1 := start(t, r1)
	last := b.appendDeposits(t, 400, 4, 2)
	waitFor(t, r1, "bal", last.LastPosition)
	run1.stop(t)

	// Readers poll the view the whole time: totals only grow (deposits are
	// positive), so a half-built v2 would show as a drop.
	ctx, stopReaders := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	readers.Go(func() {
		var prev int64
		for ctx.Err() == nil {
			var total int64
			if err := b.db.QueryRowContext(ctx, `SELECT coalesce(sum(total), 0) FROM `+b.q("bal")).Scan(&total); err != nil {
				if ctx.Err() == nil {
					t.Errorf("read view: %v", err)
				}
				return
			}
			if total < prev {
				t.Errorf("the view's total dropped from %d to %d: readers saw a half-built model", prev, total)
				return
			}
			prev = total
		}
	})

	// Deploy v2 beside v1: both run; v2 fills bal_v2 and then goes live.
	r2, err := projector.NewRunner(b.store, cfg, b.blueGreen(1), b.blueGreen(2))
	if err != nil {
		t.Fatal(err)
	}
	start(t, r2)
	var sawBuilding bool
	testwait.Until(t, "v2 to go live", func() bool {
		s := statusOf(t, r2, "bal", 2)
		if s.State == projector.StateRebuilding {
			sawBuilding = true
		}
		if !s.Live {
			b.appendDeposits(t, 4, 4, 2) // writers keep going
		}
		return s.Live
	})
	if !sawBuilding {
		t.Log("v2 caught up before Status saw it building")
	}
	last = b.appendDeposits(t, 20, 4, 2)
	waitFor(t, r2, "bal", last.LastPosition)
	stopReaders()
	readers.Wait()
	equalBalances(t, "view after switch", b.model(t, "bal"), b.foldAll(t))
	if s := statusOf(t, r2, "bal", 1); s.State != projector.StateRetired || s.Live {
		t.Fatalf("v1 after switch = %+v, want retired", s)
	}
	var def string
	if err := b.db.QueryRow(`SELECT definition FROM pg_views WHERE schemaname = $1 AND viewname = 'bal'`, b.schema).Scan(&def); err != nil || !strings.Contains(def, "bal_v2") {
		t.Fatalf("view definition %q (%v) does not read bal_v2", def, err)
	}
}

func TestInlineHookAppliesInTheAppendTransaction(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	pre := &bundle{db: db, schema: pgtest.Schema(t, db), reg: newRegistry()}
	p := pre.balances("inline_balances", "inline_balances")
	inner := p.Handler
	p.Handler = projector.Records(func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
		if r.Data.(Deposited).Amount < 0 {
			return errors.New("negative deposit")
		}
		return inner.Handle(ctx, tx, []eventstore.Record{r})
	}, "deposited")
	hook, err := projector.InlineHook(p)
	if err != nil {
		t.Fatal(err)
	}
	b := setupOn(t, db, pre.schema, pre.reg, []postgres.AppendHook{hook})
	tx := db.MustBegin()
	if err := p.Setup(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	// No runner: the model is right as soon as Append returns.
	b.appendDeposits(t, 30, 3, 3)
	equalBalances(t, "inline", b.model(t, "inline_balances"), b.foldAll(t))
	if _, err := b.store.Append(context.Background(), "account-p", eventstore.Any, []eventstore.Event{{Data: &Deposited{Account: "p", Amount: 2}}}); err != nil {
		t.Fatalf("append of a pointer: %v", err)
	}
	equalBalances(t, "inline after pointer", b.model(t, "inline_balances"), b.foldAll(t))

	// A failing inline handler rolls the append back.
	before := b.foldAll(t)
	_, err = b.store.Append(context.Background(), "account-n", eventstore.Any, []eventstore.Event{
		{Data: Deposited{Account: "n", Amount: 1}}, {Data: Deposited{Account: "n", Amount: -1}}})
	if err == nil || !strings.Contains(err.Error(), "negative deposit") {
		t.Fatalf("append with a failing inline handler = %v", err)
	}
	equalBalances(t, "events after the failed append", b.foldAll(t), before)
	equalBalances(t, "inline after the failed append", b.model(t, "inline_balances"), before)

	if _, err := projector.InlineHook(p, p); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("InlineHook with a duplicate = %v", err)
	}
}

// TestStatusForgetsStopAfterLeadership: a process that stopped a projection
// and then stopped leading it must not keep reporting its own stale
// in-memory "stopped" state: once it no longer leads, Status reads the row.
func TestStatusForgetsStopAfterLeadership(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.balances("flaky", "flaky")
	p.Handler = projector.Batch(func(context.Context, postgres.Tx, []eventstore.Record) error {
		return errors.New("handler broken")
	})
	cfg := fastConfig(t)
	cfg.DisableRetries = true
	r, err := projector.NewRunner(b.store, cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	rr := start(t, r)
	b.appendDeposits(t, 1, 1, 1)
	testwait.Until(t, "the projection to stop", func() bool {
		s := statusOf(t, r, "flaky", 1)
		return s.State == projector.StateStoppedWithError && s.Leading
	})
	rr.stop(t)
	// Someone (an operator, another instance) resumes it in the database.
	if err := r.Resume(context.Background(), "flaky"); err != nil {
		t.Fatal(err)
	}
	if s := statusOf(t, r, "flaky", 1); s.State != projector.StateNotRunning || s.Leading {
		t.Fatalf("status after leadership ended and Resume = %+v, want not_running", s)
	}
}

// TestStatusShowsDatabaseErrorWhileRetrying: a projection stuck retrying a
// database error says so in Status, not only in the logs, and clears it once
// a batch commits.
func TestStatusShowsDatabaseErrorWhileRetrying(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var healthy atomic.Bool
	p := b.balances("busy", "busy")
	inner := p.Handler
	p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		if !healthy.Load() {
			// A serialization failure: a database error, retried without limit.
			_, err := tx.ExecContext(ctx, `DO $$ BEGIN RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001'; END $$`)
			return err
		}
		return inner.Handle(ctx, tx, recs)
	}, "deposited")
	r, err := projector.NewRunner(b.store, fastConfig(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	start(t, r)
	last := b.appendDeposits(t, 3, 1, 3)
	testwait.Until(t, "Status to show the database error", func() bool {
		s := statusOf(t, r, "busy", 1)
		return s.Leading && strings.Contains(s.DatabaseError, "simulated conflict") && s.DatabaseErrors >= 2 &&
			s.State != projector.StateStoppedWithError
	})
	healthy.Store(true)
	waitFor(t, r, "busy", last.LastPosition)
	testwait.Until(t, "the database error to clear", func() bool {
		s := statusOf(t, r, "busy", 1)
		return s.DatabaseError == "" && s.DatabaseErrors == 0
	})
	equalBalances(t, "after the retries", b.model(t, "busy"), b.foldAll(t))
}

// TestHandlersCannotEndTheTransaction: the transaction a handler (and
// Setup) gets cannot be asserted to *sqlx.Tx or to anything with Commit or
// Rollback: committing early would commit the effect without the
// checkpoint, or the checkpoint without the effect.
func TestHandlersCannotEndTheTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var mu sync.Mutex
	var reached []string
	check := func(tx postgres.Tx) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := any(tx).(*sqlx.Tx); ok {
			reached = append(reached, "*sqlx.Tx")
		}
		if _, ok := any(tx).(interface{ Commit() error }); ok {
			reached = append(reached, "Commit")
		}
		if _, ok := any(tx).(interface{ Rollback() error }); ok {
			reached = append(reached, "Rollback")
		}
	}
	p := b.balances("balances", "balances")
	inner, setupFn := p.Handler, p.Setup
	p.Setup = func(ctx context.Context, tx postgres.Tx) error { check(tx); return setupFn(ctx, tx) }
	p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		check(tx)
		return inner.Handle(ctx, tx, recs)
	}, "deposited")
	r, err := projector.NewRunner(b.store, fastConfig(t), p)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	last := b.appendDeposits(t, 2, 1, 5)
	waitFor(t, r, "balances", last.LastPosition)
	mu.Lock()
	defer mu.Unlock()
	if len(reached) > 0 {
		t.Fatalf("a handler could reach %v", reached)
	}
}
