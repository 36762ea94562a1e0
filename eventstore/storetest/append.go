package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/google/uuid"
)

// testExpectedVersionMatrix appends with every kind of expected version to a
// missing stream and to a stream at version 2: successes advance the stream
// by one, conflicts return a *ConcurrencyError with the right fields and
// write nothing.
func testExpectedVersionMatrix(t *testing.T, b *bundle) {
	cases := []struct {
		name     string
		initial  int // events in the stream before the append
		expected eventstore.ExpectedVersion
		ok       bool
	}{
		{"missing/Any", 0, eventstore.Any, true},
		{"missing/NoStream", 0, eventstore.NoStream, true},
		{"missing/Exact0", 0, eventstore.Exact(0), true},
		{"missing/StreamExists", 0, eventstore.StreamExists, false},
		{"missing/Exact1", 0, eventstore.Exact(1), false},
		{"missing/Exact2", 0, eventstore.Exact(2), false},
		{"v2/Any", 2, eventstore.Any, true},
		{"v2/StreamExists", 2, eventstore.StreamExists, true},
		{"v2/Exact2", 2, eventstore.Exact(2), true},
		{"v2/NoStream", 2, eventstore.NoStream, false},
		{"v2/Exact0", 2, eventstore.Exact(0), false},
		{"v2/Exact1", 2, eventstore.Exact(1), false},
		{"v2/Exact3", 2, eventstore.Exact(3), false},
	}
	var feed []uuid.UUID // every event that must be in the feed, in order
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream := fmt.Sprintf("matrix-%d", i)
			var want []uuid.UUID
			for v := range tc.initial {
				res := b.append(t, stream, eventstore.Exact(int64(v)), ev("setup", v))
				want = append(want, res.EventIDs...)
			}
			feed = append(feed, want...)
			res, err := b.store.Append(b.ctx, stream, tc.expected, []eventstore.Event{ev("attempt", i)})
			if tc.ok {
				if err != nil {
					t.Fatalf("Append(%s) to a stream at version %d: %v", tc.expected, tc.initial, err)
				}
				v := int64(tc.initial + 1)
				if res.StreamID != stream || res.FirstVersion != v || res.LastVersion != v || len(res.EventIDs) != 1 {
					t.Fatalf("AppendResult = %+v, want stream %q, versions %d..%d, 1 event ID", res, stream, v, v)
				}
				want = append(want, res.EventIDs...)
				feed = append(feed, res.EventIDs...)
				b.wantStream(t, stream, want)
				return
			}
			wantErr(t, fmt.Sprintf("Append(%s) to a stream at version %d", tc.expected, tc.initial), err, eventstore.ErrConcurrencyConflict)
			var ce *eventstore.ConcurrencyError
			if !errors.As(err, &ce) {
				t.Fatalf("errors.As(%v, *eventstore.ConcurrencyError) is false", err)
			}
			if ce.StreamID != stream || ce.Expected != tc.expected || ce.Actual != int64(tc.initial) {
				t.Fatalf("ConcurrencyError{StreamID: %q, Expected: %s, Actual: %d}, want {%q, %s, %d}", ce.StreamID, ce.Expected, ce.Actual, stream, tc.expected, tc.initial)
			}
			b.wantStream(t, stream, want)
		})
	}
	if t.Failed() {
		return
	}
	b.wantFeed(t, feed)
}

