package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/google/uuid"
)

// EncodedEvent is an Event validated and encoded for storage: what a Store
// writes as one row.
type EncodedEvent struct {
	ID uuid.UUID
	// Type, SchemaVersion and Payload are what is stored: the registered
	// name, version and JSON of the event's type, or what Registry.WriteAs
	// makes of them.
	Type          string
	SchemaVersion int
	Payload       []byte
	Metadata      []byte
	// Current is the event as it reads: the registered name and version
	// of its type, and its JSON at that version. It equals the stored
	// form unless the type has a WriteAs.
	Current VersionedEvent
	// Data is the event value as given, for stores that keep it.
	Data any
	// Meta is the merged metadata Metadata encodes.
	Meta Metadata
}

// EncodeOpts are a store's limits for EncodeAppend. A nil *EncodeOpts means
// no limits beyond PostgreSQL's.
type EncodeOpts struct {
	// MaxEventSize is the largest event accepted, in bytes of payload plus
	// metadata as encoded JSON; 0 means no limit.
	MaxEventSize int
	// DisableTraceContext stops EncodeAppend from recording the trace
	// context of ctx's span in the events' metadata.
	DisableTraceContext bool
}

// EncodeAppend validates an append's arguments and encodes its events with
// r: the stream ID, the expected version, a non-empty events slice, every
// event's type and payload; it assigns UUIDv7 IDs where ID is zero and merges
// each event's metadata over ctx's. When ctx carries a valid span context
// (OpenTelemetry), it records that span's W3C trace context in every
// event's metadata under MetadataTraceParent and MetadataTraceState,
// replacing any the metadata had; without one it adds nothing. Stores call
// it first so that every store
// refuses the same bad input with the same typed errors, before writing.
//
// It refuses what PostgreSQL could not store (see CheckJSONB): a payload
// with a *PayloadError (ErrMalformedPayload), metadata with an
// *InvalidArgumentError (ErrInvalidArgument) whose Field is "metadata". With
// opts.MaxEventSize set, a larger event is refused with an
// *EventTooLargeError (ErrEventTooLarge). Errors name the event's index.
//
// Events whose types have personal fields (see RegisterVersion) have them
// encrypted by the registry's Shredder, with their subject's data key (one
// key store call per append, none when the keys are cached); the checks
// and the size limit apply to the encrypted payload, as stored. An event
// holding personal fields (not all omitted) is refused
// (*InvalidArgumentError) when the registry has no Shredder or its subject
// field is empty; the key store's errors are returned wrapped.
func EncodeAppend(ctx context.Context, r *Registry, streamID string, expected ExpectedVersion, events []Event, opts *EncodeOpts) ([]EncodedEvent, error) {
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
	traceParent, traceState := "", ""
	if opts == nil || !opts.DisableTraceContext {
		traceParent, traceState = traceContextOf(ctx)
	}
	// The personal data of the events (docs/compliance.md): their types'
	// personal fields and the data keys of their subjects, fetched (or
	// created) in one call.
	personal, subjects, keys, err := r.personalKeys(ctx, events)
	if err != nil {
		return nil, err
	}
	out := make([]EncodedEvent, len(events))
	for i, e := range events {
		ev, current, err := r.encode(e.Data)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		name, payload := ev.Type, []byte(ev.Payload)
		if len(payload) == 0 || payload[0] != '{' && payload[0] != '[' {
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
		if personal != nil && personal[i] != nil {
			// The encryption stage: personal fields are stored encrypted,
			// bound to the event's ID; the checks below see what is stored.
			if payload, err = sealPersonal(personal[i], name, payload, id, subjects[i], keys); err != nil {
				var ie *InvalidArgumentError
				if !errors.As(err, &ie) {
					err = &PayloadError{Type: name, Op: "encode", Err: err}
				}
				return nil, fmt.Errorf("event %d: %w", i, err)
			}
		}
		if err := CheckJSONB(payload); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, &PayloadError{Type: name, Op: "encode", Err: fmt.Errorf("PostgreSQL cannot store the payload: %w", err)})
		}
		meta := ctxMeta.Merge(e.Metadata)
		if traceParent != "" {
			meta = withTraceContext(meta, traceParent, traceState)
		}
		metaJSON := meta.appendJSON(nil)
		if err := CheckJSONB(metaJSON); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, &InvalidArgumentError{Field: "metadata", Reason: "PostgreSQL cannot store it: " + err.Error()})
		}
		if opts != nil && opts.MaxEventSize > 0 && len(payload)+len(metaJSON) > opts.MaxEventSize {
			return nil, fmt.Errorf("event %d: %w", i, &EventTooLargeError{Index: i, Type: name, Size: len(payload) + len(metaJSON), Max: opts.MaxEventSize})
		}
		out[i] = EncodedEvent{ID: id, Type: name, SchemaVersion: ev.Version, Payload: payload, Metadata: metaJSON, Current: current, Data: e.Data, Meta: meta}
	}
	return out, nil
}

// ValidateSnapshot checks a snapshot before it is saved: a valid stream ID
// (*InvalidStreamIDError), a Version of at least 1, a SchemaVersion that is
// not negative, a non-empty Type that PostgreSQL can store as text (no NUL,
// valid UTF-8), and a Payload that is
// valid JSON and valid UTF-8 (*InvalidArgumentError for each). Snapshot
// payloads are kept as the JSON text given, so the escape \u0000, lone
// surrogate escapes and numbers of any size are accepted. Stores call it
// first in SaveSnapshot so that they refuse the same snapshots.
func ValidateSnapshot(s Snapshot) error {
	if err := ValidateStreamID(s.StreamID); err != nil {
		return err
	}
	switch {
	case s.Version < 1:
		return &InvalidArgumentError{Field: "snapshot version", Reason: fmt.Sprintf("must be at least 1, got %d", s.Version)}
	case s.SchemaVersion < 0:
		return &InvalidArgumentError{Field: "snapshot schema version", Reason: fmt.Sprintf("must not be negative (0 means 1), got %d", s.SchemaVersion)}
	case s.Type == "":
		return &InvalidArgumentError{Field: "snapshot type", Reason: "must not be empty"}
	case !json.Valid(s.Payload):
		return &InvalidArgumentError{Field: "snapshot payload", Reason: "must be valid JSON"}
	}
	if err := CheckText(s.Type); err != nil {
		return &InvalidArgumentError{Field: "snapshot type", Reason: err.Error()}
	}
	if !utf8.Valid(s.Payload) {
		return &InvalidArgumentError{Field: "snapshot payload", Reason: "must be valid UTF-8"}
	}
	return nil
}
