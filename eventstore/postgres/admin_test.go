package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

// rawStore returns a store on b's schema with an empty registry: what the
// esox command has.
func (b *bundle) rawStore(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.New(b.db, eventstore.NewRegistry(), postgres.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func streamIDs(ss []postgres.StreamSummary) string {
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.StreamID
	}
	return strings.Join(ids, " ")
}

// TestListStreams: streams in ID order with version and last time, paged
// with After, filtered by category (a stream ID without '-' is its own
// category; "orders-1" and "order!x" are not in "order"), under a
// collation that sorts by bytes (where a category is one index range) and
// under one that does not (ICU's root collation, where the command walks
// on past the category).
func TestListStreams(t *testing.T) {
	t.Parallel()
	for _, collation := range []string{"C", "und-x-icu"} {
		t.Run(collation, func(t *testing.T) {
			t.Parallel()
			b := setup(t, postgres.Config{})
			ctx := testCtx(t)
			var exists bool
			if err := b.db.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = $1)`, collation); err != nil {
				t.Fatal(err)
			}
			if !exists {
				t.Skipf("the server has no collation %q (PostgreSQL built without ICU)", collation)
			}
			if _, err := b.db.ExecContext(ctx, `ALTER TABLE `+b.store.QualifiedEventsTable()+` ALTER COLUMN stream_id TYPE text COLLATE "`+collation+`"`); err != nil {
				t.Fatal(err)
			}
			for _, s := range []struct {
				id string
				n  int
			}{{"order-2", 3}, {"order-1", 1}, {"order", 2}, {"orders-1", 1}, {"order!x", 1}, {"a_b-1", 1}, {"axb-1", 1}, {"cart-9", 2}, {"zeta-1", 1}} {
				if _, err := b.store.Append(ctx, s.id, eventstore.Any, items(s.n)); err != nil {
					t.Fatal(err)
				}
			}
			var sorted []string
			if err := b.db.SelectContext(ctx, &sorted, `SELECT DISTINCT stream_id FROM `+b.store.QualifiedEventsTable()+` ORDER BY stream_id`); err != nil {
				t.Fatal(err)
			}
			rs := b.rawStore(t)
			all, err := rs.ListStreams(ctx, postgres.ListStreamsParams{})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := streamIDs(all), strings.Join(sorted, " "); got != want {
				t.Fatalf("ListStreams = %s, want %s", got, want)
			}
			byID := map[string]postgres.StreamSummary{}
			for _, s := range all {
				byID[s.StreamID] = s
			}
			if byID["order-2"].Version != 3 || byID["order-1"].Version != 1 || byID["order-2"].LastRecordedAt.IsZero() {
				t.Fatalf("order-2, order-1: %+v, %+v", byID["order-2"], byID["order-1"])
			}
			page, err := rs.ListStreams(ctx, postgres.ListStreamsParams{Limit: 2, After: sorted[1]})
			if err != nil || streamIDs(page) != strings.Join(sorted[2:4], " ") {
				t.Fatalf("page after %s = %s, %v", sorted[1], streamIDs(page), err)
			}
			for cat, want := range map[string]string{"order": "order order-1 order-2", "a_b": "a_b-1", "cart": "cart-9", "zeta": "zeta-1", "nope": "", "ord": ""} {
				got, err := rs.ListStreams(ctx, postgres.ListStreamsParams{Category: cat})
				if err != nil || streamIDs(got) != want {
					t.Errorf("category %s = %q, %v; want %q", cat, streamIDs(got), err, want)
				}
			}
			got, err := rs.ListStreams(ctx, postgres.ListStreamsParams{Category: "order", After: "order", Limit: 1})
			if err != nil || streamIDs(got) != "order-1" {
				t.Fatalf("category page = %s, %v", streamIDs(got), err)
			}
			for _, p := range []postgres.ListStreamsParams{{Category: "order-1"}, {Limit: -1}, {Limit: eventstore.MaxReadAllLimit + 1}} {
				if _, err := rs.ListStreams(ctx, p); !errors.Is(err, eventstore.ErrInvalidArgument) {
					t.Errorf("ListStreams(%+v) = %v, want ErrInvalidArgument", p, err)
				}
			}
		})
	}
}

// TestRawReadsNeedNoRegistry: ReadStreamRaw and LookupRawEvents return
// events whose types the store has not registered, payloads and metadata
// as stored; the decoding reads refuse them.
func TestRawReadsNeedNoRegistry(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := eventstore.WithMetadata(testCtx(t), eventstore.Metadata{CorrelationID: "corr-1"})
	res, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 10), placed("1", 20), placed("1", 30)})
	if err != nil {
		t.Fatal(err)
	}
	rs := b.rawStore(t)
	if _, err := rs.LookupEvents(ctx, res.EventIDs); !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Fatalf("LookupEvents without the types = %v, want ErrUnknownEventType", err)
	}

	recs, err := rs.ReadStreamRaw(ctx, "order-1", 2, 10)
	if err != nil || len(recs) != 2 {
		t.Fatalf("ReadStreamRaw from 2 = %d records, %v", len(recs), err)
	}
	r := recs[0]
	var payload OrderPlaced
	if err := json.Unmarshal(r.Payload, &payload); err != nil || payload.Amount != 20 || r.StreamVersion != 2 || r.Type != "order_placed" || r.ID != res.EventIDs[1] || r.StreamID != "order-1" {
		t.Fatalf("ReadStreamRaw record = %+v (%s)", r, r.Payload)
	}
	if !strings.Contains(string(r.Metadata), "corr-1") {
		t.Fatalf("metadata = %s, want the correlation ID", r.Metadata)
	}
	if recs, err := rs.ReadStreamRaw(ctx, "order-1", 0, 1); err != nil || len(recs) != 1 || recs[0].StreamVersion != 1 {
		t.Fatalf("ReadStreamRaw limit 1 = %+v, %v", recs, err)
	}
	if recs, err := rs.ReadStreamRaw(ctx, "order-404", 0, 10); err != nil || len(recs) != 0 {
		t.Fatalf("ReadStreamRaw of a missing stream = %+v, %v", recs, err)
	}
	if _, err := rs.ReadStreamRaw(ctx, "", 0, 10); !errors.Is(err, eventstore.ErrInvalidStreamID) {
		t.Fatalf("ReadStreamRaw of an empty ID = %v", err)
	}
	if _, err := rs.ReadStreamRaw(ctx, "order-1", 0, 0); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("ReadStreamRaw limit 0 = %v", err)
	}

	missing := uuid.Must(uuid.NewV7())
	got, err := rs.LookupRawEvents(ctx, []uuid.UUID{res.EventIDs[2], missing, res.EventIDs[0], res.EventIDs[2]})
	if err != nil || len(got) != 2 || got[0].ID != res.EventIDs[2] || got[1].ID != res.EventIDs[0] {
		t.Fatalf("LookupRawEvents = %+v, %v; want events 3 and 1, in the order asked, once each", got, err)
	}
	if got[0].Position != res.LastPosition || !strings.Contains(string(got[0].Payload), "30") {
		t.Fatalf("LookupRawEvents record = %+v", got[0])
	}
	if got, err := rs.LookupRawEvents(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("LookupRawEvents(nil) = %v, %v", got, err)
	}
	if _, err := rs.LookupRawEvents(ctx, make([]uuid.UUID, eventstore.MaxReadAllLimit+1)); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("LookupRawEvents with too many IDs = %v", err)
	}
}

// TestFollowFeed: FollowFeed yields what the feed holds after the given
// position, then events appended later by another store (which does not
// wake it: it polls), in feed order; it ends without an error when ctx
// ends, and when the loop breaks.
func TestFollowFeed(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	first, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 1), placed("1", 2)})
	if err != nil {
		t.Fatal(err)
	}
	rs := b.rawStore(t)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type item struct {
		rec eventstore.RawRecord
		err error
	}
	got := make(chan item, 100)
	done := make(chan struct{})
	after := eventstore.Position{TransactionID: first.LastPosition.TransactionID, Position: first.LastPosition.Position - 1}
	go func() {
		defer close(done)
		for rec, err := range rs.FollowFeed(fctx, after, &postgres.FollowFeedOpts{BatchSize: 2, PollInterval: 20 * time.Millisecond}) {
			got <- item{rec, err}
		}
	}()
	next := func() eventstore.RawRecord {
		t.Helper()
		select {
		case it := <-got:
			if it.err != nil {
				t.Fatalf("FollowFeed: %v", it.err)
			}
			return it.rec
		case <-time.After(30 * time.Second):
			t.Fatal("FollowFeed yielded nothing")
		}
		return eventstore.RawRecord{}
	}
	if r := next(); r.ID != first.EventIDs[1] {
		t.Fatalf("first record = %+v, want the second event (after the first)", r)
	}
	// Appends through another store do not wake rs: it finds them by
	// polling, in feed order.
	later, err := b.store.Append(ctx, "order-2", eventstore.NoStream, []eventstore.Event{placed("2", 1), placed("2", 2), placed("2", 3)})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range later.EventIDs {
		if r := next(); r.ID != id {
			t.Fatalf("record %d after the append = %+v, want %s", i, r, id)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("FollowFeed did not end with its ctx")
	}
	close(got)
	for it := range got {
		t.Fatalf("FollowFeed yielded %+v after the last event", it)
	}

	// Breaking out of the loop ends it.
	n := 0
	for _, err := range rs.FollowFeed(ctx, eventstore.Position{}, nil) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 3 {
			break
		}
	}
	for _, err := range rs.FollowFeed(ctx, eventstore.Position{}, &postgres.FollowFeedOpts{PollInterval: -1}) {
		if !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Fatalf("negative PollInterval: %v", err)
		}
	}
}

// TestLockHeld: LockHeld sees a session advisory lock held by another
// session, and not once it is released.
func TestLockHeld(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	name := "esox:test:" + uuid.NewString()
	if held, err := postgres.LockHeld(ctx, db, name); err != nil || held {
		t.Fatalf("LockHeld before locking = %v, %v", held, err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, postgres.LockKey(name)); err != nil {
		t.Fatal(err)
	}
	if held, err := postgres.LockHeld(ctx, db, name); err != nil || !held {
		t.Fatalf("LockHeld while locked = %v, %v", held, err)
	}
	if held, err := postgres.LockHeld(ctx, db, name+"x"); err != nil || held {
		t.Fatalf("LockHeld of another name = %v, %v", held, err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, postgres.LockKey(name)); err != nil {
		t.Fatal(err)
	}
	if held, err := postgres.LockHeld(ctx, db, name); err != nil || held {
		t.Fatalf("LockHeld after unlocking = %v, %v", held, err)
	}
}
