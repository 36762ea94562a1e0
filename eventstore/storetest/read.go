package storetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/google/uuid"
)

// testReadStreamFromVersion reads a five-event stream from the start, the
// middle, its last version and beyond its end, and reads a missing stream.
func testReadStreamFromVersion(t *testing.T, b *bundle) {
	const stream = "from-1"
	var all []uuid.UUID
	for i := range 5 {
		all = append(all, b.append(t, stream, eventstore.Exact(int64(i)), ev("e", i+1)).EventIDs...)
	}
	b.append(t, "from-2", eventstore.NoStream, ev("other stream", 0)) // must not leak into from-1
	for _, tc := range []struct {
		from int64
		want []uuid.UUID
	}{
		{-1, all}, {0, all}, {1, all}, {2, all[1:]}, {3, all[2:]}, {5, all[4:]}, {6, nil}, {1 << 40, nil},
	} {
		recs := b.readStream(t, stream, tc.from)
		if got := ids(recs); !slices.Equal(got, tc.want) {
			t.Errorf("ReadStream(%q, from %d) yields %v, want %v", stream, tc.from, got, tc.want)
			continue
		}
		for i, r := range recs {
			wantV := max(tc.from, 1) + int64(i)
			if r.StreamVersion != wantV || r.StreamID != stream || !equalData(r.Data, noted{Text: "e", N: int(wantV)}) {
				t.Errorf("ReadStream(%q, from %d) record %d: %s v%d %#v, want %s v%d %#v", stream, tc.from, i, r.StreamID, r.StreamVersion, r.Data, stream, wantV, noted{Text: "e", N: int(wantV)})
			}
		}
	}
	if recs := b.readStream(t, "from-missing", 1); len(recs) != 0 {
		t.Errorf("ReadStream of a missing stream yields %d records, want none", len(recs))
	}
}

// testReadStreamManyPages reads a stream longer than a store's usual page
// (2,100 events) and checks every version comes once, in order.
func testReadStreamManyPages(t *testing.T, b *bundle) {
	const (
		stream = "long-1"
		batch  = 300
		total  = 2100
	)
	var want []uuid.UUID
	for v := 0; v < total; v += batch {
		events := make([]eventstore.Event, batch)
		for i := range events {
			events[i] = ev("long", v+i+1)
		}
		want = append(want, b.append(t, stream, eventstore.Exact(int64(v)), events...).EventIDs...)
	}
	b.wantStream(t, stream, want)
	for _, from := range []int64{1, 999, 1000, 1001, 2000, 2100} {
		recs := b.readStream(t, stream, from)
		if got := ids(recs); !slices.Equal(got, want[from-1:]) {
			t.Fatalf("ReadStream(%q, from %d) yields %d records, want %d (versions %d..%d)", stream, from, len(got), total-from+1, from, total)
		}
		for i, r := range recs {
			if n := r.Data.(noted).N; n != int(from)+i || r.StreamVersion != from+int64(i) {
				t.Fatalf("ReadStream(%q, from %d) record %d is version %d holding N=%d, want %d", stream, from, i, r.StreamVersion, n, int(from)+i)
			}
		}
	}
}

// testReadStreamStopEarly stops iterating a stream after two records and
// checks the store keeps working (a store that leaked the read's resources,
// such as a database connection, would eventually block).
func testReadStreamStopEarly(t *testing.T, b *bundle) {
	const stream = "early-1"
	events := make([]eventstore.Event, 10)
	for i := range events {
		events[i] = ev("early", i+1)
	}
	b.append(t, stream, eventstore.NoStream, events...)
	for round := range 20 {
		n := 0
		for r, err := range b.store.ReadStream(b.ctx, stream, 1) {
			if err != nil {
				t.Fatalf("round %d: ReadStream: %v", round, err)
			}
			n++
			if r.StreamVersion != int64(n) {
				t.Fatalf("round %d: record %d has version %d", round, n, r.StreamVersion)
			}
			if n == 2 {
				break
			}
		}
		if n != 2 {
			t.Fatalf("round %d: read %d records before stopping, want 2", round, n)
		}
	}
	if info := b.info(t, stream); info.Version != 10 {
		t.Fatalf("StreamInfo after stopped reads: version %d, want 10", info.Version)
	}
}

