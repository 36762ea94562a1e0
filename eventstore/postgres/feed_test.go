package postgres_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// TestReadAllWaitsForOlderOpenTransaction is guarantee 2 in docs/guarantees.md: while
// transaction A, which appended first, is open, a reader polling ReadAll
// does not see the event of transaction B that committed later (reading it
// would move the reader's checkpoint past A's event, which then commits
// with a smaller position and is skipped). Once A commits, the reader sees
// both, A's first.
func TestReadAllWaitsForOlderOpenTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)

	txA, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback()
	resA, err := b.store.AppendTx(ctx, txA, "order-a", eventstore.NoStream, []eventstore.Event{placed("a", 1)})
	if err != nil {
		t.Fatal(err)
	}
	resB, err := b.store.Append(ctx, "order-b", eventstore.NoStream, []eventstore.Event{placed("b", 2)})
	if err != nil {
		t.Fatal(err)
	}
	if !resA.LastPosition.Less(resB.LastPosition) || resA.LastPosition.Position >= resB.LastPosition.Position {
		t.Fatalf("positions: A %v, B %v; want A before B", resA.LastPosition, resB.LastPosition)
	}
	// B is committed: a plain SELECT sees it.
	var committed int
	if err := b.db.GetContext(ctx, &committed, `SELECT count(*) FROM `+b.store.QualifiedEventsTable()); err != nil || committed != 1 {
		t.Fatalf("committed rows: %d, %v", committed, err)
	}
	for range 50 {
		recs, err := b.store.ReadAll(ctx, eventstore.Position{}, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 0 {
			t.Fatalf("ReadAll returned %v while the older transaction A is open", recs[0].Position)
		}
		head, err := b.store.Head(ctx)
		if err != nil || !head.IsZero() {
			t.Fatalf("Head while A is open: %v, %v", head, err)
		}
	}
	if err := txA.Commit(); err != nil {
		t.Fatal(err)
	}
	var recs []eventstore.Record
	testwait.Until(t, "both events in the feed", func() bool {
		recs, err = b.store.ReadAll(ctx, eventstore.Position{}, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(recs) == 2
	})
	if recs[0].ID != resA.EventIDs[0] || recs[1].ID != resB.EventIDs[0] {
		t.Fatalf("feed order: %v, %v; want A then B", recs[0].StreamID, recs[1].StreamID)
	}
	if recs[0].Position != resA.LastPosition || recs[1].Position != resB.LastPosition {
		t.Fatalf("feed positions %v %v, append results %v %v", recs[0].Position, recs[1].Position, resA.LastPosition, resB.LastPosition)
	}
	head, err := b.store.Head(ctx)
	if err != nil || head != resB.LastPosition {
		t.Fatalf("Head after both: %v, %v; want %v", head, err, resB.LastPosition)
	}
}

// TestFeedUnderConcurrentWritersWithRollbacks is guarantees 2 and 3 of
// docs/guarantees.md under load: 16 writers append to random streams (autocommit Appends,
// AppendTx committed, AppendTx in transactions that took their id early,
// and about 20% AppendTx rolled back) while a reader tails the feed. The
// tailing reader and a final read from zero in pages of 1,000 each return
// every committed event exactly once, no rolled-back one, every stream in
// version order without gaps.
//
// It runs once per supported driver (lib/pq and pgx), 6 s each.
func TestFeedUnderConcurrentWritersWithRollbacks(t *testing.T) {
	t.Parallel()
	for _, driver := range pgtest.Drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			feedUnderConcurrentWriters(t, pgtest.OpenDriver(t, driver))
		})
	}
}

