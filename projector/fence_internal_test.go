package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
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
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema})
	ctx := context.Background()
	applied := 0
	p := Projection{Name: "count", Handler: Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		applied += len(recs)
		return nil
	})}
	r, err := NewRunner(store, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := store.Append(ctx, "note-1", eventstore.Any, []eventstore.Event{{Data: note{i}}}); err != nil {
			t.Fatal(err)
		}
	}
	w := r.workers[0]
	var raws []eventstore.RawRecord
	for len(raws) < 3 {
		if raws, err = r.store.ReadFeed(ctx, eventstore.Position{}, 10); err != nil {
			t.Fatal(err)
		}
	}
	// Two workers both loaded the checkpoint at zero; the first applies.
	cp, err := w.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, err := w.apply(ctx, cp, raws[:2], false, false)
	if err != nil || next.pos != raws[1].Position || applied != 2 {
		t.Fatalf("first apply: %v, %s, applied %d", err, next.pos, applied)
	}
	// The second, with the stale checkpoint, is refused and applies nothing.
	if _, err := w.apply(ctx, cp, raws, false, false); !errors.Is(err, errFenced) {
		t.Fatalf("stale apply = %v, want errFenced", err)
	}
	if got, _ := w.load(ctx); got.pos != raws[1].Position {
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
	ok := Projection{Name: "p", Handler: Batch(func(context.Context, postgres.Tx, []eventstore.Record) error { return nil })}
	bad := []struct {
		name string
		cfg  Config
		ps   []Projection
	}{
		{"BatchSize", Config{BatchSize: eventstore.MaxReadAllLimit + 1}, []Projection{ok}},
		{"PollInterval", Config{PollInterval: -1}, []Projection{ok}},
		{"MaxRetries", Config{MaxRetries: -1}, []Projection{ok}},
		{"IdleInTransactionTimeout", Config{IdleInTransactionTimeout: -1}, []Projection{ok}},
		{"projections", Config{}, nil},
		{"projection name", Config{}, []Projection{{Name: "bad name", Handler: ok.Handler}}},
		{"Handler", Config{}, []Projection{{Name: "p"}}},
		{"Version", Config{}, []Projection{{Name: "p", Version: -1, Handler: ok.Handler}}},
		{"given twice", Config{}, []Projection{ok, ok}},
		{"not registered", Config{}, []Projection{{Name: "p", Handler: On(NewHandlers(reg), func(context.Context, postgres.Tx, eventstore.Record, note) error { return nil })}}},
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

// fencedRunner makes a migrated store and runner in a fresh schema with one
// projection p (its registry from reg), for the white-box tests below.
func fencedRunner(t *testing.T, reg *eventstore.Registry, cfg Config, p Projection) (*Runner, *postgres.Store, *sqlx.DB) {
	t.Helper()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema})
	ctx := context.Background()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := NewRunner(store, cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return r, store, db
}

// readAll waits until the feed shows n records and returns them.
func readAll(t *testing.T, r *Runner, n int) []eventstore.RawRecord {
	t.Helper()
	var raws []eventstore.RawRecord
	testwait.Until(t, fmt.Sprintf("the feed to show %d records", n), func() bool {
		var err error
		if raws, err = r.store.ReadFeed(context.Background(), eventstore.Position{}, 100); err != nil {
			t.Fatal(err)
		}
		return len(raws) >= n
	})
	return raws
}

// TestStopIsFenced: a deposed leader whose handler failed must not mark the
// projection stopped once the new leader has moved the checkpoint: the
// stop's update is fenced on the checkpoint like a batch.
func TestStopIsFenced(t *testing.T) {
	t.Parallel()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[note](reg, "note")
	p := Projection{Name: "count", Handler: Batch(func(context.Context, postgres.Tx, []eventstore.Record) error { return nil })}
	r, store, _ := fencedRunner(t, reg, Config{}, p)
	ctx := context.Background()
	for i := range 2 {
		if _, err := store.Append(ctx, "note-1", eventstore.Any, []eventstore.Event{{Data: note{i}}}); err != nil {
			t.Fatal(err)
		}
	}
	raws := readAll(t, r, 2)
	w := r.workers[0]
	stale, err := w.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The "new leader" applies a batch.
	next, err := w.apply(ctx, stale, raws, true, false)
	if err != nil {
		t.Fatal(err)
	}
	// The deposed one, still at the stale checkpoint, gives up on its batch.
	if w.stop(ctx, stale, errors.New("old leader's failure")) {
		t.Fatal("stop with a stale checkpoint reported it stopped the projection")
	}
	if c, err := w.load(ctx); err != nil || c.stopped || c.lastError.Valid {
		t.Fatalf("row after a stale stop: %+v, %v; want not stopped", c, err)
	}
	if _, stopped := w.state(); stopped != nil {
		t.Fatalf("worker stopped in memory after a stale stop: %v", stopped)
	}
	// At the current checkpoint the stop takes.
	if !w.stop(ctx, next, errors.New("current failure")) {
		t.Fatal("stop at the current checkpoint did not stop")
	}
	if c, err := w.load(ctx); err != nil || !c.stopped || c.lastError.String != "current failure" {
		t.Fatalf("row after stop: %+v, %v", c, err)
	}
}

// gatedNote decodes only once its test's gate opens, and says when decoding
// started.
type gatedNote struct {
	N int `json:"n"`
}

// gate holds gatedNote's decoding: decoding receives when it starts, and it
// goes on once open is closed.
type gate struct{ decoding, open chan struct{} }

// gated is the gate of the running TestApplyDecodesBeforeItsTransaction
// (nil: decode at once).
var gated atomic.Pointer[gate]

func (g *gatedNote) UnmarshalJSON(b []byte) error {
	if gt := gated.Load(); gt != nil {
		select {
		case gt.decoding <- struct{}{}:
		default:
		}
		<-gt.open
	}
	var v struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	g.N = v.N
	return nil
}

// TestApplyDecodesBeforeItsTransaction: while a batch's events are being
// decoded, no transaction of the worker holds the checkpoint row (nor a
// transaction id that would hold back the feed).
func TestApplyDecodesBeforeItsTransaction(t *testing.T) {
	t.Parallel()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[gatedNote](reg, "gated")
	gt := &gate{decoding: make(chan struct{}, 1), open: make(chan struct{})}
	gated.Store(gt)
	defer gated.Store(nil)
	applied := 0
	p := Projection{Name: "gated", Handler: On(NewHandlers(reg), func(context.Context, postgres.Tx, eventstore.Record, gatedNote) error {
		applied++
		return nil
	})}
	r, store, db := fencedRunner(t, reg, Config{}, p)
	ctx := context.Background()
	if _, err := store.Append(ctx, "gated-1", eventstore.Any, []eventstore.Event{{Data: gatedNote{1}}}); err != nil {
		t.Fatal(err)
	}
	raws := readAll(t, r, 1)
	w := r.workers[0]
	cp, err := w.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.apply(ctx, cp, raws, true, false)
		done <- err
	}()
	opened := false
	defer func() {
		if !opened {
			close(gt.open)
			<-done
		}
	}()
	select {
	case <-gt.decoding:
	case <-time.After(10 * time.Second):
		t.Fatal("apply did not start decoding")
	}
	// Decoding is blocked: the checkpoint row must be free.
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM `+r.t.checkpoints+` WHERE projection = 'gated' FOR UPDATE NOWAIT`).Scan(&one)
	_ = tx.Rollback()
	if err != nil {
		t.Fatalf("checkpoint row is locked while the batch decodes: %v", err)
	}
	close(gt.open)
	opened = true
	if err := <-done; err != nil || applied != 1 {
		t.Fatalf("apply: %v, applied %d", err, applied)
	}
}

// TestBatchTransactionBoundsIdleTime: each batch transaction sets
// idle_in_transaction_session_timeout, so a process frozen mid-batch does
// not hold its transaction id and the checkpoint row lock forever.
func TestBatchTransactionBoundsIdleTime(t *testing.T) {
	t.Parallel()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[note](reg, "note")
	var got []string
	p := Projection{Name: "count", Handler: Batch(func(ctx context.Context, tx postgres.Tx, _ []eventstore.Record) error {
		var s string
		err := tx.QueryRowContext(ctx, `SELECT current_setting('idle_in_transaction_session_timeout')`).Scan(&s)
		got = append(got, s)
		return err
	})}
	for _, c := range []struct {
		cfg  time.Duration
		want string
	}{{0, "1min"}, {45 * time.Second, "45s"}} {
		r, store, _ := fencedRunner(t, reg, Config{IdleInTransactionTimeout: c.cfg}, p)
		ctx := context.Background()
		if _, err := store.Append(ctx, "note-1", eventstore.Any, []eventstore.Event{{Data: note{1}}}); err != nil {
			t.Fatal(err)
		}
		raws := readAll(t, r, 1)
		cp, err := r.workers[0].load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		if _, err := r.workers[0].apply(ctx, cp, raws, true, false); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != c.want {
			t.Fatalf("IdleInTransactionTimeout %s: the batch saw idle_in_transaction_session_timeout %q, want %q", c.cfg, got, c.want)
		}
	}
}