// testReadAllOrderAndResume appends to three interleaved streams, then reads
// the feed whole and in pages of several sizes, resuming each page after the
// last Position seen: every way gives the same records, in Position order,
// with each stream's versions in order.
func testReadAllOrderAndResume(t *testing.T, b *bundle) {
	streams := []string{"feed-a", "feed-b", "feed-c"}
	var (
		want    []uuid.UUID
		wantRec = map[uuid.UUID]struct {
			stream  string
			version int64
			data    noted
		}{}
		versions = map[string]int64{}
	)
	for i := range 30 {
		stream := streams[(i*7)%len(streams)]
		n := 1 + i%3
		events := make([]eventstore.Event, n)
		for j := range events {
			events[j] = ev(stream, i*10+j)
		}
		res := b.append(t, stream, eventstore.Exact(versions[stream]), events...)
		for j, id := range res.EventIDs {
			want = append(want, id)
			wantRec[id] = struct {
				stream  string
				version int64
				data    noted
			}{stream, versions[stream] + int64(j) + 1, noted{Text: stream, N: i*10 + j}}
		}
		versions[stream] += int64(n)
	}

	full := b.feed(t)
	if got := ids(full); !slices.Equal(got, want) {
		t.Fatalf("ReadAll from the start holds %d events %v\nwant the %d appended, in append order %v", len(got), got, len(want), want)
	}
	last := map[string]int64{}
	for i, r := range full {
		w := wantRec[r.ID]
		if r.StreamID != w.stream || r.StreamVersion != w.version || r.Type != notedType || !equalData(r.Data, w.data) {
			t.Fatalf("feed record %d = %s v%d %s %#v, want %s v%d %s %#v", i, r.StreamID, r.StreamVersion, r.Type, r.Data, w.stream, w.version, notedType, w.data)
		}
		if r.StreamVersion != last[r.StreamID]+1 {
			t.Fatalf("feed record %d is %s v%d after v%d: per-stream order broken", i, r.StreamID, r.StreamVersion, last[r.StreamID])
		}
		last[r.StreamID] = r.StreamVersion
		if r.Position.IsZero() {
			t.Fatalf("feed record %d has the zero Position", i)
		}
		if i > 0 && !full[i-1].Position.Less(r.Position) {
			t.Fatalf("feed record %d at %s does not follow record %d at %s", i, r.Position, i-1, full[i-1].Position)
		}
	}
	// Barrier events that feed() appended follow the events under test, so a
	// full read past the last one returns only barriers.
	for _, limit := range []int{1, 2, 3, 7, len(full), eventstore.MaxReadAllLimit} {
		t.Run(fmt.Sprintf("limit%d", limit), func(t *testing.T) {
			var got []eventstore.Record
			p := eventstore.Position{}
			for len(got) < len(full) {
				page, err := b.store.ReadAll(b.ctx, p, limit)
				if err != nil {
					t.Fatalf("ReadAll(%s, %d): %v", p, limit, err)
				}
				if len(page) == 0 || len(page) > limit {
					t.Fatalf("ReadAll(%s, %d) returned %d records after %d of %d", p, limit, len(page), len(got), len(full))
				}
				got = append(got, page...)
				p = page[len(page)-1].Position
			}
			got = got[:len(full)]
			for i := range full {
				if got[i].ID != full[i].ID || got[i].Position != full[i].Position {
					t.Fatalf("paged read record %d = %s at %s, full read has %s at %s", i, got[i].ID, got[i].Position, full[i].ID, full[i].Position)
				}
			}
		})
	}
	// Resuming after any record returns exactly the records that follow it
	// (the feed now also holds the barrier events feed() appended).
	complete := b.readAllFrom(t, eventstore.Position{}, eventstore.MaxReadAllLimit)
	if len(complete) <= len(full) {
		t.Fatalf("ReadAll holds %d records, want the %d under test plus a barrier", len(complete), len(full))
	}
	for _, k := range []int{0, 1, len(full) / 2, len(full) - 2, len(complete) - 2} {
		page, err := b.store.ReadAll(b.ctx, complete[k].Position, 5)
		if err != nil {
			t.Fatalf("ReadAll(after record %d): %v", k, err)
		}
		want := complete[k+1 : min(k+6, len(complete))]
		if got := ids(page); !slices.Equal(got, ids(want)) {
			t.Fatalf("ReadAll(after record %d at %s, 5) = %v, want %v", k, complete[k].Position, got, ids(want))
		}
	}
	// Nothing follows the end of the feed.
	tail, err := b.store.ReadAll(b.ctx, complete[len(complete)-1].Position, eventstore.MaxReadAllLimit)
	if err != nil {
		t.Fatalf("ReadAll after the last record: %v", err)
	}
	if len(tail) != 0 {
		t.Fatalf("ReadAll after the last record returned %d records, want none", len(tail))
	}
}

// testReadAllLimits checks ReadAll refuses limits outside 1 to
// MaxReadAllLimit with ErrInvalidArgument and honours those inside.
func testReadAllLimits(t *testing.T, b *bundle) {
	for _, limit := range []int{0, -1, eventstore.MaxReadAllLimit + 1, 1 << 40} {
		recs, err := b.store.ReadAll(b.ctx, eventstore.Position{}, limit)
		wantErr(t, fmt.Sprintf("ReadAll(limit %d)", limit), err, eventstore.ErrInvalidArgument)
		if len(recs) != 0 {
			t.Errorf("ReadAll(limit %d) returned %d records with its error", limit, len(recs))
		}
	}
	if recs, err := b.store.ReadAll(b.ctx, eventstore.Position{}, eventstore.MaxReadAllLimit); err != nil || len(recs) != 0 {
		t.Fatalf("ReadAll of an empty store = %d records, %v; want none, no error", len(recs), err)
	}
	res := b.append(t, "limits-1", eventstore.NoStream, ev("a", 1), ev("b", 2), ev("c", 3))
	b.waitFeed(t, res.EventIDs[2])
	for limit, want := range map[int]int{1: 1, 2: 2, 3: 3, eventstore.MaxReadAllLimit: 3} {
		recs, err := b.store.ReadAll(b.ctx, eventstore.Position{}, limit)
		if err != nil {
			t.Fatalf("ReadAll(limit %d): %v", limit, err)
		}
		if got := ids(recs); !slices.Equal(got, res.EventIDs[:want]) {
			t.Errorf("ReadAll(limit %d) = %v, want %v", limit, got, res.EventIDs[:want])
		}
	}
}
