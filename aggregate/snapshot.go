package aggregate

// Snapshotter is implemented by aggregates whose state can be saved as a
// snapshot, so that loading them reads only the events after it. It is
// optional: a Repository of an aggregate that does not implement it always
// replays the whole stream.
//
// Base's ID and Version are not part of the snapshot; the Repository keeps
// them beside it.
type Snapshotter interface {
	// SnapshotType names the schema of the snapshot, e.g. "order/v1".
	// Change it whenever the state or its encoding changes: a stored
	// snapshot of another type is ignored and the aggregate is replayed
	// from its events (and snapshotted again under the new type).
	SnapshotType() string
	// MarshalSnapshot returns the aggregate's state as a JSON object.
	MarshalSnapshot() ([]byte, error)
	// UnmarshalSnapshot restores the state returned by MarshalSnapshot
	// into a fresh aggregate (one returned by the Repository's new
	// function). On error the Repository discards the aggregate and
	// replays the stream instead.
	UnmarshalSnapshot(data []byte) error
}
