package postgres_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

type CartOpened struct {
	Owner string `json:"owner"`
}

type CartItemAdded struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// ExampleStore_Append appends to a stream with optimistic concurrency, then
// reads the stream back. It runs on the PostgreSQL of
// ESOX_TEST_DATABASE_URL (default: the local test database) in a schema of
// its own, dropped at the end.
func ExampleStore_Append() {
	ctx := context.Background()
	url := os.Getenv("ESOX_TEST_DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	reg := eventstore.NewRegistry()
	eventstore.MustRegister[CartOpened](reg, "cart_opened")
	eventstore.MustRegister[CartItemAdded](reg, "cart_item_added")

	schema := "esoxtest_example_" + rand.Text()[:12]
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	defer db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+postgres.QuoteIdentifier(schema)+` CASCADE`)
	if _, err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	res, err := store.Append(ctx, "cart-42", eventstore.NoStream, []eventstore.Event{
		{Data: CartOpened{Owner: "alice"}},
		{Data: CartItemAdded{SKU: "tea", Quantity: 2}},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("appended versions", res.FirstVersion, "to", res.LastVersion)

	// A writer that still believes the cart is new loses.
	_, err = store.Append(ctx, "cart-42", eventstore.NoStream, []eventstore.Event{{Data: CartOpened{Owner: "bob"}}})
	var conflict *eventstore.ConcurrencyError
	if errors.As(err, &conflict) {
		fmt.Println("conflict: expected", conflict.Expected, "actual", conflict.Actual)
	}

	for rec, err := range store.ReadStream(ctx, "cart-42", 1) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("v%d %s %+v\n", rec.StreamVersion, rec.Type, rec.Data)
	}
	// Output:
	// appended versions 1 to 2
	// conflict: expected no_stream actual 2
	// v1 cart_opened {Owner:alice}
	// v2 cart_item_added {SKU:tea Quantity:2}
}

// ExampleStore_SettleAppend appends in the caller's transaction and settles
// the outcome of its Commit: a Commit that fails because the connection
// broke may have committed, and SettleAppend finds out from the event IDs.
// Here the Commit succeeds, so SettleAppend finds the events; an append
// that never committed is reported as not written.
func ExampleStore_SettleAppend() {
	ctx := context.Background()
	url := os.Getenv("ESOX_TEST_DATABASE_URL")
	if url == "" {
		url = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[CartOpened](reg, "cart_opened")
	schema := "esoxtest_example_" + rand.Text()[:12]
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	defer db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+postgres.QuoteIdentifier(schema)+` CASCADE`)
	if _, err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	appendInTx := func(stream string, commit bool) (eventstore.AppendResult, error) {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		defer tx.Rollback()
		res, err := store.AppendTx(ctx, tx, stream, eventstore.NoStream, []eventstore.Event{{Data: CartOpened{Owner: "alice"}}})
		if err != nil {
			return eventstore.AppendResult{}, err // nothing written
		}
		if !commit {
			return res, tx.Rollback()
		}
		if err := tx.Commit(); err != nil {
			got, written, serr := store.SettleAppend(ctx, stream, res.EventIDs)
			switch {
			case serr != nil:
				return eventstore.AppendResult{}, serr // still unknown: ErrOutcomeUnknown
			case !written:
				return eventstore.AppendResult{}, err // nothing written: safe to retry
			}
			return got, nil // committed after all
		}
		return res, nil
	}

	for _, commit := range []bool{true, false} {
		stream := fmt.Sprintf("cart-%v", commit)
		res, err := appendInTx(stream, commit)
		if err != nil {
			log.Fatal(err)
		}
		_, written, err := store.SettleAppend(ctx, stream, res.EventIDs)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s committed: %v, written: %v\n", stream, commit, written)
	}
	// Output:
	// cart-true committed: true, written: true
	// cart-false committed: false, written: false
}
