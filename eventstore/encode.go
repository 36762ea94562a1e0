package eventstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
)

// EncodedEvent is an Event validated and encoded for storage: what a Store
// writes as one row.
type EncodedEvent struct {
	ID       uuid.UUID
	Type     string
	Payload  []byte
	Metadata []byte
	// Data is the event value as given, for stores that keep it.
	Data any
	// Meta is the merged metadata Metadata encodes.
	Meta Metadata
}

// EncodeAppend validates an append's arguments and encodes its events with
// r: the stream ID, the expected version, a non-empty events slice, every
// event's type and payload; it assigns UUIDv7 IDs where ID is zero and merges
// each event's metadata over ctx's. Stores call it first so that every store
// refuses the same bad input with the same typed errors, before writing.
func EncodeAppend(ctx context.Context, r *Registry, streamID string, expected ExpectedVersion, events []Event) ([]EncodedEvent, error) {
	if err := ValidateStreamID(streamID); err != nil {
		return nil, err
	}
	if err := expected.Validate(); err != nil {
		return nil, err
	}
	if len(events) == 0 {
		return nil, &InvalidArgumentError{Field: "events", Reason: "at least one event is required"}
	}
	ctxMeta := MetadataFrom(ctx)
	out := make([]EncodedEvent, len(events))
	for i, e := range events {
		name, payload, err := r.Encode(e.Data)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		if payload[0] != '{' && payload[0] != '[' {
			// jsonb accepts scalars, but an event is an object; a custom
			// MarshalJSON that returns a bare string is a bug worth naming.
			return nil, fmt.Errorf("event %d: %w", i, &PayloadError{Type: name, Op: "encode", Err: fmt.Errorf("payload must be a JSON object or array")})
		}
		id := e.ID
		if id == uuid.Nil {
			if id, err = uuid.NewV7(); err != nil {
				return nil, fmt.Errorf("event %d: generate id: %w", i, err)
			}
		}
		meta := ctxMeta.Merge(e.Metadata)
		metaJSON, err := json.Marshal(meta)
		if err != nil {
			return nil, fmt.Errorf("event %d: encode metadata: %w", i, err)
		}
		out[i] = EncodedEvent{ID: id, Type: name, Payload: payload, Metadata: metaJSON, Data: e.Data, Meta: meta}
	}
	return out, nil
}
