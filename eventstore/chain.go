package eventstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/google/uuid"
)

// This file holds the hash chain of a store's streams (docs/compliance.md):
// what an event's digest covers, how a chain is verified and how its first
// broken link is classified. The PostgreSQL store computes digests in its
// append statement and the memory store in Go; both verify with
// ChainChecker.

// DigestSize is the size of an event's digest and of a seal's: SHA-256.
const DigestSize = sha256.Size

// ChainEvent is what an event's digest covers: everything that identifies
// the event and its content, as stored, but not its place in the global
// feed (Position) or the time it was recorded, which a logical restore may
// renumber (docs/operations.md).
type ChainEvent struct {
	ID            uuid.UUID
	StreamID      string
	StreamVersion int64
	Type          string
	SchemaVersion int
	// Payload and Metadata are the stored JSON as the store renders it:
	// PostgreSQL's text form of the jsonb values (payload::text), the
	// memory store's bytes as stored. Personal fields are in them
	// encrypted (see Shredder), so forgetting a subject changes no digest.
	Payload  []byte
	Metadata []byte
}

// ChainDigest returns the digest of e chained after prev, the digest of the
// event before e in its stream (nil or empty for a stream's first chained
// event, the genesis):
//
//	SHA-256( lp(prev) || event ID (16 bytes) || lp(stream ID) || stream version (int64)
//	         || lp(type) || schema version (int32) || lp(payload) || lp(metadata) )
//
// where lp(x) is x's length as a big-endian uint32 followed by x, and the
// integers are big-endian. Every variable field is length-prefixed, so no
// two different events encode alike. The PostgreSQL store computes the same
// bytes in its append statement, over the jsonb values' text form.
func ChainDigest(prev []byte, e ChainEvent) []byte {
	var h chainHasher
	return h.digest(nil, prev, e)
}

// A ChainHasher computes digests as ChainDigest does, reusing its hash
// state and buffer from one to the next: for a store that computes the
// digests of many events. The zero value is ready to use; it is not safe
// for concurrent use.
type ChainHasher struct {
	c chainHasher
}

// AppendDigest appends to dst the digest of e chained after prev
// (ChainDigest) and returns the extended slice.
func (h *ChainHasher) AppendDigest(dst, prev []byte, e ChainEvent) []byte {
	return h.c.digest(dst, prev, e)
}

// chainHasher computes digests reusing its hash and buffer.
type chainHasher struct {
	h   hash.Hash
	buf []byte
}

// digest appends the digest of e chained after prev to dst.
func (c *chainHasher) digest(dst, prev []byte, e ChainEvent) []byte {
	if c.h == nil {
		c.h = sha256.New()
	}
	b := c.buf[:0]
	b = appendLP(b, prev)
	b = append(b, e.ID[:]...)
	b = appendLPString(b, e.StreamID)
	b = binary.BigEndian.AppendUint64(b, uint64(e.StreamVersion))
	b = appendLPString(b, e.Type)
	b = binary.BigEndian.AppendUint32(b, uint32(int32(e.SchemaVersion)))
	b = appendLP(b, e.Payload)
	b = appendLP(b, e.Metadata)
	c.buf = b
	c.h.Reset()
	c.h.Write(b)
	return c.h.Sum(dst)
}

func appendLP(b, x []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(x)))
	return append(b, x...)
}

func appendLPString(b []byte, x string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(x)))
	return append(b, x...)
}

// BreakKind says how a stream's chain is broken, as far as the digests
// tell.
type BreakKind string

// The kinds of broken link Verify reports.
const (
	// BreakChanged: the event does not match its digest, while the chain
	// goes on from that digest: its payload, metadata, type, schema
	// version or ID was changed (or its digest was). Also reported when
	// nothing else explains a mismatch, e.g. at a stream's last event.
	BreakChanged BreakKind = "changed"
	// BreakMissing: an event is missing: a gap in the stream's versions,
	// or the events from here on verify only with versions one higher
	// (an event was deleted and the later ones renumbered).
	BreakMissing BreakKind = "missing"
	// BreakInserted: an event the chain does not include sits between two
	// events it links: the event before the one after it chains to the
	// one before it.
	BreakInserted BreakKind = "inserted"
	// BreakReordered: two neighbouring events swapped places.
	BreakReordered BreakKind = "reordered"
	// BreakUnchained: an event without a digest follows chained events of
	// its stream: its digest was removed, or it was written by a writer
	// that does not chain (an older release during a rolling upgrade, a
	// store with DisableChain, raw SQL).
	BreakUnchained BreakKind = "unchained"
)

