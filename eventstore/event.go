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
	// Data is the decoded event, a value of the type registered as Type.
	Data any
	// Payload is the event's JSON as stored.
	Payload json.RawMessage
	// Metadata is the event's metadata as stored.
	Metadata Metadata
	// RecordedAt is when the event was appended (the database's clock).
	RecordedAt time.Time
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
	// Payload is the encoded state.
	Payload json.RawMessage
	// RecordedAt is set by the store on save.
	RecordedAt time.Time
}
