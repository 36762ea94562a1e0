package eventstore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// RawRecord is a stored event as read, before decoding: its payload and
// metadata are the stored JSON. Readers that decode only some types (a
// projection decodes the types it handles) or none (the forwarder relays
// the payload as is) read RawRecords and decode what they need with Decode.
type RawRecord struct {
	// Position is the event's place in the global feed.
	Position Position
	// ID is the event ID.
	ID uuid.UUID
	// StreamID is the stream the event belongs to.
	StreamID string
	// StreamVersion is the event's 1-based version within its stream.
	StreamVersion int64
	// Type is the stored event type name.
	Type string
	// Payload is the event's JSON as stored.
	Payload json.RawMessage
	// Metadata is the event's metadata JSON as stored: a flat object of
	// strings as esox writes it, "{}" for none.
	Metadata json.RawMessage
	// RecordedAt is when the event was appended (the database's clock).
	RecordedAt time.Time
}

// Decode returns r as a Record, its payload decoded with reg into the type
// registered as r.Type and its metadata parsed. Errors are an
// *UnknownEventTypeError or a *PayloadError (for the payload or the
// metadata), and name the stream and version; the Record is returned with
// every field but Data set even then.
func (r RawRecord) Decode(reg *Registry) (Record, error) {
	rec, err := r.Record()
	if err != nil {
		return rec, err
	}
	if rec.Data, err = reg.Decode(r.Type, r.Payload); err != nil {
		return rec, fmt.Errorf("stream %q version %d: %w", r.StreamID, r.StreamVersion, err)
	}
	return rec, nil
}

// Record returns r as a Record without decoding its payload (Data is nil),
// its metadata parsed. An error is a *PayloadError for metadata that is not
// a JSON object; the Record is returned with its other fields set.
func (r RawRecord) Record() (Record, error) {
	rec := Record{
		Position:      r.Position,
		ID:            r.ID,
		StreamID:      r.StreamID,
		StreamVersion: r.StreamVersion,
		Type:          r.Type,
		Payload:       r.Payload,
		RecordedAt:    r.RecordedAt,
	}
	if len(r.Metadata) > 2 { // "{}" is the zero Metadata
		md, err := decodeMetadata(r.Metadata)
		if err != nil {
			return rec, fmt.Errorf("stream %q version %d: metadata: %w", r.StreamID, r.StreamVersion, &PayloadError{Type: r.Type, Op: "decode", Err: err})
		}
		rec.Metadata = md
	}
	return rec, nil
}

// decodeMetadata decodes a metadata column. esox writes flat objects of
// strings, decoded in one pass; anything else goes through
// Metadata.UnmarshalJSON, which keeps non-string values as their JSON text.
func decodeMetadata(b []byte) (Metadata, error) {
	var kv map[string]string
	if json.Unmarshal(b, &kv) == nil {
		return MetadataFromMap(kv), nil
	}
	var md Metadata
	err := json.Unmarshal(b, &md)
	return md, err
}