// ChainBreak is the first broken link of a stream.
type ChainBreak struct {
	StreamID string
	// StreamVersion is the version at which the chain breaks: the changed,
	// inserted or unchained event, the first of two reordered ones, the
	// first missing version.
	StreamVersion int64
	// EventID and Position identify the stored event at StreamVersion, when
	// there is one (not for a missing event).
	EventID  uuid.UUID
	Position Position
	Kind     BreakKind
	// Detail explains the break in a sentence.
	Detail string
}

func (b ChainBreak) String() string {
	return fmt.Sprintf("stream %q version %d: %s: %s", b.StreamID, b.StreamVersion, b.Kind, b.Detail)
}

// VerifyOpts selects what Verify checks. A nil *VerifyOpts checks every
// stream with the defaults.
type VerifyOpts struct {
	// StreamID, when not empty, checks that stream only.
	StreamID string
	// BatchSize is how many events Verify reads per query. Defaults to
	// VerifyBatchSizeDefault; at most MaxReadAllLimit.
	BatchSize int
	// MaxBreaks bounds the breaks VerifyResult lists (the count of broken
	// streams is always complete). Defaults to VerifyMaxBreaksDefault.
	MaxBreaks int
}

// Defaults of VerifyOpts.
const (
	VerifyBatchSizeDefault = 5000
	VerifyMaxBreaksDefault = 100
)

// WithDefaults returns o's values with the defaults filled in (o may be
// nil), or an *InvalidArgumentError for a value out of range.
func (o *VerifyOpts) WithDefaults() (VerifyOpts, error) {
	var out VerifyOpts
	if o != nil {
		out = *o
	}
	if out.BatchSize == 0 {
		out.BatchSize = VerifyBatchSizeDefault
	}
	if out.MaxBreaks == 0 {
		out.MaxBreaks = VerifyMaxBreaksDefault
	}
	switch {
	case out.BatchSize < 1 || out.BatchSize > MaxReadAllLimit:
		return out, &InvalidArgumentError{Field: "BatchSize", Reason: fmt.Sprintf("must be between 1 and %d, got %d", MaxReadAllLimit, out.BatchSize)}
	case out.MaxBreaks < 1:
		return out, &InvalidArgumentError{Field: "MaxBreaks", Reason: fmt.Sprintf("must be at least 1, got %d", out.MaxBreaks)}
	}
	if out.StreamID != "" {
		if err := ValidateStreamID(out.StreamID); err != nil {
			return out, err
		}
	}
	return out, nil
}

// VerifyResult reports what Verify checked and found.
type VerifyResult struct {
	// Streams and Events count what was read.
	Streams, Events int64
	// Unchained counts the events stored before their stream's first
	// chained event (appended before chaining was enabled, see
	// docs/compliance.md): the chain covers none of them.
	Unchained int64
	// BrokenStreams counts the streams whose chain is broken.
	BrokenStreams int64
	// Breaks lists the first broken link of each broken stream, in stream
	// order, up to VerifyOpts.MaxBreaks.
	Breaks []ChainBreak
}

// OK reports whether no chain is broken.
func (r VerifyResult) OK() bool { return r.BrokenStreams == 0 }

// Err returns nil when r is OK, else a *ChainError describing the breaks.
func (r VerifyResult) Err() error {
	if r.OK() {
		return nil
	}
	return &ChainError{Breaks: r.Breaks, BrokenStreams: r.BrokenStreams}
}

// ChainError reports broken chains: events changed, deleted, inserted or
// reordered after they were appended, or a seal the events no longer
// match. It matches ErrChainBroken.
type ChainError struct {
	// Breaks are the first broken links found (see VerifyResult).
	Breaks []ChainBreak
	// BrokenStreams counts every broken stream.
	BrokenStreams int64
	// Seal is set when the events do not match a seal.
	Seal *SealResult
}

