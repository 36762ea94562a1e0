package order

import "github.com/esox-go/esox/eventstore"

// Category is the stream category of orders: order 42 lives in stream
// "order-42".
const Category = "order"

// CustomerCategory is the stream category of customer events: customer
// alice's are in stream "customer-alice".
const CustomerCategory = "customer"

// Event type names, as stored in the events table and sent to brokers.
const (
	TypeOrderPlaced     = "ordering.order_placed"
	TypeLineAdded       = "ordering.line_added"
	TypeLineRemoved     = "ordering.line_removed"
	TypeDiscountApplied = "ordering.discount_applied"
	TypeOrderPaid       = "ordering.order_paid"
	TypeOrderShipped    = "ordering.order_shipped"
	TypeOrderCancelled  = "ordering.order_cancelled"
	// TypeCustomerForgotten is appended to the customer's stream when the
	// customer's personal data is erased (DELETE
	// /customers/{id}/personal-data).
	TypeCustomerForgotten = "ordering.customer_forgotten"
)

// Line is one line of an order.
type Line struct {
	SKU            string `json:"sku"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// AmountCents returns quantity × unit price.
func (l Line) AmountCents() int64 { return l.Quantity * l.UnitPriceCents }

// Contact is how to reach the customer of an order and where it ships:
// personal data. Every field may be empty.
type Contact struct {
	Name            string `json:"name,omitempty"`
	Email           string `json:"email,omitempty"`
	ShippingAddress string `json:"shipping_address,omitempty"`
}

// IsZero reports whether c holds nothing.
func (c Contact) IsZero() bool { return c == Contact{} }

// OrderPlaced starts an order's stream.
//
// Contact is the customer's personal data (esox:"personal"): it is stored
// encrypted with the data key of the customer (CustomerID, the subject),
// and reads as empty, listed in eventstore.Record.Redacted, once the
// customer is forgotten (docs/compliance.md). Events stored before orders
// carried a contact have none: they read as an empty Contact, no upcaster
// needed.
type OrderPlaced struct {
	OrderID    string   `json:"order_id"`
	CustomerID string   `json:"customer_id" esox:"subject"`
	Currency   string   `json:"currency"`
	Lines      []Line   `json:"lines"`
	Contact    *Contact `json:"contact,omitempty" esox:"personal"`
}

// CustomerForgotten records that a customer's personal data was erased:
// their data key was destroyed, so the contact of every order they placed
// reads as empty, and the read models drop their copies when they apply
// this event (or are rebuilt). Who asked and why are in its metadata
// (actor, reason).
type CustomerForgotten struct {
	CustomerID string `json:"customer_id"`
	// KeysDestroyed counts the data keys destroyed (0 when the customer
	// had been forgotten already, or never gave personal data).
	KeysDestroyed int `json:"keys_destroyed"`
}

// LineAdded adds a line for a SKU the order did not have.
type LineAdded struct {
	OrderID string `json:"order_id"`
	Line    Line   `json:"line"`
}

// LineRemoved removes the line of a SKU.
type LineRemoved struct {
	OrderID string `json:"order_id"`
	SKU     string `json:"sku"`
}

// DiscountApplied takes Percent percent off the order's subtotal.
type DiscountApplied struct {
	OrderID string `json:"order_id"`
	Percent int64  `json:"percent"`
}

// Money is an amount in the minor units of its currency: cents for EUR
// and USD, yen for JPY.
type Money struct {
	Currency   string `json:"currency"`
	MinorUnits int64  `json:"minor_units"`
}

// OrderPaid records a payment of the order's total. It carries what a
// downstream consumer (shipping, billing) needs without reading the order.
//
// It is at schema version OrderPaidVersion (2): version 1 kept the
// currency and the amount apart, {"currency", "amount_cents"}; events
// stored at version 1 are read as version 2 by the upcaster in
// evolution.go, which Register registers (see docs/evolution.md).
type OrderPaid struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Amount     Money  `json:"amount"`
}

// OrderShipped records that the order left the warehouse.
type OrderShipped struct {
	OrderID string `json:"order_id"`
}

// OrderCancelled closes the order for good.
type OrderCancelled struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason"`
}

// Register registers the order events in r under their Type… names, at
// their current schema versions, with the upcasters that read their older
// versions (evolution.go). It returns the registry's error when a name is
// taken by another type.
func Register(r *eventstore.Registry) error {
	for _, f := range []func(*eventstore.Registry) error{
		func(r *eventstore.Registry) error { return eventstore.Register[OrderPlaced](r, TypeOrderPlaced) },
		func(r *eventstore.Registry) error { return eventstore.Register[LineAdded](r, TypeLineAdded) },
		func(r *eventstore.Registry) error { return eventstore.Register[LineRemoved](r, TypeLineRemoved) },
		func(r *eventstore.Registry) error {
			return eventstore.Register[DiscountApplied](r, TypeDiscountApplied)
		},
		func(r *eventstore.Registry) error {
			return eventstore.RegisterVersion[OrderPaid](r, TypeOrderPaid, OrderPaidVersion)
		},
		registerUpcasters,
		func(r *eventstore.Registry) error { return eventstore.Register[OrderShipped](r, TypeOrderShipped) },
		func(r *eventstore.Registry) error { return eventstore.Register[OrderCancelled](r, TypeOrderCancelled) },
		func(r *eventstore.Registry) error {
			return eventstore.Register[CustomerForgotten](r, TypeCustomerForgotten)
		},
	} {
		if err := f(r); err != nil {
			return err
		}
	}
	return nil
}

// NewRegistry returns a registry holding the order events. Attach a
// Shredder (eventstore.Registry.SetShredder) before appending orders with
// a Contact, and before reading them: without one a Contact reads as
// redacted.
func NewRegistry() *eventstore.Registry {
	r := eventstore.NewRegistry()
	if err := Register(r); err != nil {
		panic(err) // cannot happen on a fresh registry
	}
	return r
}
