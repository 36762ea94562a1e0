package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/google/uuid"
)

// testRecordFields checks every field of AppendResult and of the Record read
// back, through ReadStream and ReadAll alike.
func testRecordFields(t *testing.T, b *bundle) {
	const stream = "fields-1"
	data := noted{Text: "héllo \"world\" <&>", N: 42, Tags: []string{"a", "b"}}
	res := b.append(t, stream, eventstore.NoStream, eventstore.Event{Data: data})
	if res.StreamID != stream || res.FirstVersion != 1 || res.LastVersion != 1 || len(res.EventIDs) != 1 || res.EventIDs[0] == uuid.Nil || res.LastPosition.IsZero() {
		t.Fatalf("AppendResult = %+v, want stream %q, versions 1..1, one event ID, a Position", res, stream)
	}
	recs := b.readStream(t, stream, 1)
	if len(recs) != 1 {
		t.Fatalf("ReadStream yields %d records, want 1", len(recs))
	}
	r := recs[0]
	if r.ID != res.EventIDs[0] || r.StreamID != stream || r.StreamVersion != 1 || r.Type != notedType || r.Position != res.LastPosition {
		t.Fatalf("Record = {ID %s, StreamID %q, StreamVersion %d, Type %q, Position %s}, want {%s, %q, 1, %q, %s}", r.ID, r.StreamID, r.StreamVersion, r.Type, r.Position, res.EventIDs[0], stream, notedType, res.LastPosition)
	}
	if !equalData(r.Data, data) {
		t.Fatalf("Record.Data = %#v (%T), want %#v", r.Data, r.Data, data)
	}
	if !jsonEqual(t, r.Payload, mustJSON(t, data)) {
		t.Fatalf("Record.Payload = %s, want the JSON of %#v", r.Payload, data)
	}
	if r.RecordedAt.IsZero() {
		t.Fatal("Record.RecordedAt is zero")
	}
	if !r.Metadata.IsZero() {
		t.Fatalf("Record.Metadata = %+v, want none (none was given)", r.Metadata)
	}
	feed := b.feed(t)
	if len(feed) != 1 {
		t.Fatalf("ReadAll holds %d records, want 1", len(feed))
	}
	f := feed[0]
	if f.ID != r.ID || f.StreamID != r.StreamID || f.StreamVersion != r.StreamVersion || f.Type != r.Type || f.Position != r.Position ||
		!equalData(f.Data, r.Data) || !jsonEqual(t, f.Payload, r.Payload) || !reflect.DeepEqual(f.Metadata.Map(), r.Metadata.Map()) || !f.RecordedAt.Equal(r.RecordedAt) {
		t.Fatalf("ReadAll record %+v differs from ReadStream record %+v", f, r)
	}
}

// testStreamInfo checks StreamInfo of a missing stream and of a stream as it
// grows.
func testStreamInfo(t *testing.T, b *bundle) {
	if got, want := b.info(t, "info-1"), (eventstore.StreamInfo{StreamID: "info-1"}); got != want {
		t.Fatalf("StreamInfo of a missing stream = %+v, want %+v", got, want)
	}
	b.append(t, "info-1", eventstore.NoStream, ev("a", 1), ev("b", 2))
	if got, want := b.info(t, "info-1"), (eventstore.StreamInfo{StreamID: "info-1", Exists: true, Version: 2}); got != want {
		t.Fatalf("StreamInfo = %+v, want %+v", got, want)
	}
	b.append(t, "info-1", eventstore.Exact(2), ev("c", 3))
	if got, want := b.info(t, "info-1"), (eventstore.StreamInfo{StreamID: "info-1", Exists: true, Version: 3}); got != want {
		t.Fatalf("StreamInfo = %+v, want %+v", got, want)
	}
	if got, want := b.info(t, "info-2"), (eventstore.StreamInfo{StreamID: "info-2"}); got != want {
		t.Fatalf("StreamInfo of another, missing stream = %+v, want %+v", got, want)
	}
}

