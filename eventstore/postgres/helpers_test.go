package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// OrderPlaced and ItemAdded are the test event types.
type OrderPlaced struct {
	OrderID string `json:"order_id"`
	Amount  int    `json:"amount"`
}

type ItemAdded struct {
	SKU string `json:"sku"`
	N   int    `json:"n"`
}

func testRegistry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[OrderPlaced](reg, "order_placed")
	eventstore.MustRegister[ItemAdded](reg, "item_added")
	return reg
}

type bundle struct {
	db     *sqlx.DB
	store  *postgres.Store
	schema string
}

// setup returns a migrated store in a fresh schema. cfg.Schema is set by
// setup.
func setup(t *testing.T, cfg postgres.Config) *bundle {
	t.Helper()
	db := pgtest.Open(t)
	return setupOn(t, db, cfg)
}

func setupOn(t *testing.T, db *sqlx.DB, cfg postgres.Config) *bundle {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s := esoxtest.Store(t, db, testRegistry(), cfg)
	return &bundle{db: db, store: s, schema: s.Schema()}
}

// testCtx returns a context ended at the test's end or after a minute.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func placed(id string, amount int) eventstore.Event {
	return eventstore.Event{Data: OrderPlaced{OrderID: id, Amount: amount}}
}

func items(n int) []eventstore.Event {
	out := make([]eventstore.Event, n)
	for i := range out {
		out[i] = eventstore.Event{Data: ItemAdded{SKU: "sku", N: i}}
	}
	return out
}

// countRows counts the events table's rows of streamID.
func (b *bundle) countRows(t *testing.T, streamID string) int {
	t.Helper()
	var n int
	if err := b.db.GetContext(testCtx(t), &n, `SELECT count(*) FROM `+b.store.QualifiedEventsTable()+` WHERE stream_id = $1`, streamID); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

// readStream collects a stream.
func (b *bundle) readStream(t *testing.T, streamID string, from int64) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for r, err := range b.store.ReadStream(testCtx(t), streamID, from) {
		if err != nil {
			t.Fatalf("ReadStream(%s, %d): %v", streamID, from, err)
		}
		out = append(out, r)
	}
	return out
}

// drainFeed reads the feed after p in pages until it has returned at least
// want records. An empty page does not end it early: while a transaction of
// another test on the server is open, pg_snapshot_xmin holds committed events
// back from every reader, so it waits (up to waitFor's deadline) for them to
// show. Callers check the exact count themselves.
func (b *bundle) drainFeed(t *testing.T, p eventstore.Position, page, want int) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	testwait.Until(t, fmt.Sprintf("%d records in the feed", want), func() bool {
		for {
			recs, err := b.store.ReadAll(testCtx(t), p, page)
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			if len(recs) == 0 {
				return len(out) >= want
			}
			out = append(out, recs...)
			p = recs[len(recs)-1].Position
		}
	})
	return out
}
