package memory

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/esox-go/esox/eventstore"
)

// This file holds the memory store's hash chain (docs/compliance.md): the
// same digests as the PostgreSQL store's (eventstore.ChainDigest) over the
// payload and metadata as this store keeps them, verified by the same
// eventstore.ChainChecker.

var _ eventstore.Verifier = (*Store)(nil)

// chainEvent is what st's digest covers.
func (st *stored) chainEvent() eventstore.ChainEvent {
	return eventstore.ChainEvent{ID: st.id, StreamID: st.streamID, StreamVersion: st.version, Type: st.typ,
		SchemaVersion: max(st.schemaVer, 1), Payload: st.payload, Metadata: st.metadata}
}

// Verify checks the hash chain of one stream (opts.StreamID) or of every
// stream, in the byte order of their IDs, and reports the first broken
// link of each broken stream (see eventstore.Verifier). It holds the
// store's read lock while it reads, one batch of opts.BatchSize events at
// a time.
//
// Errors: an *eventstore.InvalidArgumentError or
// *eventstore.InvalidStreamIDError for bad opts, an error wrapping
// ctx.Err() when ctx ends.
func (s *Store) Verify(ctx context.Context, opts *eventstore.VerifyOpts) (eventstore.VerifyResult, error) {
	o, err := opts.WithDefaults()
	if err != nil {
		return eventstore.VerifyResult{}, fmt.Errorf("memory: verify: %w", err)
	}
	s.d.mu.RLock()
	streams := make([]string, 0, len(s.d.streams))
	for id := range s.d.streams {
		if o.StreamID == "" || id == o.StreamID {
			streams = append(streams, id)
		}
	}
	s.d.mu.RUnlock()
	slices.Sort(streams)
	check := eventstore.NewChainChecker(o.MaxBreaks)
	for _, id := range streams {
		for from := 0; ; from += o.BatchSize {
			if err := ctx.Err(); err != nil {
				return eventstore.VerifyResult{}, fmt.Errorf("memory: verify: %w", err)
			}
			s.d.mu.RLock()
			idx := s.d.streams[id]
			n := 0
			for _, i := range idx[min(from, len(idx)):min(from+o.BatchSize, len(idx))] {
				st := &s.d.feed[i]
				check.Add(eventstore.ChainRow{ChainEvent: st.chainEvent(), Position: st.pos, Digest: st.digest})
				n++
			}
			s.d.mu.RUnlock()
			if n < o.BatchSize {
				break
			}
		}
	}
	return check.Result(), nil
}

// sealOf computes the seal digest of the stream heads at pos. s.d.mu is
// held.
func (s *Store) sealOf(pos eventstore.Position) (digest []byte, streams, events int64, err error) {
	ids := make([]string, 0, len(s.d.streams))
	for id := range s.d.streams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := eventstore.NewSealHasher(pos)
	for _, id := range ids {
		idx := s.d.streams[id]
		// The stream's last event at or before pos.
		for j := len(idx) - 1; j >= 0; j-- {
			if st := &s.d.feed[idx[j]]; st.pos.Compare(pos) <= 0 {
				h.Add(id, st.version, st.digest)
				break
			}
		}
	}
	return h.Sum()
}

// Seal seals the store at its last event (see eventstore.Verifier): it
// computes the digest over every stream's head, records the seal (Seals
// lists them) and returns it. Errors: an error wrapping ctx.Err() when ctx
// is already done.
func (s *Store) Seal(ctx context.Context) (eventstore.Seal, error) {
	if err := ctx.Err(); err != nil {
		return eventstore.Seal{}, fmt.Errorf("memory: seal: %w", err)
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	var head eventstore.Position
	if n := len(s.d.feed); n > 0 {
		head = s.d.feed[n-1].pos
	}
	digest, streams, events, err := s.sealOf(head)
	if err != nil {
		return eventstore.Seal{}, fmt.Errorf("memory: seal: %w", err)
	}
	seal := eventstore.Seal{ID: int64(len(s.d.seals) + 1), Position: head, SealedAt: time.Now().UTC().Truncate(time.Microsecond),
		Streams: streams, Events: events, Digest: digest}
	s.d.seals = append(s.d.seals, seal)
	return seal, nil
}

// VerifySeal recomputes seal's digest from the events at or before its
// position and compares (see eventstore.Verifier). Errors: an
// *eventstore.InvalidArgumentError for a seal without a digest, an error
// wrapping ctx.Err() when ctx is already done.
func (s *Store) VerifySeal(ctx context.Context, seal eventstore.Seal) (eventstore.SealResult, error) {
	if len(seal.Digest) != eventstore.DigestSize {
		return eventstore.SealResult{}, fmt.Errorf("memory: verify seal: %w", &eventstore.InvalidArgumentError{Field: "seal",
			Reason: fmt.Sprintf("digest must be %d bytes, got %d", eventstore.DigestSize, len(seal.Digest))})
	}
	if err := ctx.Err(); err != nil {
		return eventstore.SealResult{}, fmt.Errorf("memory: verify seal: %w", err)
	}
	s.d.mu.RLock()
	digest, streams, events, err := s.sealOf(seal.Position)
	s.d.mu.RUnlock()
	if err != nil {
		return eventstore.SealResult{}, fmt.Errorf("memory: verify seal: %w", err)
	}
	return eventstore.NewSealResult(seal, streams, events, digest), nil
}

// Seals returns the recorded seals, newest first.
func (s *Store) Seals() []eventstore.Seal {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	out := slices.Clone(s.d.seals)
	slices.Reverse(out)
	return out
}