// testSnapshots saves and loads snapshots: not found before the first save;
// the latest after each save, per stream; an older snapshot does not replace
// a newer one; bad input refused with ErrInvalidArgument, changing nothing.
func testSnapshots(t *testing.T, b *bundle) {
	_, err := b.store.LoadSnapshot(b.ctx, "snap-1")
	wantErr(t, "LoadSnapshot before any save", err, eventstore.ErrSnapshotNotFound)

	first := eventstore.Snapshot{StreamID: "snap-1", Version: 3, Type: "order.v1", Payload: []byte(`{"status": "open", "lines": [1, 2], "total": 12.5}`)}
	b.saveSnapshot(t, first)
	got := b.loadSnapshot(t, "snap-1")
	wantSnapshot(t, got, first)
	if got.RecordedAt.IsZero() {
		t.Fatal("loaded Snapshot.RecordedAt is zero")
	}

	latest := eventstore.Snapshot{StreamID: "snap-1", Version: 7, Type: "order.v2", Payload: []byte(`{"status":"paid"}`)}
	b.saveSnapshot(t, latest)
	wantSnapshot(t, b.loadSnapshot(t, "snap-1"), latest)

	// A slower saver's older snapshot does not move the stream back.
	b.saveSnapshot(t, eventstore.Snapshot{StreamID: "snap-1", Version: 5, Type: "order.v2", Payload: []byte(`{"status":"stale"}`)})
	wantSnapshot(t, b.loadSnapshot(t, "snap-1"), latest)
	// One of the same version replaces it (a changed snapshot Type, say).
	latest = eventstore.Snapshot{StreamID: "snap-1", Version: 7, Type: "order.v3", Payload: []byte(`{"status":"paid","v":3}`)}
	b.saveSnapshot(t, latest)
	wantSnapshot(t, b.loadSnapshot(t, "snap-1"), latest)

	_, err = b.store.LoadSnapshot(b.ctx, "snap-2")
	wantErr(t, "LoadSnapshot of a stream without one", err, eventstore.ErrSnapshotNotFound)

	bad := map[string]eventstore.Snapshot{
		"empty payload":     {Payload: []byte(``)},
		"truncated payload": {Payload: []byte(`{"a":`)},
		"non-JSON payload":  {Payload: []byte(`not json`)},
		"version 0":         {Version: 0},
		"version -1":        {Version: -1},
		"empty type":        {Type: ""},
	}
	for _, name := range slices.Sorted(maps.Keys(bad)) {
		s := eventstore.Snapshot{StreamID: "snap-1", Version: 9, Type: "order.v4", Payload: []byte(`{}`)}
		switch d := bad[name]; {
		case d.Payload != nil:
			s.Payload = d.Payload
		case strings.HasPrefix(name, "version"):
			s.Version = d.Version
		default:
			s.Type = d.Type
		}
		wantErr(t, "SaveSnapshot with "+name, b.store.SaveSnapshot(b.ctx, s), eventstore.ErrInvalidArgument)
	}
	wantSnapshot(t, b.loadSnapshot(t, "snap-1"), latest)
	// A stream with only refused snapshots still has none.
	err = b.store.SaveSnapshot(b.ctx, eventstore.Snapshot{StreamID: "snap-3", Version: 1, Type: "t", Payload: []byte(`{"a":`)})
	wantErr(t, "SaveSnapshot with a truncated payload", err, eventstore.ErrInvalidArgument)
	_, err = b.store.LoadSnapshot(b.ctx, "snap-3")
	wantErr(t, "LoadSnapshot after a refused save", err, eventstore.ErrSnapshotNotFound)
}

func (b *bundle) saveSnapshot(t *testing.T, s eventstore.Snapshot) {
	t.Helper()
	if err := b.store.SaveSnapshot(b.ctx, s); err != nil {
		t.Fatalf("SaveSnapshot(%q v%d): %v", s.StreamID, s.Version, err)
	}
}

func (b *bundle) loadSnapshot(t *testing.T, streamID string) eventstore.Snapshot {
	t.Helper()
	s, err := b.store.LoadSnapshot(b.ctx, streamID)
	if err != nil {
		t.Fatalf("LoadSnapshot(%q): %v", streamID, err)
	}
	return s
}

func wantSnapshot(t *testing.T, got, want eventstore.Snapshot) {
	t.Helper()
	if got.StreamID != want.StreamID || got.Version != want.Version || got.Type != want.Type || !jsonEqual(t, got.Payload, want.Payload) {
		t.Fatalf("LoadSnapshot = {%q v%d %q %s}, want {%q v%d %q %s}", got.StreamID, got.Version, got.Type, got.Payload, want.StreamID, want.Version, want.Type, want.Payload)
	}
}

