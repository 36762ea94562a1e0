package main

import (
	"net/http"
	"testing"

	"github.com/google/uuid"
)

// TestEndToEndLegacyOrderPaid stores an order_paid event exactly as a
// release before schema versions wrote it (raw SQL: version 1's
// {"currency", "amount_cents"}, no schema_version column in the INSERT)
// into a running service's events table, then uses the order: the
// aggregate reads it (the order ships, which needs it paid), the read
// models apply it (status and customer stats), and the shipping consumer,
// fed by the forwarder, records the shipment with its amount.
func TestEndToEndLegacyOrderPaid(t *testing.T) {
	t.Parallel()
	s := startService(t, "gochannel")
	customer := "legacy-" + uuid.NewString()[:8]
	c := s.place(customer) // version 1, total 3000 cents
	if _, err := s.db.Exec(`INSERT INTO "`+s.schema+`".events (event_id, stream_id, stream_version, event_type, payload, metadata)
		VALUES ($1, $2, 2, 'ordering.order_paid', $3, '{}')`,
		uuid.NewString(), "order-"+c.ID, `{"order_id": "`+c.ID+`", "customer_id": "`+customer+`", "currency": "EUR", "amount_cents": 3000}`); err != nil {
		t.Fatal(err)
	}

	// The aggregate: Ship needs the order paid, at version 2.
	r := s.do("POST", "/orders/"+c.ID+"/ship", "")
	want(t, "ship an order paid by a version 1 event", r, http.StatusOK, "")
	var res cmdResult
	r.json(t, &res)
	if res.Version != 3 {
		t.Fatalf("ship: %+v, want version 3", res)
	}
	// The read models (the API waits for them to reach the ship).
	if o := s.getOrder(c.ID); o.Status != "shipped" || o.Version != 3 {
		t.Fatalf("read model: %+v, want shipped at version 3", o)
	}
	var stats struct {
		PaidOrders      int64 `json:"paid_orders"`
		TotalSpentCents int64 `json:"total_spent_cents"`
	}
	s.do("GET", "/customers/"+customer+"/stats", "").json(t, &stats)
	if stats.PaidOrders != 1 || stats.TotalSpentCents != 3000 {
		t.Fatalf("customer stats %+v, want 1 paid order of 3000 cents", stats)
	}
	// The shipping consumer, through the forwarder and its inbox.
	waitShipmentOf(t, s, c.ID, 3000)
}
