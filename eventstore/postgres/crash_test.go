package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// outcome is what one append call reported.
type outcome struct {
	writer string
	stream string
	ids    []uuid.UUID
	res    eventstore.AppendResult
	err    error
}

// settleCounter counts the store's "append settled" and "outcome unknown"
// log records, to show that crashes caught appends in flight.
type settleCounter struct {
	slog.Handler
	written, notWritten, unknown *atomic.Int64
}

func (h settleCounter) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case strings.HasPrefix(r.Message, "append settled as written"):
		h.written.Add(1)
	case strings.HasPrefix(r.Message, "append settled as not written"):
		h.notWritten.Add(1)
	case strings.HasPrefix(r.Message, "append outcome unknown"):
		h.unknown.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h settleCounter) WithAttrs(as []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(as)
	return h
}

// TestAppendOutcomeKnownAcrossCrashes is "every outcome known": writers
// append concurrently to a private cluster that is crashed (pg_ctl -m
// immediate) and restarted again and again, through Append (alone and with
// an AppendHook) and through AppendTx with SettleAppend after a failed
// Commit; single events, VALUES batches and unnest batches. Afterwards the
// table must agree with every call: all events of a call that returned
// success are stored exactly as reported, no event of a call that returned
// an error other than ErrOutcomeUnknown is stored, no event is stored that
// no call appended, and the hook's and the transaction's other writes
// committed exactly with their events. With the server back within the
// settle time, no outcome stays unknown.
func TestAppendOutcomeKnownAcrossCrashes(t *testing.T) {
	t.Parallel()
	const (
		rounds          = 5
		crashesPerRound = 6
		writesPerCrash  = 15 // successful appends between crashes
	)
	c := pgtest.StartCluster(t)
	db := c.Open(t)
	db.SetMaxOpenConns(24)
	db.SetMaxIdleConns(24)
	var written, notWritten, unknown atomic.Int64
	logger := slog.New(settleCounter{Handler: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}),
		written: &written, notWritten: &notWritten, unknown: &unknown})
	cfg := postgres.Config{Schema: "crash", SettleTimeout: time.Minute, Logger: logger}
	plain, err := postgres.New(db, testRegistry(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := plain.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE crash.hooked (event_id uuid PRIMARY KEY); CREATE TABLE crash.txstate (event_id uuid PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	hookCfg := cfg
	hookCfg.AppendHooks = []postgres.AppendHook{func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		for _, r := range recs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO crash.hooked (event_id) VALUES ($1)`, r.ID); err != nil {
				return err
			}
		}
		return nil
	}}
	hooked, err := postgres.New(db, testRegistry(), hookCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Close(); _ = hooked.Close() })

	var (
		mu       sync.Mutex
		outcomes []outcome
		okCount  atomic.Int64
	)
	record := func(o outcome) {
		mu.Lock()
		outcomes = append(outcomes, o)
		mu.Unlock()
		if o.err == nil {
			okCount.Add(1)
		}
	}
	newEvents := func(n int) ([]eventstore.Event, []uuid.UUID) {
		events := make([]eventstore.Event, n)
		ids := make([]uuid.UUID, n)
		for i := range events {
			ids[i] = uuid.Must(uuid.NewV7())
			events[i] = eventstore.Event{ID: ids[i], Data: ItemAdded{SKU: "sku", N: i}}
		}
		return events, ids
	}
	sizes := []int{1, 3, 1, 70}
	// pause paces a writer after an error, while the server is down.
	pause := func(ctx context.Context) {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	// version reads a stream's version, waiting for the server.
	version := func(ctx context.Context, s *postgres.Store, stream string) int64 {
		for ctx.Err() == nil {
			if info, err := s.StreamInfo(ctx, stream); err == nil {
				return info.Version
			}
			pause(ctx)
		}
		return 0
	}
	appendLoop := func(ctx context.Context, name string, s *postgres.Store, streamOf func(call int) string, exact bool) {
		v := int64(0)
		for call := 0; ctx.Err() == nil; call++ {
			stream := streamOf(call)
			events, ids := newEvents(sizes[call%len(sizes)])
			expected := eventstore.Any
			switch {
			case exact:
				expected = eventstore.Exact(v)
			case strings.HasPrefix(stream, "fresh"):
				expected = eventstore.NoStream
			}
			res, err := s.Append(ctx, stream, expected, events)
			record(outcome{writer: name, stream: stream, ids: ids, res: res, err: err})
			switch {
			case err == nil:
				v = res.LastVersion
			case exact:
				pause(ctx)
				v = version(ctx, s, stream)
			default:
				pause(ctx)
			}
		}
	}
	txLoop := func(ctx context.Context, name string) {
		stream := name
		v := int64(0)
		for call := 0; ctx.Err() == nil; call++ {
			events, ids := newEvents(sizes[call%len(sizes)])
			o := outcome{writer: name, stream: stream, ids: ids}
			func() {
				tx, err := db.BeginTxx(ctx, nil)
				if err != nil {
					o.err = err
					return
				}
				defer func() { _ = tx.Rollback() }()
				for _, id := range ids {
					if _, err := tx.ExecContext(ctx, `INSERT INTO crash.txstate (event_id) VALUES ($1)`, id); err != nil {
						o.err = err
						return
					}
				}
				res, err := plain.AppendTx(ctx, tx, stream, eventstore.Exact(v), events)
				if err != nil {
					o.err = err
					return
				}
				if err := tx.Commit(); err != nil {
					sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
					defer cancel()
					got, ok, serr := plain.SettleAppend(sctx, stream, res.EventIDs)
					switch {
					case serr != nil:
						o.err = serr
					case !ok:
						o.err = err
						notWritten.Add(1)
					default:
						o.res = got
						written.Add(1)
					}
					return
				}
				o.res = res
			}()
			record(o)
			if o.err == nil {
				v = o.res.LastVersion
			} else {
				pause(ctx)
				v = version(ctx, plain, stream)
			}
		}
	}
	// waitOK waits until n more appends succeeded than before.
	waitOK := func(n int64) {
		t.Helper()
		target := okCount.Load() + n
		testwait.Until(t, fmt.Sprintf("%d successful appends", n), func() bool { return okCount.Load() >= target })
	}

	for round := range rounds {
		wctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		run := func(f func()) {
			wg.Add(1)
			go func() { defer wg.Done(); f() }()
		}
		for w := range 2 {
			name := fmt.Sprintf("exact%d-%d", round, w)
			run(func() { appendLoop(wctx, name, plain, func(int) string { return name }, true) })
		}
		for w := range 2 {
			name := fmt.Sprintf("any%d-%d", round, w)
			run(func() {
				appendLoop(wctx, name, plain, func(int) string { return fmt.Sprintf("shared-%d", round) }, false)
			})
		}
		name := fmt.Sprintf("fresh%d", round)
		run(func() {
			appendLoop(wctx, name, plain, func(call int) string { return fmt.Sprintf("fresh%d-%d", round, call) }, false)
		})
		hookName := fmt.Sprintf("hooked%d", round)
		run(func() { appendLoop(wctx, hookName, hooked, func(int) string { return hookName }, true) })
		txName := fmt.Sprintf("tx%d", round)
		run(func() { txLoop(wctx, txName) })

		for range crashesPerRound {
			waitOK(writesPerCrash)
			c.Crash(t)
			c.Start(t)
		}
		waitOK(writesPerCrash)
		stop()
		wg.Wait()
	}

	// Every call's outcome against the table.
	type row struct {
		stream  string
		version int64
	}
	stored := map[uuid.UUID]row{}
	rows, err := db.QueryContext(ctx, `SELECT event_id, stream_id, stream_version FROM crash.events`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		var r row
		if err := rows.Scan(&id, &r.stream, &r.version); err != nil {
			t.Fatal(err)
		}
		stored[id] = r
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	idSet := func(table string) map[uuid.UUID]bool {
		var ids []uuid.UUID
		if err := db.SelectContext(ctx, &ids, `SELECT event_id FROM crash.`+table); err != nil {
			t.Fatal(err)
		}
		out := map[uuid.UUID]bool{}
		for _, id := range ids {
			out[id] = true
		}
		return out
	}
	hookRows, txRows := idSet("hooked"), idSet("txstate")

	var ok, failed, unknownCalls int
	appended := map[uuid.UUID]bool{}
	for _, o := range outcomes {
		present := 0
		for _, id := range o.ids {
			appended[id] = true
			if _, in := stored[id]; in {
				present++
			}
		}
		switch {
		case o.err == nil:
			ok++
			if present != len(o.ids) {
				t.Errorf("%s: append to %s reported success, but %d of its %d events are stored", o.writer, o.stream, present, len(o.ids))
				continue
			}
			for i, id := range o.ids {
				if r := stored[id]; r.stream != o.stream || r.version != o.res.FirstVersion+int64(i) {
					t.Errorf("%s: event %d of a successful append is stored at %s v%d, reported %s v%d", o.writer, i, r.stream, r.version, o.stream, o.res.FirstVersion+int64(i))
				}
			}
		case errors.Is(o.err, eventstore.ErrOutcomeUnknown):
			unknownCalls++
			t.Logf("%s: unknown: %v", o.writer, o.err)
			if present != 0 && present != len(o.ids) {
				t.Errorf("%s: %d of %d events of one append are stored", o.writer, present, len(o.ids))
			}
		default:
			failed++
			if present != 0 {
				t.Errorf("%s: append to %s returned %v, but %d of its %d events are stored", o.writer, o.stream, o.err, present, len(o.ids))
			}
		}
		for _, id := range o.ids {
			_, in := stored[id]
			if strings.HasPrefix(o.writer, "hooked") && hookRows[id] != in {
				t.Errorf("%s: event %s stored: %v, its hook's row: %v", o.writer, id, in, hookRows[id])
			}
			if strings.HasPrefix(o.writer, "tx") && txRows[id] != in {
				t.Errorf("%s: event %s stored: %v, its transaction's other row: %v", o.writer, id, in, txRows[id])
			}
		}
	}
	for id, r := range stored {
		if !appended[id] {
			t.Errorf("event %s in %s v%d was appended by no call", id, r.stream, r.version)
		}
	}
	t.Logf("%d crashes; %d calls: %d succeeded, %d failed (nothing written), %d unknown; settled after a connection failure: %d written, %d not written; %d events stored",
		rounds*crashesPerRound, len(outcomes), ok, failed, unknownCalls, written.Load(), notWritten.Load(), len(stored))
	if unknownCalls != 0 || unknown.Load() != 0 {
		t.Errorf("%d outcomes unknown although the server came back within the settle time", unknownCalls)
	}
	if written.Load()+notWritten.Load() == 0 {
		t.Errorf("no append was settled after a connection failure: the crashes caught none in flight, the test proved nothing")
	}
}

// TestAppendOutcomeUnknownWhenServerStaysDown blocks an append on the
// server (another transaction holds the events table locked), crashes the
// server under it and keeps it down past SettleTimeout: Append returns an
// *OutcomeUnknownError carrying the stream and event IDs, matching
// ErrOutcomeUnknown and wrapping the connection's error. Once the server is
// back, SettleAppend says the append was not written, and so does Append's
// own settling when the server comes back in time.
func TestAppendOutcomeUnknownWhenServerStaysDown(t *testing.T) {
	t.Parallel()
	c := pgtest.StartCluster(t)
	db := c.Open(t)
	ctx := testCtx(t)
	store, err := postgres.New(db, testRegistry(), postgres.Config{Schema: "down", SettleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// blockedAppend starts an append that waits on the server for a lock,
	// and returns once it waits, with the channel its error will arrive on.
	lockDB := c.Open(t) // a pool of its own, so that the store's keeps its prepared connection
	blockedAppend := func(s *postgres.Store, stream string, events []eventstore.Event) <-chan error {
		t.Helper()
		// Prepare the two-event statement on the store's connection
		// first: the append must block executing, not preparing.
		if _, err := s.Append(ctx, "warm-"+uuid.NewString(), eventstore.NoStream, items(len(events))); err != nil {
			t.Fatal(err)
		}
		locker, err := lockDB.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = locker.Rollback() })
		if _, err := locker.ExecContext(ctx, `LOCK TABLE down.events IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.Append(ctx, stream, eventstore.NoStream, events)
			done <- err
		}()
		testwait.Until(t, "the append to wait for the lock", func() bool {
			var n int
			// Not in locker's transaction: it would see one snapshot of
			// pg_stat_activity.
			err := lockDB.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH last AS%'`)
			return err == nil && n > 0
		})
		return done
	}

	// cold keeps no idle connection: after the crash it must dial.
	coldDB := c.Open(t)
	coldDB.SetMaxIdleConns(0)
	cold, err := postgres.New(coldDB, testRegistry(), postgres.Config{Schema: "down", SettleTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cold.Close() })
	if _, err := cold.Append(ctx, "warm-cold", eventstore.NoStream, items(1)); err != nil {
		t.Fatal(err)
	}

	events := []eventstore.Event{{ID: uuid.Must(uuid.NewV7()), Data: ItemAdded{SKU: "a"}}, {ID: uuid.Must(uuid.NewV7()), Data: ItemAdded{SKU: "b"}}}
	done := blockedAppend(store, "order-1", events)
	c.Crash(t)
	err = <-done
	var ue *eventstore.OutcomeUnknownError
	if !errors.Is(err, eventstore.ErrOutcomeUnknown) || !errors.As(err, &ue) {
		t.Fatalf("Append while the server stays down: %v, want an *OutcomeUnknownError", err)
	}
	if ue.StreamID != "order-1" || len(ue.EventIDs) != 2 || ue.EventIDs[0] != events[0].ID || ue.EventIDs[1] != events[1].ID || ue.Err == nil || ue.Lookup == nil {
		t.Fatalf("OutcomeUnknownError = %+v, want the stream, both event IDs, the cause and the lookup's error", ue)
	}
	if !postgres.IsTransient(err) || !strings.Contains(err.Error(), events[0].ID.String()) || !strings.Contains(err.Error(), "StreamInfo") {
		t.Fatalf("error %q: want it transient, naming the first event ID and how to settle", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, _, err = store.SettleAppend(sctx, "order-1", ue.EventIDs)
	cancel()
	if !errors.Is(err, eventstore.ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SettleAppend while the server is down: %v, want ErrOutcomeUnknown wrapping the deadline", err)
	}

	// An append that gets no connection sent nothing: it fails at once
	// (cold's SettleTimeout would outlast the test), not "unknown".
	_, err = cold.Append(ctx, "order-3", eventstore.NoStream, items(1))
	if err == nil || errors.Is(err, eventstore.ErrOutcomeUnknown) || !postgres.IsTransient(err) || !strings.Contains(err.Error(), "not sent") {
		t.Fatalf("Append without a connection: %v, want a transient \"not sent\" error that is not ErrOutcomeUnknown", err)
	}

	c.Start(t)
	if _, written, err := store.SettleAppend(ctx, "order-1", ue.EventIDs); err != nil || written {
		t.Fatalf("SettleAppend after restart: written %v, %v; want not written", written, err)
	}

	// Back within the settle time: Append settles it itself.
	patient, err := postgres.New(db, testRegistry(), postgres.Config{Schema: "down", SettleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = patient.Close() })
	done = blockedAppend(patient, "order-2", events)
	c.Crash(t)
	c.Start(t)
	err = <-done
	if err == nil || errors.Is(err, eventstore.ErrOutcomeUnknown) || !strings.Contains(err.Error(), "not written") {
		t.Fatalf("Append whose server crashed and came back: %v, want a settled \"not written\" error", err)
	}
	if n := countStream(t, db, "down", "order-2") + countStream(t, db, "down", "order-1"); n != 0 {
		t.Fatalf("%d events stored, want none", n)
	}
	// The same events, appended again, are written once.
	if _, err := patient.Append(ctx, "order-1", eventstore.NoStream, events); err != nil {
		t.Fatal(err)
	}
	if n := countStream(t, db, "down", "order-1"); n != 2 {
		t.Fatalf("%d events stored, want 2", n)
	}
}

func countStream(t *testing.T, db interface {
	GetContext(context.Context, any, string, ...any) error
}, schema, stream string) int {
	t.Helper()
	var n int
	if err := db.GetContext(testCtx(t), &n, `SELECT count(*) FROM `+schema+`.events WHERE stream_id = $1`, stream); err != nil {
		t.Fatal(err)
	}
	return n
}
