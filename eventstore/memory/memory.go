package memory

import (
	"bytes"
	"context"
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
	d   *data // shared by the Stores WithRegistry returns
}

// data is what a Store holds: its events and snapshots.
type data struct {
	mu        sync.RWMutex
	feed      []stored                       // in feed order
	streams   map[string][]int               // stream ID -> indexes into feed, in version order
	eventIDs  map[uuid.UUID]struct{}         // every stored event ID
	snapshots map[string]eventstore.Snapshot // latest snapshot per stream
	seals     []eventstore.Seal              // recorded seals, oldest first
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
	schemaVer  int
	payload    []byte
	metadata   []byte
	recordedAt time.Time
	digest     []byte // the hash chain's digest; nil when unchained
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
	// DisableChain stops Append from computing each event's digest (the
	// hash chain of docs/compliance.md), as the PostgreSQL store's
	// Config.DisableChain does. Chaining is on by default.
	DisableChain bool
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
		reg: reg,
		cfg: cfg,
		d: &data{
			streams:   map[string][]int{},
			eventIDs:  map[uuid.UUID]struct{}{},
			snapshots: map[string]eventstore.Snapshot{},
		},
	}, nil
}

// WithRegistry returns a Store over the same events and snapshots as s
// that encodes and decodes with reg (and s's Config): what two deployments
// of different releases of a service see of one database, for testing
// schema evolution (docs/evolution.md) without PostgreSQL. Appends through
// either are seen by both.
func (s *Store) WithRegistry(reg *eventstore.Registry) *Store {
	return &Store{reg: reg, cfg: s.cfg, d: s.d}
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

	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	if res, ok := s.replay(streamID, expected, enc); ok {
		return res, nil
	}
	idx := s.d.streams[streamID]
	current := int64(len(idx))
	if !expected.Matches(current) {
		return eventstore.AppendResult{}, fmt.Errorf("memory: append: %w", &eventstore.ConcurrencyError{StreamID: streamID, Expected: expected, Actual: current})
	}
	// Like PostgreSQL's unique index, checked only for an append that would
	// otherwise be written: a version conflict takes precedence.
	seen := make(map[uuid.UUID]struct{}, len(enc))
	for i, e := range enc {
		_, stored := s.d.eventIDs[e.ID]
		_, repeated := seen[e.ID]
		if stored || repeated {
			return eventstore.AppendResult{}, fmt.Errorf("memory: append: event %d: %w", i, duplicateID(e.ID))
		}
		seen[e.ID] = struct{}{}
	}
	s.d.lastTx++
	now := time.Now().UTC().Truncate(time.Microsecond) // PostgreSQL's timestamptz precision
	res := eventstore.AppendResult{StreamID: streamID, FirstVersion: current + 1, EventIDs: make([]uuid.UUID, len(enc))}
	var prev []byte // the stream's last digest: the chain goes on from it
	if len(idx) > 0 {
		prev = s.d.feed[idx[len(idx)-1]].digest
	}
	for i, e := range enc {
		s.d.lastPos++
		st := stored{
			pos:        eventstore.Position{TransactionID: s.d.lastTx, Position: s.d.lastPos},
			id:         e.ID,
			streamID:   streamID,
			version:    current + 1 + int64(i),
			typ:        e.Type,
			schemaVer:  e.SchemaVersion,
			payload:    bytes.Clone(e.Payload),
			metadata:   bytes.Clone(e.Metadata),
			recordedAt: now,
		}
		if !s.cfg.DisableChain {
			st.digest = eventstore.ChainDigest(prev, st.chainEvent())
			prev = st.digest
		}
		idx = append(idx, len(s.d.feed))
		s.d.feed = append(s.d.feed, st)
		s.d.eventIDs[e.ID] = struct{}{}
		res.EventIDs[i] = e.ID
		res.LastVersion = st.version
		res.LastPosition = st.pos
	}
	s.d.streams[streamID] = idx
	return res, nil
}

