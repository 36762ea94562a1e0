package readmodel_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/readmodel"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// TestProjections runs both projections over orders saved through a
// Repository, and checks the queries: totals after line changes and a
// discount, status changes, filters, limit, stats, not found.
func TestProjections(t *testing.T) {
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	reg := order.NewRegistry()
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema, Logger: log})
	tables, err := readmodel.TablesIn(schema)
	if err != nil {
		t.Fatal(err)
	}
	runner := runProjections(t, ctx, store, log, readmodel.OrdersProjection(reg, tables), readmodel.CustomerStatsProjection(reg, tables))

	orders, err := aggregate.NewRepository(store, order.Category, order.New, aggregate.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	book := order.Line{SKU: "book", Quantity: 2, UnitPriceCents: 1500}
	pen := order.Line{SKU: "pen", Quantity: 3, UnitPriceCents: 200}
	// apply runs a command (Create for the first of an order) and waits
	// until both projections applied it.
	apply := func(create bool, id string, fn func(*order.Order) error) {
		t.Helper()
		save := orders.Update
		if create {
			save = orders.Create
		}
		res, err := save(ctx, id, fn)
		if err != nil {
			t.Fatalf("order %s: %v", id, err)
		}
		for _, name := range []string{readmodel.OrdersName, readmodel.CustomerStatsName} {
			if err := runner.WaitFor(ctx, name, res.LastPosition); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(true, "a", func(o *order.Order) error { return o.Place("alice", "EUR", []order.Line{book}) })
	apply(false, "a", func(o *order.Order) error { return o.AddLine(pen, "") })
	apply(false, "a", func(o *order.Order) error { return o.RemoveLine("book") })
	apply(false, "a", func(o *order.Order) error { return o.ApplyDiscount(50) })
	apply(false, "a", func(o *order.Order) error { return o.Pay(300, "") })
	apply(true, "b", func(o *order.Order) error { return o.Place("alice", "EUR", []order.Line{book}) })
	apply(false, "b", func(o *order.Order) error { return o.Cancel("changed my mind") })
	apply(true, "c", func(o *order.Order) error { return o.Place("bob", "USD", []order.Line{pen}) })

	a, err := readmodel.Get(ctx, db, tables, "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != "paid" || a.SubtotalCents != 600 || a.TotalCents != 300 || a.DiscountPercent != 50 || a.Version != 5 || len(a.Lines) != 1 || a.Lines[0] != pen || a.CustomerID != "alice" || a.Currency != "EUR" {
		t.Errorf("order a: %+v", a)
	}
	b, err := readmodel.Get(ctx, db, tables, "b")
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != "cancelled" || b.CancelReason != "changed my mind" || b.Version != 2 {
		t.Errorf("order b: %+v", b)
	}
	if _, err := readmodel.Get(ctx, db, tables, "nope"); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("Get of a missing order: %v, want ErrNotFound", err)
	}

	ids := func(f readmodel.Filter) []string {
		t.Helper()
		list, err := readmodel.List(ctx, db, tables, f)
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, o := range list {
			out = append(out, o.ID)
		}
		return out
	}
	for _, tc := range []struct {
		f    readmodel.Filter
		want []string
	}{
		{readmodel.Filter{}, []string{"c", "b", "a"}},
		{readmodel.Filter{CustomerID: "alice"}, []string{"b", "a"}},
		{readmodel.Filter{CustomerID: "alice", Status: "paid"}, []string{"a"}},
		{readmodel.Filter{Status: "placed"}, []string{"c"}},
		{readmodel.Filter{CustomerID: "nobody"}, []string{}},
		{readmodel.Filter{Limit: 2}, []string{"c", "b"}},
	} {
		if got := ids(tc.f); !equal(got, tc.want) {
			t.Errorf("List(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}

	for cust, want := range map[string]readmodel.CustomerStats{
		"alice":  {Orders: 2, PaidOrders: 1, TotalSpentCents: 300},
		"bob":    {Orders: 1},
		"nobody": {},
	} {
		got, err := readmodel.Stats(ctx, db, tables, cust)
		if err != nil || got != want {
			t.Errorf("Stats(%s) = %+v, %v; want %+v", cust, got, err, want)
		}
	}

	// Rebuild replays both models from the start to the same result.
	for _, name := range []string{readmodel.OrdersName, readmodel.CustomerStatsName} {
		if err := runner.Rebuild(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	head, err := store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := readmodel.Stats(ctx, db, tables, "alice")
		if err == nil && got == (readmodel.CustomerStats{Orders: 2, PaidOrders: 1, TotalSpentCents: 300}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Rebuild: stats %+v (%v), head %s", got, err, head)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := runner.WaitFor(ctx, readmodel.OrdersName, head); err != nil {
		t.Fatal(err)
	}
	if a2, err := readmodel.Get(ctx, db, tables, "a"); err != nil || a2.TotalCents != 300 || a2.Version != 5 {
		t.Errorf("order a after Rebuild: %+v, %v", a2, err)
	}
}

// runProjections migrates a runner of ps on store and runs it until the
// test ends (ctx's end, or the cleanup, stops it); Run must return nil.
func runProjections(t *testing.T, ctx context.Context, store *postgres.Store, log *slog.Logger, ps ...projector.Projection) *projector.Runner {
	t.Helper()
	runner, err := projector.NewRunner(store, projector.Config{Logger: log}, ps...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runner.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return runner
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTablesIn(t *testing.T) {
	t.Parallel()
	if _, err := readmodel.TablesIn("pg_bad"); err == nil {
		t.Error("TablesIn(pg_bad): no error")
	}
	if _, err := readmodel.TablesIn(`a"b`); err == nil {
		t.Error(`TablesIn(a"b): no error`)
	}
	tb, err := readmodel.TablesIn("Shop")
	if err != nil || tb.Orders != `"Shop".orders` {
		t.Errorf("TablesIn(Shop) = %+v, %v", tb, err)
	}
}

// TestCustomerStatsDoNotOverflow: a customer whose payments add up past
// int64 keeps the stats projection running (with a bigint column the
// addition failed with "bigint out of range" and the projection stopped,
// leaving every read model stale).
func TestCustomerStatsDoNotOverflow(t *testing.T) {
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	reg := order.NewRegistry()
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema, Logger: log})
	tables, err := readmodel.TablesIn(schema)
	if err != nil {
		t.Fatal(err)
	}
	runner := runProjections(t, ctx, store, log, readmodel.CustomerStatsProjection(reg, tables))
	orders, err := aggregate.NewRepository(store, order.Category, order.New, aggregate.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// The largest order the domain allows.
	lines := []order.Line{{SKU: "gold", Quantity: 1000, UnitPriceCents: order.MaxUnitPriceCents}}
	payOne := func(id string) {
		t.Helper()
		if _, err := orders.Create(ctx, id, func(o *order.Order) error { return o.Place("whale", "EUR", lines) }); err != nil {
			t.Fatal(err)
		}
		res, err := orders.Update(ctx, id, func(o *order.Order) error { return o.Pay(order.MaxSubtotalCents, "") })
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		if err := runner.WaitFor(wctx, readmodel.CustomerStatsName, res.LastPosition); err != nil {
			st, _ := runner.Status(ctx)
			t.Fatalf("WaitFor: %v; status %+v", err, st)
		}
	}
	payOne("w1")
	// Stand in for 9.2 million earlier orders: the sum is one payment
	// short of int64's maximum.
	const near = int64(9_223_372_036_854_775_807) - order.MaxSubtotalCents/2
	if _, err := db.ExecContext(ctx, `UPDATE `+tables.CustomerStats+` SET total_spent_cents = $1 WHERE customer_id = 'whale'`, near); err != nil {
		t.Fatal(err)
	}
	payOne("w2")
	var total string
	if err := db.GetContext(ctx, &total, `SELECT total_spent_cents::text FROM `+tables.CustomerStats+` WHERE customer_id = 'whale'`); err != nil {
		t.Fatal(err)
	}
	if want := "9223372536854775807"; total != want {
		t.Fatalf("total_spent_cents = %s, want %s", total, want)
	}
}

// TestForgetThenRebuild: a customer's contact reaches the customers read
// model decrypted; forgetting the customer (order.Forget) empties it live,
// and a rebuild afterwards finds the contacts redacted in the events: no
// read model, and no stored event, holds the personal data, while another
// customer's stays and every chain still verifies.
func TestForgetThenRebuild(t *testing.T) {
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	reg := order.NewRegistry()
	keys, err := postgres.NewKeyStore(db, postgres.KeyStoreConfig{Schema: schema, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	kek, err := eventstore.NewLocalKeyEncrypter(bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sh, err := eventstore.NewShredder(keys, kek, eventstore.ShredderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reg.SetShredder(sh)
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema, Logger: log})
	tables, err := readmodel.TablesIn(schema)
	if err != nil {
		t.Fatal(err)
	}
	runner := runProjections(t, ctx, store, log, readmodel.OrdersProjection(reg, tables), readmodel.CustomersProjection(reg, tables))
	wait := func(pos eventstore.Position) {
		t.Helper()
		for _, name := range []string{readmodel.OrdersName, readmodel.CustomersName} {
			if err := runner.WaitFor(ctx, name, pos); err != nil {
				t.Fatal(err)
			}
		}
	}
	orders, err := aggregate.NewRepository(store, order.Category, order.New, aggregate.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ada := order.Contact{Name: "Ada Lovelace", Email: "ada@example.com", ShippingAddress: "12 St James's Square, London"}
	bob := order.Contact{Name: "Bob Byte", Email: "bob@example.com"}
	book := order.Line{SKU: "book", Quantity: 1, UnitPriceCents: 1500}
	for _, o := range []struct {
		id, customer string
		contact      order.Contact
	}{{"a1", "ada", ada}, {"a2", "ada", ada}, {"b1", "bob", bob}} {
		res, err := orders.Create(ctx, o.id, func(ord *order.Order) error { return ord.PlaceFor(o.customer, o.contact, "EUR", []order.Line{book}) })
		if err != nil {
			t.Fatal(err)
		}
		wait(res.LastPosition)
	}
	if c, err := readmodel.GetCustomer(ctx, db, tables, "ada"); err != nil || c.Contact != ada || c.PersonalDataErased {
		t.Fatalf("ada before Forget: %+v, %v", c, err)
	}
	plaintext := func(what, query string) {
		t.Helper()
		var n int
		if err := db.GetContext(ctx, &n, query); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: %d row(s) hold ada's personal data", what, n)
		}
	}
	plaintext("events", `SELECT count(*) FROM `+store.QualifiedEventsTable()+` WHERE payload::text LIKE '%Lovelace%' OR payload::text LIKE '%ada@%'`)

	fr, res, err := order.Forget(eventstore.WithReason(eventstore.WithActor(ctx, "dpo-1"), "erasure request 7"), store, sh, "ada")
	if err != nil || len(fr.Keys) != 1 {
		t.Fatalf("Forget = %+v, %v", fr, err)
	}
	wait(res.LastPosition)
	c, err := readmodel.GetCustomer(ctx, db, tables, "ada")
	if err != nil || !c.Contact.IsZero() || !c.PersonalDataErased || c.ErasedAt == nil {
		t.Fatalf("ada after Forget: %+v, %v", c, err)
	}
	// The aggregate still loads, its contact empty.
	if a1, err := orders.Load(ctx, "a1"); err != nil || !a1.Contact.IsZero() || a1.CustomerID != "ada" {
		t.Fatalf("order a1 after Forget: %+v, %v", a1, err)
	}

	// Rebuild the customers read model from the events: the contacts are
	// redacted there now.
	if err := runner.Rebuild(ctx, readmodel.CustomersName); err != nil {
		t.Fatal(err)
	}
	wait(res.LastPosition)
	c, err = readmodel.GetCustomer(ctx, db, tables, "ada")
	if err != nil || !c.Contact.IsZero() || !c.PersonalDataErased {
		t.Fatalf("ada after the rebuild: %+v, %v", c, err)
	}
	plaintext("customers read model", `SELECT count(*) FROM `+tables.Customers+` c WHERE c::text LIKE '%Lovelace%' OR c::text LIKE '%ada@%' OR c::text LIKE '%James%'`)
	plaintext("orders read model", `SELECT count(*) FROM `+tables.Orders+` o WHERE o::text LIKE '%Lovelace%'`)
	if c, err := readmodel.GetCustomer(ctx, db, tables, "bob"); err != nil || c.Contact != bob || c.PersonalDataErased {
		t.Fatalf("bob after ada's erasure and the rebuild: %+v, %v", c, err)
	}
	if v, err := store.Verify(ctx, nil); err != nil || !v.OK() || v.Events != 4 {
		t.Fatalf("Verify after Forget = %+v, %v", v, err)
	}
	// The erasure is on the audit trail.
	for r, err := range store.ReadStream(ctx, "customer-ada", 0) {
		if err != nil {
			t.Fatal(err)
		}
		if r.Metadata.Actor != "dpo-1" || r.Metadata.Reason != "erasure request 7" || r.Data != (order.CustomerForgotten{CustomerID: "ada", KeysDestroyed: 1}) {
			t.Errorf("customer-ada: %+v", r)
		}
	}
}