// testUnknownEventType appends values of unregistered Go types (and nil):
// each is refused with an *UnknownEventTypeError and writes nothing.
func testUnknownEventType(t *testing.T, b *bundle) {
	for _, data := range []any{unregistered{X: 1}, &unregistered{X: 2}, nil, 42, map[string]any{"x": 1}} {
		_, err := b.store.Append(b.ctx, "unknown-1", eventstore.Any, []eventstore.Event{{Data: data}})
		what := fmt.Sprintf("Append(%T)", data)
		wantErr(t, what, err, eventstore.ErrUnknownEventType)
		var ue *eventstore.UnknownEventTypeError
		if !errors.As(err, &ue) || ue.GoType == "" {
			t.Fatalf("%s: error %v is not an *UnknownEventTypeError naming the Go type", what, err)
		}
	}
	b.wantStream(t, "unknown-1", nil)
	b.wantFeed(t, nil)
}

// testMalformedPayload appends registered events that cannot be stored as
// JSON objects: each is refused with a *PayloadError and writes nothing. A
// string that merely looks like the \u0000 escape is stored fine.
func testMalformedPayload(t *testing.T, b *bundle) {
	for _, tc := range []struct {
		name string
		data any
		typ  string
	}{
		{"MarshalJSON fails", failingMarshal{}, failingTyp},
		{"MarshalJSON returns a string", scalarMarshal{}, scalarType},
		{"NUL in a string", noted{Text: "a\x00b"}, notedType},
		{"NUL in a nested string", noted{Text: "ok", Tags: []string{"x", "\x00"}}, notedType},
	} {
		_, err := b.store.Append(b.ctx, "malformed-1", eventstore.Any, []eventstore.Event{ev("fine", 1), {Data: tc.data}})
		wantErr(t, "Append: "+tc.name, err, eventstore.ErrMalformedPayload)
		var pe *eventstore.PayloadError
		if !errors.As(err, &pe) || pe.Type != tc.typ {
			t.Fatalf("Append: %s: error %v is not a *PayloadError for type %q", tc.name, err, tc.typ)
		}
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		md   eventstore.Metadata
	}{
		{"NUL in event metadata", b.ctx, eventstore.Metadata{Actor: "a\x00b"}},
		{"NUL in an event metadata key", b.ctx, eventstore.Metadata{Extra: map[string]string{"k\x00": "v"}}},
		{"NUL in context metadata", eventstore.WithCorrelationID(b.ctx, "c\x00"), eventstore.Metadata{}},
	} {
		_, err := b.store.Append(tc.ctx, "malformed-1", eventstore.Any, []eventstore.Event{{Data: noted{Text: "fine"}, Metadata: tc.md}})
		wantErr(t, "Append: "+tc.name, err, eventstore.ErrInvalidArgument)
	}
	b.wantStream(t, "malformed-1", nil)
	b.wantFeed(t, nil)

	// Six characters that spell the escape are not NUL.
	lookalike := noted{Text: `a\u0000b`, Tags: []string{`\u0000`}}
	res := b.append(t, "malformed-2", eventstore.NoStream, eventstore.Event{Data: lookalike})
	recs := b.readStream(t, "malformed-2", 1)
	if len(recs) != 1 || !equalData(recs[0].Data, lookalike) {
		t.Fatalf("ReadStream of a backslash-u string yields %+v, want %#v", recs, lookalike)
	}
	b.wantFeed(t, res.EventIDs)
}

// testInvalidArguments checks that an empty append and a negative expected
// version are refused with ErrInvalidArgument and write nothing.
func testInvalidArguments(t *testing.T, b *bundle) {
	for _, events := range [][]eventstore.Event{nil, {}} {
		_, err := b.store.Append(b.ctx, "args-1", eventstore.Any, events)
		wantErr(t, fmt.Sprintf("Append(%#v)", events), err, eventstore.ErrInvalidArgument)
	}
	_, err := b.store.Append(b.ctx, "args-1", eventstore.Exact(-1), []eventstore.Event{ev("a", 1)})
	wantErr(t, "Append(Exact(-1))", err, eventstore.ErrInvalidArgument)
	b.wantStream(t, "args-1", nil)
	b.wantFeed(t, nil)
}