// replay returns the result of the earlier append that stored exactly enc
// in streamID, if there is one and expected allows its versions. s.d.mu is
// held.
func (s *Store) replay(streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent) (eventstore.AppendResult, bool) {
	if _, ok := s.d.eventIDs[enc[0].ID]; !ok {
		return eventstore.AppendResult{}, false
	}
	idx := s.d.streams[streamID]
	var first *stored
	for _, i := range idx {
		if s.d.feed[i].id == enc[0].ID {
			first = &s.d.feed[i]
			break
		}
	}
	if first == nil || !expected.Matches(first.version-1) || first.version-1+int64(len(enc)) > int64(len(idx)) {
		return eventstore.AppendResult{}, false
	}
	// All the transaction wrote to the stream: not a part of it.
	before, after := first.version-2, first.version-1+int64(len(enc))
	if before >= 0 && s.d.feed[idx[before]].pos.TransactionID == first.pos.TransactionID ||
		after < int64(len(idx)) && s.d.feed[idx[after]].pos.TransactionID == first.pos.TransactionID {
		return eventstore.AppendResult{}, false
	}
	res := eventstore.AppendResult{StreamID: streamID, FirstVersion: first.version, EventIDs: make([]uuid.UUID, len(enc))}
	for i, e := range enc {
		st := s.d.feed[idx[first.version-1+int64(i)]]
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
// version order; see eventstore.Store. It is ReadStreamRaw with each stored
// event upcast and decoded while yielding (eventstore.RawRecord.AppendDecoded),
// so a long stream is never decoded at once. Events appended while
// iterating may or may not be yielded.
//
// A missing stream yields nothing. An error is yielded once as the last pair:
// an *eventstore.InvalidStreamIDError, an error wrapping ctx.Err() when ctx
// is done before a page is read, or the error of a stored event that cannot
// be read (*eventstore.UnknownEventTypeError,
// *eventstore.SchemaVersionError, *eventstore.PayloadError).
func (s *Store) ReadStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.Record, error] {
	return func(yield func(eventstore.Record, error) bool) {
		var recs []eventstore.Record
		for raw, err := range s.rawStream(ctx, streamID, from) {
			if err == nil {
				if recs, err = s.decode(ctx, recs[:0], raw); err != nil {
					err = fmt.Errorf("memory: read stream %q: %w", streamID, err)
				}
			}
			for _, r := range recs {
				if !yield(r, nil) {
					return
				}
			}
			if err != nil {
				yield(eventstore.Record{}, err)
				return
			}
		}
	}
}

// ReadStreamRaw returns up to limit stored events of streamID with
// StreamVersion >= from (from < 1 reads from the start), in version order,
// as stored (see eventstore.Store): copies, neither upcast nor decoded.
// Errors: an *eventstore.InvalidStreamIDError, an
// *eventstore.InvalidArgumentError for a limit outside 1 to
// eventstore.MaxReadAllLimit, an error wrapping ctx.Err() when ctx is
// already done.
func (s *Store) ReadStreamRaw(ctx context.Context, streamID string, from int64, limit int) ([]eventstore.RawRecord, error) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		return nil, fmt.Errorf("memory: read stream: %w", err)
	}
	if limit < 1 || limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("memory: read stream: %w", &eventstore.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, limit)})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: read stream %q: %w", streamID, err)
	}
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	idx := s.d.streams[streamID]
	var out []eventstore.RawRecord
	for next := max(from, 1) - 1; next < int64(len(idx)) && len(out) < limit; next++ {
		out = append(out, s.d.feed[idx[next]].raw())
	}
	return out, nil
}

// rawStream yields the stored events of streamID with StreamVersion >=
// from, in version order, as stored: copies, neither upcast nor decoded. It
// copies the stream in pages under a read lock. Errors are ReadStream's
// but for decoding.
func (s *Store) rawStream(ctx context.Context, streamID string, from int64) iter.Seq2[eventstore.RawRecord, error] {
	return func(yield func(eventstore.RawRecord, error) bool) {
		if err := eventstore.ValidateStreamID(streamID); err != nil {
			yield(eventstore.RawRecord{}, fmt.Errorf("memory: read stream: %w", err))
			return
		}
		next := max(from, 1) - 1 // index into the stream's events
		page := make([]stored, 0, readStreamPageSize)
		for {
			if err := ctx.Err(); err != nil {
				yield(eventstore.RawRecord{}, fmt.Errorf("memory: read stream %q: %w", streamID, err))
				return
			}
			page = page[:0]
			s.d.mu.RLock()
			idx := s.d.streams[streamID]
			for next < int64(len(idx)) && len(page) < readStreamPageSize {
				page = append(page, s.d.feed[idx[next]])
				next++
			}
			s.d.mu.RUnlock()
			for _, st := range page {
				if !yield(st.raw(), nil) {
					return
				}
			}
			if len(page) < readStreamPageSize {
				return
			}
		}
	}
}

