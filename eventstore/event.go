package eventstore

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Event is one event to append.
type Event struct {
	// ID identifies the event everywhere, and is the message UUID on the
	// broker. Leave it zero to have the store assign a UUIDv7.
	ID uuid.UUID
	// Data is the event: a value (or pointer to a value) of a type registered
	// in the store's Registry.
	Data any
	// Metadata is merged over the metadata carried by the append's context.
	Metadata Metadata
}

// Record is a stored event as read back.
type Record struct {
	// Position is the event's place in the global feed.
	Position Position
	// ID is the event ID, a UUIDv7 unless the appender chose one.
	ID uuid.UUID
	// StreamID is the stream the event belongs to, "<category>-<id>".
	StreamID string
	// StreamVersion is the event's 1-based version within its stream.
	StreamVersion int64
	// Type is the registered event type name.
	Type string
	// SchemaVersion is the schema version of Type that Payload and Data
	// have: the version Type is registered at in every Record a store
	// decodes (stored events of older versions are upcast on reading; see
	// Registry.Upcast), the stored version in a Record built without
	// decoding (RawRecord.Record; a forwarder's message in its default
	// mode).
	SchemaVersion int
	// Data is the decoded event, a value of the type registered as Type.
	Data any
	// Payload is the event's JSON at SchemaVersion: as stored, unless
	// upcasters rewrote it on reading.
	Payload json.RawMessage
	// Metadata is the event's metadata as stored.
	Metadata Metadata
	// RecordedAt is when the event was appended (the database's clock).
	RecordedAt time.Time
	// StoredType and StoredSchemaVersion are the event's type name and
	// schema version as stored. They differ from Type and SchemaVersion
	// when upcasters renamed or upcast the event on reading.
	StoredType          string
	StoredSchemaVersion int
	// Redacted lists the personal fields of the event (JSON names, as
	// stored) whose subject was forgotten (Shredder.Forget): Data holds
	// their zero value, Payload null. nil when none was; see
	// docs/compliance.md.
	Redacted []string
	// Index is the record's place among the records its stored event
	// reads as: 0, unless an upcaster split the stored event into several
	// (Registry.Split). Those share Position, StreamVersion, Metadata,
	// RecordedAt and the stored fields, and have Index 0, 1, …; their ID is
	// SplitEventID(stored ID, Index), the stored event's ID for the first.
	Index int
}

// AppendResult reports what an append wrote.
type AppendResult struct {
	// StreamID is the stream appended to.
	StreamID string
	// FirstVersion and LastVersion are the versions of the first and last
	// event written; LastVersion is the stream's new current version, the
	// Exact version to expect on the next append.
	FirstVersion, LastVersion int64
	// LastPosition is the feed position of the last event written; pass it
	// to a projector's WaitFor for read-your-writes.
	LastPosition Position
	// EventIDs are the IDs of the events written, in order.
	EventIDs []uuid.UUID
}

// StreamInfo describes a stream.
type StreamInfo struct {
	StreamID string
	// Exists is false for a stream without events.
	Exists bool
	// Version is the stream's current version, 0 when it does not exist.
	Version int64
}

// Snapshot is an aggregate's state at a stream version, saved to shorten
// loading. Only the latest snapshot of a stream is needed; stores may keep
// only that one.
type Snapshot struct {
	StreamID string
	// Version is the stream version the state includes.
	Version int64
	// Type names the snapshot's schema, so a changed aggregate can ignore
	// old snapshots.
	Type string
	// SchemaVersion is the version of the snapshot's schema, so a changed
	// aggregate can ignore snapshots of another version (the aggregate
	// package does, and replaces them on the next save). 0 means 1.
	SchemaVersion int
	// Payload is the encoded state.
	Payload json.RawMessage
	// RecordedAt is set by the store on save.
	RecordedAt time.Time
}
