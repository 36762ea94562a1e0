package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/readmodel"
)

// commandAPI returns an API whose commands run on an in-memory store (the
// read side is never queried by commands without Idempotency-Key), and an
// order placed in it. opts change the Config before New.
func commandAPI(t testing.TB, opts ...func(*Config)) (*API, *memory.Store, string) {
	reg := order.NewRegistry()
	store := memory.New(reg)
	orders, err := aggregate.NewRepository(store, order.Category, order.New, aggregate.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// A pool that is never used: sql.Open does not connect.
	db, err := sqlx.Open("postgres", "postgres://unused.invalid/none")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	idem, err := NewIdempotency(db, "ordering")
	if err != nil {
		t.Fatal(err)
	}
	tables, _ := readmodel.TablesIn("ordering")
	cfg := Config{Orders: orders, DB: db, Tables: tables, Idempotency: idem, Logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	api, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const id = "01a21cd1-b030-7d47-bc00-d820529b478d"
	if _, err := orders.Create(context.Background(), id, func(o *order.Order) error {
		return o.Place("c1", "EUR", []order.Line{{SKU: "book", Quantity: 2, UnitPriceCents: 1500}})
	}); err != nil {
		t.Fatal(err)
	}
	return api, store, id
}

func countEvents(t testing.TB, s *memory.Store) int {
	n, after := 0, eventstore.Position{}
	for {
		recs, err := s.ReadAll(context.Background(), after, eventstore.MaxReadAllLimit)
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
		if len(recs) < eventstore.MaxReadAllLimit {
			return n
		}
		after = recs[len(recs)-1].Position
	}
}

// FuzzCommands sends arbitrary bodies to every command: the answer is never
// a 5xx, an error answer has the documented shape, and a refused command
// appends nothing.
func FuzzCommands(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"customer_id":"a","currency":"EUR","lines":[{"sku":"a","quantity":1,"unit_price_cents":1}]}`,
		`{"sku":"pen","quantity":1,"unit_price_cents":5}`, `{"percent":10}`, `{"amount_cents":3000}`, `{"reason":"x"}`,
		`{"quantity":1e400}`, `{"reason":"\u0000"}`, `{"customer_id":"\ud800"}`, "\xff",
	} {
		for path := range 7 {
			f.Add(uint8(path), s)
		}
	}
	api, store, id := commandAPI(f)
	paths := []string{"/orders", "/orders/" + id + "/lines", "/orders/" + id + "/discount", "/orders/" + id + "/pay",
		"/orders/" + id + "/ship", "/orders/" + id + "/cancel", "/orders/" + id + "/lines/book"}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		path := paths[int(which)%len(paths)]
		method := http.MethodPost
		if strings.HasSuffix(path, "/lines/book") {
			method = http.MethodDelete
		}
		before := countEvents(t, store)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			if !strings.HasPrefix(rec.Body.String(), `{"error":{"code":"`) {
				t.Fatalf("%s %s %q: error body %s", method, path, body, rec.Body)
			}
			if after := countEvents(t, store); after != before {
				t.Fatalf("%s %s %q: refused with %d but appended %d events", method, path, body, rec.Code, after-before)
			}
		}
	})
}
