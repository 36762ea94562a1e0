package aggregate_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
)

// The test domain: an order that is placed, gets items and ships.

type OrderPlaced struct {
	Customer string `json:"customer"`
}

type ItemAdded struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

type OrderShipped struct{}

var (
	errAlreadyPlaced = errors.New("order already placed")
	errNotPlaced     = errors.New("order not placed")
	errShipped       = errors.New("order already shipped")
)

func newRegistry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[OrderPlaced](reg, "order_placed")
	eventstore.MustRegister[ItemAdded](reg, "item_added")
	eventstore.MustRegister[OrderShipped](reg, "order_shipped")
	return reg
}

type orderState struct {
	Customer string         `json:"customer"`
	Items    map[string]int `json:"items"`
	Shipped  bool           `json:"shipped"`
}

type Order struct {
	aggregate.Base
	orderState
	// applied counts Apply calls since construction, so tests can tell a
	// snapshot load from a full replay. Not part of the state.
	applied int
}

func NewOrder(string) *Order { return &Order{} }

func (o *Order) Apply(event any) {
	o.applied++
	switch e := event.(type) {
	case OrderPlaced:
		o.Customer = e.Customer
		o.Items = map[string]int{}
	case ItemAdded:
		o.Items[e.SKU] += e.Qty
	case OrderShipped:
		o.Shipped = true
	default:
		panic(fmt.Sprintf("Order.Apply: unexpected event %T", event))
	}
}

func (o *Order) Place(customer string) error {
	if o.Customer != "" {
		return errAlreadyPlaced
	}
	aggregate.Raise(o, OrderPlaced{Customer: customer})
	return nil
}

func (o *Order) AddItem(sku string, qty int) error {
	switch {
	case o.Customer == "":
		return errNotPlaced
	case o.Shipped:
		return errShipped
	}
	aggregate.Raise(o, ItemAdded{SKU: sku, Qty: qty})
	return nil
}

func (o *Order) Ship() error {
	switch {
	case o.Customer == "":
		return errNotPlaced
	case o.Shipped:
		return errShipped
	}
	aggregate.Raise(o, &OrderShipped{}) // a pointer on purpose: Raise stores the value
	return nil
}

// state returns a deep copy of the order's state, for comparisons.
func (o *Order) state() orderState {
	s := o.orderState
	s.Items = maps.Clone(s.Items)
	return s
}

// SnapOrder is an Order that snapshots its state.
type SnapOrder struct {
	Order
	snapshotType string
	// failRestore makes UnmarshalSnapshot fail.
	failRestore bool
}

func newSnapOrder(snapshotType string, failRestore bool) func(string) *SnapOrder {
	return func(string) *SnapOrder { return &SnapOrder{snapshotType: snapshotType, failRestore: failRestore} }
}

func (o *SnapOrder) SnapshotType() string { return o.snapshotType }

func (o *SnapOrder) MarshalSnapshot() ([]byte, error) { return json.Marshal(o.orderState) }

func (o *SnapOrder) UnmarshalSnapshot(data []byte) error {
	if o.failRestore {
		return errors.New("cannot restore")
	}
	return json.Unmarshal(data, &o.orderState)
}

var _ aggregate.Snapshotter = (*SnapOrder)(nil)
