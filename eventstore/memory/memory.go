package memory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"sync"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/google/uuid"
)

// readStreamPageSize is how many records ReadStream copies per lock.
const readStreamPageSize = 256

// Store is an in-memory eventstore.Store. Create it with New; the zero value
// is not usable. A Store is safe for concurrent use.
type Store struct {
	reg *eventstore.Registry
	cfg Config

	mu        sync.RWMutex
	feed      []stored                       // in feed order
	streams   map[string][]int               // stream ID -> indexes into feed, in version order
	eventIDs  map[uuid.UUID]struct{}         // every stored event ID
	snapshots map[string]eventstore.Snapshot // latest snapshot per stream
	lastTx    uint64
	lastPos   int64
}

// stored is one event as kept by the store: encoded, like a table row.
type stored struct {
	pos        eventstore.Position
	id         uuid.UUID
	streamID   string
	version    int64
	typ        string
	payload    []byte
	metadata   []byte
	recordedAt time.Time
}

var _ eventstore.Store = (*Store)(nil)

// Config configures a Store. The zero value means all defaults.
type Config struct {
	// MaxEventSize is the largest event Append accepts, in bytes of payload
	// plus metadata as encoded JSON; a larger one is refused with an
	// *eventstore.EventTooLargeError. Defaults to 0, no limit (beyond
	// PostgreSQL's, which every store applies). Set it to the PostgreSQL
	// store's value to have both refuse the same events. Must not be
	// negative.
	MaxEventSize int
}

// New returns an empty Store that encodes and decodes events with reg, with
// the default Config.
func New(reg *eventstore.Registry) *Store {
	s, err := NewWithConfig(reg, Config{})
	if err != nil {
		panic(err) // cannot happen: the zero Config is valid
	}
	return s
}

// NewWithConfig returns an empty Store that encodes and decodes events with
// reg, configured by cfg. It returns an error matching
// eventstore.ErrInvalidArgument for an invalid cfg, naming the field.
func NewWithConfig(reg *eventstore.Registry, cfg Config) (*Store, error) {
	if cfg.MaxEventSize < 0 {
		return nil, fmt.Errorf("memory: invalid config: MaxEventSize: %w", &eventstore.InvalidArgumentError{Field: "MaxEventSize", Reason: fmt.Sprintf("must not be negative, got %d", cfg.MaxEventSize)})
	}
	return &Store{
		reg:       reg,
		cfg:       cfg,
		streams:   map[string][]int{},
		eventIDs:  map[uuid.UUID]struct{}{},
		snapshots: map[string]eventstore.Snapshot{},
	}, nil
}

// Registry returns the registry the store encodes and decodes with.
func (s *Store) Registry() *eventstore.Registry { return s.reg }

// Append writes events to the end of streamID atomically if the stream's
// current version satisfies expected; see eventstore.Store.
//
// Errors: an error wrapping ctx.Err() when ctx is already done; the typed
// errors of eventstore.EncodeAppend (*eventstore.InvalidStreamIDError,
// *eventstore.UnknownEventTypeError, *eventstore.PayloadError for a payload
// PostgreSQL could not store, *eventstore.InvalidArgumentError for such
// metadata or an empty events slice, *eventstore.EventTooLargeError above
// Config.MaxEventSize); an *eventstore.InvalidArgumentError
// (ErrInvalidArgument) with Field "event_id" when an event ID is already
// stored or repeated within events; a *eventstore.ConcurrencyError on a
// version mismatch, which takes precedence over a duplicate event ID as it
// does in PostgreSQL. Nothing is written in any error case.
//
// An append whose events are all stored already, with the same IDs in the
// same order as one earlier append to streamID at versions expected allows,
// is a replay: it writes nothing and returns that append's result, as the
// PostgreSQL store does.
func (s *Store) Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("memory: append: %w", err)
	}
	enc, err := eventstore.EncodeAppend(ctx, s.reg, streamID, expected, events, &eventstore.EncodeOpts{MaxEventSize: s.cfg.MaxEventSize})
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("memory: append: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if res, ok := s.replay(streamID, expected, enc); ok {
		return res, nil
	}
	idx := s.streams[streamID]
	current := int64(len(idx))
	if !expected.Matches(current) {
		return eventstore.AppendResult{}, fmt.Errorf("memory: append: %w", &eventstore.ConcurrencyError{StreamID: streamID, Expected: expected, Actual: current})
	}
	// Like PostgreSQL's unique index, checked only for an append that would
	// otherwise be written: a version conflict takes precedence.
	seen := make(map[uuid.UUID]struct{}, len(enc))
	for i, e := range enc {
		_, stored := s.eventIDs[e.ID]
		_, repeated := seen[e.ID]
		if stored || repeated {
			return eventstore.AppendResult{}, fmt.Errorf("memory: append: event %d: %w", i, duplicateID(e.ID))
		}
		seen[e.ID] = struct{}{}
	}
	s.lastTx++
	now := time.Now().UTC().Truncate(time.Microsecond) // PostgreSQL's timestamptz precision
	res := eventstore.AppendResult{StreamID: streamID, FirstVersion: current + 1, EventIDs: make([]uuid.UUID, len(enc))}
	for i, e := range enc {
		s.lastPos++
		st := stored{
			pos:        eventstore.Position{TransactionID: s.lastTx, Position: s.lastPos},
			id:         e.ID,
			streamID:   streamID,
			version:    current + 1 + int64(i),
			typ:        e.Type,
			payload:    bytes.Clone(e.Payload),
			metadata:   bytes.Clone(e.Metadata),
			recordedAt: now,
		}
		idx = append(idx, len(s.feed))
		s.feed = append(s.feed, st)
		s.eventIDs[e.ID] = struct{}{}
		res.EventIDs[i] = e.ID
		res.LastVersion = st.version
		res.LastPosition = st.pos
	}
	s.streams[streamID] = idx
	return res, nil
}

