package aggregate_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
)

// The test domain's history, as this release reads it:
//
//   - item_added was {"product", "dozens"} (version 1), then {"sku",
//     "dozens"} (version 2), and is ItemAdded {"sku", "qty"} (version 3,
//     in units);
//   - order_opened {"customer", "sku", "qty"} is split into an
//     order_placed and an item_added of version 3;
//   - order_viewed is dropped.
func evolvedRegistry(t *testing.T) *eventstore.Registry {
	t.Helper()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[OrderPlaced](reg, "order_placed")
	eventstore.MustRegisterVersion[ItemAdded](reg, "item_added", 3)
	eventstore.MustRegister[OrderShipped](reg, "order_shipped")
	type itemV2 struct {
		SKU    string `json:"sku"`
		Dozens int    `json:"dozens"`
	}
	err := errors.Join(
		reg.Upcast("item_added", 1, eventstore.RenameField("product", "sku")),
		eventstore.UpcastAs(reg, "item_added", 2, func(old itemV2) (ItemAdded, error) {
			return ItemAdded{SKU: old.SKU, Qty: 12 * old.Dozens}, nil
		}),
		reg.Split("order_opened", 1, []eventstore.SchemaRef{{Type: "order_placed", Version: 1}, {Type: "item_added", Version: 3}},
			func(p json.RawMessage) ([]eventstore.VersionedEvent, error) {
				var o struct {
					Customer string `json:"customer"`
					SKU      string `json:"sku"`
					Qty      int    `json:"qty"`
				}
				if err := json.Unmarshal(p, &o); err != nil {
					return nil, err
				}
				placed, _ := json.Marshal(OrderPlaced{Customer: o.Customer})
				item, _ := json.Marshal(ItemAdded{SKU: o.SKU, Qty: o.Qty})
				return []eventstore.VersionedEvent{{Type: "order_placed", Version: 1, Payload: placed}, {Type: "item_added", Version: 3, Payload: item}}, nil
			}),
		reg.Drop("order_viewed", 1),
		reg.Validate(),
	)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestLoadAcrossSchemaVersions stores an order's events as older releases
// wrote them, with raw SQL (rows without a schema_version, as before
// schema versions existed, and rows of version 2), and loads the order
// through the current release: split, upcast and dropped events all apply
// as the current types, and the aggregate's version is the stream's, so
// the next save expects the right version. A row of a newer version than
// this release knows makes Load fail with a typed error.
func TestLoadAcrossSchemaVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.Open(t)
	store := esoxtest.Store(t, db, evolvedRegistry(t), postgres.Config{Logger: quietLogger})
	insert := func(stream string, version int64, typ string, schemaVersion int, payload string) {
		t.Helper()
		var err error
		if schemaVersion == 0 { // an older release's INSERT: no schema_version column
			_, err = db.ExecContext(ctx, `INSERT INTO `+store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, payload, metadata)
				VALUES ($1, $2, $3, $4, $5, '{}')`, uuid.NewString(), stream, version, typ, payload)
		} else {
			_, err = db.ExecContext(ctx, `INSERT INTO `+store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata)
				VALUES ($1, $2, $3, $4, $5, $6, '{}')`, uuid.NewString(), stream, version, typ, schemaVersion, payload)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	insert("order-o1", 1, "order_opened", 0, `{"customer": "ada", "sku": "fig", "qty": 3}`)
	insert("order-o1", 2, "item_added", 0, `{"product": "apple", "dozens": 2}`)
	insert("order-o1", 3, "order_viewed", 0, `{"by": "bo"}`)
	insert("order-o1", 4, "item_added", 2, `{"sku": "apple", "dozens": 1}`)
	repo, err := aggregate.NewRepository(store, "order", NewOrder, aggregate.Config{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) }) // version 5, item_added v3

	o, err := repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := orderState{Customer: "ada", Items: map[string]int{"fig": 3, "apple": 36, "pear": 1}}
	if got := o.state(); got.Customer != want.Customer || !maps.Equal(got.Items, want.Items) {
		t.Fatalf("loaded state %+v, want %+v", got, want)
	}
	if o.Version() != 5 || o.applied != 5 {
		t.Fatalf("loaded at version %d after %d Apply calls, want version 5 and 5 calls (2 of the split, none of the dropped)", o.Version(), o.applied)
	}

	// A dropped event last: the version still counts it, so the next
	// save appends after it instead of conflicting forever.
	insert("order-o1", 6, "order_viewed", 0, `{}`)
	res := mustUpdate(t, repo, "o1", func(o *Order) error { return o.Ship() })
	if res.FirstVersion != 7 {
		t.Fatalf("Update after a dropped event wrote version %d, want 7", res.FirstVersion)
	}

	// An event of a version newer than this release knows: no guess.
	insert("order-o1", 8, "item_added", 4, `{"sku": "kiwi", "units": 1, "unit": "box"}`)
	_, err = repo.Load(ctx, "o1")
	var se *eventstore.SchemaVersionError
	if !errors.Is(err, eventstore.ErrUnknownSchemaVersion) || !errors.As(err, &se) || !se.TooNew() || se.Version != 4 || se.Latest != 3 {
		t.Fatalf("Load over a version 4 event = %v, want a too-new *eventstore.SchemaVersionError", err)
	}
	calls := 0
	_, err = repo.Update(ctx, "o1", func(o *Order) error { calls++; return nil })
	if !errors.Is(err, eventstore.ErrUnknownSchemaVersion) || calls != 0 {
		t.Fatalf("Update over a version 4 event = %v after %d calls, want ErrUnknownSchemaVersion before running the command", err, calls)
	}
}