// testConcurrentAppendRace has 16 goroutines race to append version v+1 of
// one stream with Exact(v), for each v in turn: exactly one wins each
// version, the others get the typed conflict, and the stream ends with every
// winner's event once, at contiguous versions, also in the feed.
func testConcurrentAppendRace(t *testing.T, b *bundle) {
	const (
		writers  = 16
		versions = 40
		stream   = "race-1"
	)
	type win struct {
		writer int
		id     uuid.UUID
	}
	var (
		mu     sync.Mutex
		wins   = make([][]win, versions) // by expected version
		losses int
		errs   []error
	)
	var wg sync.WaitGroup
	start := make(chan struct{}) // released at once, so the writers collide
	for w := range writers {
		wg.Go(func() {
			<-start
			for v := range versions {
				id, err := uuid.NewV7()
				if err != nil {
					panic(err)
				}
				e := eventstore.Event{ID: id, Data: noted{Text: fmt.Sprintf("writer %d", w), N: v}}
				res, err := b.store.Append(b.ctx, stream, eventstore.Exact(int64(v)), []eventstore.Event{e})
				mu.Lock()
				switch {
				case err == nil:
					wins[v] = append(wins[v], win{w, id})
					if res.FirstVersion != int64(v+1) || res.LastVersion != int64(v+1) || len(res.EventIDs) != 1 || res.EventIDs[0] != id {
						errs = append(errs, fmt.Errorf("writer %d: Exact(%d) won with AppendResult %+v, want version %d and event %s", w, v, res, v+1, id))
					}
				case errors.Is(err, eventstore.ErrConcurrencyConflict):
					losses++
					var ce *eventstore.ConcurrencyError
					if !errors.As(err, &ce) {
						errs = append(errs, fmt.Errorf("writer %d: Exact(%d): conflict %v is not a *ConcurrencyError", w, v, err))
					} else if ce.StreamID != stream || ce.Expected != eventstore.Exact(int64(v)) || ce.Actual < int64(v) || (ce.Actual == int64(v) && ce.Reason == "") {
						// The writer tried v only after v-1 had a winner, so
						// the stream was at v or beyond; a version mismatch
						// means someone else wrote version v+1. (A conflict
						// with a Reason, refused to keep the feed in stream
						// order, may see the stream still at v.)
						errs = append(errs, fmt.Errorf("writer %d: Exact(%d): ConcurrencyError{%q, %s, actual %d}, want stream %q, expected %d, actual > %d", w, v, ce.StreamID, ce.Expected, ce.Actual, stream, v, v))
					}
				default:
					errs = append(errs, fmt.Errorf("writer %d: Exact(%d): unexpected error: %w", w, v, err))
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	var want []uuid.UUID
	for v, ws := range wins {
		if len(ws) != 1 {
			t.Errorf("version %d had %d winners, want exactly 1: %v", v+1, len(ws), ws)
			continue
		}
		want = append(want, ws[0].id)
	}
	if got, wantLosses := losses, writers*versions-versions; got != wantLosses {
		t.Errorf("%d appends lost with a conflict, want %d (every attempt but the winners)", got, wantLosses)
	}
	if t.Failed() {
		return
	}
	b.wantStream(t, stream, want)
	b.wantFeed(t, want)
}

// testAppendIsAtomic appends several events at once and checks they land
// together, in order, in one transaction of the feed; then that appends
// refused for a bad event or a conflict write none of their events.
func testAppendIsAtomic(t *testing.T, b *bundle) {
	const stream = "atomic-1"
	res := b.append(t, stream, eventstore.NoStream, ev("a", 1), ev("b", 2), ev("c", 3))
	if res.FirstVersion != 1 || res.LastVersion != 3 || len(res.EventIDs) != 3 {
		t.Fatalf("AppendResult = %+v, want versions 1..3 and 3 event IDs", res)
	}
	b.wantStream(t, stream, res.EventIDs)

	recs := b.readStream(t, stream, 1)
	for i, r := range recs {
		if want := (noted{Text: string(rune('a' + i)), N: i + 1}); !equalData(r.Data, want) {
			t.Errorf("record %d Data = %#v, want %#v", i, r.Data, want)
		}
		if r.Position.TransactionID != recs[0].Position.TransactionID {
			t.Errorf("record %d has transaction %d, record 0 has %d: one append must be one transaction", i, r.Position.TransactionID, recs[0].Position.TransactionID)
		}
		if i > 0 && !recs[i-1].Position.Less(r.Position) {
			t.Errorf("record %d at %s does not follow record %d at %s", i, r.Position, i-1, recs[i-1].Position)
		}
	}
	if last := recs[len(recs)-1].Position; res.LastPosition != last {
		t.Errorf("AppendResult.LastPosition = %s, want the last record's %s", res.LastPosition, last)
	}

	// A bad third event refuses the whole batch.
	_, err := b.store.Append(b.ctx, stream, eventstore.Exact(3), []eventstore.Event{ev("d", 4), ev("e", 5), {Data: unregistered{X: 1}}})
	wantErr(t, "Append with an unregistered third event", err, eventstore.ErrUnknownEventType)
	// A conflicting batch writes nothing.
	_, err = b.store.Append(b.ctx, stream, eventstore.Exact(2), []eventstore.Event{ev("d", 4), ev("e", 5)})
	wantErr(t, "Append of two events with a stale version", err, eventstore.ErrConcurrencyConflict)
	b.wantStream(t, stream, res.EventIDs)
	b.wantFeed(t, res.EventIDs)

	// The stream goes on from version 3.
	res2 := b.append(t, stream, eventstore.Exact(3), ev("d", 4), ev("e", 5))
	if res2.FirstVersion != 4 || res2.LastVersion != 5 {
		t.Fatalf("AppendResult = %+v, want versions 4..5", res2)
	}
	b.wantStream(t, stream, slices.Concat(res.EventIDs, res2.EventIDs))
}

// testAppendCopiesInput checks that the store keeps what was appended, not
// the caller's values: changing them afterwards changes nothing stored, and
// a pointer to a registered type reads back as the value type.
func testAppendCopiesInput(t *testing.T, b *bundle) {
	data := &noted{Text: "original", N: 1, Tags: []string{"x"}}
	md := eventstore.Metadata{Extra: map[string]string{"k": "original"}}
	events := []eventstore.Event{{Data: data, Metadata: md}}
	b.append(t, "copy-1", eventstore.NoStream, events...)
	data.Text, data.Tags[0] = "changed", "changed"
	md.Extra["k"] = "changed"
	events[0].Data = noted{Text: "replaced"}

	recs := b.readStream(t, "copy-1", 0)
	if len(recs) != 1 {
		t.Fatalf("ReadStream yields %d records, want 1", len(recs))
	}
	want := noted{Text: "original", N: 1, Tags: []string{"x"}}
	if !equalData(recs[0].Data, want) {
		t.Fatalf("Data = %#v (%T), want %#v (the registered value type, as appended)", recs[0].Data, recs[0].Data, want)
	}
	if got := recs[0].Metadata.Extra["k"]; got != "original" {
		t.Fatalf("Metadata.Extra[k] = %q, want %q", got, "original")
	}
	// Records handed out are the caller's: changing one changes nothing stored.
	recs[0].Metadata.Extra["k"] = "mutated"
	recs[0].Data.(noted).Tags[0] = "mutated"
	if len(recs[0].Payload) > 0 {
		recs[0].Payload[0] = ' '
	}
	again := b.readStream(t, "copy-1", 0)
	if len(again) != 1 || !equalData(again[0].Data, want) || again[0].Metadata.Extra["k"] != "original" || !json.Valid(again[0].Payload) {
		t.Fatalf("changing a returned Record changed the store: read back %+v", again)
	}
}

// equalData compares a decoded Record.Data with the value appended.
func equalData(got, want any) bool {
	return reflect.DeepEqual(got, want)
}

// testConcurrentAnyAppends has 16 goroutines append to one stream with Any
// (and, after its first event, StreamExists) at once: neither expectation
// depends on the version, so every append must succeed, each at its own
// versions, however the writers collide.
func testConcurrentAnyAppends(t *testing.T, b *bundle) {
	const (
		writers = 16
		each    = 10
		stream  = "any-1"
	)
	b.append(t, stream, eventstore.NoStream, ev("first", 0))
	var (
		mu   sync.Mutex
		ids  = map[uuid.UUID]bool{}
		errs []error
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			<-start
			expected := eventstore.Any
			if w%2 == 1 {
				expected = eventstore.StreamExists
			}
			for i := range each {
				res, err := b.store.Append(b.ctx, stream, expected, []eventstore.Event{ev(fmt.Sprintf("writer %d", w), i)})
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("writer %d: append %d with %s: %w", w, i, expected, err))
				} else {
					ids[res.EventIDs[0]] = true
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	info, err := b.store.StreamInfo(b.ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1 + writers*each); info.Version != want || len(ids) != writers*each {
		t.Errorf("stream at version %d with %d distinct appended events, want version %d and %d events", info.Version, len(ids), want, writers*each)
	}
}
