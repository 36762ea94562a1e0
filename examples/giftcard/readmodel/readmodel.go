// Package readmodel holds the gift-card service's two projections, kept up
// to date from the events feed by the esox.App's projector runner: each
// card's balance, and a ledger of redemptions per day and currency.
package readmodel

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/giftcard/card"
	"github.com/esox-go/esox/projector"
)

// ErrNotFound is returned for a card the balances do not know.
var ErrNotFound = errors.New("not found")

// Balance is one row of the balances read model.
type Balance struct {
	CardID       string `db:"card_id" json:"card_id"`
	Holder       string `db:"holder" json:"holder"`
	Currency     string `db:"currency" json:"currency"`
	BalanceCents int64  `db:"balance_cents" json:"balance_cents"`
	Status       string `db:"status" json:"status"`
	Version      int64  `db:"version" json:"version"`
}

// Balances is the projection of each card's balance and status into
// <schema>.card_balances.
func Balances(reg *eventstore.Registry, schema string) projector.Projection {
	table := postgres.QuoteIdentifier(schema) + ".card_balances"
	set := func(ctx context.Context, tx postgres.Tx, r eventstore.Record, cardID, column string, value any) error {
		_, err := tx.ExecContext(ctx, `UPDATE `+table+` SET `+column+` = $2, version = $3 WHERE card_id = $1`, cardID, value, r.StreamVersion)
		return err
	}
	h := projector.NewHandlers(reg)
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e card.Issued) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (card_id, holder, currency, balance_cents, status, version)
			VALUES ($1, $2, $3, $4, 'active', $5)`, e.CardID, e.Holder, e.Currency, e.AmountCents, r.StreamVersion)
		return err
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e card.Redeemed) error {
		return set(ctx, tx, r, e.CardID, "balance_cents", e.BalanceCents)
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e card.Reloaded) error {
		return set(ctx, tx, r, e.CardID, "balance_cents", e.BalanceCents)
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e card.Frozen) error {
		return set(ctx, tx, r, e.CardID, "status", card.StatusFrozen)
	})
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e card.Expired) error {
		_, err := tx.ExecContext(ctx, `UPDATE `+table+` SET balance_cents = 0, status = $2, version = $3 WHERE card_id = $1`,
			e.CardID, card.StatusExpired, r.StreamVersion)
		return err
	})
	return projector.Projection{
		Name:    "giftcard_balances",
		Handler: h,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+table+` (
				card_id text PRIMARY KEY, holder text NOT NULL, currency text NOT NULL,
				balance_cents bigint NOT NULL, status text NOT NULL, version bigint NOT NULL)`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+table)
			return err
		},
	}
}

// GetBalance returns the balance of cardID, or an error matching
// ErrNotFound.
func GetBalance(ctx context.Context, db sqlx.QueryerContext, schema, cardID string) (Balance, error) {
	var b Balance
	err := sqlx.GetContext(ctx, db, &b, `SELECT card_id, holder, currency, balance_cents, status, version
		FROM `+postgres.QuoteIdentifier(schema)+`.card_balances WHERE card_id = $1`, cardID)
	if errors.Is(err, sql.ErrNoRows) {
		return Balance{}, ErrNotFound
	}
	return b, err
}

// Day is one row of the ledger: the redemptions of one day (UTC) in one
// currency.
type Day struct {
	Day         string `db:"day" json:"day"`
	Currency    string `db:"currency" json:"currency"`
	Redemptions int64  `db:"redemptions" json:"redemptions"`
	AmountCents int64  `db:"amount_cents" json:"amount_cents"`
}

// Ledger is the projection of redemptions per day and currency into
// <schema>.redemption_ledger.
func Ledger(reg *eventstore.Registry, schema string) projector.Projection {
	table := postgres.QuoteIdentifier(schema) + ".redemption_ledger"
	h := projector.NewHandlers(reg)
	projector.On(h, func(ctx context.Context, tx postgres.Tx, _ eventstore.Record, e card.Redeemed) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` AS l (day, currency, redemptions, amount_cents)
			VALUES ($1, $2, 1, $3)
			ON CONFLICT (day, currency) DO UPDATE
			SET redemptions = l.redemptions + 1, amount_cents = l.amount_cents + excluded.amount_cents`,
			e.RedeemedAt.UTC().Format(time.DateOnly), e.Currency, e.AmountCents)
		return err
	})
	return projector.Projection{
		Name:    "giftcard_ledger",
		Handler: h,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+table+` (
				day date, currency text, redemptions bigint NOT NULL, amount_cents bigint NOT NULL,
				PRIMARY KEY (day, currency))`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+table)
			return err
		},
	}
}

// GetDay returns the ledger of day ("2027-01-10"), one row per currency.
func GetDay(ctx context.Context, db sqlx.QueryerContext, schema, day string) ([]Day, error) {
	var rows []Day
	err := sqlx.SelectContext(ctx, db, &rows, `SELECT day::text, currency, redemptions, amount_cents
		FROM `+postgres.QuoteIdentifier(schema)+`.redemption_ledger WHERE day = $1::date ORDER BY currency`, day)
	return rows, err
}