// replay returns the result of the earlier append that stored exactly enc
// in streamID, if there is one and expected allows its versions. s.mu is
// held.
func (s *Store) replay(streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent) (eventstore.AppendResult, bool) {
	if _, ok := s.eventIDs[enc[0].ID]; !ok {
		return eventstore.AppendResult{}, false
	}
	idx := s.streams[streamID]
	var first *stored
	for _, i := range idx {
		if s.feed[i].id == enc[0].ID {
			first = &s.feed[i]
			break
		}
	}
	if first == nil || !expected.Matches(first.version-1) || first.version-1+int64(len(enc)) > int64(len(idx)) {
		return eventstore.AppendResult{}, false
	}
	// All the transaction wrote to the stream: not a part of it.
	before, after := first.version-2, first.version-1+int64(len(enc))
	if before >= 0 && s.feed[idx[before]].pos.TransactionID == first.pos.TransactionID ||
		after < int64(len(idx)) && s.feed[idx[after]].pos.TransactionID == first.pos.TransactionID {
		return eventstore.AppendResult{}, false
	}
	res := eventstore.AppendResult{StreamID: streamID, FirstVersion: first.version, EventIDs: make([]uuid.UUID, len(enc))}
	for i, e := range enc {
		st := s.feed[idx[first.version-1+int64(i)]]
		if st.id != e.ID || st.pos.TransactionID != first.pos.TransactionID {
			return eventstore.AppendResult{}, false
		}
		res.EventIDs[i] = st.id
		res.LastVersion, res.LastPosition = st.version, st.pos
	}
	return res, true
}

func duplicateID(id uuid.UUID) error {
	return &eventstore.InvalidArgumentError{Field: "event_id", Reason: fmt.Sprintf("event %s already exists", id)}
}

// ReadStream yields the records of streamID with StreamVersion >= from, in
// version order; see eventstore.Store. It copies the stream in pages under a
// read lock and decodes each record while yielding, so a long stream is never
// decoded at once. Events appended while iterating may or may not be yielded.
//
// A missing stream yields nothing. An error is yielded once as the last pair:
// an *eventstore.InvalidStreamIDError, an error wrapping ctx.Err() when ctx
// is done before a page is read, or the decoding error of a record
// (*eventstore.UnknownEventTypeError, *eventstore.PayloadError).
func (s *Store) ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) {
		if err := eventstore.ValidateStreamID(streamID); err != nil {
			yield(eventstore.Record{}, fmt.Errorf("memory: read stream: %w", err))
			return
		}
		next := max(from, 1) - 1 // index into the stream's events
		page := make([]stored, 0, readStreamPageSize)
		for {
			if err := ctx.Err(); err != nil {
				yield(eventstore.Record{}, fmt.Errorf("memory: read stream %q: %w", streamID, err))
				return
			}
			page = page[:0]
			s.mu.RLock()
			idx := s.streams[streamID]
			for next < int64(len(idx)) && len(page) < readStreamPageSize {
				page = append(page, s.feed[idx[next]])
				next++
			}
			s.mu.RUnlock()
			for _, st := range page {
				r, err := s.decode(st)
				if err != nil {
					yield(eventstore.Record{}, fmt.Errorf("memory: read stream %q: %w", streamID, err))
					return
				}
				if !yield(r, nil) {
					return
				}
			}
			if len(page) < readStreamPageSize {
				return
			}
		}
	}
}

// ReadAll returns up to limit records that follow after in the global feed,
// in feed order; see eventstore.Store. Every append is atomic, so the feed has
// no gaps to wait for.
//
// Errors: an *eventstore.InvalidArgumentError when limit is outside 1 to
// eventstore.MaxReadAllLimit, an error wrapping ctx.Err() when ctx is already
// done, or a record's decoding error.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	if limit < 1 || limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("memory: read all: %w", &eventstore.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, limit)})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: read all: %w", err)
	}
	s.mu.RLock()
	// The feed is sorted by Position: find the first record after "after".
	lo, hi := 0, len(s.feed)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.feed[m].pos.Compare(after) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	page := make([]stored, min(limit, len(s.feed)-lo))
	copy(page, s.feed[lo:])
	s.mu.RUnlock()

	out := make([]eventstore.Record, len(page))
	for i, st := range page {
		r, err := s.decode(st)
		if err != nil {
			return nil, fmt.Errorf("memory: read all: %w", err)
		}
		out[i] = r
	}
	return out, nil
}

