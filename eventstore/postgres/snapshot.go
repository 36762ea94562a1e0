package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/esox-go/esox/eventstore"
)

// SaveSnapshot stores snap as the latest snapshot of snap.StreamID,
// replacing a saved one of the same or an older version; a snapshot older
// than the saved one is ignored. The payload is kept byte for byte.
//
// It returns an *eventstore.InvalidStreamIDError, or an
// *eventstore.InvalidArgumentError for a version below 1, an empty Type or a
// payload that is not valid JSON. ctx bounds the query. Safe for concurrent
// use.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	if err := eventstore.ValidateStreamID(snap.StreamID); err != nil {
		return fmt.Errorf("eventstore/postgres: save snapshot: %w", err)
	}
	switch {
	case snap.Version < 1:
		return fmt.Errorf("eventstore/postgres: save snapshot: %w", &eventstore.InvalidArgumentError{Field: "snapshot version", Reason: fmt.Sprintf("must be at least 1, got %d", snap.Version)})
	case snap.Type == "":
		return fmt.Errorf("eventstore/postgres: save snapshot: %w", &eventstore.InvalidArgumentError{Field: "snapshot type", Reason: "must not be empty"})
	case !json.Valid(snap.Payload):
		return fmt.Errorf("eventstore/postgres: save snapshot: %w", &eventstore.InvalidArgumentError{Field: "snapshot payload", Reason: "must be valid JSON"})
	}
	st, err := s.stmt(ctx, s.saveSnapshotSQL)
	if err != nil {
		return err
	}
	if _, err := st.ExecContext(ctx, snap.StreamID, snap.Version, snap.Type, string(snap.Payload)); err != nil {
		return translate(ctx, "save snapshot", err)
	}
	return nil
}

// LoadSnapshot returns the latest snapshot of streamID, or an error matching
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
	err = st.QueryRowContext(ctx, streamID).Scan(&snap.Version, &snap.Type, &payload, &snap.RecordedAt)
	if isNoRows(err) {
		return eventstore.Snapshot{}, fmt.Errorf("eventstore/postgres: load snapshot of %q: %w", streamID, eventstore.ErrSnapshotNotFound)
	}
	if err != nil {
		return eventstore.Snapshot{}, translate(ctx, "load snapshot", err)
	}
	snap.Payload = json.RawMessage(payload)
	return snap, nil
}