// testInvalidStreamIDs checks every method refuses invalid stream IDs with an
// *InvalidStreamIDError and writes nothing, and that a stream ID of exactly
// the maximum length works.
func testInvalidStreamIDs(t *testing.T, b *bundle) {
	bad := map[string]string{
		"empty":          "",
		"257 bytes":      strings.Repeat("x", eventstore.MaxStreamIDLength+1),
		"NUL":            "a\x00b",
		"newline":        "a\nb",
		"tab":            "a\tb",
		"DEL":            "a\x7fb",
		"leading space":  " a",
		"trailing space": "a ",
		"invalid UTF-8":  "a\xffb",
	}
	for _, name := range slices.Sorted(maps.Keys(bad)) {
		id := bad[name]
		_, err := b.store.Append(b.ctx, id, eventstore.Any, []eventstore.Event{ev("a", 1)})
		wantErr(t, "Append to stream ID "+name, err, eventstore.ErrInvalidStreamID)
		var ie *eventstore.InvalidStreamIDError
		if !errors.As(err, &ie) || ie.StreamID != id {
			t.Fatalf("Append to stream ID %s: error %v is not an *InvalidStreamIDError naming the ID", name, err)
		}
		n := 0
		for _, err := range b.store.ReadStream(b.ctx, id, 1) {
			n++
			wantErr(t, "ReadStream of stream ID "+name, err, eventstore.ErrInvalidStreamID)
		}
		if n != 1 {
			t.Fatalf("ReadStream of stream ID %s yielded %d pairs, want one error", name, n)
		}
		_, err = b.store.StreamInfo(b.ctx, id)
		wantErr(t, "StreamInfo of stream ID "+name, err, eventstore.ErrInvalidStreamID)
		err = b.store.SaveSnapshot(b.ctx, eventstore.Snapshot{StreamID: id, Version: 1, Type: "t", Payload: []byte(`{}`)})
		wantErr(t, "SaveSnapshot of stream ID "+name, err, eventstore.ErrInvalidStreamID)
		_, err = b.store.LoadSnapshot(b.ctx, id)
		wantErr(t, "LoadSnapshot of stream ID "+name, err, eventstore.ErrInvalidStreamID)
	}
	b.wantFeed(t, nil)

	longest := "long-" + strings.Repeat("é", (eventstore.MaxStreamIDLength-5)/2) + "x"
	if len(longest) != eventstore.MaxStreamIDLength {
		panic(fmt.Sprintf("storetest: longest stream ID has %d bytes", len(longest)))
	}
	res := b.append(t, longest, eventstore.NoStream, ev("a", 1))
	b.wantStream(t, longest, res.EventIDs)
	if feed := b.feed(t); len(feed) != 1 || feed[0].StreamID != longest {
		t.Fatalf("ReadAll after appending to a %d-byte stream ID = %d records, want it alone", len(longest), len(feed))
	}
}

// testLargePayload round-trips a 1 MiB payload exactly.
func testLargePayload(t *testing.T, b *bundle) {
	const size = 1 << 20
	alphabet := []rune("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789 \"\\/<>&'\t\n{}[]:, é€😀")
	var sb strings.Builder
	x := uint32(2463534242)
	for sb.Len() < size-4 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		sb.WriteRune(alphabet[x%uint32(len(alphabet))])
	}
	for sb.Len() < size {
		sb.WriteByte('.')
	}
	data := blob{Data: sb.String()}
	res := b.append(t, "large-1", eventstore.NoStream, eventstore.Event{Data: data})
	check := func(what string, r eventstore.Record) {
		t.Helper()
		got, ok := r.Data.(blob)
		if !ok {
			t.Fatalf("%s: Data is %T, want blob", what, r.Data)
		}
		if got.Data != data.Data {
			i := 0
			for i < min(len(got.Data), len(data.Data)) && got.Data[i] == data.Data[i] {
				i++
			}
			t.Fatalf("%s: the 1 MiB string differs from byte %d (got %d bytes, want %d)", what, i, len(got.Data), len(data.Data))
		}
		if len(r.Payload) < size {
			t.Fatalf("%s: Payload has %d bytes, want at least %d", what, len(r.Payload), size)
		}
	}
	recs := b.readStream(t, "large-1", 1)
	if len(recs) != 1 {
		t.Fatalf("ReadStream yields %d records, want 1", len(recs))
	}
	check("ReadStream", recs[0])
	feed := b.feed(t)
	if len(feed) != 1 || feed[0].ID != res.EventIDs[0] {
		t.Fatalf("ReadAll holds %v, want %v", ids(feed), res.EventIDs)
	}
	check("ReadAll", feed[0])
}

