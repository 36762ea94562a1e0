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
