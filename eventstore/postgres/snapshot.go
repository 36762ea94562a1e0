package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/esox-go/esox/eventstore"
)

// SaveSnapshot stores snap as the latest snapshot of snap.StreamID,
// replacing a saved one of the same or an older version; a snapshot older
// than the saved one is ignored. The payload is kept as the JSON text given
// (a json column, not jsonb), with snap.SchemaVersion (0 stored as 1).
//
// It returns the errors of eventstore.ValidateSnapshot, checked before
// anything is sent: an *eventstore.InvalidStreamIDError, or an
// *eventstore.InvalidArgumentError for a version below 1, an empty Type or
// one PostgreSQL cannot store as text, or a payload that is not valid JSON
// or not valid UTF-8. Should PostgreSQL still refuse the data (SQLSTATE
// classes 22 and 54), that is an *eventstore.InvalidArgumentError too. In
// every error case nothing is written. ctx bounds the query. Safe for
// concurrent use.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	if err := eventstore.ValidateSnapshot(snap); err != nil {
		return fmt.Errorf("eventstore/postgres: save snapshot: %w", err)
	}
	st, err := s.stmt(ctx, s.saveSnapshotSQL)
	if err != nil {
		return err
	}
	if _, err := st.ExecContext(ctx, snap.StreamID, snap.Version, snap.Type, int64(max(snap.SchemaVersion, 1)), string(snap.Payload)); err != nil {
		if code := SQLState(err); len(code) == 5 && (code[:2] == "22" || code[:2] == "54") {
			return fmt.Errorf("eventstore/postgres: save snapshot: %w", &eventstore.InvalidArgumentError{Field: "snapshot",
				Reason: fmt.Sprintf("PostgreSQL refused its type or payload (SQLSTATE %s): %v", code, err)})
		}
		return translate(ctx, "save snapshot", err)
	}
	return nil
}

// LoadSnapshot returns the latest snapshot of streamID, its SchemaVersion
// as saved (1 for snapshots saved before schema versions), or an error matching
// eventstore.ErrSnapshotNotFound when none was saved, or an
// *eventstore.InvalidStreamIDError. ctx bounds the query. Safe for
// concurrent use.
func (s *Store) LoadSnapshot(ctx context.Context, streamID string) (eventstore.Snapshot, error) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		return eventstore.Snapshot{}, fmt.Errorf("eventstore/postgres: load snapshot: %w", err)
	}
	st, err := s.stmt(ctx, s.loadSnapshotSQL)
	if err != nil {
		return eventstore.Snapshot{}, err
	}
	snap := eventstore.Snapshot{StreamID: streamID}
	var payload string
	err = st.QueryRowContext(ctx, streamID).Scan(&snap.Version, &snap.Type, &snap.SchemaVersion, &payload, &snap.RecordedAt)
	if isNoRows(err) {
		return eventstore.Snapshot{}, fmt.Errorf("eventstore/postgres: load snapshot of %q: %w", streamID, eventstore.ErrSnapshotNotFound)
	}
	if err != nil {
		return eventstore.Snapshot{}, translate(ctx, "load snapshot", err)
	}
	snap.Payload = json.RawMessage(payload)
	return snap, nil
}
