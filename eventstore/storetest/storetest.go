package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/google/uuid"
)

// FeedTimeout bounds how long the suite waits for appended events to become
// visible in ReadAll. A PostgreSQL feed can lag while another transaction on
// the server stays open; the suite polls, it never sleeps a fixed time.
const FeedTimeout = 30 * time.Second

// NewStoreFunc returns a fresh, empty store that encodes and decodes with
// reg. It is called once per subtest, concurrently; register cleanup with
// t.Cleanup.
type NewStoreFunc = func(t *testing.T, reg *eventstore.Registry) eventstore.Store

// Run runs the conformance suite. newStore returns a fresh, empty store using
// reg (the suite registers its own event types on reg before calling). Each
// subtest runs in parallel with its own store; see the package documentation
// for what is checked.
func Run(t *testing.T, newStore func(t *testing.T, reg *eventstore.Registry) eventstore.Store) {
	t.Helper()
	for _, tc := range suite {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, setup(t, newStore))
		})
	}
}

// suite lists the subtests Run runs, by name.
var suite = []struct {
	name string
	fn   func(t *testing.T, b *bundle)
}{
	{"ExpectedVersionMatrix", testExpectedVersionMatrix},
	{"ConcurrentAppendRace", testConcurrentAppendRace},
	{"ConcurrentAnyAppends", testConcurrentAnyAppends},
	{"AppendIsAtomic", testAppendIsAtomic},
	{"AppendResultAndRecordFields", testRecordFields},
	{"AppendCopiesInput", testAppendCopiesInput},
	{"ReadStreamFromVersion", testReadStreamFromVersion},
	{"ReadStreamManyPages", testReadStreamManyPages},
	{"ReadStreamStopEarly", testReadStreamStopEarly},
	{"ReadAllOrderAndResume", testReadAllOrderAndResume},
	{"ReadAllLimits", testReadAllLimits},
	{"StreamInfo", testStreamInfo},
	{"Snapshots", testSnapshots},
	{"UnknownEventType", testUnknownEventType},
	{"MalformedPayload", testMalformedPayload},
	{"InvalidArguments", testInvalidArguments},
	{"InvalidStreamIDs", testInvalidStreamIDs},
	{"LargePayload", testLargePayload},
	{"EventIDs", testEventIDs},
	{"DuplicateEventID", testDuplicateEventID},
	{"Metadata", testMetadata},
	{"TraceContext", testTraceContext},
	{"ContextCancellation", testContextCancellation},
	{"Refusals", testRefusals},
	{"TypeNames", testTypeNames},
	{"SnapshotRefusals", testSnapshotRefusals},
	{"Replay", testReplay},
}

// Event types the suite registers.

// noted is the suite's everyday event.
type noted struct {
	Text string   `json:"text"`
	N    int      `json:"n"`
	Tags []string `json:"tags,omitempty"`
}

// blob carries a large string.
type blob struct {
	Data string `json:"data"`
}

// failingMarshal is registered but cannot be encoded.
type failingMarshal struct{}

func (failingMarshal) MarshalJSON() ([]byte, error) {
	return nil, errors.New("storetest: refusing to marshal")
}

// scalarMarshal is registered but encodes as a JSON string, not an object.
type scalarMarshal struct{}

func (scalarMarshal) MarshalJSON() ([]byte, error) { return []byte(`"scalar"`), nil }

// unregistered is never registered.
type unregistered struct {
	X int `json:"x"`
}

const (
	notedType  = "storetest.noted"
	blobType   = "storetest.blob"
	failingTyp = "storetest.failing_marshal"
	scalarType = "storetest.scalar_marshal"
)

// bundle is what every subtest gets: its own store and a context.
type bundle struct {
	store eventstore.Store
	ctx   context.Context
	// barriers counts barrier appends, to name their streams.
	barriers int
}

func setup(t *testing.T, newStore NewStoreFunc) *bundle {
	t.Helper()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[noted](reg, notedType)
	eventstore.MustRegister[blob](reg, blobType)
	eventstore.MustRegister[failingMarshal](reg, failingTyp)
	eventstore.MustRegister[scalarMarshal](reg, scalarType)
	eventstore.MustRegister[RawJSON](reg, RawJSONType)
	s := newStore(t, reg)
	if s == nil {
		t.Fatal("storetest: newStore returned nil")
	}
	if s.Registry() != reg {
		t.Fatal("storetest: Store.Registry() does not return the registry passed to newStore")
	}
	return &bundle{store: s, ctx: t.Context()}
}

// ev returns an event carrying noted{Text: text, N: n}.
func ev(text string, n int) eventstore.Event {
	return eventstore.Event{Data: noted{Text: text, N: n}}
}

func (b *bundle) append(t *testing.T, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.Event) eventstore.AppendResult {
	t.Helper()
	res, err := b.store.Append(b.ctx, streamID, expected, events)
	if err != nil {
		t.Fatalf("Append(%q, %s, %d events): %v", streamID, expected, len(events), err)
	}
	return res
}

