package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

// otherStore returns a second Store on b's schema: its appends are what
// another process's would be to b.store (they wake none of b.store's
// subscribers directly).
func otherStore(t *testing.T, b *bundle) *postgres.Store {
	t.Helper()
	s, err := postgres.New(b.db, testRegistry(), postgres.Config{Schema: b.schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitUntilRead waits on wake until ReadAll returns the event id, as a
// reader woken by wake would.
func waitUntilRead(t *testing.T, ctx context.Context, b *bundle, wake <-chan struct{}, what string, id string) {
	t.Helper()
	for {
		select {
		case <-wake:
		case <-ctx.Done():
			t.Fatalf("%s: not woken for the event", what)
		}
		recs, err := b.store.ReadAll(ctx, eventstore.Position{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(recs, func(r eventstore.Record) bool { return r.ID.String() == id }) {
			return
		}
	}
}

// TestWatchWakesOnCommitsElsewhere: an append through another Store (as
// from another process) wakes a Watch subscriber through the store's poll
// of the feed's head, and that poll wakes plain Subscribe subscribers too.
func TestWatchWakesOnCommitsElsewhere(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	other := otherStore(t, b)
	ctx := testCtx(t)
	wake, cancel := b.store.Watch(ctx, 5*time.Millisecond)
	defer cancel()
	sub, unsubscribe := b.store.Subscribe()
	defer unsubscribe()

	res, err := other.Append(ctx, "order-1", eventstore.NoStream, items(1))
	if err != nil {
		t.Fatal(err)
	}
	waitUntilRead(t, ctx, b, wake, "Watch", res.EventIDs[0].String())
	// Drain what came before, then a second append elsewhere must reach
	// the Subscribe subscriber through the watcher's poll alone.
	for len(sub) > 0 {
		<-sub
	}
	res, err = other.Append(ctx, "order-1", eventstore.Exact(1), items(1))
	if err != nil {
		t.Fatal(err)
	}
	waitUntilRead(t, ctx, b, sub, "Subscribe", res.EventIDs[0].String())
}

// TestWatchAppendsWakeAtOnce: an append through the same Store wakes a
// Watch subscriber without any poll (the poll interval is an hour). (Its
// record may still be held back by another test's open transaction: only
// the wake-up is checked.)
func TestWatchAppendsWakeAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	wake, cancel := b.store.Watch(ctx, time.Hour)
	defer cancel()
	if _, err := b.store.Append(ctx, "order-1", eventstore.NoStream, items(1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-ctx.Done():
		t.Fatal("an append through the store did not wake its Watch subscriber")
	}
}

// TestWatchShortestIntervalWins: a subscription with a shorter interval
// makes the running watcher poll at that interval from then on, for every
// subscriber.
func TestWatchShortestIntervalWins(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	other := otherStore(t, b)
	ctx := testCtx(t)
	slow, cancelSlow := b.store.Watch(ctx, time.Hour)
	defer cancelSlow()
	res, err := other.Append(ctx, "order-1", eventstore.NoStream, items(1))
	if err != nil {
		t.Fatal(err)
	}
	_, cancelFast := b.store.Watch(ctx, 5*time.Millisecond)
	defer cancelFast()
	waitUntilRead(t, ctx, b, slow, "the hourly subscriber", res.EventIDs[0].String())
}

// TestWatchRunsOneWatcher: however many Watch subscriptions are open, one
// watcher goroutine polls; the last cancel stops it (and returns only once
// it has exited), a subscription whose context ends is cancelled, and a
// new Watch starts a watcher again.
func TestWatchRunsOneWatcher(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	if n := postgres.RunningWatchers(b.store); n != 0 {
		t.Fatalf("%d watchers before any Watch", n)
	}
	_, unsubscribe := b.store.Subscribe()
	defer unsubscribe()
	if n := postgres.RunningWatchers(b.store); n != 0 {
		t.Fatalf("Subscribe started %d watchers, want 0", n)
	}
	var cancels []func()
	for i := range 50 {
		_, cancel := b.store.Watch(ctx, time.Duration(i+1)*time.Millisecond)
		cancels = append(cancels, cancel)
	}
	if n := postgres.RunningWatchers(b.store); n != 1 {
		t.Fatalf("50 Watch subscriptions run %d watchers, want 1", n)
	}
	for _, cancel := range cancels[1:] {
		cancel()
	}
	if n := postgres.RunningWatchers(b.store); n != 1 {
		t.Fatalf("one subscription left: %d watchers, want 1", n)
	}
	cancels[0]()
	cancels[0]() // safe twice
	if n := postgres.RunningWatchers(b.store); n != 0 {
		t.Fatalf("after the last cancel: %d watchers, want 0", n)
	}

	wctx, end := context.WithCancel(ctx)
	_, cancel := b.store.Watch(wctx, time.Millisecond)
	if n := postgres.RunningWatchers(b.store); n != 1 {
		t.Fatalf("a new Watch runs %d watchers, want 1", n)
	}
	end()
	cancel() // returns once the subscription its context ended is gone
	if n := postgres.RunningWatchers(b.store); n != 0 {
		t.Fatalf("after the context ended: %d watchers, want 0", n)
	}
}

// TestWatchPollsOnlyTheHead: with 50 subscribers and nothing appended, the
// store sends the server nothing but one head query per poll.
func TestWatchPollsOnlyTheHead(t *testing.T) {
	t.Parallel()
	db, stmts := pgtest.OpenCounting(t)
	b := setupOn(t, db, postgres.Config{})
	ctx := testCtx(t)
	for range 50 {
		_, cancel := b.store.Watch(ctx, time.Millisecond)
		defer cancel()
	}
	mark := stmts.Len()
	isHead := func(q string) bool { return q == postgres.HeadSQL(b.store) }
	got, err := stmts.Wait(ctx, mark, 20, isHead)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 {
		t.Fatalf("20 polls by 50 subscribers sent %d statements, want 20:%s", len(got), pgtest.Summary(got))
	}
}
