package aggregate

import (
	"errors"
	"fmt"
)

// Errors of the Repository. The store's errors (eventstore.ErrConcurrencyConflict,
// eventstore.ErrStreamNotFound, …) pass through wrapped; these are the
// Repository's own.
var (
	// ErrAlreadyExists: Create or CreateTx found that the aggregate's stream
	// already has events. Matched by *AlreadyExistsError, which also matches
	// eventstore.ErrConcurrencyConflict.
	ErrAlreadyExists = errors.New("aggregate: already exists")
	// ErrTxNotSupported: a Tx form (SaveTx, CreateTx, UpdateTx) was called
	// on a Repository whose store does not implement
	// eventstore.TxAppender.
	ErrTxNotSupported = errors.New("aggregate: the store cannot append in a caller's transaction")
)

// AlreadyExistsError reports a Create (or CreateTx) of an aggregate whose
// stream already has events; nothing was written.
//
// It matches ErrAlreadyExists, and unwraps to the store's
// *eventstore.ConcurrencyError (Expected eventstore.NoStream), so
// errors.Is(err, eventstore.ErrConcurrencyConflict) holds too and code that
// handles conflicts handles it. Code that retries conflicts should test
// ErrAlreadyExists first: a retried Create meets the same stream. Retry
// does.
type AlreadyExistsError struct {
	// StreamID is the aggregate's stream.
	StreamID string
	// Version is the stream's version when the Create was refused.
	Version int64
	// Err is the store's conflict.
	Err error
}

func (e *AlreadyExistsError) Error() string {
	return fmt.Sprintf("aggregate: %s already exists (stream version %d)", e.StreamID, e.Version)
}

// Is makes errors.Is(err, ErrAlreadyExists) true.
func (e *AlreadyExistsError) Is(target error) bool { return target == ErrAlreadyExists }

// Unwrap returns the store's *eventstore.ConcurrencyError.
func (e *AlreadyExistsError) Unwrap() error { return e.Err }
