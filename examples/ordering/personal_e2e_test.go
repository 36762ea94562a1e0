package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/readmodel"
	"github.com/esox-go/esox/projector"
)

type customerView struct {
	CustomerID         string        `json:"customer_id"`
	Contact            order.Contact `json:"contact"`
	PersonalDataErased bool          `json:"personal_data_erased"`
	ErasedAt           *time.Time    `json:"erased_at"`
}

// TestForgetCustomerEndToEnd drives the service's erasure: an order's
// contact is stored encrypted and shown by GET /customers/{id};
// DELETE /customers/{id}/personal-data destroys the customer's key and the
// read models drop the contact at once; a rebuild of the customers read
// model afterwards brings no personal data back; the hash chains still
// verify; another customer keeps theirs.
func TestForgetCustomerEndToEnd(t *testing.T) {
	t.Parallel()
	s := startService(t, "gochannel")
	placeFor := func(customer, contact string) cmdResult {
		t.Helper()
		r := s.do("POST", "/orders", `{"customer_id":"`+customer+`","currency":"EUR","lines":[{"sku":"book","quantity":1,"unit_price_cents":900}],"contact":`+contact+`}`)
		want(t, "place with a contact", r, http.StatusCreated, "")
		var c cmdResult
		r.json(t, &c)
		return c
	}
	getCustomer := func(id string) customerView {
		t.Helper()
		r := s.do("GET", "/customers/"+id, "")
		want(t, "GET /customers/"+id, r, http.StatusOK, "")
		var c customerView
		r.json(t, &c)
		return c
	}
	ada := order.Contact{Name: "Ada Lovelace", Email: "ada@example.com", ShippingAddress: "12 St James's Square, London"}
	a1 := placeFor("ada", `{"name":"Ada Lovelace","email":"ada@example.com","shipping_address":"12 St James's Square, London"}`)
	placeFor("bob", `{"name":"Bob Byte"}`)
	if c := getCustomer("ada"); c.Contact != ada || c.PersonalDataErased {
		t.Fatalf("ada: %+v", c)
	}
	var stored int
	if err := s.db.Get(&stored, `SELECT count(*) FROM "`+s.schema+`".events WHERE payload::text LIKE '%Lovelace%'`); err != nil || stored != 0 {
		t.Fatalf("%d events hold the name in the clear (%v)", stored, err)
	}
	want(t, "contact with an unknown field", s.do("POST", "/orders", `{"customer_id":"c","currency":"EUR","lines":[{"sku":"b","quantity":1,"unit_price_cents":1}],"contact":{"phone":"1"}}`), http.StatusBadRequest, "invalid_json")
	want(t, "contact with a bad email", s.do("POST", "/orders", `{"customer_id":"c","currency":"EUR","lines":[{"sku":"b","quantity":1,"unit_price_cents":1}],"contact":{"email":"nope"}}`), http.StatusBadRequest, "invalid_field")
	want(t, "an unknown customer", s.do("GET", "/customers/nobody", ""), http.StatusNotFound, "customer_not_found")

	// Forget ada.
	want(t, "forget a bad customer ID", s.do("DELETE", "/customers/a%2Fb/personal-data", ""), http.StatusBadRequest, "invalid_customer_id")
	want(t, "forget with an unknown field", s.do("DELETE", "/customers/ada/personal-data", `{"why":"x"}`), http.StatusBadRequest, "invalid_json")
	r := s.do("DELETE", "/customers/ada/personal-data", `{"reason":"erasure request 42"}`, "X-Actor", "dpo-7")
	want(t, "forget", r, http.StatusOK, "")
	var fr struct {
		CustomerID    string `json:"customer_id"`
		KeysDestroyed int    `json:"keys_destroyed"`
		Position      string `json:"position"`
	}
	r.json(t, &fr)
	if fr.CustomerID != "ada" || fr.KeysDestroyed != 1 || fr.Position == "" || r.header.Get("X-Read-Models") != "" {
		t.Fatalf("forget = %+v (%v)", fr, r.header)
	}
	// Read-your-writes: the read model dropped the contact before the answer.
	if c := getCustomer("ada"); !c.Contact.IsZero() || !c.PersonalDataErased || c.ErasedAt == nil {
		t.Fatalf("ada after forget: %+v", c)
	}
	if o := s.getOrder(a1.ID); o.CustomerID != "ada" || o.TotalCents != 900 {
		t.Fatalf("ada's order after forget: %+v", o)
	}
	// Again: nothing left to destroy.
	r = s.do("DELETE", "/customers/ada/personal-data", "")
	want(t, "forget again", r, http.StatusOK, "")
	r.json(t, &fr)
	if fr.KeysDestroyed != 0 {
		t.Fatalf("forget again = %+v", fr)
	}

	// Rebuild the customers read model from another process, as an
	// operator would: it replays the events, in which ada's contact now
	// reads as redacted.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	reg := order.NewRegistry()
	store, err := postgres.New(s.db, reg, postgres.Config{Schema: s.schema, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	tables, err := readmodel.TablesIn(s.schema)
	if err != nil {
		t.Fatal(err)
	}
	runner, err := projector.NewRunner(store, projector.Config{Logger: log, DisableMigrate: true}, readmodel.CustomersProjection(reg, tables))
	if err != nil {
		t.Fatal(err)
	}
	if err := runner.Rebuild(ctx, readmodel.CustomersName); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		rb := s.do("GET", "/customers/bob", "")
		var bob customerView
		if rb.status == http.StatusOK {
			rb.json(t, &bob)
		}
		ra := s.do("GET", "/customers/ada", "")
		if bob.Contact.Name == "Bob Byte" && ra.status == http.StatusOK {
			var c customerView
			ra.json(t, &c)
			if !c.Contact.IsZero() || !c.PersonalDataErased {
				t.Fatalf("ada after the rebuild: %+v", c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rebuild did not refill the customers read model within a minute (bob: %s)", rb.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var leaked int
	if err := s.db.Get(&leaked, `SELECT count(*) FROM `+tables.Customers+` c WHERE c::text LIKE '%Lovelace%' OR c::text LIKE '%ada@%'`); err != nil || leaked != 0 {
		t.Fatalf("the rebuilt read model holds ada's data in %d row(s) (%v)", leaked, err)
	}
	res, err := store.Verify(ctx, nil)
	if err != nil || !res.OK() {
		t.Fatalf("Verify after forget = %+v, %v", res, err)
	}
	// The audit trail: who erased, and why.
	raws, err := store.ReadStreamRaw(ctx, "customer-ada", 0, 10)
	if err != nil || len(raws) != 2 {
		t.Fatalf("customer-ada: %d events, %v; want the 2 CustomerForgotten", len(raws), err)
	}
	var found bool
	for _, rec := range raws {
		if strings.Contains(string(rec.Metadata), `"actor": "dpo-7"`) && strings.Contains(string(rec.Metadata), `"reason": "erasure request 42"`) {
			found = true
		}
	}
	if !found {
		t.Error("the CustomerForgotten event lacks the actor and reason")
	}
}
