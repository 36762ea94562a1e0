package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"hash/fnv"
	"io"
	"net"
	"syscall"
)

// SQLSTATE codes esox classifies.
const (
	codeUniqueViolation         = "23505"
	codeUntranslatableCharacter = "22P05"
	codeUndefinedTable          = "42P01"
	codeQueryCanceled           = "57014"
	codeSerializationFailure    = "40001"
	codeDeadlockDetected        = "40P01"
	codeInsufficientPrivilege   = "42501"
)

// SQLState returns the SQLSTATE code of the first PostgreSQL error in err's
// chain, or "" when there is none. It asks the error through
// interface{ SQLState() string }, which lib/pq's *pq.Error and pgx's
// *pgconn.PgError both implement, so esox classifies errors the same way on
// either driver and never depends on a driver's error type.
func SQLState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

// IsTransient reports whether err is a database or network condition that
// goes away by itself, so that retrying the same work later may succeed: a
// lost or refused connection, a server shutting down or restarting
// (SQLSTATE classes 08, 53, 57 except 57014, 58), a serialization failure
// (40001) or a deadlock (40P01). A statement cancelled by a timeout
// (57014), a constraint violation, a syntax error and ctx's own errors are
// not transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	switch code := SQLState(err); {
	case code == codeSerializationFailure || code == codeDeadlockDetected:
		return true
	case code == codeQueryCanceled:
		return false
	case len(code) == 5:
		switch code[:2] {
		case "08", "53", "57", "58":
			// connection exception, insufficient resources, operator
			// intervention (shutdown, crash), system error
			return true
		}
		return false
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// pgx marks errors of a connection that failed before anything was
	// sent, or that was closed, with SafeToRetry; lib/pq has no such
	// method.
	var safe interface{ SafeToRetry() bool }
	return errors.As(err, &safe) && safe.SafeToRetry()
}

// IsUndefinedTable reports whether err is PostgreSQL's undefined_table
// (42P01), e.g. a table used before its migration ran.
func IsUndefinedTable(err error) bool { return SQLState(err) == codeUndefinedTable }

// LockKey returns the int64 PostgreSQL advisory-lock key esox uses for
// name: its FNV-64a hash. Every advisory lock esox takes (migrations,
// leadership of a projection or consumer group, projection registration)
// is keyed this way. In pg_locks the holder's row has locktype 'advisory',
// objsubid 1, classid the key's upper and objid its lower 32 bits (read as
// unsigned).
func LockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64())
}
