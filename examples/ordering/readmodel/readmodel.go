// Package readmodel holds the ordering service's read models, built by
// projector projections from the order events, and the queries the HTTP API
// answers GETs with:
//
//   - OrdersProjection fills the table <schema>.orders, one row per order
//     with its status, lines and totals (Get, List);
//   - CustomerStatsProjection fills <schema>.customer_stats: orders placed,
//     orders paid and cents spent per customer (Stats);
//   - CustomersProjection fills <schema>.customers: each customer's latest
//     contact (personal data), emptied when the customer is forgotten
//     (GetCustomer; see customers.go and docs/compliance.md).
//
// Each projection creates its table in Setup (run once, when the runner
// first registers it) and empties it in Reset (for projector Rebuild). The
// projector applies each batch and moves the checkpoint in one transaction
// (guarantee 5 in docs/guarantees.md), so the handlers need no de-duplication of their own.
//
// Queries are safe for concurrent use; they read what the projections have
// applied so far: wait with projector.Runner.WaitFor for read-your-writes.
package readmodel

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/projector"
)

// Projection names, as they appear in the projector's checkpoints, status
// and /metrics.
const (
	OrdersName        = "ordering_orders"
	CustomerStatsName = "ordering_customer_stats"
	CustomersName     = "ordering_customers"
)

// ErrNotFound is returned by Get for an order the read model does not have.
var ErrNotFound = errors.New("readmodel: not found")

// Tables names the read model tables in one schema, quoted.
type Tables struct {
	Orders        string
	CustomerStats string
	Customers     string
}

// TablesIn returns the read model tables of schema. schema must pass
// postgres.ValidateSchemaName.
func TablesIn(schema string) (Tables, error) {
	if err := postgres.ValidateSchemaName(schema); err != nil {
		return Tables{}, fmt.Errorf("readmodel: schema: %w", err)
	}
	q := postgres.QuoteIdentifier(schema) + "."
	return Tables{Orders: q + "orders", CustomerStats: q + "customer_stats", Customers: q + "customers"}, nil
}

// Order is one row of the orders read model, as GET /orders/{id} returns it.
type Order struct {
	ID              string       `json:"id"`
	CustomerID      string       `json:"customer_id"`
	Status          string       `json:"status"`
	Currency        string       `json:"currency"`
	Lines           []order.Line `json:"lines"`
	DiscountPercent int64        `json:"discount_percent"`
	SubtotalCents   int64        `json:"subtotal_cents"`
	TotalCents      int64        `json:"total_cents"`
	CancelReason    string       `json:"cancel_reason,omitempty"`
	Version         int64        `json:"version"`
	PlacedAt        time.Time    `json:"placed_at"`
	UpdatedAt       time.Time    `json:"updated_at"`
}

// CustomerStats is one row of the customer stats read model. Orders counts
// orders placed; PaidOrders and TotalSpentCents count payments (a paid order
// cancelled later stays counted: refunds are another service's business).
//
// The table keeps total_spent_cents as numeric, so no sum of payments can
// overflow and stop the projection; Stats fails for a sum past int64 (more
// than 9 million orders at order.MaxSubtotalCents for one customer).
type CustomerStats struct {
	Orders          int64 `json:"orders"`
	PaidOrders      int64 `json:"paid_orders"`
	TotalSpentCents int64 `json:"total_spent_cents"`
}

