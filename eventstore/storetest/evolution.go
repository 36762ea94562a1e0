package storetest

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// ReopenFunc returns a store over the same events and snapshots as s that
// encodes and decodes with reg: another release of the service, deployed on
// the same database. For PostgreSQL that is a second Store on the same
// schema; for the memory store, Store.WithRegistry.
type ReopenFunc = func(t *testing.T, s eventstore.Store, reg *eventstore.Registry) eventstore.Store

// RunEvolution runs the schema evolution suite (docs/evolution.md): events
// written by three releases of a service, each with its registry, read
// through the newest release's upcasters on every read path (ReadStream,
// ReadStreamRaw, ReadAll); renamed, split and dropped events; an older
// release refusing events of a newer version with
// eventstore.ErrUnknownSchemaVersion; snapshot schema versions. newStore
// returns a fresh, empty store; reopen a second view of it with another
// registry.
func RunEvolution(t *testing.T, newStore NewStoreFunc, reopen ReopenFunc) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, r *releases)
	}{
		{"UpcastOnEveryRead", testUpcastOnEveryRead},
		{"RenameSplitDrop", testRenameSplitDrop},
		{"SnapshotSchemaVersion", testSnapshotSchemaVersion},
	} {
		t.Run("Evolution/"+tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newReleases(t, newStore, reopen))
		})
	}
	t.Run("Evolution/ExpandThenContract", func(t *testing.T) {
		t.Parallel()
		testExpandThenContract(t, newStore, reopen)
	})
}

// shippedV1 and shippedV2 are "storetest.shipped" before and after it
// gained a carrier.
type (
	shippedV1 struct {
		Ref string `json:"ref"`
	}
	shippedV2 struct {
		Ref     string `json:"ref"`
		Carrier string `json:"carrier"`
	}
)

const shippedType = "storetest.shipped"

