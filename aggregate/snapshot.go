package aggregate

// Snapshotter is implemented by aggregates whose state can be saved as a
// snapshot, so that loading them reads only the events after it. It is
// optional: a Repository of an aggregate that does not implement it always
// replays the whole stream.
//
// Base's ID and Version are not part of the snapshot; the Repository keeps
// them beside it.
type Snapshotter interface {
	// SnapshotType names the snapshot's schema, e.g. "order". A stored
	// snapshot of another type is ignored: the aggregate is replayed from
	// its events and snapshotted again under the new type on its next
	// Save. Change it, or the version (SnapshotVersioner), whenever the
	// state or its encoding changes.
	SnapshotType() string
	// MarshalSnapshot returns the aggregate's state as a JSON object.
	MarshalSnapshot() ([]byte, error)
	// UnmarshalSnapshot restores the state returned by MarshalSnapshot
	// into a fresh aggregate (one returned by the Repository's new
	// function). On error the Repository discards the aggregate and
	// replays the stream instead.
	UnmarshalSnapshot(data []byte) error
}

// SnapshotVersioner is implemented by a Snapshotter that numbers the
// versions of its snapshot schema (without it, the version is 1). Snapshots
// are saved with the version (eventstore.Snapshot.SchemaVersion), and a
// stored snapshot of any other version, older or newer, is ignored: the
// aggregate is replayed from its events, never decoded from a snapshot of
// another shape, and its next Save replaces the snapshot. So bump the
// version whenever the state or its encoding changes; during a rolling
// deploy, instances of the two releases each ignore the other's snapshots.
type SnapshotVersioner interface {
	// SnapshotSchemaVersion returns the version of the snapshot schema,
	// 1 or more.
	SnapshotSchemaVersion() int
}

// snapshotVersion returns s's snapshot schema version: its
// SnapshotSchemaVersion, or 1.
func snapshotVersion(s Snapshotter) int {
	if v, ok := s.(SnapshotVersioner); ok {
		return v.SnapshotSchemaVersion()
	}
	return 1
}
