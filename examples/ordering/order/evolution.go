package order

import "github.com/esox-go/esox/eventstore"

// The schema history of the order events: each change of an event's shape
// bumps its version in Register and adds the upcaster that reads the
// version before (docs/evolution.md). Stored events never change; they are
// upcast on every read, in every process, so old rows stay readable.

// OrderPaidVersion is the current schema version of OrderPaid.
const OrderPaidVersion = 2

// orderPaidV1 is OrderPaid as stored at version 1, before the amount and
// its currency became one Money: only the upcaster needs it.
type orderPaidV1 struct {
	OrderID     string `json:"order_id"`
	CustomerID  string `json:"customer_id"`
	Currency    string `json:"currency"`
	AmountCents int64  `json:"amount_cents"`
}

// registerUpcasters registers the upcasters of the order events in r,
// unless they are registered already (Register may run twice on one
// registry, as registering the same event type twice is a no-op).
func registerUpcasters(r *eventstore.Registry) error {
	if r.ReadsAs(TypeOrderPaid, 1) != nil {
		return nil // an upcaster reads version 1 already
	}
	// order_paid 1 → 2: {"currency", "amount_cents"} became
	// {"amount": {"currency", "minor_units"}}; the amounts were always in
	// the currency's minor units.
	return eventstore.UpcastAs(r, TypeOrderPaid, 1, func(old orderPaidV1) (OrderPaid, error) {
		return OrderPaid{OrderID: old.OrderID, CustomerID: old.CustomerID, Amount: Money{Currency: old.Currency, MinorUnits: old.AmountCents}}, nil
	})
}
