package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/esox-go/esox/eventstore"
)

// RunChain runs the hash chain suite (docs/compliance.md) on a store that
// implements eventstore.Verifier: every append chains, one event or many
// at once, and verifies; a seal matches the events it covers, also after
// later appends, and survives its JSON export; bad options are refused.
// Tampering needs access to a store's rows and is tested by each store
// (the PostgreSQL store through raw SQL).
func RunChain(t *testing.T, newStore NewStoreFunc) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, b *bundle, v eventstore.Verifier)
	}{
		{"VerifyChains", testVerifyChains},
		{"SealMatches", testSealMatches},
		{"VerifyRefusals", testVerifyRefusals},
	} {
		t.Run("Chain/"+tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, newStore)
			v, ok := b.store.(eventstore.Verifier)
			if !ok {
				t.Fatalf("storetest: %T does not implement eventstore.Verifier", b.store)
			}
			tc.fn(t, b, v)
		})
	}
}

// chainStreams appends to three streams: single events, a 3-event append,
// and 70 events at once.
func chainStreams(t *testing.T, b *bundle) (events int64) {
	t.Helper()
	b.append(t, "chain-a", eventstore.NoStream, ev("a1", 1))
	b.append(t, "chain-a", eventstore.Exact(1), ev("a2", 2))
	b.append(t, "chain-a", eventstore.Exact(2), ev("a3", 3), ev("a4", 4), ev("a5", 5))
	many := make([]eventstore.Event, 70)
	for i := range many {
		many[i] = ev(fmt.Sprintf("b%d", i), i)
	}
	b.append(t, "chain-b", eventstore.NoStream, many...)
	ctx := eventstore.WithReason(eventstore.WithActor(b.ctx, "auditor"), "a reason")
	if _, err := b.store.Append(ctx, "chain-c", eventstore.NoStream, []eventstore.Event{ev("c1", 1)}); err != nil {
		t.Fatal(err)
	}
	return 5 + 70 + 1
}

func testVerifyChains(t *testing.T, b *bundle, v eventstore.Verifier) {
	events := chainStreams(t, b)
	res, err := v.Verify(b.ctx, nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !res.OK() || res.Err() != nil || res.Streams != 3 || res.Events != events || res.Unchained != 0 || len(res.Breaks) != 0 {
		t.Fatalf("Verify = %+v, want %d chained events of 3 streams, none broken", res, events)
	}
	// Small batches read the same.
	small, err := v.Verify(b.ctx, &eventstore.VerifyOpts{BatchSize: 3})
	if err != nil || small.Events != events || !small.OK() {
		t.Fatalf("Verify(BatchSize 3) = %+v, %v", small, err)
	}
	one, err := v.Verify(b.ctx, &eventstore.VerifyOpts{StreamID: "chain-b", BatchSize: 7})
	if err != nil || one.Streams != 1 || one.Events != 70 || !one.OK() {
		t.Fatalf("Verify(chain-b) = %+v, %v", one, err)
	}
	none, err := v.Verify(b.ctx, &eventstore.VerifyOpts{StreamID: "chain-none"})
	if err != nil || none.Streams != 0 || none.Events != 0 || !none.OK() {
		t.Fatalf("Verify(a stream without events) = %+v, %v", none, err)
	}
}

func testSealMatches(t *testing.T, b *bundle, v eventstore.Verifier) {
	chainStreams(t, b)
	feed := b.feed(t) // every event above is visible: the seal covers them
	seal, err := v.Seal(b.ctx)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if seal.Events < int64(len(feed)) || seal.Streams < 3 || len(seal.Digest) != eventstore.DigestSize || seal.Position.IsZero() {
		t.Fatalf("Seal = %+v, want at least the %d events of the 3 streams", seal, len(feed))
	}
	exported, err := seal.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := eventstore.ParseSeal(exported)
	if err != nil {
		t.Fatalf("ParseSeal(%s): %v", exported, err)
	}
	b.append(t, "chain-a", eventstore.Exact(5), ev("later", 6))
	b.append(t, "chain-d", eventstore.NoStream, ev("later", 1))
	r, err := v.VerifySeal(b.ctx, back)
	if err != nil {
		t.Fatalf("VerifySeal: %v", err)
	}
	if !r.OK() || r.Err() != nil || r.Streams != seal.Streams || r.Events != seal.Events {
		t.Fatalf("VerifySeal after later appends = %+v, want a match", r)
	}
	// A seal whose digest is not the events' is a mismatch, not an error.
	forged := back
	forged.Digest = append([]byte(nil), back.Digest...)
	forged.Digest[0] ^= 1
	r, err = v.VerifySeal(b.ctx, forged)
	if err != nil {
		t.Fatalf("VerifySeal(forged): %v", err)
	}
	if r.OK() || r.Detail == "" || !errors.Is(r.Err(), eventstore.ErrChainBroken) {
		t.Fatalf("VerifySeal(forged) = %+v, want a mismatch", r)
	}
}

func testVerifyRefusals(t *testing.T, b *bundle, v eventstore.Verifier) {
	for _, o := range []eventstore.VerifyOpts{{BatchSize: -1}, {BatchSize: eventstore.MaxReadAllLimit + 1}, {MaxBreaks: -2}, {StreamID: "bad\x00"}} {
		if _, err := v.Verify(b.ctx, &o); !errors.Is(err, eventstore.ErrInvalidArgument) && !errors.Is(err, eventstore.ErrInvalidStreamID) {
			t.Errorf("Verify(%+v) = %v, want a typed refusal", o, err)
		}
	}
	if _, err := v.VerifySeal(b.ctx, eventstore.Seal{}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("VerifySeal(zero Seal) = %v, want ErrInvalidArgument", err)
	}
	for _, bad := range []string{``, `{}`, `{"format":"other"}`, `[]`,
		`{"format":"esox-seal-v1","transaction_id":1,"position":1,"streams":1,"events":1,"digest":"00"}`,
		`{"format":"esox-seal-v1","transaction_id":1,"position":1,"streams":1,"events":1,"digest":"` + fmt.Sprintf("%064x", 0) + `","extra":1}`} {
		if _, err := eventstore.ParseSeal([]byte(bad)); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("ParseSeal(%s) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}