func (e *ChainError) Error() string {
	var parts []string
	if e.Seal != nil && !e.Seal.OK() {
		parts = append(parts, e.Seal.Detail)
	}
	if e.BrokenStreams > 0 {
		s := fmt.Sprintf("%d broken stream(s)", e.BrokenStreams)
		if len(e.Breaks) > 0 {
			s += ", first: " + e.Breaks[0].String()
		}
		parts = append(parts, s)
	}
	return "eventstore: chain broken: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrChainBroken) true.
func (e *ChainError) Is(target error) bool { return target == ErrChainBroken }

// ErrChainBroken: a stream's hash chain does not verify, or the events do
// not match a seal (see docs/compliance.md). Matched by *ChainError.
var ErrChainBroken = errors.New("eventstore: chain broken")

// ChainRow is one stored event as a chain check reads it: its content and
// stored digest (nil when it was appended unchained).
type ChainRow struct {
	ChainEvent
	Position Position
	Digest   []byte
}

// ChainChecker verifies the hash chains of streams from their stored rows,
// fed in stream order and, within a stream, in version order: the one
// verification of esox, which both stores run. It reports each stream's
// first broken link and classifies it from the digests around it (see
// BreakKind). Use NewChainChecker. Not safe for concurrent use.
type ChainChecker struct {
	res       VerifyResult
	maxBreaks int
	h         chainHasher
	scratch   []byte

	stream  string
	started bool
	expect  int64  // the next version expected
	chained bool   // a chained event of the stream was seen
	linked  bool   // an event of the stream verified
	prev    []byte // digest of the last verified event (empty: genesis)
	pp      []byte // the digest prev chained to, when linked
	broken  bool
	// pending is a mismatching row waiting for the stream's next one;
	// pendPrev, pendPP and pendLinked are prev, pp and linked at it.
	pending    *ChainRow
	pendPrev   []byte
	pendPP     []byte
	pendLinked bool
}

// NewChainChecker returns a checker that lists up to maxBreaks breaks (at
// least 1).
func NewChainChecker(maxBreaks int) *ChainChecker {
	return &ChainChecker{maxBreaks: max(maxBreaks, 1)}
}

// Add checks the next row. Rows of one stream must come together, in
// version order. Add copies what it keeps of r.
func (c *ChainChecker) Add(r ChainRow) {
	if !c.started || r.StreamID != c.stream {
		c.endStream()
		c.startStream(r.StreamID)
	}
	c.res.Events++
	switch {
	case c.pending != nil:
		c.classify(&r) // breaks the stream: the rest is counted, not checked
	case !c.broken:
		c.check(r)
	}
}

// Result ends the last stream and returns what was found.
func (c *ChainChecker) Result() VerifyResult {
	c.endStream()
	c.started = false
	return c.res
}

func (c *ChainChecker) startStream(id string) {
	c.stream, c.started = id, true
	c.res.Streams++
	c.expect, c.chained, c.linked, c.broken = 1, false, false, false
	c.prev, c.pp = c.prev[:0], c.pp[:0]
	c.pending = nil
}

func (c *ChainChecker) endStream() {
	if c.pending != nil {
		c.classify(nil)
	}
}

// check verifies r against the stream's chain so far.
func (c *ChainChecker) check(r ChainRow) {
	if r.StreamVersion != c.expect {
		if r.StreamVersion > c.expect {
			c.fail(ChainBreak{StreamVersion: c.expect, Kind: BreakMissing,
				Detail: fmt.Sprintf("versions %d to %d are missing (the next stored event is version %d)", c.expect, r.StreamVersion-1, r.StreamVersion)})
		} else {
			c.fail(ChainBreak{StreamVersion: r.StreamVersion, EventID: r.ID, Position: r.Position, Kind: BreakInserted,
				Detail: fmt.Sprintf("version %d appears again after version %d", r.StreamVersion, c.expect-1)})
		}
		return
	}
	c.expect++
	if r.Digest == nil {
		if !c.chained {
			c.res.Unchained++ // before the stream's first chained event
			return
		}
		c.fail(ChainBreak{StreamVersion: r.StreamVersion, EventID: r.ID, Position: r.Position, Kind: BreakUnchained,
			Detail: "the event has no digest but follows chained events"})
		return
	}
	c.chained = true
	if c.matches(c.prev, r.ChainEvent, r.Digest) {
		c.pp = append(c.pp[:0], c.prev...)
		c.prev = append(c.prev[:0], r.Digest...)
		c.linked = true
		return
	}
	// A mismatch: the next row tells why.
	p := r
	p.Payload, p.Metadata, p.Digest = bytes.Clone(r.Payload), bytes.Clone(r.Metadata), bytes.Clone(r.Digest)
	c.pending = &p
	c.pendPrev = append(c.pendPrev[:0], c.prev...)
	c.pendPP = append(c.pendPP[:0], c.pp...)
	c.pendLinked = c.linked
}

// classify explains the pending mismatch m with next, the stream's next
// row (nil at the stream's end), and records the break. With P the digest
// m should chain to and PP the one before it:
//
//   - reordered: next, as version v, chains to P, and m, as version v+1,
//     chains to next;
//   - inserted (m): next, as version v, chains to P;
//   - inserted (the event before m): m, as version v-1, chains to PP;
//   - changed: next chains to m's stored digest;
//   - missing: next, as version v+2, chains to m's stored digest (an
//     event was removed and the later ones renumbered);
//   - otherwise changed.
func (c *ChainChecker) classify(next *ChainRow) {
	m := *c.pending
	c.pending = nil
	v := m.StreamVersion
	P, PP := c.pendPrev, c.pendPP
	at := func(r ChainRow, v int64) ChainEvent { e := r.ChainEvent; e.StreamVersion = v; return e }
	haveNext := next != nil && next.Digest != nil && next.StreamVersion == v+1
	b := ChainBreak{StreamVersion: v, EventID: m.ID, Position: m.Position, Kind: BreakChanged,
		Detail: "the event does not match its digest: its content or its digest was changed"}
	switch {
	case haveNext && c.matches(P, at(*next, v), next.Digest) && c.matches(next.Digest, at(m, v+1), m.Digest):
		b.Kind = BreakReordered
		b.Detail = fmt.Sprintf("versions %d and %d are swapped", v, v+1)
	case haveNext && c.matches(P, at(*next, v), next.Digest):
		b.Kind = BreakInserted
		b.Detail = fmt.Sprintf("version %d is not in the chain: version %d chains to version %d", v, v+1, v-1)
	case c.pendLinked && v > 1 && c.matches(PP, at(m, v-1), m.Digest):
		b = ChainBreak{StreamVersion: v - 1, Kind: BreakInserted,
			Detail: fmt.Sprintf("version %d is not in the chain: version %d chains to version %d", v-1, v, v-2)}
	case haveNext && c.matches(m.Digest, next.ChainEvent, next.Digest):
		b.Detail = "the event does not match its digest, which the next event chains to: its content (or its digest) was changed"
	case haveNext && c.matches(m.Digest, at(*next, v+2), next.Digest):
		b = ChainBreak{StreamVersion: v, Kind: BreakMissing,
			Detail: fmt.Sprintf("an event at or before version %d was removed and the later ones renumbered (they verify with versions one higher)", v)}
	}
	c.fail(b)
}

// matches reports whether e chained after prev has digest want.
func (c *ChainChecker) matches(prev []byte, e ChainEvent, want []byte) bool {
	c.scratch = c.h.digest(c.scratch[:0], prev, e)
	return bytes.Equal(c.scratch, want)
}

// fail records the stream's first break.
func (c *ChainChecker) fail(b ChainBreak) {
	c.broken = true
	b.StreamID = c.stream
	c.res.BrokenStreams++
	if len(c.res.Breaks) < c.maxBreaks {
		c.res.Breaks = append(c.res.Breaks, b)
	}
}

// Verifier is a store whose streams are hash-chained (docs/compliance.md):
// it verifies the chains, seals the heads of all streams at a feed
// position, and checks the events against a seal. Both esox stores
// implement it.
type Verifier interface {
	// Verify checks the chain of one stream (opts.StreamID) or of every
	// stream, reading the stored events in stream order in batches, and
	// reports the first broken link of each broken stream. A broken chain
	// is a result, not an error (VerifyResult.Err turns it into one);
	// errors are bad opts (*InvalidArgumentError, *InvalidStreamIDError),
	// ctx's and the database's. ctx bounds the whole run.
	Verify(ctx context.Context, opts *VerifyOpts) (VerifyResult, error)
	// Seal records and returns a seal of the feed's current head: a digest
	// over every stream's last event at or before that position. Export
	// it (a file, a log, another system): VerifySeal later detects events
	// removed from a stream's tail and chains rewritten before it.
	Seal(ctx context.Context) (Seal, error)
	// VerifySeal recomputes seal's digest from the events at or before its
	// position and reports whether they still match. A mismatch is a
	// result (SealResult.OK false), not an error; errors are a malformed
	// seal (*InvalidArgumentError), ctx's and the database's.
	VerifySeal(ctx context.Context, seal Seal) (SealResult, error)
}

// SealFormat names the seal digest scheme in exported seals.
const SealFormat = "esox-seal-v1"

// Seal is a digest over the head of every stream (its ID, its version and
// its last event's digest) at a position of the global feed: the events at
// or before Position. It is recorded in the store and meant to be exported
// (a file, a log, another system): checked later with VerifySeal, it
// detects events removed from a stream's tail, which a chain alone cannot,
// and chains rewritten consistently, which an unkeyed chain alone cannot
// either (see the threat model in docs/compliance.md).
//
// Its JSON form (MarshalJSON) is the exported one; ParseSeal reads it back.
type Seal struct {
	// ID is the seal's number in the store that recorded it (0 when not
	// recorded).
	ID int64
	// Position is the feed position sealed: every event at or before it.
	Position Position
	// SealedAt is when the seal was taken (the database's clock).
	SealedAt time.Time
	// Streams and Events count the streams and events sealed.
	Streams, Events int64
	// Digest is the SHA-256 digest over the heads (see SealHasher).
	Digest []byte
}

// sealJSON is Seal's exported form.
type sealJSON struct {
	Format        string    `json:"format"`
	ID            int64     `json:"id,omitempty"`
	TransactionID uint64    `json:"transaction_id"`
	Position      int64     `json:"position"`
	SealedAt      time.Time `json:"sealed_at"`
	Streams       int64     `json:"streams"`
	Events        int64     `json:"events"`
	Digest        string    `json:"digest"`
}

// MarshalJSON encodes s as its exported form: {"format":"esox-seal-v1",
// "id", "transaction_id", "position", "sealed_at", "streams", "events",
// "digest" (hex)}.
func (s Seal) MarshalJSON() ([]byte, error) {
	return json.Marshal(sealJSON{Format: SealFormat, ID: s.ID, TransactionID: s.Position.TransactionID, Position: s.Position.Position,
		SealedAt: s.SealedAt, Streams: s.Streams, Events: s.Events, Digest: hex.EncodeToString(s.Digest)})
}

// UnmarshalJSON decodes s's exported form, refusing (with an
// *InvalidArgumentError) another format, a digest that is not 64 hex
// digits, negative counts or a position before the first event.
func (s *Seal) UnmarshalJSON(b []byte) error {
	var j sealJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return &InvalidArgumentError{Field: "seal", Reason: "not a seal's JSON: " + err.Error()}
	}
	bad := func(reason string) error { return &InvalidArgumentError{Field: "seal", Reason: reason} }
	d, err := hex.DecodeString(j.Digest)
	switch {
	case j.Format != SealFormat:
		return bad(fmt.Sprintf("format %q, want %q", j.Format, SealFormat))
	case err != nil || len(d) != DigestSize:
		return bad(fmt.Sprintf("digest must be %d hex digits", 2*DigestSize))
	case j.Streams < 0 || j.Events < 0 || j.Events < j.Streams:
		return bad(fmt.Sprintf("bad counts: %d streams, %d events", j.Streams, j.Events))
	case j.Position < 0 || (j.Streams > 0 && j.Position == 0):
		return bad(fmt.Sprintf("bad position %d/%d", j.TransactionID, j.Position))
	}
	*s = Seal{ID: j.ID, Position: Position{TransactionID: j.TransactionID, Position: j.Position}, SealedAt: j.SealedAt,
		Streams: j.Streams, Events: j.Events, Digest: d}
	return nil
}

