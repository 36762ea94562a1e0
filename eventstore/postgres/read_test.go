package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/testwait"
)

// TestReadStreamPages reads a stream of a few thousand events with a small
// page size: every record once, in version order, decoded; from a version;
// stopping early. Events appended while the iteration is under way show up
// in its later pages, which only happens when each page is its own query
// (a single query would have yielded its snapshot only).
func TestReadStreamPages(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{ReadStreamPageSize: 100})
	ctx := testCtx(t)
	const stream = "order-long"
	for i := range 51 {
		evs := make([]eventstore.Event, 50)
		for j := range evs {
			evs[j] = eventstore.Event{Data: ItemAdded{SKU: "sku", N: i*50 + j + 1}}
		}
		if _, err := b.store.Append(ctx, stream, eventstore.Exact(int64(i*50)), evs); err != nil {
			t.Fatal(err)
		}
	}
	const total = 51 * 50
	recs := b.readStream(t, stream, 0)
	if len(recs) != total {
		t.Fatalf("read %d records, want %d", len(recs), total)
	}
	for i, r := range recs {
		if r.StreamVersion != int64(i+1) || r.Data.(ItemAdded).N != i+1 || r.StreamID != stream || r.Type != "item_added" {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	if got := b.readStream(t, stream, 1234); len(got) != total-1233 || got[0].StreamVersion != 1234 {
		t.Fatalf("from 1234: %d records, first %d", len(got), got[0].StreamVersion)
	}
	if got := b.readStream(t, stream, total+1); len(got) != 0 {
		t.Fatalf("past the end: %d records", len(got))
	}
	if got := b.readStream(t, stream, total-99); len(got) != 100 { // exactly one full page, then an empty one
		t.Fatalf("last page: %d records", len(got))
	}

	n := 0
	for _, err := range b.store.ReadStream(ctx, stream, 1) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 150 {
			break
		}
	}

	// Append 100 more once the first page has been fetched.
	seen := 0
	for r, err := range b.store.ReadStream(ctx, stream, 1) {
		if err != nil {
			t.Fatal(err)
		}
		seen++
		if r.StreamVersion != int64(seen) {
			t.Fatalf("record %d has version %d", seen, r.StreamVersion)
		}
		if seen == 1 {
			if _, err := b.store.Append(ctx, stream, eventstore.Exact(total), items(100)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if seen != total+100 {
		t.Fatalf("iteration saw %d records, want %d including those appended during it", seen, total+100)
	}

	if got := b.readStream(t, "order-none", 1); len(got) != 0 {
		t.Fatalf("empty stream yielded %d", len(got))
	}
	errs := 0
	for _, err := range b.store.ReadStream(ctx, "", 1) {
		if !errors.Is(err, eventstore.ErrInvalidStreamID) {
			t.Fatalf("invalid stream id: %v", err)
		}
		errs++
	}
	if errs != 1 {
		t.Fatalf("invalid stream id yielded %d errors", errs)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, err := range b.store.ReadStream(cancelled, stream, 1) {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled ReadStream: %v", err)
		}
	}
}

// TestReadUnknownAndMalformedStoredEvents: rows written by someone else with
// a type the registry does not know, or a payload that does not decode,
// give typed errors, not zero values.
func TestReadUnknownAndMalformedStoredEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	if _, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 1)}); err != nil {
		t.Fatal(err)
	}
	insert := func(stream, typ, payload string) {
		t.Helper()
		if _, err := b.db.ExecContext(ctx, `INSERT INTO `+b.store.QualifiedEventsTable()+
			` (event_id, stream_id, stream_version, event_type, payload) VALUES (gen_random_uuid(), $1, 2, $2, $3)`, stream, typ, payload); err != nil {
			t.Fatal(err)
		}
	}
	insert("order-1", "mystery", `{}`)
	var recs []eventstore.Record
	var readErr error
	for r, err := range b.store.ReadStream(ctx, "order-1", 1) {
		if err != nil {
			readErr = err
			continue
		}
		recs = append(recs, r)
	}
	var ute *eventstore.UnknownEventTypeError
	if len(recs) != 1 || !errors.As(readErr, &ute) || ute.Name != "mystery" {
		t.Fatalf("ReadStream: %d records, err %v; want 1 record then an *UnknownEventTypeError", len(recs), readErr)
	}
	var all []eventstore.Record
	var err error
	// The bad row may show in the feed after the good one: another test's
	// open transaction can hold pg_snapshot_xmin between the two.
	testwait.Until(t, "the unknown event in the feed", func() bool {
		all, err = b.store.ReadAll(ctx, eventstore.Position{}, 10)
		return err != nil || len(all) > 1
	})
	if !errors.Is(err, eventstore.ErrUnknownEventType) || all != nil {
		t.Fatalf("ReadAll: %v, %v; want ErrUnknownEventType", all, err)
	}

	insert("order-2", "order_placed", `{"amount": "not a number"}`)
	for _, err := range b.store.ReadStream(ctx, "order-2", 1) {
		if !errors.Is(err, eventstore.ErrMalformedPayload) {
			t.Fatalf("malformed payload: %v", err)
		}
	}
}

func TestReadAllLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	for _, limit := range []int{-1, 0, eventstore.MaxReadAllLimit + 1} {
		if _, err := b.store.ReadAll(ctx, eventstore.Position{}, limit); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("ReadAll limit %d: %v", limit, err)
		}
	}
	if _, err := b.store.ReadAll(ctx, eventstore.Position{TransactionID: 1, Position: -1}, 1); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("negative position: %v", err)
	}
	if recs, err := b.store.ReadAll(ctx, eventstore.Position{}, eventstore.MaxReadAllLimit); err != nil || len(recs) != 0 {
		t.Errorf("empty feed: %v, %v", recs, err)
	}
	if recs, err := b.store.ReadAll(ctx, eventstore.Position{TransactionID: 1 << 63, Position: 1}, 1); err != nil || len(recs) != 0 {
		t.Errorf("after a huge transaction id: %v, %v", recs, err)
	}
}

func TestReadAllRoundTripsMetadata(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := eventstore.WithCorrelationID(testCtx(t), "corr-1")
	ev := placed("1", 5)
	ev.Metadata = eventstore.Metadata{Actor: "alice", Extra: map[string]string{"tenant": "t1"}}
	res, err := b.store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{ev, placed("1", 6)})
	if err != nil {
		t.Fatal(err)
	}
	recs := b.drainFeed(t, eventstore.Position{}, 1, 2)
	if len(recs) != 2 {
		t.Fatalf("feed has %d records, want 2", len(recs))
	}
	r := recs[0]
	if r.ID != res.EventIDs[0] || r.Metadata.CorrelationID != "corr-1" || r.Metadata.Actor != "alice" || r.Metadata.Extra["tenant"] != "t1" {
		t.Fatalf("record: %+v", r)
	}
	if r.Data != (OrderPlaced{OrderID: "1", Amount: 5}) || recs[1].Position != res.LastPosition {
		t.Fatalf("records: %+v", recs)
	}
	var payload OrderPlaced
	if err := json.Unmarshal(r.Payload, &payload); err != nil || payload.Amount != 5 {
		t.Fatalf("payload %s: %v", r.Payload, err)
	}
	info, err := b.store.StreamInfo(ctx, "order-1")
	if err != nil || info != (eventstore.StreamInfo{StreamID: "order-1", Exists: true, Version: 2}) {
		t.Fatalf("StreamInfo: %+v, %v", info, err)
	}
	info, err = b.store.StreamInfo(ctx, "order-none")
	if err != nil || info.Exists || info.Version != 0 {
		t.Fatalf("StreamInfo of a missing stream: %+v, %v", info, err)
	}
	if _, err := b.store.StreamInfo(ctx, "bad\x00"); !errors.Is(err, eventstore.ErrInvalidStreamID) {
		t.Fatalf("StreamInfo(bad id): %v", err)
	}
}

func TestSnapshots(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	if _, err := b.store.LoadSnapshot(ctx, "order-1"); !errors.Is(err, eventstore.ErrSnapshotNotFound) {
		t.Fatalf("LoadSnapshot before save: %v", err)
	}
	save := func(v int64, payload string) {
		t.Helper()
		if err := b.store.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: "order-1", Version: v, Type: "order.v1", Payload: json.RawMessage(payload)}); err != nil {
			t.Fatalf("SaveSnapshot %d: %v", v, err)
		}
	}
	load := func() eventstore.Snapshot {
		t.Helper()
		s, err := b.store.LoadSnapshot(ctx, "order-1")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	save(5, `{"total": 5,  "b":1, "a":2}`)
	if s := load(); s.Version != 5 || s.Type != "order.v1" || string(s.Payload) != `{"total": 5,  "b":1, "a":2}` || s.RecordedAt.IsZero() || s.StreamID != "order-1" {
		t.Fatalf("loaded %+v", s)
	}
	save(9, `{"total":9}`)
	save(7, `{"total":7}`) // older than the saved one: ignored
	if s := load(); s.Version != 9 || string(s.Payload) != `{"total":9}` {
		t.Fatalf("latest: %+v", s)
	}
	for _, bad := range []eventstore.Snapshot{
		{StreamID: "", Version: 1, Type: "t", Payload: []byte(`{}`)},
		{StreamID: "order-1", Version: 0, Type: "t", Payload: []byte(`{}`)},
		{StreamID: "order-1", Version: 1, Type: "", Payload: []byte(`{}`)},
		{StreamID: "order-1", Version: 10, Type: "t", Payload: []byte(`{not json`)},
	} {
		if err := b.store.SaveSnapshot(ctx, bad); err == nil {
			t.Errorf("SaveSnapshot(%+v) succeeded", bad)
		}
	}
	if s := load(); s.Version != 9 {
		t.Fatalf("a refused save changed the snapshot: %+v", s)
	}
}

// TestReadNonStringMetadata: metadata written by another tool with
// non-string values reads back with those values as JSON text.
func TestReadNonStringMetadata(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	if _, err := b.db.ExecContext(ctx, `INSERT INTO `+b.store.QualifiedEventsTable()+
		` (event_id, stream_id, stream_version, event_type, payload, metadata) VALUES (gen_random_uuid(), 'order-1', 1, 'order_placed', '{}', $1)`,
		`{"actor": "bob", "retries": 3, "tags": ["a"]}`); err != nil {
		t.Fatal(err)
	}
	recs := b.readStream(t, "order-1", 1)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	md := recs[0].Metadata
	if md.Actor != "bob" || md.Extra["retries"] != "3" || md.Extra["tags"] != `["a"]` {
		t.Fatalf("metadata: %+v", md)
	}
}