func (b *bundle) readStream(t *testing.T, streamID string, from int64) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for r, err := range b.store.ReadStream(b.ctx, streamID, from) {
		if err != nil {
			t.Fatalf("ReadStream(%q, %d): %v", streamID, from, err)
		}
		out = append(out, r)
	}
	return out
}

func (b *bundle) info(t *testing.T, streamID string) eventstore.StreamInfo {
	t.Helper()
	info, err := b.store.StreamInfo(b.ctx, streamID)
	if err != nil {
		t.Fatalf("StreamInfo(%q): %v", streamID, err)
	}
	return info
}

// readAllFrom reads the visible feed after p in pages of limit until a page
// comes back empty.
func (b *bundle) readAllFrom(t *testing.T, p eventstore.Position, limit int) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	for {
		page, err := b.store.ReadAll(b.ctx, p, limit)
		if err != nil {
			t.Fatalf("ReadAll(%s, %d): %v", p, limit, err)
		}
		if stored := storedEvents(page); stored > limit {
			t.Fatalf("ReadAll(%s, %d) returned %d stored events, more than the limit", p, limit, stored)
		}
		if len(page) == 0 {
			return out
		}
		for _, r := range page {
			// The records of an event an upcaster split share its
			// Position (Index 1, 2, …).
			if !p.Less(r.Position) && (r.Index == 0 || r.Position != p) {
				t.Fatalf("ReadAll(%s, %d) returned record at %s, not after the previous one", p, limit, r.Position)
			}
			p = r.Position
		}
		out = append(out, page...)
	}
}

// storedEvents counts the stored events recs were read from: the records
// of a split event count once.
func storedEvents(recs []eventstore.Record) int {
	n := 0
	for _, r := range recs {
		if r.Index == 0 {
			n++
		}
	}
	return n
}

// waitFeed polls the feed from the start until it holds the event with ID
// id and returns every record read.
func (b *bundle) waitFeed(t *testing.T, id uuid.UUID) []eventstore.Record {
	t.Helper()
	deadline := time.Now().Add(FeedTimeout)
	wait := time.Millisecond
	for {
		feed := b.readAllFrom(t, eventstore.Position{}, eventstore.MaxReadAllLimit)
		if slices.ContainsFunc(feed, func(r eventstore.Record) bool { return r.ID == id }) {
			return feed
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %s did not appear in ReadAll within %s (%d records visible)", id, FeedTimeout, len(feed))
		}
		select {
		case <-b.ctx.Done():
			t.Fatalf("waiting for event %s in ReadAll: %v", id, b.ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// feed appends a barrier event to a stream of its own, waits for it to be
// visible in ReadAll and returns the feed without barrier events: everything
// committed before the barrier.
func (b *bundle) feed(t *testing.T) []eventstore.Record {
	t.Helper()
	b.barriers++
	res := b.append(t, fmt.Sprintf("storetestbarrier-%d", b.barriers), eventstore.NoStream, ev("barrier", b.barriers))
	all := b.waitFeed(t, res.EventIDs[0])
	out := all[:0:0]
	for _, r := range all {
		if eventstore.Category(r.StreamID) != "storetestbarrier" {
			out = append(out, r)
		}
	}
	return out
}

// wantFeed checks that the feed (without barriers) holds exactly the events
// with the given IDs, in that order.
func (b *bundle) wantFeed(t *testing.T, want []uuid.UUID) {
	t.Helper()
	if got := ids(b.feed(t)); !slices.Equal(got, want) {
		t.Fatalf("ReadAll feed holds events\n%v\nwant\n%v", got, want)
	}
}

// wantStream checks that streamID holds exactly the events with the given
// IDs at versions 1..len(want), and that StreamInfo agrees.
func (b *bundle) wantStream(t *testing.T, streamID string, want []uuid.UUID) {
	t.Helper()
	recs := b.readStream(t, streamID, 0)
	if got := ids(recs); !slices.Equal(got, want) {
		t.Fatalf("ReadStream(%q) yields events\n%v\nwant\n%v", streamID, got, want)
	}
	for i, r := range recs {
		if r.StreamVersion != int64(i+1) || r.StreamID != streamID {
			t.Fatalf("ReadStream(%q) record %d is %s v%d, want %s v%d", streamID, i, r.StreamID, r.StreamVersion, streamID, i+1)
		}
	}
	info := b.info(t, streamID)
	wantInfo := eventstore.StreamInfo{StreamID: streamID, Exists: len(want) > 0, Version: int64(len(want))}
	if info != wantInfo {
		t.Fatalf("StreamInfo(%q) = %+v, want %+v", streamID, info, wantInfo)
	}
}

func ids(recs []eventstore.Record) []uuid.UUID {
	out := make([]uuid.UUID, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// wantErr fails t unless err matches target, naming what was called.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want one matching %v", what, target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v (%T), want one matching %v", what, err, err, target)
	}
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("invalid JSON %.100q: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("invalid JSON %.100q: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