// ParseSeal reads a seal exported as JSON (Seal.MarshalJSON). Anything
// else is an *InvalidArgumentError, matching ErrInvalidArgument.
func ParseSeal(b []byte) (Seal, error) {
	var s Seal
	if err := json.Unmarshal(b, &s); err != nil {
		var ie *InvalidArgumentError
		if errors.As(err, &ie) {
			return Seal{}, ie
		}
		return Seal{}, &InvalidArgumentError{Field: "seal", Reason: "not a seal's JSON: " + err.Error()}
	}
	return s, nil
}

// SealHasher computes a seal's digest from the stream heads at its
// position, fed in the byte order of their stream IDs:
//
//	SHA-256( "esox-seal-v1" || transaction id (uint64) || position (int64)
//	         || for each head: lp(stream ID) || version (int64) || lp(digest) )
//
// with lp and the integers as in ChainDigest; an unchained head's digest
// is empty. Use NewSealHasher. Not safe for concurrent use.
type SealHasher struct {
	h               hash.Hash
	buf             []byte
	last            string
	streams, events int64
	err             error
}

// NewSealHasher returns a SealHasher for the heads at pos.
func NewSealHasher(pos Position) *SealHasher {
	s := &SealHasher{h: sha256.New()}
	b := binary.BigEndian.AppendUint64([]byte(SealFormat), pos.TransactionID)
	b = binary.BigEndian.AppendUint64(b, uint64(pos.Position))
	s.h.Write(b)
	return s
}