// ReadAll returns the records of up to limit stored events that follow
// after in the global feed, in feed order, upcast and decoded; see
// eventstore.Store (a split event returns several records, a dropped one
// none, and a page of dropped events only makes ReadAll read on). Every
// append is atomic, so the feed has no gaps to wait for.
//
// Errors: an *eventstore.InvalidArgumentError when limit is outside 1 to
// eventstore.MaxReadAllLimit, an error wrapping ctx.Err() when ctx is already
// done, or the error of a stored event that cannot be read.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.Record, error) {
	if limit < 1 || limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("memory: read all: %w", &eventstore.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, limit)})
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: read all: %w", err)
	}
	for {
		s.d.mu.RLock()
		// The feed is sorted by Position: find the first record after "after".
		lo, hi := 0, len(s.d.feed)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if s.d.feed[m].pos.Compare(after) <= 0 {
				lo = m + 1
			} else {
				hi = m
			}
		}
		page := make([]stored, min(limit, len(s.d.feed)-lo))
		copy(page, s.d.feed[lo:])
		s.d.mu.RUnlock()

		raws := make([]eventstore.RawRecord, len(page))
		for i, st := range page {
			raws[i] = st.raw()
		}
		if err := s.reg.Decrypt(ctx, raws); err != nil {
			return nil, fmt.Errorf("memory: read all: %w", err)
		}
		out := make([]eventstore.Record, 0, len(page))
		for _, raw := range raws {
			var err error
			if out, err = s.decodeDecrypted(out, raw); err != nil {
				return nil, fmt.Errorf("memory: read all: %w", err)
			}
		}
		if len(out) > 0 || len(page) < limit {
			return out, nil
		}
		after = page[len(page)-1].pos // every event of the page was dropped
	}
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
	s.d.mu.RLock()
	v := int64(len(s.d.streams[streamID]))
	s.d.mu.RUnlock()
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
	snap.SchemaVersion = max(snap.SchemaVersion, 1)
	snap.RecordedAt = time.Now().UTC().Truncate(time.Microsecond)
	s.d.mu.Lock()
	if prev, ok := s.d.snapshots[snap.StreamID]; !ok || prev.Version <= snap.Version {
		s.d.snapshots[snap.StreamID] = snap
	}
	s.d.mu.Unlock()
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
	s.d.mu.RLock()
	snap, ok := s.d.snapshots[streamID]
	s.d.mu.RUnlock()
	if !ok {
		return eventstore.Snapshot{}, fmt.Errorf("memory: load snapshot of stream %q: %w", streamID, eventstore.ErrSnapshotNotFound)
	}
	snap.Payload = bytes.Clone(snap.Payload)
	return snap, nil
}

// All returns every record in feed order, decrypted, upcast and decoded: a
// convenience for unit tests that assert what was appended. It panics if a
// stored event can no longer be read, which cannot happen unless the
// Registry was changed incompatibly, or its Shredder's key store fails
// (All takes no context: the key fetch is not bounded).
func (s *Store) All() []eventstore.Record {
	s.d.mu.RLock()
	feed := make([]stored, len(s.d.feed))
	copy(feed, s.d.feed)
	s.d.mu.RUnlock()
	out := make([]eventstore.Record, 0, len(feed))
	for _, st := range feed {
		var err error
		if out, err = s.decode(context.Background(), out, st.raw()); err != nil {
			panic(fmt.Sprintf("memory: All: %v", err))
		}
	}
	return out
}

// raw returns st as a RawRecord sharing no memory with the store.
func (st stored) raw() eventstore.RawRecord {
	return eventstore.RawRecord{
		Position:      st.pos,
		ID:            st.id,
		StreamID:      st.streamID,
		StreamVersion: st.version,
		Type:          st.typ,
		SchemaVersion: st.schemaVer,
		Payload:       bytes.Clone(st.payload),
		Metadata:      bytes.Clone(st.metadata),
		RecordedAt:    st.recordedAt,
	}
}

// decode appends the records raw reads as, decrypted, upcast and decoded,
// to dst.
func (s *Store) decode(ctx context.Context, dst []eventstore.Record, raw eventstore.RawRecord) ([]eventstore.Record, error) {
	one := [1]eventstore.RawRecord{raw}
	if err := s.reg.Decrypt(ctx, one[:]); err != nil {
		return dst, fmt.Errorf("event %s at %s: %w", raw.ID, raw.Position, err)
	}
	return s.decodeDecrypted(dst, one[0])
}

// decodeDecrypted appends the records raw, decrypted, reads as, upcast and
// decoded, to dst.
func (s *Store) decodeDecrypted(dst []eventstore.Record, raw eventstore.RawRecord) ([]eventstore.Record, error) {
	out, err := raw.AppendDecoded(dst, s.reg)
	if err != nil {
		return out, fmt.Errorf("event %s at %s: %w", raw.ID, raw.Position, err)
	}
	return out, nil
}
