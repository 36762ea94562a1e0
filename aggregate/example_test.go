package aggregate_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
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

	// Opening the same cart again is a conflict: the stream already exists.
	_, err = carts.Create(ctx, "c1", func(c *Cart) error { return c.Open("bob") })
	fmt.Println(errors.Is(err, eventstore.ErrConcurrencyConflict))

	cart, err := carts.Load(ctx, "c1")
	fmt.Println(cart.ID(), cart.Version(), cart.Owner, cart.Items, cart.CheckedOut, err)

	_, err = carts.Load(ctx, "c2")
	fmt.Println(errors.Is(err, eventstore.ErrStreamNotFound))
	// Output:
	// cart-c1 1 <nil>
	// 2 4 <nil>
	// cart is checked out
	// true
	// c1 4 ada [apple pear] true <nil>
	// true
}
