package eventstore_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// TestChainDigestKnownAnswer pins the digest's byte layout: changing it
// breaks every stored chain. The first value was also computed by hand in
// SQL (sha256 over int4send, uuid_send, convert_to, int8send).
func TestChainDigestKnownAnswer(t *testing.T) {
	t.Parallel()
	e := eventstore.ChainEvent{ID: uuid.MustParse("01890a5d-ac96-774b-bcce-b302099a8057"), StreamID: "order-1", StreamVersion: 2,
		Type: "order_placed", SchemaVersion: 1, Payload: []byte(`{"amount": 3, "order_id": "1"}`), Metadata: []byte(`{"actor": "alice"}`)}
	d1 := eventstore.ChainDigest(nil, e)
	d2 := eventstore.ChainDigest(d1, e)
	if got := hex.EncodeToString(d1); got != "7f9d3f09f4fcebc80734634cd7c1e718e5c05ceea1ecfcddcaaf9702644f74a7" {
		t.Errorf("genesis digest = %s", got)
	}
	if got := hex.EncodeToString(d2); got != "88e6b72b735f3a5b0b9493a57c96a372333050eefffa31a09d5f485e4c0ccfae" {
		t.Errorf("chained digest = %s", got)
	}
	// Length prefixes: moving bytes from one field to the next changes
	// the digest.
	moved := e
	moved.StreamID, moved.Type = "order-1o", "rder_placed"
	if bytes.Equal(eventstore.ChainDigest(nil, moved), d1) {
		t.Error("moving a byte between fields kept the digest")
	}
}

// chainRows builds a chained stream of n events.
func chainRows(stream string, n int) []eventstore.ChainRow {
	var out []eventstore.ChainRow
	var prev []byte
	for v := 1; v <= n; v++ {
		r := eventstore.ChainRow{ChainEvent: eventstore.ChainEvent{ID: uuid.New(), StreamID: stream, StreamVersion: int64(v), Type: "t",
			SchemaVersion: 1, Payload: []byte(`{"n": ` + string(rune('0'+v)) + `}`), Metadata: []byte(`{}`)}}
		r.Digest = eventstore.ChainDigest(prev, r.ChainEvent)
		prev = r.Digest
		out = append(out, r)
	}
	return out
}

// TestChainCheckerClassifies feeds the checker tampered rows of each kind,
// as a store reads them back, after an intact stream.
func TestChainCheckerClassifies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		tamper  func([]eventstore.ChainRow) []eventstore.ChainRow
		version int64
		kind    eventstore.BreakKind
	}{
		{"Changed", func(r []eventstore.ChainRow) []eventstore.ChainRow { r[2].Payload = []byte(`{"n": 9}`); return r }, 3, eventstore.BreakChanged},
		{"ChangedLast", func(r []eventstore.ChainRow) []eventstore.ChainRow { r[4].Metadata = []byte(`{"a": "b"}`); return r }, 5, eventstore.BreakChanged},
		{"Gap", func(r []eventstore.ChainRow) []eventstore.ChainRow { return append(r[:2:2], r[3:]...) }, 3, eventstore.BreakMissing},
		{"Renumbered", func(r []eventstore.ChainRow) []eventstore.ChainRow {
			r = append(r[:2:2], r[3:]...)
			r[2].StreamVersion, r[3].StreamVersion = 3, 4
			return r
		}, 3, eventstore.BreakMissing},
		{"Swapped", func(r []eventstore.ChainRow) []eventstore.ChainRow {
			r[2], r[3] = r[3], r[2]
			r[2].StreamVersion, r[3].StreamVersion = 3, 4
			return r
		}, 3, eventstore.BreakReordered},
		{"Inserted", func(r []eventstore.ChainRow) []eventstore.ChainRow {
			x := r[1]
			x.ID, x.Payload, x.Digest = uuid.New(), []byte(`{"x": 1}`), []byte("forged")
			out := append(append(r[:2:2], x), r[2:]...)
			for i := range out {
				out[i].StreamVersion = int64(i + 1)
			}
			return out
		}, 3, eventstore.BreakInserted},
		{"InsertedWithDigest", func(r []eventstore.ChainRow) []eventstore.ChainRow {
			x := r[1]
			x.ID, x.Payload, x.StreamVersion = uuid.New(), []byte(`{"x": 1}`), 3
			x.Digest = eventstore.ChainDigest(r[1].Digest, x.ChainEvent)
			out := append(append(r[:2:2], x), r[2:]...)
			for i := range out {
				out[i].StreamVersion = int64(i + 1)
			}
			return out
		}, 3, eventstore.BreakInserted},
		{"Unchained", func(r []eventstore.ChainRow) []eventstore.ChainRow { r[3].Digest = nil; return r }, 4, eventstore.BreakUnchained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := eventstore.NewChainChecker(10)
			for _, r := range chainRows("a-1", 3) {
				c.Add(r)
			}
			for _, r := range tc.tamper(chainRows("b-1", 5)) {
				c.Add(r)
			}
			for _, r := range chainRows("c-1", 2) {
				c.Add(r)
			}
			res := c.Result()
			if res.Streams != 3 || res.BrokenStreams != 1 || len(res.Breaks) != 1 {
				t.Fatalf("result = %+v, want 3 streams, 1 broken", res)
			}
			if b := res.Breaks[0]; b.StreamID != "b-1" || b.StreamVersion != tc.version || b.Kind != tc.kind {
				t.Fatalf("break = %s, want b-1 version %d %s", b, tc.version, tc.kind)
			}
			var ce *eventstore.ChainError
			if err := res.Err(); !errors.Is(err, eventstore.ErrChainBroken) || !errors.As(err, &ce) || ce.BrokenStreams != 1 {
				t.Errorf("Err() = %v", err)
			}
		})
	}
}