// StreamInfo reports whether streamID has events and its current version.
// Errors: an *eventstore.InvalidStreamIDError, or an error wrapping ctx.Err()
// when ctx is already done.
func (s *Store) StreamInfo(ctx context.Context, streamID string) (eventstore.StreamInfo, error) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		return eventstore.StreamInfo{}, fmt.Errorf("memory: stream info: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return eventstore.StreamInfo{}, fmt.Errorf("memory: stream info: %w", err)
	}
	s.mu.RLock()
	v := int64(len(s.streams[streamID]))
	s.mu.RUnlock()
	return eventstore.StreamInfo{StreamID: streamID, Exists: v > 0, Version: v}, nil
}

// SaveSnapshot stores a copy of snap as the latest snapshot of
// snap.StreamID and sets its RecordedAt. It replaces a saved snapshot of the
// same or an older version; a snapshot older than the saved one is ignored,
// so racing savers cannot move a stream's snapshot back.
//
// Errors: those of eventstore.ValidateSnapshot (an
// *eventstore.InvalidStreamIDError; an *eventstore.InvalidArgumentError for
// a Version below 1, an empty Type or one PostgreSQL cannot store, or a
// Payload that is not valid JSON or not valid UTF-8); an error wrapping
// ctx.Err() when ctx is already done. Like PostgreSQL, which keeps snapshot
// payloads as the JSON text given, it accepts the escape \u0000 in a
// snapshot.
func (s *Store) SaveSnapshot(ctx context.Context, snap eventstore.Snapshot) error {
	if err := eventstore.ValidateSnapshot(snap); err != nil {
		return fmt.Errorf("memory: save snapshot: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: save snapshot: %w", err)
	}
	snap.Payload = bytes.Clone(snap.Payload)
	snap.RecordedAt = time.Now().UTC().Truncate(time.Microsecond)
	s.mu.Lock()
	if prev, ok := s.snapshots[snap.StreamID]; !ok || prev.Version <= snap.Version {
		s.snapshots[snap.StreamID] = snap
	}
	s.mu.Unlock()
	return nil
}

// LoadSnapshot returns a copy of the latest snapshot of streamID.
//
// Errors: an error matching eventstore.ErrSnapshotNotFound when none was
// saved; an *eventstore.InvalidStreamIDError; an error wrapping ctx.Err()
// when ctx is already done.
func (s *Store) LoadSnapshot(ctx context.Context, streamID string) (eventstore.Snapshot, error) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		return eventstore.Snapshot{}, fmt.Errorf("memory: load snapshot: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return eventstore.Snapshot{}, fmt.Errorf("memory: load snapshot: %w", err)
	}
	s.mu.RLock()
	snap, ok := s.snapshots[streamID]
	s.mu.RUnlock()
	if !ok {
		return eventstore.Snapshot{}, fmt.Errorf("memory: load snapshot of stream %q: %w", streamID, eventstore.ErrSnapshotNotFound)
	}
	snap.Payload = bytes.Clone(snap.Payload)
	return snap, nil
}

// All returns every record in feed order, decoded: a convenience for unit
// tests that assert what was appended. It panics if a record no longer
// decodes, which cannot happen unless the Registry was changed incompatibly.
func (s *Store) All() []eventstore.Record {
	s.mu.RLock()
	feed := make([]stored, len(s.feed))
	copy(feed, s.feed)
	s.mu.RUnlock()
	out := make([]eventstore.Record, len(feed))
	for i, st := range feed {
		r, err := s.decode(st)
		if err != nil {
			panic(fmt.Sprintf("memory: All: %v", err))
		}
		out[i] = r
	}
	return out
}

// decode turns a stored event into a Record sharing no memory with the store.
func (s *Store) decode(st stored) (eventstore.Record, error) {
	data, err := s.reg.Decode(st.typ, st.payload)
	if err != nil {
		return eventstore.Record{}, fmt.Errorf("event %s at %s: %w", st.id, st.pos, err)
	}
	var md eventstore.Metadata
	if err := json.Unmarshal(st.metadata, &md); err != nil {
		return eventstore.Record{}, fmt.Errorf("event %s at %s: decode metadata: %w", st.id, st.pos, err)
	}
	return eventstore.Record{
		Position:      st.pos,
		ID:            st.id,
		StreamID:      st.streamID,
		StreamVersion: st.version,
		Type:          st.typ,
		Data:          data,
		Payload:       bytes.Clone(st.payload),
		Metadata:      md,
		RecordedAt:    st.recordedAt,
	}, nil
}
