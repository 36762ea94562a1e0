package postgres

import (
	"context"
	"fmt"

	"github.com/esox-go/esox/eventstore"
)

// LockHeld reports whether a session of the current database holds the
// session advisory lock of name (keyed with LockKey), as a leader holds its
// job's lock: it reads pg_locks, which any role may, and takes no lock
// itself. q is a pool or a transaction. The answer may be stale as soon as
// it is returned; to act only while no leader runs, take the lock instead
// (pg_try_advisory_xact_lock(LockKey(name)) in the transaction that acts).
// ctx bounds the query; database errors are wrapped.
func LockHeld(ctx context.Context, q eventstore.Tx, name string) (bool, error) {
	k := uint64(LockKey(name))
	var held bool
	err := q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND classid = $1 AND objid = $2 AND objsubid = 1)`, int64(k>>32), int64(k&0xffffffff)).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("eventstore/postgres: read pg_locks: %w", err)
	}
	return held, nil
}
