package eventstore

import (
	"context"
	"iter"
)

// Store appends events to streams and reads them back, per stream and as one
// global feed.
//
// Implementations must be safe for concurrent use and must pass the
// conformance suite in eventstore/storetest. esox ships two: the PostgreSQL
// store (eventstore/postgres) and the in-memory one (eventstore/memory). The
// interface may grow; implement it outside esox only if you run storetest.
type Store interface {
	// Append writes events to the end of streamID atomically if the stream's
	// current version satisfies expected, assigning each event the next
	// version and, when its ID is zero, a UUIDv7. Metadata carried by ctx (see
	// WithMetadata) is merged under each event's own. Any and StreamExists
	// appends do not fail because a concurrent append to the same stream
	// won the next version: the store retries them.
	//
	// What an error says about what was written: an error matching
	// ErrOutcomeUnknown (an *OutcomeUnknownError) means the events may or
	// may not be stored, all or none of them; every other error means none
	// was written. A store whose connection can fail after the append was
	// sent finds out itself (the PostgreSQL store looks the event IDs up)
	// and returns success or a "not written" error; ErrOutcomeUnknown is
	// its last resort, when it cannot find out. Settle that by looking the
	// event IDs up or reading StreamInfo, or retry with the same event IDs.
	//
	// The other errors: a *ConcurrencyError (ErrConcurrencyConflict) on a
	// version mismatch, an *InvalidStreamIDError, an *UnknownEventTypeError,
	// a *PayloadError (ErrMalformedPayload) for a payload that cannot be
	// encoded or stored, an *InvalidArgumentError for an empty events
	// slice, metadata that cannot be stored or an event ID that is already
	// stored, an *EventTooLargeError above the store's maximum event size,
	// and errors wrapping ctx.Err() or the database's. ctx bounds the append
	// (a store may take a bounded extra moment to settle an append whose
	// connection failed).
	//
	// An append whose events are all stored already, with the same IDs in
	// the same order as one earlier append to streamID at versions expected
	// allows, is a replay: it writes nothing and returns the stored events'
	// result. Retrying with the same event IDs is therefore safe; retrying
	// with fresh IDs after ErrOutcomeUnknown may store the events twice.
	Append(ctx context.Context, streamID string, expected ExpectedVersion, events []Event) (AppendResult, error)

	// ReadStream yields the records of streamID with StreamVersion >= from
	// (from < 1 reads from the start), in version order, fetching them in
	// pages so a long stream never sits in memory. A stream without events
	// yields nothing. Each stored event is decrypted (Registry.Decrypt:
	// personal fields, docs/compliance.md), upcast to its type's registered
	// schema version and decoded (RawRecord.AppendDecoded): it yields one
	// record, or none when an upcaster drops it, or several sharing its
	// StreamVersion when one splits it. An error (invalid stream ID, a
	// stored type that is not registered, a schema version the registry
	// cannot read, ctx ended) is yielded once as the last pair.
	ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[Record, error]

	// ReadStreamRaw returns up to limit stored events of streamID with
	// StreamVersion >= from (from < 1 reads from the start), in version
	// order, one RawRecord per stored event, neither decrypted, upcast nor
	// decoded (pass them through Registry.Decrypt before AppendDecoded):
	// readers that must see every stored version (an aggregate counts the
	// events upcasters drop too) page through it and decode what they need
	// (RawRecord.AppendDecoded). A stream without events from from on
	// returns none. limit must be between 1 and MaxReadAllLimit (else an
	// *InvalidArgumentError); an invalid stream ID is an
	// *InvalidStreamIDError.
	ReadStreamRaw(ctx context.Context, streamID string, from int64, limit int) ([]RawRecord, error)

	// ReadAll returns the records of up to limit stored events that follow
	// after in the global feed, in feed order. It never returns a record
	// while a transaction that could still commit a record before it is
	// open (guarantees 2 and 3 in docs/guarantees.md), so a reader that
	// resumes from the last Position it saw never misses one. limit must be
	// between 1 and 10,000. Records are decrypted, upcast and decoded as by
	// ReadStream: limit counts stored events, so a split event may make the
	// result longer, and the records of one stored event (one Position) are
	// returned together. Stored events that upcasters drop are passed over:
	// ReadAll reads on until it has a record to return or the feed ends.
	ReadAll(ctx context.Context, after Position, limit int) ([]Record, error)

	// StreamInfo reports whether streamID has events and its current version.
	StreamInfo(ctx context.Context, streamID string) (StreamInfo, error)

	// SaveSnapshot stores s as the latest snapshot of s.StreamID.
	SaveSnapshot(ctx context.Context, s Snapshot) error

	// LoadSnapshot returns the latest snapshot of streamID, or an error
	// matching ErrSnapshotNotFound.
	LoadSnapshot(ctx context.Context, streamID string) (Snapshot, error)

	// Registry returns the registry the store encodes and decodes with.
	Registry() *Registry
}

// MaxReadAllLimit is the largest limit ReadAll accepts.
const MaxReadAllLimit = 10_000
