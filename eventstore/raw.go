package eventstore

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// RawRecord is a stored event as read, before decoding: its type, schema
// version, payload and metadata as stored. Readers that decode only some
// types (a projection decodes the types it handles) or none (the forwarder
// relays the payload as is) read RawRecords and decode what they need with
// Decode or AppendDecoded, which upcast older schema versions first.
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
	// SchemaVersion is the schema version the event was written with: the
	// version its type was registered at by the code that appended it.
	// Events stored before esox recorded versions read as 1; 0 means 1.
	SchemaVersion int
	// Payload is the event's JSON as stored.
	Payload json.RawMessage
	// Metadata is the event's metadata JSON as stored: a flat object of
	// strings as esox writes it, "{}" for none.
	Metadata json.RawMessage
	// RecordedAt is when the event was appended (the database's clock).
	RecordedAt time.Time
	// Redacted lists the personal fields (by JSON name, as stored) that
	// Registry.Decrypt replaced by null because their subject was
	// forgotten; nil when none was.
	Redacted []string

	// decryptErr is why Registry.Decrypt could not decrypt the payload,
	// returned by AppendDecoded.
	decryptErr error
}

// storedVersion returns r's schema version, 0 read as 1.
func (r RawRecord) storedVersion() int {
	if r.SchemaVersion == 0 {
		return 1
	}
	return r.SchemaVersion
}

// Decode returns r as a Record, upcast to its type's registered version and
// decoded with reg (see AppendDecoded), for a stored event that reads as
// exactly one record. A stored event that upcasters drop or split (see
// Registry.Drop and Registry.Split) reads as none or several: Decode then
// returns an *InvalidArgumentError; readers that may meet those use
// AppendDecoded. Other errors are AppendDecoded's. The Record is returned
// with every field but Data set even on error, as far as known.
func (r RawRecord) Decode(reg *Registry) (Record, error) {
	var one [1]Record
	recs, err := r.AppendDecoded(one[:0], reg)
	if err != nil {
		if len(recs) == 0 {
			rec, _ := r.Record()
			return rec, err
		}
		return recs[0], err
	}
	if len(recs) != 1 {
		rec, _ := r.Record()
		return rec, fmt.Errorf("stream %q version %d: %w", r.StreamID, r.StreamVersion, &InvalidArgumentError{Field: "record",
			Reason: fmt.Sprintf("the stored event reads as %d records (upcasters drop or split it): read it with AppendDecoded", len(recs))})
	}
	return recs[0], nil
}

// AppendDecoded appends to dst the records r reads as with reg, and returns
// the extended slice. A stored event at its type's registered version reads
// as one record, its payload decoded into the registered Go type; an older
// one is first passed through the upcasters (Registry.ToCurrent), and reads
// as the records they yield, each decoded: usually one, none for a dropped
// event, several for a split one (same Position, StreamVersion, metadata
// and RecordedAt; Index 0, 1, …; IDs from SplitEventID). Every record
// carries the stored type and version in StoredType and
// StoredSchemaVersion.
//
// Errors, which name the stream and version: a *SchemaVersionError
// (ErrUnknownSchemaVersion) for a version newer than the registered one or
// that no upcaster reads; an *UnknownEventTypeError; a *PayloadError for a
// payload that does not decode, an upcaster that fails, or metadata that is
// not a JSON object. On error dst is returned with the records of r decoded
// before the failure, if any. Safe for concurrent use.
func (r RawRecord) AppendDecoded(dst []Record, reg *Registry) ([]Record, error) {
	rec, err := r.Record()
	if err != nil {
		return dst, err
	}
	if rec, err = r.personal(rec, reg); err != nil {
		return dst, err
	}
	reg.mu.RLock()
	defer reg.mu.RUnlock()
	if t, ok := reg.byName[r.Type]; ok && t.version == rec.SchemaVersion {
		// The common case: stored at the current version.
		if rec.Data, err = reg.decode(t, rec.Payload); err != nil {
			return dst, fmt.Errorf("stream %q version %d: %w", r.StreamID, r.StreamVersion, err)
		}
		return append(dst, rec), nil
	}
	var buf [1]VersionedEvent
	evs, err := reg.toCurrent(buf[:0], VersionedEvent{Type: r.Type, Version: rec.SchemaVersion, Payload: rec.Payload}, 0)
	if err != nil {
		return dst, fmt.Errorf("stream %q version %d: %w", r.StreamID, r.StreamVersion, err)
	}
	for i, ev := range evs {
		out := rec
		out.Type, out.SchemaVersion, out.Payload, out.Index = ev.Type, ev.Version, ev.Payload, i
		if i > 0 {
			out.ID = SplitEventID(r.ID, i)
			out.Metadata = rec.Metadata.Clone()
		}
		t := reg.byName[ev.Type] // toCurrent returns current events only
		if out.Data, err = reg.decode(t, ev.Payload); err != nil {
			return dst, fmt.Errorf("stream %q version %d: %w", r.StreamID, r.StreamVersion, err)
		}
		dst = append(dst, out)
	}
	return dst, nil
}

