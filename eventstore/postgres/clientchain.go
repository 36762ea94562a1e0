package postgres

import (
	"bytes"
	"errors"
	"sync"

	"github.com/esox-go/esox/eventstore"
)

// This file lets an append compute its events' digests in Go (the hash
// chain of docs/compliance.md) when the store knows the digest they chain
// after: the statement then stores them and checks that one condition, and
// the server neither renders the payloads and metadata as text nor folds
// the chain over them, which took a ten-event append 14–17 % of its
// throughput. The digests are the same bytes either way
// (eventstore.ChainDigest over jsonbText's rendering of the values, which
// is PostgreSQL's); TestChainDigestsMatchGo checks it, both ways.

// appendPlan is how one attempt of an append writes its events.
type appendPlan struct {
	sql string
	// digests are the events' digests, computed by the store
	// (clientChain); nil: the statement computes them (or chaining is
	// off).
	digests [][]byte
	// prev is the digest the first event chains after (nil: the genesis),
	// which the statement checks is the stream's last.
	prev []byte
}

// errStaleHead is insert's report that a statement given the events'
// digests inserted nothing because the stream's last digest is not the one
// they chain after, and nothing else refused the append: the store's
// headCache was wrong (the stream's last event was rewritten or restored
// since). The append runs again with the digests left to the server.
var errStaleHead = errors.New("the stream's last digest is not the remembered one")

// plan chooses how to write enc: with the digests computed here when the
// stream's last digest is known (an exact expected version of 0, or the
// version headCache remembers for the stream) and every payload and
// metadata renders exactly as jsonb does; else with the digests left to the
// statement. server forces the latter, and so does Config.ChainHeads < 0.
func (s *Store) plan(streamID string, expected eventstore.ExpectedVersion, enc []eventstore.EncodedEvent, server bool) appendPlan {
	if server || s.heads == nil || s.cfg.DisableChain || len(enc) > maxValuesEvents {
		return appendPlan{sql: s.appendSQL(len(enc))}
	}
	v, exact := expected.Version()
	if !exact {
		return appendPlan{sql: s.appendSQL(len(enc))}
	}
	var prev []byte
	if v > 0 {
		h, ok := s.heads.get(streamID)
		if !ok || h.version != v {
			return appendPlan{sql: s.appendSQL(len(enc))}
		}
		prev = h.digest
	}
	digests, ok := clientChain(prev, streamID, v, enc)
	if !ok {
		return appendPlan{sql: s.appendSQL(len(enc))}
	}
	return appendPlan{sql: s.chainedValuesSQL[len(enc)], digests: digests, prev: prev}
}

// clientChain returns the digests of enc appended to streamID after version
// last, whose event's digest is prev, as the append statement computes them
// (chainValue); ok is false when a payload or metadata is one jsonbText
// leaves to the server.
func clientChain(prev []byte, streamID string, last int64, enc []eventstore.EncodedEvent) (digests [][]byte, ok bool) {
	sc := chainScratches.Get().(*chainScratch)
	defer chainScratches.Put(sc)
	r, h, payload, meta := &sc.r, &sc.h, sc.payload[:0], sc.meta[:0]
	defer func() { sc.payload, sc.meta = keep(payload), keep(meta) }()
	digests = make([][]byte, len(enc))
	all := make([]byte, 0, len(enc)*eventstore.DigestSize)
	for i, e := range enc {
		if payload, ok = r.render(payload[:0], e.Payload); !ok {
			return nil, false
		}
		// The events of one append usually share their metadata.
		if i == 0 || !bytes.Equal(e.Metadata, enc[i-1].Metadata) {
			if meta, ok = r.render(meta[:0], e.Metadata); !ok {
				return nil, false
			}
		}
		all = h.AppendDigest(all, prev, eventstore.ChainEvent{
			ID: e.ID, StreamID: streamID, StreamVersion: last + int64(i) + 1,
			Type: e.Type, SchemaVersion: e.SchemaVersion, Payload: payload, Metadata: meta,
		})
		prev = all[len(all)-eventstore.DigestSize:]
		digests[i] = prev
	}
	return digests, true
}

// chainScratch is clientChain's working memory, reused from one append to
// the next through chainScratches: the renderer's buffers, the hash and
// the rendered texts.
type chainScratch struct {
	r             jsonbRenderer
	h             eventstore.ChainHasher
	payload, meta []byte
}

var chainScratches = sync.Pool{New: func() any { return new(chainScratch) }}

// keep returns b emptied for reuse, or nil when it grew beyond 64 KiB: a
// large event's buffer is not kept for the small ones after it.
func keep(b []byte) []byte {
	if cap(b) > 64<<10 {
		return nil
	}
	return b[:0]
}

// headCache remembers the last version and digest of the streams a Store
// appended to (Config.ChainHeads of them), for plan. An entry can go stale
// when another writer appends to the stream: then the version an append
// expects is not the remembered one, or the statement's check of the digest
// fails (errStaleHead), and the server computes the digests.
type headCache struct {
	mu    sync.Mutex
	max   int
	heads map[string]chainHead
}

type chainHead struct {
	version int64
	digest  []byte
}

func newHeadCache(max int) *headCache {
	if max <= 0 {
		return nil
	}
	return &headCache{max: max, heads: make(map[string]chainHead)}
}

func (c *headCache) get(streamID string) (chainHead, bool) {
	if c == nil {
		return chainHead{}, false
	}
	c.mu.Lock()
	h, ok := c.heads[streamID]
	c.mu.Unlock()
	return h, ok
}

// put remembers streamID's head; when full, it forgets some other stream
// first (the map's iteration order picks which).
func (c *headCache) put(streamID string, h chainHead) {
	if c == nil || len(h.digest) != eventstore.DigestSize {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.heads[streamID]; !ok && len(c.heads) >= c.max {
		for k := range c.heads {
			delete(c.heads, k)
			break
		}
	}
	c.heads[streamID] = h
}

func (c *headCache) forget(streamID string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.heads, streamID)
	c.mu.Unlock()
}
