package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// TestHooksCannotEndTheTransaction: the transaction an AppendHook gets is a
// postgres.Tx that cannot be asserted back to *sqlx.Tx or to anything with
// Commit or Rollback, whether the store began it (Append) or the caller
// passed a *sqlx.Tx (AppendTx). A hook that committed early would split the
// events from the caller's other writes.
func TestHooksCannotEndTheTransaction(t *testing.T) {
	t.Parallel()
	var seen []string
	hook := func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		if _, ok := any(tx).(*sqlx.Tx); ok {
			seen = append(seen, "*sqlx.Tx")
		}
		if _, ok := any(tx).(interface{ Commit() error }); ok {
			seen = append(seen, "Commit")
		}
		if _, ok := any(tx).(interface{ Rollback() error }); ok {
			seen = append(seen, "Rollback")
		}
		var n int
		return tx.GetContext(ctx, &n, `SELECT 1`)
	}
	b := setup(t, postgres.Config{AppendHooks: []postgres.AppendHook{hook}})
	ctx := testCtx(t)
	if _, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{{Data: OrderPlaced{OrderID: "1"}}}); err != nil {
		t.Fatal(err)
	}
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := b.store.AppendTx(ctx, tx, "order-2", eventstore.NoStream, []eventstore.Event{{Data: OrderPlaced{OrderID: "2"}}}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if len(seen) > 0 {
		t.Fatalf("a hook could reach %v", seen)
	}
}

// TestAppendTxAcceptsAnyTx: AppendTx appends in a *sql.Tx and in the Tx a
// handler is given, not only in a *sqlx.Tx; with AppendHooks configured, a
// transaction hooks cannot be given is refused before anything is sent.
func TestAppendTxAcceptsAnyTx(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	stx, err := b.db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.AppendTx(ctx, stx, "order-1", eventstore.NoStream, []eventstore.Event{{Data: OrderPlaced{OrderID: "1"}}}); err != nil {
		t.Fatal(err)
	}
	if err := stx.Commit(); err != nil {
		t.Fatal(err)
	}
	xtx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.AppendTx(ctx, postgres.NewTx(xtx), "order-1", eventstore.Exact(1), []eventstore.Event{{Data: ItemAdded{SKU: "a"}}}); err != nil {
		t.Fatal(err)
	}
	if err := xtx.Commit(); err != nil {
		t.Fatal(err)
	}
	if info, err := b.store.StreamInfo(ctx, "order-1"); err != nil || info.Version != 2 {
		t.Fatalf("StreamInfo = %+v, %v; want version 2", info, err)
	}

	hooked := setup(t, postgres.Config{AppendHooks: []postgres.AppendHook{func(context.Context, postgres.Tx, []eventstore.Record) error { return nil }}})
	stx, err = hooked.db.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stx.Rollback() }()
	_, err = hooked.store.AppendTx(ctx, stx, "order-1", eventstore.NoStream, []eventstore.Event{{Data: OrderPlaced{OrderID: "1"}}})
	if !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("AppendTx(*sql.Tx) with hooks = %v, want ErrInvalidArgument", err)
	}
	var n int
	if err := stx.QueryRowContext(ctx, `SELECT count(*) FROM `+hooked.store.QualifiedEventsTable()).Scan(&n); err != nil || n != 0 {
		t.Fatalf("events after the refusal: %d, %v (the transaction must still be usable and empty)", n, err)
	}
	var _ *sql.Tx = stx
}