// personal is the decryption stage's guard of AppendDecoded: a payload
// that still holds encrypted personal fields was not passed through
// Registry.Decrypt, or did not decrypt. With a Shredder that is an error;
// without one, the fields read as redacted. It costs a search per payload,
// and only for a registry that knows personal data.
func (r RawRecord) personal(rec Record, reg *Registry) (Record, error) {
	if !reg.hasPersonal.Load() && reg.shredder.Load() == nil || !hasEnvelope(r.Payload) {
		return rec, nil
	}
	if reg.shredder.Load() != nil {
		if !holdsEnvelope(r.Payload) {
			return rec, nil // the marker, but no envelope
		}
		return rec, fmt.Errorf("stream %q version %d: %w", r.StreamID, r.StreamVersion, &PayloadError{Type: r.Type, Op: "decrypt",
			Err: fmt.Errorf("the payload holds encrypted personal data: pass the raw records through Registry.Decrypt before decoding them")})
	}
	payload, redacted, _, err := openPersonal(r.Payload, appendEnvelopes(nil, 0, r.Payload), r.ID, nil, nil)
	if err != nil {
		return rec, fmt.Errorf("stream %q version %d: %w", r.StreamID, r.StreamVersion, &PayloadError{Type: r.Type, Op: "decrypt", Err: err})
	}
	rec.Payload, rec.Redacted = payload, append(rec.Redacted, redacted...)
	return rec, nil
}

// Record returns r as a Record without decoding or upcasting its payload
// (Data is nil; Type, SchemaVersion and Payload are as stored, or as
// Registry.Decrypt left the payload), its metadata parsed. An error is a
// *PayloadError for metadata that is not a JSON object, or for a payload
// Registry.Decrypt could not decrypt (Op "decrypt"); the Record is
// returned with its other fields set.
func (r RawRecord) Record() (Record, error) {
	v := r.storedVersion()
	rec := Record{
		Position:            r.Position,
		ID:                  r.ID,
		StreamID:            r.StreamID,
		StreamVersion:       r.StreamVersion,
		Type:                r.Type,
		SchemaVersion:       v,
		Payload:             r.Payload,
		RecordedAt:          r.RecordedAt,
		StoredType:          r.Type,
		StoredSchemaVersion: v,
		Redacted:            r.Redacted,
	}
	if r.decryptErr != nil {
		return rec, fmt.Errorf("stream %q version %d: %w", r.StreamID, r.StreamVersion, &PayloadError{Type: r.Type, Op: "decrypt", Err: r.decryptErr})
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
// strings, decoded in one pass (decodeFlatMetadata); anything else goes
// through encoding/json, and Metadata.UnmarshalJSON keeps non-string values
// as their JSON text.
func decodeMetadata(b []byte) (Metadata, error) {
	if md, ok := decodeFlatMetadata(b); ok {
		return md, nil
	}
	return decodeMetadataJSON(b)
}

// decodeMetadataJSON is decodeMetadata with encoding/json only.
func decodeMetadataJSON(b []byte) (Metadata, error) {
	var kv map[string]string
	if json.Unmarshal(b, &kv) == nil {
		return MetadataFromMap(kv), nil
	}
	var md Metadata
	err := json.Unmarshal(b, &md)
	return md, err
}

// decodeFlatMetadata decodes b in one pass, with one string allocation for
// all keys and values, when b is valid UTF-8 and a flat JSON object of
// strings without escapes (what esox writes, as PostgreSQL returns it); it
// returns false for anything else, which decodeMetadataJSON then decodes.
// Where it returns true it returns what decodeMetadataJSON returns.
func decodeFlatMetadata(b []byte) (Metadata, bool) {
	var md Metadata
	if !utf8.Valid(b) {
		return md, false
	}
	text := string(b) // the keys and values are substrings of it
	i := skipSpaceString(text, 0)
	if i >= len(text) || text[i] != '{' {
		return md, false
	}
	i = skipSpaceString(text, i+1)
	if i < len(text) && text[i] == '}' {
		return md, skipSpaceString(text, i+1) == len(text)
	}
	for {
		k, next, ok := plainString(text, i)
		if !ok {
			return Metadata{}, false
		}
		i = skipSpaceString(text, next)
		if i >= len(text) || text[i] != ':' {
			return Metadata{}, false
		}
		v, next, ok := plainString(text, skipSpaceString(text, i+1))
		if !ok {
			return Metadata{}, false
		}
		md.set(k, v)
		i = skipSpaceString(text, next)
		if i >= len(text) {
			return Metadata{}, false
		}
		switch text[i] {
		case ',':
			i = skipSpaceString(text, i+1)
		case '}':
			return md, skipSpaceString(text, i+1) == len(text)
		default:
			return Metadata{}, false
		}
	}
}

// skipSpaceString returns the offset of the first byte of s at or after i that is
// not JSON whitespace.
func skipSpaceString(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the JSON string starting with the quote at s[i], and
// the offset after its closing quote, when it has no escape and no control
// character (it then reads as its bytes).
func plainString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return s[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		}
	}
	return "", 0, false
}