// TestChainCheckerUnchainedPrefix: events before a stream's first chained
// one are counted, not checked; the first chained event chains from the
// genesis.
func TestChainCheckerUnchainedPrefix(t *testing.T) {
	t.Parallel()
	rows := chainRows("a-1", 3)
	for i := range rows {
		rows[i].StreamVersion += 2
	}
	c := eventstore.NewChainChecker(1)
	c.Add(eventstore.ChainRow{ChainEvent: eventstore.ChainEvent{StreamID: "a-1", StreamVersion: 1}})
	c.Add(eventstore.ChainRow{ChainEvent: eventstore.ChainEvent{StreamID: "a-1", StreamVersion: 2}})
	// The rows were chained at versions 1-3: re-chain them at 3-5.
	var prev []byte
	for i := range rows {
		rows[i].Digest = eventstore.ChainDigest(prev, rows[i].ChainEvent)
		prev = rows[i].Digest
		c.Add(rows[i])
	}
	if res := c.Result(); !res.OK() || res.Unchained != 2 || res.Events != 5 {
		t.Fatalf("result = %+v, want OK, 2 unchained of 5", res)
	}
}

// TestSealJSON: a seal's exported form reads back; malformed ones are
// refused.
func TestSealJSON(t *testing.T) {
	t.Parallel()
	h := eventstore.NewSealHasher(eventstore.Position{TransactionID: 9, Position: 4})
	h.Add("a-1", 3, []byte("d"))
	h.Add("b-1", 1, nil)
	digest, streams, events, err := h.Sum()
	if err != nil || streams != 2 || events != 4 || len(digest) != eventstore.DigestSize {
		t.Fatalf("Sum = %x, %d, %d, %v", digest, streams, events, err)
	}
	seal := eventstore.Seal{ID: 3, Position: eventstore.Position{TransactionID: 9, Position: 4}, SealedAt: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
		Streams: streams, Events: events, Digest: digest}
	b, err := seal.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := eventstore.ParseSeal(b)
	if err != nil || back.ID != 3 || back.Position != seal.Position || !back.SealedAt.Equal(seal.SealedAt) || !bytes.Equal(back.Digest, digest) {
		t.Fatalf("ParseSeal(%s) = %+v, %v", b, back, err)
	}
	bad := eventstore.NewSealHasher(eventstore.Position{})
	bad.Add("b", 1, nil)
	bad.Add("a", 1, nil)
	if _, _, _, err := bad.Sum(); err == nil {
		t.Error("SealHasher accepted heads out of order")
	}
	if r := eventstore.NewSealResult(seal, streams, events-1, digest[:1]); r.OK() || r.Detail == "" {
		t.Errorf("NewSealResult of fewer events = %+v", r)
	}
}
