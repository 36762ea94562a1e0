package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

// TestAppendExpectedVersionMatrix checks every expected version against an
// empty stream and one with two events: success appends at the next
// version, a conflict returns the typed error with stream, expected and
// actual, and writes nothing.
func TestAppendExpectedVersionMatrix(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	cases := []struct {
		existing int
		expected eventstore.ExpectedVersion
		ok       bool
	}{
		{0, eventstore.Any, true},
		{0, eventstore.NoStream, true},
		{0, eventstore.StreamExists, false},
		{0, eventstore.Exact(0), true},
		{0, eventstore.Exact(1), false},
		{2, eventstore.Any, true},
		{2, eventstore.NoStream, false},
		{2, eventstore.StreamExists, true},
		{2, eventstore.Exact(2), true},
		{2, eventstore.Exact(1), false},
		{2, eventstore.Exact(3), false},
	}
	for i, tc := range cases {
		for _, n := range []int{1, 3, 70} { // one event, a VALUES batch, an unnest batch
			stream := fmt.Sprintf("order-%d-%d", i, n)
			if tc.existing > 0 {
				if _, err := b.store.Append(ctx, stream, eventstore.NoStream, items(tc.existing)); err != nil {
					t.Fatalf("seed: %v", err)
				}
			}
			res, err := b.store.Append(ctx, stream, tc.expected, items(n))
			name := fmt.Sprintf("existing=%d expected=%s n=%d", tc.existing, tc.expected, n)
			if tc.ok {
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				want := int64(tc.existing + n)
				if res.FirstVersion != int64(tc.existing+1) || res.LastVersion != want || len(res.EventIDs) != n || res.LastPosition.IsZero() {
					t.Fatalf("%s: result %+v", name, res)
				}
				recs := b.readStream(t, stream, 1)
				if len(recs) != int(want) {
					t.Fatalf("%s: stream has %d events, want %d", name, len(recs), want)
				}
				for j, r := range recs {
					if r.StreamVersion != int64(j+1) {
						t.Fatalf("%s: record %d has version %d", name, j, r.StreamVersion)
					}
				}
				if recs[len(recs)-1].ID != res.EventIDs[n-1] || recs[len(recs)-1].Position != res.LastPosition {
					t.Fatalf("%s: last record %+v does not match result %+v", name, recs[len(recs)-1], res)
				}
				continue
			}
			var ce *eventstore.ConcurrencyError
			if !errors.Is(err, eventstore.ErrConcurrencyConflict) || !errors.As(err, &ce) {
				t.Fatalf("%s: err = %v, want a *ConcurrencyError", name, err)
			}
			if ce.StreamID != stream || ce.Expected != tc.expected || ce.Actual != int64(tc.existing) || ce.Reason != "" {
				t.Fatalf("%s: conflict %+v", name, ce)
			}
			if got := b.countRows(t, stream); got != tc.existing {
				t.Fatalf("%s: %d rows after a conflict, want %d", name, got, tc.existing)
			}
		}
	}
}

