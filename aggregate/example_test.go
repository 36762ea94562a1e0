package aggregate_test

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

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/eventstore/postgres"
)

// The events of a shopping cart. Events are plain structs, registered by
// name in an eventstore.Registry and stored as JSON.
type (
	CartOpened struct {
		Owner string `json:"owner"`
	}
	CartItemAdded struct {
		Item string `json:"item"`
	}
	CartCheckedOut struct{}
)

// ErrCheckedOut refuses changes to a checked-out cart.
var ErrCheckedOut = errors.New("cart is checked out")

// Cart is the aggregate: it embeds aggregate.Base and applies its events.
type Cart struct {
	aggregate.Base
	Owner      string
	Items      []string
	CheckedOut bool
}

// NewCart returns an empty Cart for the Repository to load events into.
func NewCart(id string) *Cart { return &Cart{} }

// Apply changes the state for one event; it never fails.
func (c *Cart) Apply(event any) {
	switch e := event.(type) {
	case CartOpened:
		c.Owner = e.Owner
	case CartItemAdded:
		c.Items = append(c.Items, e.Item)
	case CartCheckedOut:
		c.CheckedOut = true
	}
}

// Open, Add and CheckOut are commands: they check invariants, then Raise.
func (c *Cart) Open(owner string) error {
	aggregate.Raise(c, CartOpened{Owner: owner})
	return nil
}

func (c *Cart) Add(item string) error {
	if c.CheckedOut {
		return ErrCheckedOut
	}
	aggregate.Raise(c, CartItemAdded{Item: item})
	return nil
}

func (c *Cart) CheckOut() error {
	if c.CheckedOut {
		return ErrCheckedOut
	}
	aggregate.Raise(c, CartCheckedOut{})
	return nil
}

func Example() {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[CartOpened](reg, "cart_opened")
	eventstore.MustRegister[CartItemAdded](reg, "cart_item_added")
	eventstore.MustRegister[CartCheckedOut](reg, "cart_checked_out")
	store := memory.New(reg) // or postgres.New(db, reg, postgres.Config{})

	carts, err := aggregate.NewRepository(store, "cart", NewCart, aggregate.Config{})
	if err != nil {
		panic(err)
	}
	ctx := eventstore.WithCorrelationID(context.Background(), "request-1")

	res, err := carts.Create(ctx, "c1", func(c *Cart) error { return c.Open("ada") })
	fmt.Println(res.StreamID, res.LastVersion, err)

	res, err = carts.Update(ctx, "c1", func(c *Cart) error {
		return errors.Join(c.Add("apple"), c.Add("pear"), c.CheckOut())
	})
	fmt.Println(res.FirstVersion, res.LastVersion, err)

	// A refused command returns its error and saves nothing.
	_, err = carts.Update(ctx, "c1", func(c *Cart) error { return c.Add("plum") })
	fmt.Println(err)

	// Opening the same cart again is refused: the stream already exists.
	_, err = carts.Create(ctx, "c1", func(c *Cart) error { return c.Open("bob") })
	fmt.Println(errors.Is(err, aggregate.ErrAlreadyExists), err)

	cart, err := carts.Load(ctx, "c1")
	fmt.Println(cart.ID(), cart.Version(), cart.Owner, cart.Items, cart.CheckedOut, err)

	_, err = carts.Load(ctx, "c2")
	fmt.Println(errors.Is(err, eventstore.ErrStreamNotFound))
	// Output:
	// cart-c1 1 <nil>
	// 2 4 <nil>
	// cart is checked out
	// true aggregate: cart-c1 already exists (stream version 4)
	// c1 4 ada [apple pear] true <nil>
	// true
}

// ExampleRepository_UpdateTx changes a cart and writes a row of the
// caller's in one transaction, so both commit or neither does, and runs
// the whole transaction in Retry, which starts it again after a
// concurrency conflict. It runs on the PostgreSQL of ESOX_TEST_DATABASE_URL
// (default: the local test database) in a schema of its own, dropped at
// the end.
func ExampleRepository_UpdateTx() {
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
	eventstore.MustRegister[CartCheckedOut](reg, "cart_checked_out")
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
	// The caller's own table: an outbox of receipts to send, say.
	receipts := postgres.QuoteIdentifier(schema) + ".receipts"
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+receipts+` (cart text PRIMARY KEY, items int NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	carts, err := aggregate.NewRepository(store, "cart", NewCart, aggregate.Config{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := carts.Create(ctx, "c1", func(c *Cart) error {
		return errors.Join(c.Open("ada"), c.Add("tea"), c.Add("jam"))
	}); err != nil {
		log.Fatal(err)
	}

	// Check out and record the receipt together. The deferred Rollback ends
	// a failed attempt; after a conflict Retry waits and runs the function
	// again, in a new transaction.
	var res eventstore.AppendResult
	err = carts.Retry(ctx, func(ctx context.Context) error {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		var items int
		res, err = carts.UpdateTx(ctx, tx, "c1", func(c *Cart) error {
			items = len(c.Items)
			return c.CheckOut()
		})
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+receipts+` (cart, items) VALUES ($1, $2)`, "c1", items); err != nil {
			return err
		}
		return tx.Commit()
	})
	fmt.Println("checked out at version", res.LastVersion, err)

	var items int
	if err := db.GetContext(ctx, &items, `SELECT items FROM `+receipts+` WHERE cart = $1`, "c1"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("receipt for", items, "items")

	// A refused command returns its error as is, and Retry does not retry
	// it: nothing was written.
	err = carts.Retry(ctx, func(ctx context.Context) error {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := carts.UpdateTx(ctx, tx, "c1", (*Cart).CheckOut); err != nil {
			return err
		}
		return tx.Commit()
	})
	fmt.Println(err)
	// Output:
	// checked out at version 4 <nil>
	// receipt for 2 items
	// cart is checked out
}