// testExpandThenContract runs the rolling deploy of docs/evolution.md on
// one store: release 1 writes version 1; the expand release reads versions
// 1 and 2 but still writes 1 (Registry.WriteAs), which release 1 reads
// while both run; the contract release writes version 2, which the expand
// release reads.
func testExpandThenContract(t *testing.T, newStore NewStoreFunc, reopen ReopenFunc) {
	addCarrier := eventstore.AddField("carrier", "unknown")
	regs := [3]*eventstore.Registry{eventstore.NewRegistry(), eventstore.NewRegistry(), eventstore.NewRegistry()}
	eventstore.MustRegister[shippedV1](regs[0], shippedType)
	for i, r := range regs[1:] {
		eventstore.MustRegisterVersion[shippedV2](r, shippedType, 2)
		if err := r.Upcast(shippedType, 1, addCarrier); err != nil {
			t.Fatal(err)
		}
		if i == 0 { // the expand release writes version 1
			if err := r.WriteAs(shippedType, eventstore.SchemaRef{Type: shippedType, Version: 1}, func(p json.RawMessage) (json.RawMessage, error) {
				var v shippedV2
				if err := json.Unmarshal(p, &v); err != nil {
					return nil, err
				}
				return json.Marshal(shippedV1{Ref: v.Ref})
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, r := range regs {
		eventstore.MustRegister[noted](r, notedType)
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	old := setupWith(t, newStore(t, regs[0]))
	expand, contract := setupWith(t, reopen(t, old.store, regs[1])), setupWith(t, reopen(t, old.store, regs[2]))
	const stream = "ship-1"

	old.append(t, stream, eventstore.NoStream, eventstore.Event{Data: shippedV1{Ref: "a"}})
	expand.append(t, stream, eventstore.Exact(1), eventstore.Event{Data: shippedV2{Ref: "b", Carrier: "dhl"}})
	// Both run now: each reads every event.
	if got := old.readStream(t, stream, 0); len(got) != 2 || got[1].Data != (shippedV1{Ref: "b"}) || got[1].SchemaVersion != 1 {
		t.Fatalf("release 1 reads %+v, want the expand release's event at version 1", got)
	}
	got := expand.readStream(t, stream, 0)
	if len(got) != 2 || got[1].Data != (shippedV2{Ref: "b", Carrier: "unknown"}) || got[1].SchemaVersion != 2 || got[1].StoredSchemaVersion != 1 {
		t.Fatalf("the expand release reads %+v, want its own event upcast to version 2 (the carrier could not be stored yet)", got)
	}
	// Release 1 is gone; the contract release writes version 2.
	contract.append(t, stream, eventstore.Exact(2), eventstore.Event{Data: shippedV2{Ref: "c", Carrier: "ups"}})
	for _, b := range []*bundle{expand, contract} {
		got := b.readStream(t, stream, 0)
		if len(got) != 3 || got[2].Data != (shippedV2{Ref: "c", Carrier: "ups"}) || got[2].StoredSchemaVersion != 2 {
			t.Fatalf("reading the contract release's event: %+v", got)
		}
	}
	// Release 1 would stop there, never guess: why it must be gone first.
	var err error
	for _, e := range old.store.ReadStream(old.ctx, stream, 3) {
		err = e
	}
	wantErr(t, "release 1 over version 2", err, eventstore.ErrUnknownSchemaVersion)
}

// The events of the evolution suite, in the shapes three releases wrote
// them. "storetest.paid" was {"ref", "cents"} (release 1), gained
// "currency" (release 2, default "EUR") and then grouped the amount
// (release 3). Release 3 also renamed "storetest.greeted" to
// "storetest.welcomed", split each "storetest.visit" into a welcomed and a
// "storetest.note" per note, and dropped "storetest.ping".
type (
	paidV1 struct {
		Ref   string `json:"ref"`
		Cents int64  `json:"cents"`
	}
	paidV2 struct {
		Ref      string `json:"ref"`
		Cents    int64  `json:"cents"`
		Currency string `json:"currency"`
	}
	paidV3 struct {
		Ref    string `json:"ref"`
		Amount amount `json:"amount"`
	}
	amount struct {
		Currency   string `json:"currency"`
		MinorUnits int64  `json:"minor_units"`
	}
	greeted struct {
		Name string `json:"name"`
	}
	visit struct {
		Name  string   `json:"name"`
		Notes []string `json:"notes"`
	}
	ping     struct{}
	welcomed struct {
		Name string `json:"name"`
	}
	note struct {
		Text string `json:"text"`
	}
)

const (
	paidType     = "storetest.paid"
	greetedType  = "storetest.greeted"
	visitType    = "storetest.visit"
	pingType     = "storetest.ping"
	welcomedType = "storetest.welcomed"
	noteType     = "storetest.note"
)

// releases are three views of one store, each with its release's registry,
// plus the barrier event of the main suite.
type releases struct {
	r1, r2, r3 *bundle
}

func newReleases(t *testing.T, newStore NewStoreFunc, reopen ReopenFunc) *releases {
	t.Helper()
	reg1, reg2, reg3 := eventstore.NewRegistry(), eventstore.NewRegistry(), eventstore.NewRegistry()
	for _, r := range []*eventstore.Registry{reg1, reg2} {
		eventstore.MustRegister[greeted](r, greetedType)
		eventstore.MustRegister[visit](r, visitType)
		eventstore.MustRegister[ping](r, pingType)
	}
	eventstore.MustRegister[paidV1](reg1, paidType)
	eventstore.MustRegisterVersion[paidV2](reg2, paidType, 2)
	if err := reg2.Upcast(paidType, 1, eventstore.AddField("currency", "EUR")); err != nil {
		t.Fatal(err)
	}
	eventstore.MustRegisterVersion[paidV3](reg3, paidType, 3)
	eventstore.MustRegister[welcomed](reg3, welcomedType)
	eventstore.MustRegister[note](reg3, noteType)
	err := errors.Join(
		reg3.Upcast(paidType, 1, eventstore.AddField("currency", "EUR")),
		eventstore.UpcastAs(reg3, paidType, 2, func(old paidV2) (paidV3, error) {
			return paidV3{Ref: old.Ref, Amount: amount{Currency: old.Currency, MinorUnits: old.Cents}}, nil
		}),
		reg3.Rename(greetedType, 1, welcomedType, 1),
		reg3.Split(visitType, 1, []eventstore.SchemaRef{{Type: welcomedType, Version: 1}, {Type: noteType, Version: 1}},
			func(p json.RawMessage) ([]eventstore.VersionedEvent, error) {
				var v visit
				if err := json.Unmarshal(p, &v); err != nil {
					return nil, err
				}
				w, err := json.Marshal(welcomed{Name: v.Name})
				out := []eventstore.VersionedEvent{{Type: welcomedType, Version: 1, Payload: w}}
				for _, n := range v.Notes {
					b, merr := json.Marshal(note{Text: n})
					err = errors.Join(err, merr)
					out = append(out, eventstore.VersionedEvent{Type: noteType, Version: 1, Payload: b})
				}
				return out, err
			}),
		reg3.Drop(pingType, 1),
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*eventstore.Registry{reg1, reg2, reg3} {
		// The main suite's barrier event, in every release.
		eventstore.MustRegister[noted](r, notedType)
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	b1 := setupWith(t, newStore(t, reg1))
	view := func(reg *eventstore.Registry) *bundle {
		s := reopen(t, b1.store, reg)
		if s == nil || s.Registry() != reg {
			t.Fatal("storetest: reopen returned nil or a store with another registry")
		}
		return setupWith(t, s)
	}
	return &releases{r1: b1, r2: view(reg2), r3: view(reg3)}
}

func setupWith(t *testing.T, s eventstore.Store) *bundle {
	t.Helper()
	if s == nil {
		t.Fatal("storetest: newStore returned nil")
	}
	return &bundle{store: s, ctx: t.Context()}
}

// testUpcastOnEveryRead: events of versions 1, 2 and 3 of a type read as
// version 3 through the newest release on every read path; the older
// releases refuse the versions they do not know.
func testUpcastOnEveryRead(t *testing.T, r *releases) {
	const stream = "paid-1"
	r.r1.append(t, stream, eventstore.NoStream, eventstore.Event{Data: paidV1{Ref: "a", Cents: 100}})
	r.r2.append(t, stream, eventstore.Exact(1), eventstore.Event{Data: paidV2{Ref: "b", Cents: 200, Currency: "CHF"}})
	res := r.r3.append(t, stream, eventstore.Exact(2), eventstore.Event{Data: paidV3{Ref: "c", Amount: amount{Currency: "USD", MinorUnits: 300}}})
	want := []paidV3{
		{Ref: "a", Amount: amount{Currency: "EUR", MinorUnits: 100}},
		{Ref: "b", Amount: amount{Currency: "CHF", MinorUnits: 200}},
		{Ref: "c", Amount: amount{Currency: "USD", MinorUnits: 300}},
	}
	check := func(path string, recs []eventstore.Record) {
		t.Helper()
		if len(recs) != len(want) {
			t.Fatalf("%s: %d records, want %d", path, len(recs), len(want))
		}
		for i, rec := range recs {
			if rec.Data != want[i] || rec.Type != paidType || rec.SchemaVersion != 3 || rec.StoredType != paidType || rec.StoredSchemaVersion != i+1 ||
				rec.StreamVersion != int64(i+1) || rec.Index != 0 {
				t.Fatalf("%s: record %d = %+v\nwant Data %+v at schema version 3, stored at version %d, stream version %d", path, i, rec, want[i], i+1, i+1)
			}
			var p paidV3
			if err := json.Unmarshal(rec.Payload, &p); err != nil || p != want[i] {
				t.Fatalf("%s: record %d: Payload %s is not version 3's encoding of %+v", path, i, rec.Payload, want[i])
			}
		}
	}
	check("ReadStream", r.r3.readStream(t, stream, 0))
	var paid []eventstore.Record
	for _, rec := range r.r3.waitFeed(t, res.EventIDs[0]) {
		if rec.StreamID == stream {
			paid = append(paid, rec)
		}
	}
	check("ReadAll", paid)

	raws, err := r.r3.store.ReadStreamRaw(r.r3.ctx, stream, 0, 10)
	if err != nil {
		t.Fatalf("ReadStreamRaw: %v", err)
	}
	if len(raws) != 3 {
		t.Fatalf("ReadStreamRaw: %d stored events, want 3", len(raws))
	}
	for i, raw := range raws {
		if raw.SchemaVersion != i+1 || raw.Type != paidType || raw.StreamVersion != int64(i+1) {
			t.Fatalf("ReadStreamRaw: stored event %d is %s at schema version %d, stream version %d; want version %d", i, raw.Type, raw.SchemaVersion, raw.StreamVersion, i+1)
		}
	}
	if !jsonEqual(t, raws[0].Payload, []byte(`{"ref":"a","cents":100}`)) {
		t.Fatalf("ReadStreamRaw: the stored payload of version 1 is %s, want it as written", raws[0].Payload)
	}
	if rec, err := raws[1].Record(); err != nil || rec.SchemaVersion != 2 || rec.StoredSchemaVersion != 2 {
		t.Fatalf("RawRecord.Record of a version 2 event: %+v, %v; want schema version 2, not upcast", rec, err)
	}

	// Release 1 reads its own version and refuses the newer ones; so
	// does release 2 for version 3.
	for _, c := range []struct {
		b     *bundle
		reads int
		name  string
	}{{r.r1, 1, "release 1"}, {r.r2, 2, "release 2"}} {
		n := 0
		var err error
		for _, e := range c.b.store.ReadStream(c.b.ctx, stream, 0) {
			if err = e; err != nil {
				break
			}
			n++
		}
		var se *eventstore.SchemaVersionError
		if n != c.reads || !errors.Is(err, eventstore.ErrUnknownSchemaVersion) || !errors.As(err, &se) || !se.TooNew() || se.Version != c.reads+1 {
			t.Fatalf("%s: ReadStream read %d records, then %v; want %d, then a too-new *SchemaVersionError of version %d", c.name, n, err, c.reads, c.reads+1)
		}
		_, err = c.b.store.ReadAll(c.b.ctx, eventstore.Position{}, eventstore.MaxReadAllLimit)
		wantErr(t, c.name+": ReadAll over a newer version", err, eventstore.ErrUnknownSchemaVersion)
	}
}

// testRenameSplitDrop: a renamed event reads under its new name, a split
// one as several records of one stored event (one StreamVersion and
// Position, Index 0, 1, …, derived IDs), a dropped one as nothing, and the
// stream's version still counts every stored event.
func testRenameSplitDrop(t *testing.T, r *releases) {
	const stream = "visit-1"
	res := r.r1.append(t, stream, eventstore.NoStream,
		eventstore.Event{Data: greeted{Name: "Ada"}},
		eventstore.Event{Data: ping{}},
		eventstore.Event{Data: visit{Name: "Bo", Notes: []string{"x", "y"}}, Metadata: eventstore.Metadata{Actor: "bo"}},
		eventstore.Event{Data: ping{}},
	)
	recs := r.r3.readStream(t, stream, 0)
	type row struct {
		data    any
		version int64
		index   int
		stored  string
	}
	want := []row{
		{welcomed{Name: "Ada"}, 1, 0, greetedType},
		{welcomed{Name: "Bo"}, 3, 0, visitType},
		{note{Text: "x"}, 3, 1, visitType},
		{note{Text: "y"}, 3, 2, visitType},
	}
	checkRows := func(path string, recs []eventstore.Record) {
		t.Helper()
		if len(recs) != len(want) {
			t.Fatalf("%s: %d records %+v, want %d", path, len(recs), recs, len(want))
		}
		for i, rec := range recs {
			w := want[i]
			if rec.Data != w.data || rec.StreamVersion != w.version || rec.Index != w.index || rec.StoredType != w.stored {
				t.Fatalf("%s: record %d = %+v, want %+v", path, i, rec, w)
			}
			if stored := res.EventIDs[w.version-1]; rec.ID != eventstore.SplitEventID(stored, w.index) {
				t.Fatalf("%s: record %d has ID %s, want SplitEventID(%s, %d)", path, i, rec.ID, stored, w.index)
			}
		}
		if recs[1].Position != recs[3].Position || recs[3].Metadata.Actor != "bo" {
			t.Fatalf("%s: the records of a split event do not share its Position and metadata: %+v", path, recs[1:])
		}
	}
	checkRows("ReadStream", recs)
	if from3 := r.r3.readStream(t, stream, 3); len(from3) != 3 || from3[0].Index != 0 {
		t.Fatalf("ReadStream from version 3: %+v, want the 3 records of the split event", from3)
	}
	if info := r.r3.info(t, stream); info.Version != 4 {
		t.Fatalf("StreamInfo: version %d, want 4 (dropped events still count)", info.Version)
	}
	// In pages of 3: the second page starts at version 4, the last ping.
	var stored []uuid.UUID
	for from := int64(1); ; from += 3 {
		page, err := r.r3.store.ReadStreamRaw(r.r3.ctx, stream, from, 3)
		if err != nil {
			t.Fatalf("ReadStreamRaw(%d, 3): %v", from, err)
		}
		for _, raw := range page {
			stored = append(stored, raw.ID)
		}
		if len(page) < 3 {
			break
		}
	}
	if !slices.Equal(stored, res.EventIDs) {
		t.Fatalf("ReadStreamRaw: stored events %v, want %v", stored, res.EventIDs)
	}
	_, err := r.r3.store.ReadStreamRaw(r.r3.ctx, stream, 1, 0)
	wantErr(t, "ReadStreamRaw with limit 0", err, eventstore.ErrInvalidArgument)
	_, err = r.r3.store.ReadStreamRaw(r.r3.ctx, "", 1, 1)
	wantErr(t, "ReadStreamRaw of an invalid stream ID", err, eventstore.ErrInvalidStreamID)

	// ReadAll: the same records; a split event's records come together,
	// even past the limit.
	var feed []eventstore.Record
	for _, rec := range r.r3.waitFeed(t, res.EventIDs[0]) {
		if rec.StreamID == stream {
			feed = append(feed, rec)
		}
	}
	checkRows("ReadAll", feed)
	page, err := r.r3.store.ReadAll(r.r3.ctx, feed[0].Position, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 3 || page[0].Position != feed[1].Position || page[2].Index != 2 {
		t.Fatalf("ReadAll(after the first record, limit 1) = %+v, want the 3 records of the split event (the ping after the first is dropped)", page)
	}

	// Stored events that all read as nothing: ReadAll reads past pages of
	// them to the next record.
	drops := r.r1.append(t, "ping-1", eventstore.NoStream, eventstore.Event{Data: ping{}}, eventstore.Event{Data: ping{}}, eventstore.Event{Data: ping{}})
	next := r.r1.append(t, "greet-2", eventstore.NoStream, eventstore.Event{Data: greeted{Name: "Cy"}})
	old := r.r1.waitFeed(t, next.EventIDs[0]) // release 1 reads every stored event
	i := slices.IndexFunc(old, func(rec eventstore.Record) bool { return rec.ID == drops.EventIDs[0] })
	if i < 1 {
		t.Fatalf("the first ping is not in the feed after another event: %v", ids(old))
	}
	page, err = r.r3.store.ReadAll(r.r3.ctx, old[i-1].Position, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) == 0 || page[0].ID != next.EventIDs[0] || page[0].Data != (welcomed{Name: "Cy"}) {
		t.Fatalf("ReadAll(before 3 dropped events, limit 1) = %+v, want the event after them (%s)", page, next.EventIDs[0])
	}
	if page, err = r.r3.store.ReadAll(r.r3.ctx, page[len(page)-1].Position, eventstore.MaxReadAllLimit); err != nil {
		t.Fatal(err)
	}
	for _, rec := range page {
		if rec.StreamID == "ping-1" {
			t.Fatalf("ReadAll returned a dropped event: %+v", rec)
		}
	}
}

// testSnapshotSchemaVersion: a snapshot's schema version is stored and
// returned; 0 is stored as 1; a negative one is refused.
func testSnapshotSchemaVersion(t *testing.T, r *releases) {
	b := r.r3
	b.saveSnapshot(t, eventstore.Snapshot{StreamID: "snap-1", Version: 3, Type: "state", SchemaVersion: 2, Payload: json.RawMessage(`{"n":3}`)})
	if got := b.loadSnapshot(t, "snap-1"); got.SchemaVersion != 2 || got.Version != 3 {
		t.Fatalf("LoadSnapshot = %+v, want schema version 2 at stream version 3", got)
	}
	b.saveSnapshot(t, eventstore.Snapshot{StreamID: "snap-1", Version: 4, Type: "state", Payload: json.RawMessage(`{"n":4}`)})
	if got := b.loadSnapshot(t, "snap-1"); got.SchemaVersion != 1 || got.Version != 4 {
		t.Fatalf("LoadSnapshot of a snapshot saved with schema version 0 = %+v, want schema version 1", got)
	}
	err := b.store.SaveSnapshot(b.ctx, eventstore.Snapshot{StreamID: "snap-2", Version: 1, Type: "state", SchemaVersion: -1, Payload: json.RawMessage(`{}`)})
	wantErr(t, "SaveSnapshot with a negative schema version", err, eventstore.ErrInvalidArgument)
	_, err = b.store.LoadSnapshot(b.ctx, "snap-2")
	wantErr(t, "LoadSnapshot after a refused save", err, eventstore.ErrSnapshotNotFound)
}