// testEventIDs checks that events without an ID get distinct UUIDv7s and
// that given IDs are kept.
func testEventIDs(t *testing.T, b *bundle) {
	given := []uuid.UUID{uuid.New(), uuid.MustParse("00000000-0000-4000-8000-000000000001")}
	res := b.append(t, "ids-1", eventstore.NoStream,
		ev("generated", 1), eventstore.Event{ID: given[0], Data: noted{N: 2}}, ev("generated", 3), eventstore.Event{ID: given[1], Data: noted{N: 4}})
	if len(res.EventIDs) != 4 {
		t.Fatalf("AppendResult.EventIDs = %v, want 4", res.EventIDs)
	}
	if res.EventIDs[1] != given[0] || res.EventIDs[3] != given[1] {
		t.Fatalf("AppendResult.EventIDs = %v, want the given %v at 1 and 3", res.EventIDs, given)
	}
	for _, i := range []int{0, 2} {
		id := res.EventIDs[i]
		if id.Version() != 7 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("generated event ID %s is version %d variant %s, want a UUIDv7", id, id.Version(), id.Variant())
		}
	}
	if res.EventIDs[0] == res.EventIDs[2] {
		t.Fatalf("generated event IDs repeat: %v", res.EventIDs)
	}
	b.wantStream(t, "ids-1", res.EventIDs)
	b.wantFeed(t, res.EventIDs)
}

// testDuplicateEventID appends an event ID that is already stored, or
// repeated within one append: refused with ErrInvalidArgument, nothing
// written, and a refused ID stays free.
func testDuplicateEventID(t *testing.T, b *bundle) {
	x := uuid.Must(uuid.NewV7())
	first := b.append(t, "dup-1", eventstore.NoStream, eventstore.Event{ID: x, Data: noted{N: 1}})

	_, err := b.store.Append(b.ctx, "dup-2", eventstore.NoStream, []eventstore.Event{ev("new", 1), {ID: x, Data: noted{N: 2}}})
	wantErr(t, "Append of a stored event ID to another stream", err, eventstore.ErrInvalidArgument)
	if errors.Is(err, eventstore.ErrConcurrencyConflict) {
		t.Fatalf("a duplicate event ID must not look like a version conflict (retrying cannot fix it): %v", err)
	}
	_, err = b.store.Append(b.ctx, "dup-1", eventstore.Exact(1), []eventstore.Event{{ID: x, Data: noted{N: 2}}})
	wantErr(t, "Append of a stored event ID to its own stream at the right version", err, eventstore.ErrInvalidArgument)

	y := uuid.Must(uuid.NewV7())
	_, err = b.store.Append(b.ctx, "dup-3", eventstore.NoStream, []eventstore.Event{{ID: y, Data: noted{N: 1}}, {ID: y, Data: noted{N: 2}}})
	wantErr(t, "Append of one event ID twice", err, eventstore.ErrInvalidArgument)

	b.wantStream(t, "dup-1", first.EventIDs)
	b.wantStream(t, "dup-2", nil)
	b.wantStream(t, "dup-3", nil)
	b.wantFeed(t, first.EventIDs)

	again := b.append(t, "dup-3", eventstore.NoStream, eventstore.Event{ID: y, Data: noted{N: 1}})
	b.wantStream(t, "dup-3", again.EventIDs)
}

