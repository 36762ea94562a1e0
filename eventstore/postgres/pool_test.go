package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// TestLostRacesDoNotExhaustThePool: with AppendHooks every append is a
// transaction, and one that loses the race for a version must let go of its
// connection before it reads the stream's actual version through the pool.
// Here the winner is another process (a second pool) whose append waits in
// its hook, uncommitted, while two appends of this process for the same
// version wait behind it on the unique index and hold both connections of
// this pool. When the winner commits, both lose; had they asked the full pool
// for a connection while holding their own, neither would ever get one.
func TestLostRacesDoNotExhaustThePool(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(testCtx(t), 30*time.Second)
	defer cancel()

	db := pgtest.Open(t)
	db.SetMaxOpenConns(2)
	noop := func(context.Context, postgres.Tx, []eventstore.Record) error { return nil }
	b := setupOn(t, db, postgres.Config{AppendHooks: []postgres.AppendHook{noop}})

	release := make(chan struct{})
	inHook := make(chan struct{})
	other, err := postgres.New(pgtest.Open(t), testRegistry(), postgres.Config{
		Schema: b.schema,
		Logger: slog.New(slog.DiscardHandler),
		AppendHooks: []postgres.AppendHook{func(ctx context.Context, _ postgres.Tx, _ []eventstore.Record) error {
			close(inHook)
			<-release
			return nil
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	winner := make(chan error, 1)
	go func() {
		_, err := other.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 1)})
		winner <- err
	}()
	<-inHook

	losers := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 2)})
			losers <- err
		}()
	}
	// Wait until both losers hold a connection and wait on the winner's row.
	monitor := pgtest.Open(t)
	testwait.Until(t, "two appends waiting on the unique index", func() bool {
		var n int
		_ = monitor.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO%' AND query LIKE '%'||$1||'%'`, b.schema)
		return n == 2
	})
	close(release)
	if err := <-winner; err != nil {
		t.Fatalf("winner: %v", err)
	}
	for range 2 {
		select {
		case err := <-losers:
			var ce *eventstore.ConcurrencyError
			if !errors.As(err, &ce) || ce.Actual != 1 {
				t.Fatalf("loser: %v, want a ConcurrencyError with actual version 1", err)
			}
		case <-ctx.Done():
			t.Fatal("the losing appends never returned: each held a connection while waiting for another from the full pool")
		}
	}
}
