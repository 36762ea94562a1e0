package order_test

import (
	"encoding/json"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/examples/ordering/order"
)

// TestOrderPaidVersion1 reads order_paid as version 1 stored it (before
// the amount and its currency became one Money) and as version 2 does:
// both decode to the same current event, and new events are written at
// version 2.
func TestOrderPaidVersion1(t *testing.T) {
	t.Parallel()
	reg := order.NewRegistry()
	if err := reg.Validate(); err != nil {
		t.Fatal(err)
	}
	want := order.OrderPaid{OrderID: "42", CustomerID: "c1", Amount: order.Money{Currency: "JPY", MinorUnits: 2700}}
	for version, payload := range map[int]string{
		0: `{"order_id": "42", "customer_id": "c1", "currency": "JPY", "amount_cents": 2700}`, // no schema_version: a row from before versions
		1: `{"order_id": "42", "customer_id": "c1", "currency": "JPY", "amount_cents": 2700}`,
		2: `{"order_id": "42", "customer_id": "c1", "amount": {"currency": "JPY", "minor_units": 2700}}`,
	} {
		rec, err := eventstore.RawRecord{StreamID: "order-42", StreamVersion: 3, Type: order.TypeOrderPaid, SchemaVersion: version, Payload: json.RawMessage(payload)}.Decode(reg)
		if err != nil {
			t.Fatalf("version %d: %v", version, err)
		}
		if rec.Data != want || rec.SchemaVersion != order.OrderPaidVersion {
			t.Errorf("version %d read as %+v (version %d), want %+v", version, rec.Data, rec.SchemaVersion, want)
		}
	}
	ev, err := reg.EncodeEvent(want)
	if err != nil || ev.Version != order.OrderPaidVersion || ev.Type != order.TypeOrderPaid {
		t.Fatalf("EncodeEvent = %+v, %v; want version %d", ev, err, order.OrderPaidVersion)
	}
}
