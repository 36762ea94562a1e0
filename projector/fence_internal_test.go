package projector

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

type note struct {
	N int `json:"n"`
}

// TestFenceRefusesAStaleCheckpoint proves the second layer of "exactly one
// worker": a worker whose checkpoint is stale (another worker or a Rebuild
// moved it) applies nothing, even if leadership briefly overlapped.
func TestFenceRefusesAStaleCheckpoint(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[note](reg, "note")
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	applied := 0
	p := Projection{Name: "count", Handler: Batch(func(ctx context.Context, tx *sqlx.Tx, recs []eventstore.Record) error {
		applied += len(recs)
		return nil
	})}
	r, err := NewRunner(store, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := store.Append(ctx, "note-1", eventstore.Any, []eventstore.Event{{Data: note{i}}}); err != nil {
			t.Fatal(err)
		}
	}
	w := r.workers[0]
	var raws []rawRecord
	for len(raws) < 3 {
		if raws, err = r.readFeed(ctx, eventstore.Position{}, 10); err != nil {
			t.Fatal(err)
		}
	}
	// Two workers both loaded the checkpoint at zero; the first applies.
	cp, err := w.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, err := w.apply(ctx, cp, raws[:2], false, false)
	if err != nil || next.pos != raws[1].pos || applied != 2 {
		t.Fatalf("first apply: %v, %s, applied %d", err, next.pos, applied)
	}
	// The second, with the stale checkpoint, is refused and applies nothing.
	if _, err := w.apply(ctx, cp, raws, false, false); !errors.Is(err, errFenced) {
		t.Fatalf("stale apply = %v, want errFenced", err)
	}
	if got, _ := w.load(ctx); got.pos != raws[1].pos {
		t.Fatalf("checkpoint after the refused apply = %s", got.pos)
	}
	// Resuming from the stored checkpoint works.
	if _, err := w.apply(ctx, next, raws[2:], true, false); err != nil {
		t.Fatal(err)
	}
}

func TestConfigAndProjectionValidation(t *testing.T) {
	t.Parallel()
	reg := eventstore.NewRegistry()
	db, _ := sqlx.Open("postgres", pgtest.DatabaseURL())
	t.Cleanup(func() { db.Close() })
	store, err := postgres.New(db, reg, postgres.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ok := Projection{Name: "p", Handler: Batch(func(context.Context, *sqlx.Tx, []eventstore.Record) error { return nil })}
	bad := []struct {
		name string
		cfg  Config
		ps   []Projection
	}{
		{"BatchSize", Config{BatchSize: eventstore.MaxReadAllLimit + 1}, []Projection{ok}},
		{"PollInterval", Config{PollInterval: -1}, []Projection{ok}},
		{"MaxRetries", Config{MaxRetries: -1}, []Projection{ok}},
		{"projections", Config{}, nil},
		{"projection name", Config{}, []Projection{{Name: "bad name", Handler: ok.Handler}}},
		{"Handler", Config{}, []Projection{{Name: "p"}}},
		{"Version", Config{}, []Projection{{Name: "p", Version: -1, Handler: ok.Handler}}},
		{"given twice", Config{}, []Projection{ok, ok}},
		{"not registered", Config{}, []Projection{{Name: "p", Handler: On(NewHandlers(reg), func(context.Context, *sqlx.Tx, eventstore.Record, note) error { return nil })}}},
	}
	for _, c := range bad {
		if _, err := NewRunner(store, c.cfg, c.ps...); err == nil {
			t.Errorf("%s: NewRunner accepted it", c.name)
		} else if !errors.Is(err, eventstore.ErrInvalidArgument) && !errors.Is(err, eventstore.ErrUnknownEventType) {
			t.Errorf("%s: %v does not match ErrInvalidArgument", c.name, err)
		}
	}
	// Two versions of one projection are fine.
	v2 := ok
	v2.Version = 2
	if _, err := NewRunner(store, Config{}, ok, v2); err != nil {
		t.Fatal(err)
	}
	if got := backoff(Config{RetryBackoff: 10, MaxRetryBackoff: 50}, 5); got != 50 {
		t.Fatalf("backoff capped = %d", got)
	}
}

// TestFeedQueryIsAnIndexRangeScan pins what keeps a poll's cost independent
// of how far behind a projection is: the feed query walks the events
// table's primary key from the checkpoint and stops at the batch size, with
// no sort of everything after the checkpoint (which selecting
// transaction_id::text under its own name once caused).
func TestFeedQueryIsAnIndexRangeScan(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	store, err := postgres.New(db, eventstore.NewRegistry(), postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off`); err != nil {
		t.Fatal(err)
	}
	var plan []string
	if err := tx.SelectContext(ctx, &plan, `EXPLAIN `+feedSQL(store.QualifiedEventsTable()), "5", 3, 100); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(plan, "\n")
	if strings.Contains(joined, "Sort") || !strings.Contains(joined, "Index Scan") || !strings.Contains(joined, "Limit") {
		t.Fatalf("the feed query is not a limited primary-key range scan:\n%s", joined)
	}
}
