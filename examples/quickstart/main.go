// Command quickstart is the smallest tour of esox on PostgreSQL: it migrates
// an event store, appends events to a stream with optimistic concurrency,
// shows the typed conflict a stale writer gets, reads the stream back and
// reads the same events from the global feed.
//
// Run it with `make run`, which prepares a database and sets DATABASE_URL, or
// directly:
//
//	DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' go run ./examples/quickstart
//
// It keeps its tables in the schema "esox_quickstart" (flag -schema); each run
// appends to a new stream, so running it again shows the feed growing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// AccountOpened is the first event of an account stream.
type AccountOpened struct {
	Owner string `json:"owner"`
}

// MoneyDeposited adds Amount cents to an account.
type MoneyDeposited struct {
	Amount int64 `json:"amount"`
}

const defaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func main() {
	schema := flag.String("schema", "esox_quickstart", "schema holding the quickstart's events table")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		url = defaultURL
	}
	if err := run(ctx, os.Stdout, url, *schema); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run is the tour, writing what it does to w.
func run(ctx context.Context, w io.Writer, url, schema string) error {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()

	// 1. Register the event types: the registry maps Go types to the names
	// stored beside their JSON payloads.
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[AccountOpened](reg, "account_opened")
	eventstore.MustRegister[MoneyDeposited](reg, "money_deposited")

	// 2. Create the store and its tables (idempotent, safe to run from
	// several processes at once).
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema, Logger: logger})
	if err != nil {
		return err
	}
	defer store.Close()
	res, err := store.Migrate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "migrated schema %q: %d migration(s) applied\n", schema, len(res.Applied))

	head, err := store.Head(ctx)
	if err != nil {
		return err
	}

	// 3. Append to a new stream. NoStream means "this stream must not exist
	// yet"; metadata in the context travels with every event.
	stream := eventstore.StreamID("account", uuid.NewString())
	ctx = eventstore.WithCorrelationID(ctx, uuid.NewString())
	ctx = eventstore.WithActor(ctx, "quickstart")
	first, err := store.Append(ctx, stream, eventstore.NoStream, []eventstore.Event{
		{Data: AccountOpened{Owner: "Ada"}},
		{Data: MoneyDeposited{Amount: 100_00}},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "appended versions %d..%d to %s\n", first.FirstVersion, first.LastVersion, stream)

	// 4. The next append expects exactly the version the last one left.
	second, err := store.Append(ctx, stream, eventstore.Exact(first.LastVersion), []eventstore.Event{
		{Data: MoneyDeposited{Amount: 25_00}},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "appended version %d\n", second.LastVersion)

	// 5. A writer that loaded the stream before that append is refused,
	// and nothing of its append is written.
	_, err = store.Append(ctx, stream, eventstore.Exact(first.LastVersion), []eventstore.Event{
		{Data: MoneyDeposited{Amount: 1_00}},
	})
	var conflict *eventstore.ConcurrencyError
	if !errors.As(err, &conflict) || !errors.Is(err, eventstore.ErrConcurrencyConflict) {
		return fmt.Errorf("stale append: want a concurrency conflict, got %v", err)
	}
	fmt.Fprintf(w, "stale append refused: expected version %s, actual %d\n", conflict.Expected, conflict.Actual)

	// 6. Read the stream back and fold it into a balance.
	var balance int64
	for rec, err := range store.ReadStream(ctx, stream, 1) {
		if err != nil {
			return err
		}
		switch e := rec.Data.(type) {
		case AccountOpened:
			fmt.Fprintf(w, "  v%d %s owner=%s\n", rec.StreamVersion, rec.Type, e.Owner)
		case MoneyDeposited:
			balance += e.Amount
			fmt.Fprintf(w, "  v%d %s amount=%d\n", rec.StreamVersion, rec.Type, e.Amount)
		}
	}
	fmt.Fprintf(w, "balance of %s: %d.%02d\n", stream, balance/100, balance%100)

	// 7. Read the global feed after the head seen before appending. The feed
	// shows an event only once no older transaction can still commit before
	// it, so poll briefly until ours are visible.
	recs, err := readFeedUntil(ctx, store, head, second.LastPosition)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "global feed after %s:\n", head)
	for _, rec := range recs {
		fmt.Fprintf(w, "  %s %s v%d %s correlation_id=%s\n", rec.Position, rec.StreamID, rec.StreamVersion, rec.Type, rec.Metadata.CorrelationID)
	}
	return nil
}

// readFeedUntil reads the global feed after from until it has returned the
// record at last, for up to 30 seconds (a long transaction elsewhere on the
// server holds the feed back until it ends).
func readFeedUntil(ctx context.Context, store *postgres.Store, from, last eventstore.Position) ([]eventstore.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out []eventstore.Record
	after := from
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		page, err := store.ReadAll(ctx, after, 100)
		if err != nil {
			return nil, err
		}
		for _, rec := range page {
			out = append(out, rec)
			after = rec.Position
			if rec.Position == last {
				return out, nil
			}
		}
		if len(page) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("waiting for position %s in the global feed: %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}
