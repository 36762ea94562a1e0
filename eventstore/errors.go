package eventstore

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the stores return for these conditions matches
// one of them with errors.Is; the typed errors below carry the details and can
// be extracted with errors.As.
var (
	// ErrConcurrencyConflict: an append's expected version did not match the
	// stream, or the append would have put the stream out of order in the
	// global feed. Matched by *ConcurrencyError.
	ErrConcurrencyConflict = errors.New("eventstore: concurrency conflict")
	// ErrStreamNotFound: the stream has no events.
	ErrStreamNotFound = errors.New("eventstore: stream not found")
	// ErrUnknownEventType: an event's Go type or stored type name is not in
	// the Registry. Matched by *UnknownEventTypeError.
	ErrUnknownEventType = errors.New("eventstore: unknown event type")
	// ErrInvalidStreamID: a stream ID is empty, too long or contains control
	// characters. Matched by *InvalidStreamIDError.
	ErrInvalidStreamID = errors.New("eventstore: invalid stream id")
	// ErrMalformedPayload: a payload could not be encoded to or decoded from
	// JSON. Matched by *PayloadError.
	ErrMalformedPayload = errors.New("eventstore: malformed payload")
	// ErrInvalidArgument: an argument other than the stream ID is invalid
	// (no events, a negative version, a bad limit). Matched by
	// *InvalidArgumentError.
	ErrInvalidArgument = errors.New("eventstore: invalid argument")
	// ErrSnapshotNotFound: no snapshot was saved for the stream.
	ErrSnapshotNotFound = errors.New("eventstore: snapshot not found")
)

// ConcurrencyError reports a failed append: the stream's actual version did
// not satisfy the expected one, or (Reason non-empty) the append ran in a
// transaction older than the one that wrote the stream's last event, so
// committing it would reorder the stream in the global feed (guarantee 3
// in docs/guarantees.md). Nothing of the append was written.
//
// It matches ErrConcurrencyConflict.
type ConcurrencyError struct {
	StreamID string
	Expected ExpectedVersion
	// Actual is the stream's current version when the append was refused, 0
	// for a stream without events.
	Actual int64
	// Reason explains a conflict other than a version mismatch; empty when
	// the versions disagree.
	Reason string
}

func (e *ConcurrencyError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("eventstore: concurrency conflict on stream %q (expected version %s, actual %d): %s", e.StreamID, e.Expected, e.Actual, e.Reason)
	}
	return fmt.Sprintf("eventstore: concurrency conflict on stream %q: expected version %s, actual %d", e.StreamID, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConcurrencyConflict) true.
func (e *ConcurrencyError) Is(target error) bool { return target == ErrConcurrencyConflict }

// UnknownEventTypeError reports an event type missing from the Registry: a Go
// type when appending (GoType set) or a stored name when reading (Name set).
// It matches ErrUnknownEventType.
type UnknownEventTypeError struct {
	Name   string
	GoType string
}

func (e *UnknownEventTypeError) Error() string {
	if e.GoType != "" {
		return fmt.Sprintf("eventstore: unknown event type: Go type %s is not registered (call eventstore.Register)", e.GoType)
	}
	return fmt.Sprintf("eventstore: unknown event type %q: no Go type is registered under that name", e.Name)
}

// Is makes errors.Is(err, ErrUnknownEventType) true.
func (e *UnknownEventTypeError) Is(target error) bool { return target == ErrUnknownEventType }

// InvalidStreamIDError reports a stream ID that cannot be stored. It matches
// ErrInvalidStreamID.
type InvalidStreamIDError struct {
	StreamID string
	Reason   string
}

func (e *InvalidStreamIDError) Error() string {
	id := e.StreamID
	if len(id) > 64 {
		id = id[:64] + "…"
	}
	return fmt.Sprintf("eventstore: invalid stream id %q: %s", id, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidStreamID) true.
func (e *InvalidStreamIDError) Is(target error) bool { return target == ErrInvalidStreamID }

// PayloadError reports an event payload that could not be encoded or decoded.
// It matches ErrMalformedPayload and unwraps to the codec's error.
type PayloadError struct {
	// Type is the event type name.
	Type string
	// Op is "encode" or "decode".
	Op  string
	Err error
}

func (e *PayloadError) Error() string {
	return fmt.Sprintf("eventstore: malformed payload: cannot %s event type %q: %v", e.Op, e.Type, e.Err)
}

// Is makes errors.Is(err, ErrMalformedPayload) true.
func (e *PayloadError) Is(target error) bool { return target == ErrMalformedPayload }

// Unwrap returns the codec's error.
func (e *PayloadError) Unwrap() error { return e.Err }

// InvalidArgumentError names an argument that was refused and why. It
// matches ErrInvalidArgument.
type InvalidArgumentError struct {
	Field  string
	Reason string
}

func (e *InvalidArgumentError) Error() string {
	return fmt.Sprintf("eventstore: invalid %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *InvalidArgumentError) Is(target error) bool { return target == ErrInvalidArgument }
