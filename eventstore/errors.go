package eventstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
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
	// ErrEventTooLarge: an event's encoded payload and metadata are larger
	// than the store's configured maximum event size. Matched by
	// *EventTooLargeError, which also matches ErrInvalidArgument.
	ErrEventTooLarge = errors.New("eventstore: event too large")
	// ErrOutcomeUnknown: an append failed in a way that leaves open whether
	// it was written (the connection broke after the statement was sent),
	// and the store could not find out. It is the one append error after
	// which the events may be stored; every other error means nothing was
	// written. Matched by *OutcomeUnknownError.
	ErrOutcomeUnknown = errors.New("eventstore: append outcome unknown")
	// ErrUnknownSchemaVersion: a stored event's schema version is one the
	// Registry cannot read: newer than the version its type is registered
	// at (written by a newer deployment), or one no upcaster reads.
	// Matched by *SchemaVersionError.
	ErrUnknownSchemaVersion = errors.New("eventstore: unknown schema version")
	// ErrInvalidUpcaster: an upcaster cannot be registered, or the
	// registered upcasters do not chain up to the registered versions
	// (Registry.Validate). Matched by *UpcasterError, which also matches
	// ErrInvalidArgument.
	ErrInvalidUpcaster = errors.New("eventstore: invalid upcaster")
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

// EventTooLargeError reports an event whose encoded payload plus metadata
// exceed the store's maximum event size (MaxEventSize in the store's
// config). Nothing of the append was written.
//
// It matches ErrEventTooLarge and, since the event is an argument the store
// refuses, ErrInvalidArgument.
type EventTooLargeError struct {
	// Index is the event's index in the append's events slice.
	Index int
	// Type is the event type name.
	Type string
	// Size is the event's size in bytes: its payload and metadata as JSON.
	Size int
	// Max is the configured maximum.
	Max int
}

func (e *EventTooLargeError) Error() string {
	return fmt.Sprintf("eventstore: event too large: event %d (type %q) has %d bytes of payload and metadata, more than the store's maximum of %d", e.Index, e.Type, e.Size, e.Max)
}

// Is makes errors.Is(err, ErrEventTooLarge) and errors.Is(err,
// ErrInvalidArgument) true.
func (e *EventTooLargeError) Is(target error) bool {
	return target == ErrEventTooLarge || target == ErrInvalidArgument
}

// OutcomeUnknownError reports an append that may or may not have been
// written: the connection failed after the statement (or its transaction's
// COMMIT) was sent, and looking the events up afterwards did not succeed
// either (the database stayed unreachable, or ctx ended). The append is
// atomic, so either all of EventIDs are stored in StreamID or none is.
//
// Settle it before retrying: look the first event ID up (postgres:
// Store.SettleAppend or Store.LookupEvents) or read the stream (StreamInfo,
// ReadStream). Retrying the append with the same events and the same event
// IDs is safe too: a store reports an append whose events are all stored
// already, as one earlier append of the same stream at versions the expected
// version allows, as written, and refuses any other reuse of an ID. Retrying
// with fresh IDs may store the events twice.
//
// It matches ErrOutcomeUnknown and unwraps to the error that broke the
// append.
type OutcomeUnknownError struct {
	StreamID string
	// EventIDs are the IDs of the append's events, in order.
	EventIDs []uuid.UUID
	// Err is the error that broke the append; the error of the last
	// attempt to look the events up is in the message.
	Err error
	// Lookup is the error of the last attempt to look the events up.
	Lookup error
}

func (e *OutcomeUnknownError) Error() string {
	ids := make([]string, 0, 3)
	for i, id := range e.EventIDs {
		if i == 2 && len(e.EventIDs) > 3 {
			ids = append(ids, fmt.Sprintf("… (%d more)", len(e.EventIDs)-2))
			break
		}
		ids = append(ids, id.String())
	}
	msg := fmt.Sprintf("eventstore: append outcome unknown: the append of %d event(s) to stream %q may or may not have been written (%v)",
		len(e.EventIDs), e.StreamID, e.Err)
	if e.Lookup != nil {
		msg += fmt.Sprintf("; looking the events up failed too (%v)", e.Lookup)
	}
	return msg + fmt.Sprintf("; settle it by looking up event %s (all or none are stored) or reading the stream's version with StreamInfo, "+
		"or retry with the same event IDs [%s], never with fresh ones", e.firstID(), strings.Join(ids, ", "))
}

func (e *OutcomeUnknownError) firstID() string {
	if len(e.EventIDs) == 0 {
		return "<none>"
	}
	return e.EventIDs[0].String()
}

// Is makes errors.Is(err, ErrOutcomeUnknown) true.
func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

// Unwrap returns the error that broke the append.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// SchemaVersionError reports a stored event whose schema version the
// Registry cannot read. When Version is newer than Latest (TooNew), the
// event was written by a deployment that knows a newer version of its type:
// it is never guessed at; deploy the code that reads it (readers first, see
// docs/evolution.md). Otherwise no upcaster reads that version: register
// one (Registry.Upcast).
//
// It matches ErrUnknownSchemaVersion.
type SchemaVersionError struct {
	// Type is the stored event type name.
	Type string
	// Version is the stored schema version.
	Version int
	// Latest is the newest version of Type the Registry reads: the version
	// it is registered at, or, for a type known only to upcasters (renamed
	// or dropped), the newest version an upcaster reads.
	Latest int
}

// TooNew reports whether the stored version is newer than any this
// Registry reads: the event was written by newer code.
func (e *SchemaVersionError) TooNew() bool { return e.Version > e.Latest }

func (e *SchemaVersionError) Error() string {
	if e.TooNew() {
		return fmt.Sprintf("eventstore: unknown schema version: event type %q is stored at version %d, newer than version %d this code reads "+
			"(written by a newer deployment? deploy code that reads it before any instance writes it; see docs/evolution.md)", e.Type, e.Version, e.Latest)
	}
	return fmt.Sprintf("eventstore: unknown schema version: no upcaster reads version %d of event type %q (this code reads version %d; register one with Registry.Upcast)",
		e.Version, e.Type, e.Latest)
}

// Is makes errors.Is(err, ErrUnknownSchemaVersion) true.
func (e *SchemaVersionError) Is(target error) bool { return target == ErrUnknownSchemaVersion }

// UpcasterError reports an upcaster the Registry refuses, or a problem of
// the upcaster chains Registry.Validate found, at event type Type and
// schema version Version (the version the upcaster reads).
//
// It matches ErrInvalidUpcaster and ErrInvalidArgument.
type UpcasterError struct {
	Type    string
	Version int
	Reason  string
}

func (e *UpcasterError) Error() string {
	return fmt.Sprintf("eventstore: invalid upcaster of event type %q version %d: %s", e.Type, e.Version, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidUpcaster) and errors.Is(err,
// ErrInvalidArgument) true.
func (e *UpcasterError) Is(target error) bool {
	return target == ErrInvalidUpcaster || target == ErrInvalidArgument
}