// Add adds the head of a stream: its ID, version and last event's digest
// (nil when unchained). Stream IDs must come in strictly increasing byte
// order; otherwise Sum reports an error.
func (s *SealHasher) Add(streamID string, version int64, digest []byte) {
	if s.streams > 0 && streamID <= s.last && s.err == nil {
		s.err = fmt.Errorf("seal: stream %q after %q: heads must come in byte order of stream ID", streamID, s.last)
	}
	s.last = streamID
	s.streams++
	s.events += version
	b := appendLPString(s.buf[:0], streamID)
	b = binary.BigEndian.AppendUint64(b, uint64(version))
	b = appendLP(b, digest)
	s.buf = b
	s.h.Write(b)
}

// Sum returns the digest and the counts of the heads added.
func (s *SealHasher) Sum() (digest []byte, streams, events int64, err error) {
	return s.h.Sum(nil), s.streams, s.events, s.err
}

// SealResult reports a check of the events against a seal.
type SealResult struct {
	// Seal is the seal checked.
	Seal Seal
	// Streams, Events and Digest are what the events at or before the
	// seal's position make now.
	Streams, Events int64
	Digest          []byte
	// Detail explains a mismatch; empty when OK.
	Detail string
}

// OK reports whether the events still match the seal.
func (r SealResult) OK() bool { return bytes.Equal(r.Digest, r.Seal.Digest) }

// Err returns nil when r is OK, else a *ChainError (ErrChainBroken).
func (r SealResult) Err() error {
	if r.OK() {
		return nil
	}
	return &ChainError{Seal: &r}
}

// NewSealResult compares what the events make now with seal and explains
// a mismatch.
func NewSealResult(seal Seal, streams, events int64, digest []byte) SealResult {
	r := SealResult{Seal: seal, Streams: streams, Events: events, Digest: digest}
	if r.OK() {
		return r
	}
	now := fmt.Sprintf("the seal of %s covers %d event(s) in %d stream(s); the events at or before it now number %d in %d stream(s)",
		seal.Position, seal.Events, seal.Streams, events, streams)
	switch {
	case events < seal.Events || streams < seal.Streams:
		r.Detail = now + ": events were removed"
	case events > seal.Events || streams > seal.Streams:
		r.Detail = now + ": events were added before the seal's position"
	default:
		r.Detail = now + ", but their digest differs: a stream's history was rewritten"
	}
	return r
}