// testMetadata appends with metadata in the context and on the events and
// reads the merge back, the event's own fields winning.
func testMetadata(t *testing.T, b *bundle) {
	ctx := eventstore.WithMetadata(b.ctx, eventstore.Metadata{Extra: map[string]string{"tenant": "t1", "k": "ctx"}})
	ctx = eventstore.WithActor(ctx, "alice")
	ctx = eventstore.WithCorrelationID(ctx, "corr-1")
	events := []eventstore.Event{
		{Data: noted{N: 1}, Metadata: eventstore.Metadata{CausationID: "cause-1", Actor: "bob", Extra: map[string]string{"k": "event", "own": "yes"}}},
		{Data: noted{N: 2}},
	}
	res, err := b.store.Append(ctx, "meta-1", eventstore.NoStream, events)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	plain := b.append(t, "meta-2", eventstore.NoStream, ev("plain", 3))
	want := map[uuid.UUID]map[string]string{
		res.EventIDs[0]:   {"correlation_id": "corr-1", "causation_id": "cause-1", "actor": "bob", "tenant": "t1", "k": "event", "own": "yes"},
		res.EventIDs[1]:   {"correlation_id": "corr-1", "actor": "alice", "tenant": "t1", "k": "ctx"},
		plain.EventIDs[0]: {},
	}
	check := func(what string, recs []eventstore.Record) {
		t.Helper()
		for _, r := range recs {
			if got := r.Metadata.Map(); !maps.Equal(got, want[r.ID]) {
				t.Errorf("%s: event %s metadata = %v, want %v", what, r.ID, got, want[r.ID])
			}
		}
	}
	check("ReadStream", b.readStream(t, "meta-1", 1))
	check("ReadStream", b.readStream(t, "meta-2", 1))
	if r := b.readStream(t, "meta-1", 1)[0]; r.Metadata.CorrelationID != "corr-1" || r.Metadata.CausationID != "cause-1" || r.Metadata.Actor != "bob" {
		t.Errorf("ReadStream: well-known metadata fields = %+v, want corr-1, cause-1, bob", r.Metadata)
	}
	feed := b.feed(t)
	if len(feed) != 3 {
		t.Fatalf("ReadAll holds %d records, want 3", len(feed))
	}
	check("ReadAll", feed)
}

// testContextCancellation calls every method with a context that is already
// done: each fails with an error matching the context's error, and Append
// and SaveSnapshot write nothing.
func testContextCancellation(t *testing.T, b *bundle) {
	existing := b.append(t, "ctx-1", eventstore.NoStream, ev("a", 1))
	cancelled, cancel := context.WithCancel(b.ctx)
	cancel()
	expired, cancel2 := context.WithDeadline(b.ctx, time.Now().Add(-time.Second))
	defer cancel2()

	_, err := b.store.Append(cancelled, "ctx-1", eventstore.Exact(1), []eventstore.Event{ev("b", 2)})
	wantErr(t, "Append with a cancelled context", err, context.Canceled)
	_, err = b.store.Append(cancelled, "ctx-2", eventstore.NoStream, []eventstore.Event{ev("b", 2)})
	wantErr(t, "Append to a new stream with a cancelled context", err, context.Canceled)
	_, err = b.store.Append(expired, "ctx-2", eventstore.NoStream, []eventstore.Event{ev("b", 2)})
	wantErr(t, "Append with an expired context", err, context.DeadlineExceeded)

	n := 0
	for r, err := range b.store.ReadStream(cancelled, "ctx-1", 1) {
		n++
		if err == nil {
			t.Fatalf("ReadStream with a cancelled context yielded record %s", r.ID)
		}
		wantErr(t, "ReadStream with a cancelled context", err, context.Canceled)
	}
	if n != 1 {
		t.Fatalf("ReadStream with a cancelled context yielded %d pairs, want one error", n)
	}
	recs, err := b.store.ReadAll(cancelled, eventstore.Position{}, 10)
	wantErr(t, "ReadAll with a cancelled context", err, context.Canceled)
	if len(recs) != 0 {
		t.Fatalf("ReadAll with a cancelled context returned %d records", len(recs))
	}
	_, err = b.store.StreamInfo(cancelled, "ctx-1")
	wantErr(t, "StreamInfo with a cancelled context", err, context.Canceled)
	err = b.store.SaveSnapshot(cancelled, eventstore.Snapshot{StreamID: "ctx-1", Version: 1, Type: "t", Payload: []byte(`{}`)})
	wantErr(t, "SaveSnapshot with a cancelled context", err, context.Canceled)
	_, err = b.store.LoadSnapshot(cancelled, "ctx-1")
	wantErr(t, "LoadSnapshot with a cancelled context", err, context.Canceled)

	_, err = b.store.LoadSnapshot(b.ctx, "ctx-1")
	wantErr(t, "LoadSnapshot after a cancelled SaveSnapshot", err, eventstore.ErrSnapshotNotFound)
	b.wantStream(t, "ctx-1", existing.EventIDs)
	b.wantStream(t, "ctx-2", nil)
	b.wantFeed(t, existing.EventIDs)
}
