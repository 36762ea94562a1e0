package postgres

import (
	"context"
	"database/sql"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// Tx is the transaction esox hands to code that runs inside a transaction
// it began: AppendHooks, projection handlers, inbox handlers. It runs
// statements, with sqlx's conveniences, but has no Commit or Rollback:
// the transaction belongs to esox, which commits the handler's writes
// together with the events or the projection's checkpoint, or rolls both
// back (guarantees 4 and 5 in docs/guarantees.md). Committing early would
// split what must be one unit, so the method is not there to call, and the
// value is not a *sqlx.Tx to type-assert to.
//
// A Tx is passed to Store.AppendTx as is: events appended by a handler
// commit with its other writes. Like the *sqlx.Tx behind it, a Tx must be
// used by one goroutine at a time and not after the call it was handed to
// returns.
type Tx interface {
	eventstore.Tx
	sqlx.ExtContext
	GetContext(ctx context.Context, dest any, query string, args ...any) error
	SelectContext(ctx context.Context, dest any, query string, args ...any) error
	NamedExecContext(ctx context.Context, query string, arg any) (sql.Result, error)
	PreparexContext(ctx context.Context, query string) (*sqlx.Stmt, error)
}

// NewTx returns tx as a Tx: what esox hands its handlers, for code that
// calls a handler itself (a test, a custom runner). The caller keeps
// ownership of tx and commits or rolls it back.
func NewTx(tx *sqlx.Tx) Tx { return txView{tx: tx} }

// txView restricts a *sqlx.Tx to Tx. It is a struct, not the *sqlx.Tx
// itself, so that a handler cannot reach Commit or Rollback by a type
// assertion.
type txView struct{ tx *sqlx.Tx }

func (t txView) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, query, args...)
}

func (t txView) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, query, args...)
}

func (t txView) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, query, args...)
}

func (t txView) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	return t.tx.QueryxContext(ctx, query, args...)
}

func (t txView) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	return t.tx.QueryRowxContext(ctx, query, args...)
}

func (t txView) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return t.tx.GetContext(ctx, dest, query, args...)
}

func (t txView) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return t.tx.SelectContext(ctx, dest, query, args...)
}

func (t txView) NamedExecContext(ctx context.Context, query string, arg any) (sql.Result, error) {
	return t.tx.NamedExecContext(ctx, query, arg)
}

func (t txView) PreparexContext(ctx context.Context, query string) (*sqlx.Stmt, error) {
	return t.tx.PreparexContext(ctx, query)
}

func (t txView) DriverName() string { return t.tx.DriverName() }

func (t txView) Rebind(query string) string { return t.tx.Rebind(query) }

func (t txView) BindNamed(query string, arg any) (string, []any, error) {
	return t.tx.BindNamed(query, arg)
}

// stmtBinder is a transaction that can run one of the store's prepared
// statements: *sqlx.Tx, and the txView around one. Other eventstore.Tx
// values run the statement's SQL unprepared.
type stmtBinder interface {
	StmtxContext(ctx context.Context, stmt any) *sqlx.Stmt
}

func (t txView) StmtxContext(ctx context.Context, stmt any) *sqlx.Stmt {
	return t.tx.StmtxContext(ctx, stmt)
}
