package projectortest_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
	"github.com/esox-go/esox/projector/projectortest"
)

// exampleT stands in for the *testing.T a test gets: it prints failures
// (with the fixture's random schema name shortened, for the example's
// output) and runs cleanups when the example ends.
type exampleT struct {
	schema   string
	cleanups []func()
}

func (*exampleT) Helper()                         {}
func (*exampleT) Logf(format string, args ...any) {}
func (t *exampleT) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if t.schema != "" {
		msg = strings.ReplaceAll(msg, t.schema, "projectortest_…")
	}
	fmt.Println(msg)
}
func (t *exampleT) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// OrderPlaced is the example's event.
type OrderPlaced struct {
	OrderID  string `json:"order_id"`
	Customer string `json:"customer"`
	Total    int64  `json:"total"`
}

// ordersPerCustomer counts orders and sums their totals per customer in
// table.
func ordersPerCustomer(reg *eventstore.Registry, table string) projector.Projection {
	hs := projector.NewHandlers(reg)
	projector.On(hs, func(ctx context.Context, tx postgres.Tx, _ eventstore.Record, e OrderPlaced) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` AS c (customer, orders, total) VALUES ($1, 1, $2)
			ON CONFLICT (customer) DO UPDATE SET orders = c.orders + 1, total = c.total + excluded.total`, e.Customer, e.Total)
		return err
	})
	return projector.Projection{
		Name:    "orders_per_customer",
		Handler: hs,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+table+` (customer text PRIMARY KEY, orders int NOT NULL, total bigint NOT NULL)`)
			return err
		},
	}
}

func Example() {
	t := &exampleT{} // in a test: the test's t
	defer t.done()
	db := sqlx.MustOpen("postgres", pgtest.DatabaseURL())
	defer db.Close()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[OrderPlaced](reg, "order_placed")

	fx := projectortest.New(t, db, reg, projectortest.Config{})
	t.schema = fx.Schema
	fx.Apply(t, ordersPerCustomer(reg, fx.Table("customers")),
		projectortest.Stream("order-1", OrderPlaced{"1", "alice", 30}),
		projectortest.Stream("order-2", OrderPlaced{"2", "bob", 5}),
		projectortest.Stream("order-3", OrderPlaced{"3", "alice", 12}),
	)

	type row struct {
		Customer string `db:"customer"`
		Orders   int    `db:"orders"`
		Total    int64  `db:"total"`
	}
	query := `SELECT customer, orders, total FROM ` + fx.Table("customers") + ` ORDER BY customer`
	if projectortest.RequireRows(t, fx, []row{{"alice", 2, 42}, {"bob", 1, 5}}, query) {
		fmt.Println("read model as expected")
	}
	// A wrong expectation fails the test with both lists.
	projectortest.RequireRows(t, fx, []row{{"alice", 2, 42}, {"bob", 1, 6}}, query)
	// Output:
	// read model as expected
	// projectortest: rows of "SELECT customer, orders, total FROM \"projectortest_…\".\"customers\" ORDER BY customer" differ:
	//   row 0: got  {Customer:alice Orders:2 Total:42}
	//          want {Customer:alice Orders:2 Total:42}
	// ! row 1: got  {Customer:bob Orders:1 Total:5}
	//          want {Customer:bob Orders:1 Total:6}
}