// OrdersProjection returns the projection that keeps t.Orders, decoding
// events with reg (which must hold the order events).
func OrdersProjection(reg *eventstore.Registry, t Tables) projector.Projection {
	h := projector.NewHandlers(reg)
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.OrderPlaced) error {
		lines, err := json.Marshal(nonNil(e.Lines))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO `+t.Orders+`
			(order_id, customer_id, status, currency, lines, discount_percent, subtotal_cents, total_cents, version, placed_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, 0, $6, $6, $7, $8, $8)`,
			e.OrderID, e.CustomerID, string(order.StatusPlaced), e.Currency, string(lines), order.Subtotal(e.Lines), r.StreamVersion, r.RecordedAt)
		return err
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.LineAdded) error {
		return updateLines(ctx, tx, t, r, e.OrderID, func(o *Order) { o.Lines = append(o.Lines, e.Line) })
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.LineRemoved) error {
		return updateLines(ctx, tx, t, r, e.OrderID, func(o *Order) {
			kept := o.Lines[:0]
			for _, l := range o.Lines {
				if l.SKU != e.SKU {
					kept = append(kept, l)
				}
			}
			o.Lines = kept
		})
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.DiscountApplied) error {
		return updateLines(ctx, tx, t, r, e.OrderID, func(o *Order) { o.DiscountPercent = e.Percent })
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.OrderPaid) error {
		return setStatus(ctx, tx, t, r, e.OrderID, order.StatusPaid, "")
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.OrderShipped) error {
		return setStatus(ctx, tx, t, r, e.OrderID, order.StatusShipped, "")
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.OrderCancelled) error {
		return setStatus(ctx, tx, t, r, e.OrderID, order.StatusCancelled, e.Reason)
	})
	return projector.Projection{
		Name:    OrdersName,
		Handler: h,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `
				CREATE TABLE IF NOT EXISTS `+t.Orders+` (
					order_id         text        PRIMARY KEY,
					customer_id      text        NOT NULL,
					status           text        NOT NULL,
					currency         text        NOT NULL,
					lines            jsonb       NOT NULL,
					discount_percent bigint      NOT NULL,
					subtotal_cents   bigint      NOT NULL,
					total_cents      bigint      NOT NULL,
					cancel_reason    text        NOT NULL DEFAULT '',
					version          bigint      NOT NULL,
					placed_at        timestamptz NOT NULL,
					updated_at       timestamptz NOT NULL
				);
				CREATE INDEX IF NOT EXISTS orders_customer_idx ON `+t.Orders+` (customer_id, placed_at DESC);
				CREATE INDEX IF NOT EXISTS orders_status_idx ON `+t.Orders+` (status, placed_at DESC)`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+t.Orders)
			return err
		},
	}
}

func nonNil(lines []order.Line) []order.Line {
	if lines == nil {
		return []order.Line{}
	}
	return lines
}

// updateLines applies a change of lines or discount to an order's row and
// recomputes its totals with the domain's rules.
func updateLines(ctx context.Context, tx postgres.Tx, t Tables, r eventstore.Record, id string, change func(*Order)) error {
	var (
		o     Order
		lines []byte
	)
	err := tx.QueryRowContext(ctx, `SELECT lines, discount_percent FROM `+t.Orders+` WHERE order_id = $1 FOR UPDATE`, id).
		Scan(&lines, &o.DiscountPercent)
	if err != nil {
		return fmt.Errorf("order %s: %w", id, err)
	}
	if err := json.Unmarshal(lines, &o.Lines); err != nil {
		return fmt.Errorf("order %s: lines: %w", id, err)
	}
	change(&o)
	lines, err = json.Marshal(nonNil(o.Lines))
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE `+t.Orders+` SET lines = $2, discount_percent = $3, subtotal_cents = $4,
		total_cents = $5, version = $6, updated_at = $7 WHERE order_id = $1`,
		id, string(lines), o.DiscountPercent, order.Subtotal(o.Lines), order.Total(o.Lines, o.DiscountPercent), r.StreamVersion, r.RecordedAt)
	return err
}

func setStatus(ctx context.Context, tx postgres.Tx, t Tables, r eventstore.Record, id string, s order.Status, reason string) error {
	res, err := tx.ExecContext(ctx, `UPDATE `+t.Orders+` SET status = $2, cancel_reason = $3, version = $4, updated_at = $5 WHERE order_id = $1`,
		id, string(s), reason, r.StreamVersion, r.RecordedAt)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("order %s: no row to update", id)
	}
	return nil
}