// TestAppendTxRefusesOlderTransaction is guarantee 3 in docs/guarantees.md: a transaction
// that took its transaction id before another one appended to the same
// stream and committed must not append after that event, since its rows
// would sort before it in the feed.
func TestAppendTxRefusesOlderTransaction(t *testing.T) {
	t.Parallel()
	for _, expected := range []eventstore.ExpectedVersion{eventstore.Any, eventstore.Exact(1), eventstore.StreamExists} {
		t.Run(expected.String(), func(t *testing.T) {
			t.Parallel()
			b := setup(t, postgres.Config{})
			ctx := testCtx(t)
			const stream = "order-old-tx"

			old, err := b.db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Rollback()
			var oldXID string
			if err := old.GetContext(ctx, &oldXID, `SELECT pg_current_xact_id()::text`); err != nil {
				t.Fatal(err)
			}

			newer, err := b.store.Append(ctx, stream, eventstore.NoStream, []eventstore.Event{placed("1", 1)})
			if err != nil {
				t.Fatal(err)
			}

			_, err = b.store.AppendTx(ctx, old, stream, expected, items(2))
			var ce *eventstore.ConcurrencyError
			if !errors.As(err, &ce) || !errors.Is(err, eventstore.ErrConcurrencyConflict) {
				t.Fatalf("AppendTx in the older transaction %s after %v: err = %v, want a conflict", oldXID, newer.LastPosition, err)
			}
			if ce.StreamID != stream || ce.Expected != expected || ce.Actual != 1 || ce.Reason == "" {
				t.Fatalf("conflict = %+v, want stream, expected, actual 1 and a reason", ce)
			}
			if err := old.Rollback(); err != nil {
				t.Fatal(err)
			}
			if n := b.countRows(t, stream); n != 1 {
				t.Fatalf("%d rows, want only the newer transaction's 1", n)
			}

			// A transaction that starts after the newer one committed may append.
			tx, err := b.db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, `SELECT pg_current_xact_id()`); err != nil {
				t.Fatal(err)
			}
			if _, err := b.store.AppendTx(ctx, tx, stream, expected, items(2)); err != nil {
				t.Fatalf("AppendTx in a newer transaction: %v", err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if n := b.countRows(t, stream); n != 3 {
				t.Fatalf("%d rows, want 3", n)
			}
		})
	}
}

func TestAppendTxCommitsAndRollsBackWithCaller(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	if _, err := b.db.ExecContext(ctx, `CREATE TABLE "`+b.schema+`".orders (id text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	appendWithState := func(stream string, commit bool) {
		t.Helper()
		tx, err := b.db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, `INSERT INTO "`+b.schema+`".orders (id) VALUES ($1)`, stream); err != nil {
			t.Fatal(err)
		}
		// Twice in one transaction: the second append sees the first.
		if _, err := b.store.AppendTx(ctx, tx, stream, eventstore.NoStream, items(2)); err != nil {
			t.Fatal(err)
		}
		res, err := b.store.AppendTx(ctx, tx, stream, eventstore.Exact(2), items(1))
		if err != nil || res.LastVersion != 3 {
			t.Fatalf("second AppendTx: %+v, %v", res, err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	appendWithState("order-rolled-back", false)
	appendWithState("order-committed", true)
	if n := b.countRows(t, "order-rolled-back"); n != 0 {
		t.Fatalf("rolled back: %d rows", n)
	}
	if n := b.countRows(t, "order-committed"); n != 3 {
		t.Fatalf("committed: %d rows, want 3", n)
	}
	var orders int
	if err := b.db.GetContext(ctx, &orders, `SELECT count(*) FROM "`+b.schema+`".orders`); err != nil || orders != 1 {
		t.Fatalf("orders: %d, %v", orders, err)
	}
	if _, err := b.store.AppendTx(ctx, nil, "order-x", eventstore.Any, items(1)); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("AppendTx(nil tx) = %v", err)
	}
}

// TestAppendHooks: hooks run in the append's transaction with positioned
// records; an error from one rolls the append back.
func TestAppendHooks(t *testing.T) {
	t.Parallel()
	errRefused := errors.New("hook refuses")
	var table string
	var seen [][]eventstore.Record
	hook := func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		seen = append(seen, recs)
		for _, r := range recs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (event_id, position) VALUES ($1, $2)`, r.ID, r.Position.Position); err != nil {
				return err
			}
		}
		if o, ok := recs[0].Data.(OrderPlaced); ok && o.OrderID == "refuse" {
			return errRefused
		}
		return nil
	}
	b := setup(t, postgres.Config{AppendHooks: []postgres.AppendHook{hook}})
	ctx := testCtx(t)
	table = `"` + b.schema + `".projection`
	if _, err := b.db.ExecContext(ctx, `CREATE TABLE `+table+` (event_id uuid PRIMARY KEY, position bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	res, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 10), placed("1", 11)})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || len(seen[0]) != 2 {
		t.Fatalf("hook calls: %v", seen)
	}
	for i, r := range seen[0] {
		if r.Position.Position == 0 || r.Position.TransactionID == 0 || r.StreamVersion != int64(i+1) || r.ID != res.EventIDs[i] ||
			r.StreamID != "order-1" || r.Type != "order_placed" || r.RecordedAt.IsZero() || len(r.Payload) == 0 {
			t.Fatalf("hook record %d: %+v", i, r)
		}
	}
	if seen[0][1].Position != res.LastPosition {
		t.Fatalf("hook's last position %v, result %v", seen[0][1].Position, res.LastPosition)
	}

	_, err = b.store.Append(ctx, "order-2", eventstore.NoStream, []eventstore.Event{placed("refuse", 1)})
	if !errors.Is(err, errRefused) {
		t.Fatalf("Append with failing hook: %v, want the hook's error", err)
	}
	if n := b.countRows(t, "order-2"); n != 0 {
		t.Fatalf("failed hook left %d events", n)
	}
	var projected int
	if err := b.db.GetContext(ctx, &projected, `SELECT count(*) FROM `+table); err != nil || projected != 2 {
		t.Fatalf("projection rows: %d, %v; want only the first append's 2", projected, err)
	}

	// Hooks run for AppendTx too, in the caller's transaction.
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := b.store.AppendTx(ctx, tx, "order-3", eventstore.NoStream, []eventstore.Event{placed("3", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 {
		t.Fatalf("hook calls: %d, want 3", len(seen))
	}
	if err := b.db.GetContext(ctx, &projected, `SELECT count(*) FROM `+table); err != nil || projected != 2 {
		t.Fatalf("projection rows after rolled-back AppendTx: %d, %v", projected, err)
	}
}

func TestAppendRefusesBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	type unregistered struct{ X int }
	cases := []struct {
		name   string
		stream string
		events []eventstore.Event
		target error
	}{
		{"empty stream", "", items(1), eventstore.ErrInvalidStreamID},
		{"control char", "order-\x01", items(1), eventstore.ErrInvalidStreamID},
		{"too long", "order-" + strings.Repeat("x", 300), items(1), eventstore.ErrInvalidStreamID},
		{"no events", "order-1", nil, eventstore.ErrInvalidArgument},
		{"unregistered", "order-1", []eventstore.Event{{Data: unregistered{1}}}, eventstore.ErrUnknownEventType},
		{"NUL in payload", "order-1", []eventstore.Event{placed("a\x00b", 1)}, eventstore.ErrMalformedPayload},
		{"NUL in second of many", "order-1", append(items(80), placed("\x00", 1)), eventstore.ErrMalformedPayload},
		{"NUL in metadata", "order-1", []eventstore.Event{{Data: ItemAdded{}, Metadata: eventstore.Metadata{Actor: "a\x00"}}}, eventstore.ErrInvalidArgument},
	}
	for _, tc := range cases {
		_, err := b.store.Append(ctx, tc.stream, eventstore.Any, tc.events)
		if !errors.Is(err, tc.target) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.target)
		}
	}
	var pe *eventstore.PayloadError
	if _, err := b.store.Append(ctx, "order-1", eventstore.Any, []eventstore.Event{placed("\x00", 1)}); !errors.As(err, &pe) || pe.Type != "order_placed" {
		t.Errorf("NUL payload: %v, want a *PayloadError naming order_placed", err)
	}
	if n := b.countRows(t, "order-1"); n != 0 {
		t.Fatalf("bad input wrote %d rows", n)
	}

	// A duplicate event ID is refused and nothing of its append is written.
	id := uuid.Must(uuid.NewV7())
	if _, err := b.store.Append(ctx, "order-dup", eventstore.NoStream, []eventstore.Event{{ID: id, Data: ItemAdded{}}}); err != nil {
		t.Fatal(err)
	}
	_, err := b.store.Append(ctx, "order-dup2", eventstore.NoStream, []eventstore.Event{{Data: ItemAdded{}}, {ID: id, Data: ItemAdded{}}})
	if !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("duplicate event id: %v, want ErrInvalidArgument", err)
	}
	if n := b.countRows(t, "order-dup2"); n != 0 {
		t.Fatalf("duplicate id append wrote %d rows", n)
	}
}

// TestBinaryParameters runs appends and reads through a pool whose DSN has
// binary_parameters=yes, where lib/pq sends []byte in binary format.
func TestBinaryParameters(t *testing.T) {
	t.Parallel()
	url := pgtest.DatabaseURL()
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	db, err := sqlx.Open("postgres", url+sep+"binary_parameters=yes")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b := setupOn(t, db, postgres.Config{})
	ctx := testCtx(t)
	for _, n := range []int{1, 10, 100} {
		stream := fmt.Sprintf("order-%d", n)
		if _, err := b.store.Append(ctx, stream, eventstore.NoStream, items(n)); err != nil {
			t.Fatalf("Append %d: %v", n, err)
		}
		recs := b.readStream(t, stream, 1)
		if len(recs) != n || recs[n-1].Data.(ItemAdded).N != n-1 {
			t.Fatalf("read back %d records", len(recs))
		}
	}
	if _, err := b.store.Append(ctx, "order-nul", eventstore.Any, []eventstore.Event{placed("\x00", 1)}); !errors.Is(err, eventstore.ErrMalformedPayload) {
		t.Fatalf("NUL payload: %v", err)
	}
	if err := b.store.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: "order-1", Version: 1, Type: "s", Payload: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	if s, err := b.store.LoadSnapshot(ctx, "order-1"); err != nil || string(s.Payload) != `{"a":1}` {
		t.Fatalf("snapshot: %+v, %v", s, err)
	}
	if recs := b.drainFeed(t, eventstore.Position{}, 50, 111); len(recs) != 111 {
		t.Fatalf("feed has %d records, want 111", len(recs))
	}
}

func TestSubscribeWakesAfterAppend(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	ch, cancel := b.store.Subscribe()
	other, cancelOther := b.store.Subscribe()
	cancelOther()
	cancelOther() // safe twice
	// Nobody reads: appends must not block on a full channel.
	for i := range 3 {
		if _, err := b.store.Append(ctx, "order-1", eventstore.Exact(int64(i)), items(1)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("no wake-up after Append")
	}
	select {
	case <-other:
		t.Fatal("cancelled subscription was woken")
	default:
	}
	cancel()
	if _, err := b.store.Append(ctx, "order-1", eventstore.Exact(3), items(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("woken after cancel")
	default:
	}
}

// TestAppendTxStricterIsolation: in a REPEATABLE READ or SERIALIZABLE
// transaction whose snapshot predates another append to the stream, the
// append does not see that event, collides with it on (stream_id,
// stream_version), and is refused as a conflict with the actual version.
func TestAppendTxStricterIsolation(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	for _, iso := range []sql.IsolationLevel{sql.LevelRepeatableRead, sql.LevelSerializable} {
		stream := fmt.Sprintf("order-iso%d", iso)
		tx, err := b.db.BeginTxx(ctx, &sql.TxOptions{Isolation: iso})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `SELECT 1`); err != nil { // takes the snapshot
			t.Fatal(err)
		}
		if _, err := b.store.Append(ctx, stream, eventstore.NoStream, items(1)); err != nil {
			t.Fatal(err)
		}
		_, err = b.store.AppendTx(ctx, tx, stream, eventstore.NoStream, items(1))
		var ce *eventstore.ConcurrencyError
		if !errors.As(err, &ce) || ce.Actual != 1 || ce.StreamID != stream {
			t.Fatalf("%s: %v, want a conflict with actual version 1", iso, err)
		}
		_ = tx.Rollback()
		if n := b.countRows(t, stream); n != 1 {
			t.Fatalf("%s: %d rows", iso, n)
		}
	}
}

// TestLookupEvents reads events by ID: decoded, in the order asked, stored
// IDs only, each once; too many IDs are refused.
func TestLookupEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	res, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 10), placed("1", 11), placed("1", 12)})
	if err != nil {
		t.Fatal(err)
	}
	ids := res.EventIDs
	recs, err := b.store.LookupEvents(ctx, []uuid.UUID{ids[2], uuid.Must(uuid.NewV7()), ids[0], ids[2]})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].ID != ids[2] || recs[1].ID != ids[0] || recs[0].StreamVersion != 3 || recs[1].StreamID != "order-1" ||
		recs[0].Data != (OrderPlaced{OrderID: "1", Amount: 12}) || recs[0].Position != res.LastPosition {
		t.Fatalf("LookupEvents = %+v, want versions 3 and 1 of order-1, decoded", recs)
	}
	if recs, err := b.store.LookupEvents(ctx, nil); err != nil || len(recs) != 0 {
		t.Fatalf("LookupEvents(nil) = %v, %v", recs, err)
	}
	if _, err := b.store.LookupEvents(ctx, make([]uuid.UUID, eventstore.MaxReadAllLimit+1)); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("LookupEvents of too many IDs: %v", err)
	}
	if _, _, err := b.store.SettleAppend(ctx, "order-1", nil); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("SettleAppend without IDs: %v", err)
	}
	if _, _, err := b.store.SettleAppend(ctx, "", ids); !errors.Is(err, eventstore.ErrInvalidStreamID) {
		t.Fatalf("SettleAppend of an invalid stream ID: %v", err)
	}
	// SettleAppend answers for the whole append only.
	for _, tc := range []struct {
		stream string
		ids    []uuid.UUID
		want   bool
	}{
		{"order-1", ids, true},
		{"order-1", ids[:2], false},
		{"order-1", []uuid.UUID{ids[1], ids[0], ids[2]}, false},
		{"order-2", ids, false},
	} {
		got, written, err := b.store.SettleAppend(ctx, tc.stream, tc.ids)
		if err != nil || written != tc.want {
			t.Fatalf("SettleAppend(%s, %v) = %v, %v; want %v", tc.stream, tc.ids, written, err, tc.want)
		}
		if written && (got.FirstVersion != 1 || got.LastVersion != 3 || got.LastPosition != res.LastPosition) {
			t.Fatalf("SettleAppend result %+v, want %+v", got, res)
		}
	}
}
