package eventstore

import (
	"context"
	"database/sql"
)

// Tx is a database transaction as the event store sees it: something that
// runs statements. *sql.Tx and *sqlx.Tx satisfy it, and so does the
// postgres.Tx handed to append hooks and projection handlers.
//
// It has no Commit or Rollback: whoever began the transaction ends it. The
// package imports database/sql for the method signatures only; it loads no
// driver.
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// TxAppender is a Store that can also append inside a transaction its
// caller owns, so that the events and the caller's other writes commit or
// roll back together (guarantee 4 in docs/guarantees.md). The PostgreSQL
// store implements it; the in-memory store does not, since it has no
// transactions.
//
// AppendTx has Append's contract, except that the events are written only
// when the caller commits tx: an error means the caller must roll tx back,
// and since AppendTx commits nothing its errors never leave an outcome open.
// The caller's Commit can: a Commit that fails because the connection broke
// may have committed. The PostgreSQL store's SettleAppend finds out, from
// the AppendResult's EventIDs.
type TxAppender interface {
	AppendTx(ctx context.Context, tx Tx, streamID string, expected ExpectedVersion, events []Event) (AppendResult, error)
}