// VersionedSnapOrder is a SnapOrder whose snapshot schema changed at
// version 2: the state's keys were renamed. Decoding a version 1 snapshot
// as version 2 would silently lose the state.
type VersionedSnapOrder struct {
	Order
	version int
}

func newVersionedSnapOrder(version int) func(string) *VersionedSnapOrder {
	return func(string) *VersionedSnapOrder { return &VersionedSnapOrder{version: version} }
}

type stateV2 struct {
	Who     string         `json:"who"`
	Lines   map[string]int `json:"lines"`
	Shipped bool           `json:"shipped"`
}

func (o *VersionedSnapOrder) SnapshotType() string       { return "order" }
func (o *VersionedSnapOrder) SnapshotSchemaVersion() int { return o.version }

func (o *VersionedSnapOrder) MarshalSnapshot() ([]byte, error) {
	if o.version == 1 {
		return json.Marshal(o.orderState)
	}
	return json.Marshal(stateV2{Who: o.Customer, Lines: o.Items, Shipped: o.Shipped})
}

func (o *VersionedSnapOrder) UnmarshalSnapshot(data []byte) error {
	if o.version == 1 {
		return json.Unmarshal(data, &o.orderState)
	}
	var s stateV2
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	o.Customer, o.Items, o.Shipped = s.Who, s.Lines, s.Shipped
	if o.Items == nil {
		o.Items = map[string]int{}
	}
	return nil
}

var _ aggregate.SnapshotVersioner = (*VersionedSnapOrder)(nil)

// TestSnapshotSchemaVersion: a snapshot of another schema version, older
// or newer, is ignored (the aggregate replays its events, never decodes
// the other shape) and replaced on the next save.
func TestSnapshotSchemaVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memory.New(newRegistry())
	repo := func(version int) *aggregate.Repository[*VersionedSnapOrder] {
		r, err := aggregate.NewRepository(store, "order", newVersionedSnapOrder(version), aggregate.Config{SnapshotEvery: 5, Logger: quietLogger})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	v1, v2 := repo(1), repo(2)
	if _, err := v1.Create(ctx, "o1", func(o *VersionedSnapOrder) error { return o.Place("ada") }); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		if _, err := v1.Update(ctx, "o1", func(o *VersionedSnapOrder) error { return o.AddItem("fig", 1) }); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := store.LoadSnapshot(ctx, "order-o1")
	if err != nil || snap.SchemaVersion != 1 || snap.Version != 5 {
		t.Fatalf("snapshot of release 1: %+v, %v; want schema version 1 at version 5", snap, err)
	}
	want := map[string]int{"fig": 6}

	load := func(r *aggregate.Repository[*VersionedSnapOrder], what string, wantApplied int) *VersionedSnapOrder {
		t.Helper()
		o, err := r.Load(ctx, "o1")
		if err != nil {
			t.Fatalf("%s: Load: %v", what, err)
		}
		if o.Customer != "ada" || !maps.Equal(o.Items, want) {
			t.Fatalf("%s: loaded %+v, want ada with %v", what, o.orderState, want)
		}
		if o.applied != wantApplied {
			t.Fatalf("%s: %d events applied, want %d", what, o.applied, wantApplied)
		}
		return o
	}
	// Release 2 ignores the version 1 snapshot and replays all 7 events.
	load(v2, "release 2 over a version 1 snapshot", 7)
	// Its next save replaces the snapshot, although no multiple of 5 is
	// crossed (7 -> 8).
	want["fig"]++
	if _, err := v2.Update(ctx, "o1", func(o *VersionedSnapOrder) error { return o.AddItem("fig", 1) }); err != nil {
		t.Fatal(err)
	}
	snap, err = store.LoadSnapshot(ctx, "order-o1")
	if err != nil || snap.SchemaVersion != 2 || snap.Version != 8 {
		t.Fatalf("snapshot after release 2's save: %+v, %v; want schema version 2 at version 8", snap, err)
	}
	load(v2, "release 2 over its own snapshot", 0)
	// Release 1, still running during the deploy, ignores the newer
	// snapshot too.
	load(v1, "release 1 over a version 2 snapshot", 8)
	// And a save that crosses nothing and found a usable snapshot saves
	// none.
	want["fig"]++
	if _, err := v2.Update(ctx, "o1", func(o *VersionedSnapOrder) error { return o.AddItem("fig", 1) }); err != nil {
		t.Fatal(err)
	}
	if snap, _ = store.LoadSnapshot(ctx, "order-o1"); snap.Version != 8 {
		t.Fatalf("a save after a usable snapshot moved it to version %d, want it left at 8", snap.Version)
	}
}