// CustomerStatsProjection returns the projection that keeps
// t.CustomerStats, decoding events with reg.
func CustomerStatsProjection(reg *eventstore.Registry, t Tables) projector.Projection {
	h := projector.NewHandlers(reg)
	projector.On(h, func(ctx context.Context, tx postgres.Tx, _ eventstore.Record, e order.OrderPlaced) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+t.CustomerStats+` (customer_id, orders) VALUES ($1, 1)
			ON CONFLICT (customer_id) DO UPDATE SET orders = `+t.CustomerStats+`.orders + 1`, e.CustomerID)
		return err
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, _ eventstore.Record, e order.OrderPaid) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+t.CustomerStats+` (customer_id, paid_orders, total_spent_cents) VALUES ($1, 1, $2)
			ON CONFLICT (customer_id) DO UPDATE SET paid_orders = `+t.CustomerStats+`.paid_orders + 1,
			total_spent_cents = `+t.CustomerStats+`.total_spent_cents + $2`, e.CustomerID, e.Amount.MinorUnits)
		return err
	})
	return projector.Projection{
		Name:    CustomerStatsName,
		Handler: h,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+t.CustomerStats+` (
				customer_id       text   PRIMARY KEY,
				orders            bigint NOT NULL DEFAULT 0,
				paid_orders       bigint NOT NULL DEFAULT 0,
				total_spent_cents numeric NOT NULL DEFAULT 0
			)`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+t.CustomerStats)
			return err
		},
	}
}

const orderColumns = `order_id, customer_id, status, currency, lines, discount_percent, subtotal_cents, total_cents, cancel_reason, version, placed_at, updated_at`

func scanOrder(row interface{ Scan(...any) error }) (Order, error) {
	var (
		o     Order
		lines []byte
	)
	err := row.Scan(&o.ID, &o.CustomerID, &o.Status, &o.Currency, &lines, &o.DiscountPercent, &o.SubtotalCents, &o.TotalCents, &o.CancelReason, &o.Version, &o.PlacedAt, &o.UpdatedAt)
	if err != nil {
		return Order{}, err
	}
	if err := json.Unmarshal(lines, &o.Lines); err != nil {
		return Order{}, fmt.Errorf("order %s: lines: %w", o.ID, err)
	}
	o.Lines = nonNil(o.Lines)
	o.PlacedAt, o.UpdatedAt = o.PlacedAt.UTC(), o.UpdatedAt.UTC()
	return o, nil
}

// Get returns the order id, or an error matching ErrNotFound. ctx bounds
// the query.
func Get(ctx context.Context, db sqlx.QueryerContext, t Tables, id string) (Order, error) {
	o, err := scanOrder(db.QueryRowxContext(ctx, `SELECT `+orderColumns+` FROM `+t.Orders+` WHERE order_id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("readmodel: order %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Order{}, fmt.Errorf("readmodel: get order: %w", err)
	}
	return o, nil
}

// Filter selects orders for List. Empty fields select everything.
type Filter struct {
	CustomerID string
	Status     string
	// Limit caps the result; 0 means ListLimitDefault, at most ListLimitMax.
	Limit int
}

// Limits of Filter.Limit.
const (
	ListLimitDefault = 100
	ListLimitMax     = 1000
)

// List returns the orders matching f, newest first. ctx bounds the query.
func List(ctx context.Context, db sqlx.QueryerContext, t Tables, f Filter) ([]Order, error) {
	var (
		where []string
		args  []any
	)
	if f.CustomerID != "" {
		args = append(args, f.CustomerID)
		where = append(where, fmt.Sprintf("customer_id = $%d", len(args)))
	}
	if f.Status != "" {
		args = append(args, f.Status)
		where = append(where, fmt.Sprintf("status = $%d", len(args)))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = ListLimitDefault
	}
	limit = min(limit, ListLimitMax)
	args = append(args, limit)
	q := `SELECT ` + orderColumns + ` FROM ` + t.Orders
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += fmt.Sprintf(` ORDER BY placed_at DESC, order_id LIMIT $%d`, len(args))
	rows, err := db.QueryxContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("readmodel: list orders: %w", err)
	}
	defer rows.Close()
	out := []Order{}
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("readmodel: list orders: %w", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("readmodel: list orders: %w", err)
	}
	return out, nil
}

// Stats returns the customer's stats; a customer without orders has zero
// stats, not an error. ctx bounds the query.
func Stats(ctx context.Context, db sqlx.QueryerContext, t Tables, customerID string) (CustomerStats, error) {
	var s CustomerStats
	err := db.QueryRowxContext(ctx, `SELECT orders, paid_orders, total_spent_cents FROM `+t.CustomerStats+` WHERE customer_id = $1`, customerID).
		Scan(&s.Orders, &s.PaidOrders, &s.TotalSpentCents)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return CustomerStats{}, fmt.Errorf("readmodel: customer stats: %w", err)
	}
	return s, nil
}
