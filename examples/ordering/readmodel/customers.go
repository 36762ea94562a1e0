package readmodel

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/projector"
)

// Customer is one row of the customers read model, as GET /customers/{id}
// returns it: the contact of the customer's latest order that had one.
// Once the customer is forgotten, the contact is empty and
// PersonalDataErased is set; a rebuild after that finds the contacts
// redacted in the events and leaves them empty too.
type Customer struct {
	CustomerID         string        `json:"customer_id"`
	Contact            order.Contact `json:"contact"`
	PersonalDataErased bool          `json:"personal_data_erased"`
	ErasedAt           *time.Time    `json:"erased_at,omitempty"`
	UpdatedAt          time.Time     `json:"updated_at"`
}

// CustomersProjection returns the projection that keeps t.Customers,
// decoding events with reg, whose Shredder decrypts the contacts (without
// one they read as redacted).
func CustomersProjection(reg *eventstore.Registry, t Tables) projector.Projection {
	h := projector.NewHandlers(reg)
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.OrderPlaced) error {
		switch {
		case len(r.Redacted) > 0:
			// The contact's customer was forgotten: keep nothing of it.
			_, err := tx.ExecContext(ctx, `INSERT INTO `+t.Customers+` AS c (customer_id, personal_data_erased, updated_at) VALUES ($1, true, $2)
				ON CONFLICT (customer_id) DO UPDATE SET name = '', email = '', shipping_address = '', personal_data_erased = true, updated_at = $2`,
				e.CustomerID, r.RecordedAt)
			return err
		case e.Contact != nil:
			_, err := tx.ExecContext(ctx, `INSERT INTO `+t.Customers+` AS c (customer_id, name, email, shipping_address, updated_at) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (customer_id) DO UPDATE SET name = $2, email = $3, shipping_address = $4, personal_data_erased = false, updated_at = $5`,
				e.CustomerID, e.Contact.Name, e.Contact.Email, e.Contact.ShippingAddress, r.RecordedAt)
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO `+t.Customers+` (customer_id, updated_at) VALUES ($1, $2) ON CONFLICT (customer_id) DO NOTHING`,
			e.CustomerID, r.RecordedAt)
		return err
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.CustomerForgotten) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+t.Customers+` AS c (customer_id, personal_data_erased, erased_at, updated_at) VALUES ($1, true, $2, $2)
			ON CONFLICT (customer_id) DO UPDATE SET name = '', email = '', shipping_address = '', personal_data_erased = true, erased_at = $2, updated_at = $2`,
			e.CustomerID, r.RecordedAt)
		return err
	})
	return projector.Projection{
		Name:    CustomersName,
		Handler: h,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+t.Customers+` (
				customer_id          text        PRIMARY KEY,
				name                 text        NOT NULL DEFAULT '',
				email                text        NOT NULL DEFAULT '',
				shipping_address     text        NOT NULL DEFAULT '',
				personal_data_erased boolean     NOT NULL DEFAULT false,
				erased_at            timestamptz,
				updated_at           timestamptz NOT NULL
			)`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+t.Customers)
			return err
		},
	}
}

// GetCustomer returns the customer id, or an error matching ErrNotFound
// for a customer without orders. ctx bounds the query.
func GetCustomer(ctx context.Context, db sqlx.QueryerContext, t Tables, id string) (Customer, error) {
	var (
		c      Customer
		erased sql.NullTime
	)
	err := db.QueryRowxContext(ctx, `SELECT customer_id, name, email, shipping_address, personal_data_erased, erased_at, updated_at
		FROM `+t.Customers+` WHERE customer_id = $1`, id).
		Scan(&c.CustomerID, &c.Contact.Name, &c.Contact.Email, &c.Contact.ShippingAddress, &c.PersonalDataErased, &erased, &c.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Customer{}, fmt.Errorf("readmodel: customer %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Customer{}, fmt.Errorf("readmodel: get customer: %w", err)
	}
	if erased.Valid {
		at := erased.Time.UTC()
		c.ErasedAt = &at
	}
	c.UpdatedAt = c.UpdatedAt.UTC()
	return c, nil
}