func feedUnderConcurrentWriters(t *testing.T, db *sqlx.DB) {
	duration := 6 * time.Second
	if testing.Short() {
		duration = 2 * time.Second
	}
	b := setupOn(t, db, postgres.Config{})
	ctx := testCtx(t)
	const (
		writers = 16
		streams = 40
	)

	var (
		mu         sync.Mutex
		committed  = map[uuid.UUID]string{} // event ID -> stream
		rolledBack = map[uuid.UUID]bool{}
		conflicts  atomic.Int64
		orderRefs  atomic.Int64
	)
	record := func(ids []uuid.UUID, stream string, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if ok {
				committed[id] = stream
			} else {
				rolledBack[id] = true
			}
		}
	}
	// appendErr accepts conflicts, which racing writers produce, and
	// reports anything else.
	appendErr := func(err error) bool {
		var ce *eventstore.ConcurrencyError
		if errors.As(err, &ce) {
			conflicts.Add(1)
			if ce.Reason != "" {
				orderRefs.Add(1)
			}
			return true
		}
		t.Errorf("append: %v", err)
		return false
	}

	// The tailing reader: resumes from its last position, woken by
	// Subscribe or a short poll.
	type seenEvent struct {
		stream  string
		version int64
	}
	var (
		tailMu   sync.Mutex
		tailSeen = map[uuid.UUID]seenEvent{}
		tailErr  error
	)
	stopTail := make(chan struct{})
	var tailWG sync.WaitGroup
	wake, unsubscribe := b.store.Subscribe()
	defer unsubscribe()
	tailWG.Go(func() {
		var pos eventstore.Position
		last := map[string]int64{}
		fail := func(err error) {
			tailMu.Lock()
			tailErr = err
			tailMu.Unlock()
		}
		for {
			recs, err := b.store.ReadAll(ctx, pos, 500)
			if err != nil {
				fail(err)
				return
			}
			tailMu.Lock()
			for _, r := range recs {
				if _, dup := tailSeen[r.ID]; dup {
					tailMu.Unlock()
					fail(fmt.Errorf("event %s at %v seen twice", r.ID, r.Position))
					return
				}
				if r.StreamVersion != last[r.StreamID]+1 {
					tailMu.Unlock()
					fail(fmt.Errorf("stream %s: version %d at %v follows version %d", r.StreamID, r.StreamVersion, r.Position, last[r.StreamID]))
					return
				}
				if !pos.Less(r.Position) {
					tailMu.Unlock()
					fail(fmt.Errorf("position %v does not follow %v", r.Position, pos))
					return
				}
				last[r.StreamID] = r.StreamVersion
				tailSeen[r.ID] = seenEvent{r.StreamID, r.StreamVersion}
				pos = r.Position
			}
			tailMu.Unlock()
			if len(recs) > 0 {
				continue
			}
			select {
			case <-stopTail:
				return
			case <-wake:
			case <-time.After(10 * time.Millisecond):
			}
		}
	})

	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for time.Now().Before(deadline) && ctx.Err() == nil {
				stream := fmt.Sprintf("order-%d", rng.IntN(streams))
				evs := items(1 + rng.IntN(3))
				switch p := rng.IntN(100); {
				case p < 20, p < 45: // AppendTx, rolled back (20%) or committed
					tx, err := b.db.BeginTxx(ctx, nil)
					if err != nil {
						t.Errorf("begin: %v", err)
						return
					}
					if p%2 == 0 {
						// Take the transaction id early: a writer that appends
						// to the stream meanwhile makes this append refused.
						if _, err := tx.ExecContext(ctx, `SELECT pg_current_xact_id()`); err != nil {
							t.Errorf("xid: %v", err)
							_ = tx.Rollback()
							return
						}
					}
					res, err := b.store.AppendTx(ctx, tx, stream, eventstore.Any, evs)
					if err != nil {
						_ = tx.Rollback()
						if !appendErr(err) {
							return
						}
						continue
					}
					if p < 20 {
						if err := tx.Rollback(); err != nil {
							t.Errorf("rollback: %v", err)
							return
						}
						record(res.EventIDs, stream, false)
						continue
					}
					if err := tx.Commit(); err != nil {
						t.Errorf("commit: %v", err)
						return
					}
					record(res.EventIDs, stream, true)
				default:
					info, err := b.store.StreamInfo(ctx, stream)
					if err != nil {
						t.Errorf("StreamInfo: %v", err)
						return
					}
					expected := eventstore.Exact(info.Version)
					if p < 60 {
						expected = eventstore.Any
					}
					res, err := b.store.Append(ctx, stream, expected, evs)
					if err != nil {
						if !appendErr(err) {
							return
						}
						continue
					}
					record(res.EventIDs, stream, true)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		close(stopTail)
		tailWG.Wait()
		return
	}
	testwait.Until(t, "the tailing reader to reach every committed event", func() bool {
		tailMu.Lock()
		defer tailMu.Unlock()
		return tailErr != nil || len(tailSeen) >= len(committed)
	})
	close(stopTail)
	tailWG.Wait()
	if tailErr != nil {
		t.Fatalf("tailing reader: %v", tailErr)
	}
	t.Logf("%d events committed, %d rolled back, %d conflicts (%d refused to keep stream order)", len(committed), len(rolledBack), conflicts.Load(), orderRefs.Load())
	if len(committed) == 0 || len(rolledBack) == 0 {
		t.Fatalf("the test wrote %d committed and %d rolled-back events; want both", len(committed), len(rolledBack))
	}
	check := func(who string, seen map[uuid.UUID]seenEvent) {
		t.Helper()
		for id, e := range seen {
			if rolledBack[id] {
				t.Fatalf("%s: rolled-back event %s (%s v%d) in the feed", who, id, e.stream, e.version)
			}
			if committed[id] != e.stream {
				t.Fatalf("%s: event %s of %s in the feed but not committed by a writer", who, id, e.stream)
			}
		}
		if len(seen) != len(committed) {
			t.Fatalf("%s: %d events in the feed, %d committed", who, len(seen), len(committed))
		}
	}
	check("tailing reader", tailSeen)

	// ReadAll from zero in pages of 1,000.
	all := map[uuid.UUID]seenEvent{}
	last := map[string]int64{}
	for _, r := range b.drainFeed(t, eventstore.Position{}, 1000, len(committed)) {
		if _, dup := all[r.ID]; dup {
			t.Fatalf("event %s twice in the feed", r.ID)
		}
		if r.StreamVersion != last[r.StreamID]+1 {
			t.Fatalf("stream %s: version %d follows %d in the feed", r.StreamID, r.StreamVersion, last[r.StreamID])
		}
		last[r.StreamID] = r.StreamVersion
		all[r.ID] = seenEvent{r.StreamID, r.StreamVersion}
	}
	check("read from zero", all)
}
