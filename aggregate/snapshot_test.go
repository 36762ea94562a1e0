package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
)

func snapRepo(t *testing.T, store eventstore.Store, newFunc func(string) *SnapOrder, cfg aggregate.Config) *aggregate.Repository[*SnapOrder] {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	repo, err := aggregate.NewRepository(store, "order", newFunc, cfg)
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	return repo
}

// writeOrder creates order id and gives it items more events, one Update
// each, through repo.
func writeOrder(t *testing.T, repo *aggregate.Repository[*SnapOrder], id string, items int) {
	t.Helper()
	ctx := context.Background()
	if _, err := repo.Create(ctx, id, func(o *SnapOrder) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create: %v", err)
	}
	for i := range items {
		mustUpdate(t, repo, id, func(o *SnapOrder) error { return o.AddItem(fmt.Sprintf("sku%d", i%4), i) })
	}
}

func TestSnapshotPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memory.New(newRegistry())
	repo := snapRepo(t, store, newSnapOrder("order/v1", false), aggregate.Config{SnapshotEvery: 5})

	if _, err := repo.Create(ctx, "o1", func(o *SnapOrder) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := store.LoadSnapshot(ctx, "order-o1"); !errors.Is(err, eventstore.ErrSnapshotNotFound) {
		t.Fatalf("snapshot after version 1: err = %v, want ErrSnapshotNotFound", err)
	}
	// 1 -> 4: no multiple of 5 crossed. 4 -> 7 crosses 5: snapshot at 7.
	mustUpdate(t, repo, "o1", func(o *SnapOrder) error {
		return errors.Join(o.AddItem("a", 1), o.AddItem("b", 1), o.AddItem("c", 1))
	})
	if _, err := store.LoadSnapshot(ctx, "order-o1"); !errors.Is(err, eventstore.ErrSnapshotNotFound) {
		t.Fatalf("snapshot after version 4: err = %v, want ErrSnapshotNotFound", err)
	}
	mustUpdate(t, repo, "o1", func(o *SnapOrder) error {
		return errors.Join(o.AddItem("a", 1), o.AddItem("b", 1), o.AddItem("c", 1))
	})
	snap, err := store.LoadSnapshot(ctx, "order-o1")
	if err != nil {
		t.Fatalf("LoadSnapshot: %v", err)
	}
	if snap.Version != 7 || snap.Type != "order/v1" {
		t.Fatalf("snapshot = version %d type %q, want 7 and order/v1", snap.Version, snap.Type)
	}

	// Snapshots disabled, or an aggregate that is no Snapshotter: none saved.
	for _, id := range []string{"o2", "o3"} {
		if id == "o2" {
			writeOrder(t, snapRepo(t, store, newSnapOrder("order/v1", false), aggregate.Config{SnapshotEvery: 2, DisableSnapshots: true}), id, 6)
		} else {
			plain, err := aggregate.NewRepository(store, "order", NewOrder, aggregate.Config{SnapshotEvery: 2, Logger: quietLogger})
			if err != nil {
				t.Fatal(err)
			}
			mustCreate(t, plain, id)
			for range 6 {
				mustUpdate(t, plain, id, func(o *Order) error { return o.AddItem("x", 1) })
			}
		}
		if _, err := store.LoadSnapshot(ctx, "order-"+id); !errors.Is(err, eventstore.ErrSnapshotNotFound) {
			t.Fatalf("%s: err = %v, want ErrSnapshotNotFound", id, err)
		}
	}
}

// TestLoadSnapshotPlusTail checks that an aggregate loaded from its snapshot
// and the events after it equals the one replayed from every event, and that
// snapshots of another type, undecodable ones, or disabled snapshots fall
// back to the full replay.
func TestLoadSnapshotPlusTail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memory.New(newRegistry())
	writer := snapRepo(t, store, newSnapOrder("order/v1", false), aggregate.Config{SnapshotEvery: 5})
	writeOrder(t, writer, "o1", 12) // versions 1..13, snapshot at 10

	plain, err := aggregate.NewRepository(store, "order", NewOrder, aggregate.Config{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	full, err := plain.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("full replay: %v", err)
	}
	if full.Version() != 13 || full.applied != 13 {
		t.Fatalf("full replay: version %d applied %d, want 13 and 13", full.Version(), full.applied)
	}

	for _, tt := range []struct {
		name         string
		repo         *aggregate.Repository[*SnapOrder]
		fromSnapshot bool // else a full replay
	}{
		{"snapshot_plus_tail", writer, true},
		{"other_snapshot_type", snapRepo(t, store, newSnapOrder("order/v2", false), aggregate.Config{}), false},
		{"undecodable_snapshot", snapRepo(t, store, newSnapOrder("order/v1", true), aggregate.Config{}), false},
		{"snapshots_disabled", snapRepo(t, store, newSnapOrder("order/v1", false), aggregate.Config{DisableSnapshots: true}), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.repo.Load(ctx, "o1")
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			// The snapshot stays at version 10; each subtest adds an event.
			wantApplied := int(full.Version())
			if tt.fromSnapshot {
				wantApplied -= 10
			}
			if o.applied != wantApplied {
				t.Fatalf("applied %d events, want %d", o.applied, wantApplied)
			}
			if o.ID() != full.ID() || o.Version() != full.Version() || len(o.Pending()) != 0 {
				t.Fatalf("Base = %q v%d pending %v, want %q v%d", o.ID(), o.Version(), o.Pending(), full.ID(), full.Version())
			}
			if !reflect.DeepEqual(o.state(), full.state()) {
				t.Fatalf("state = %+v, want the full replay's %+v", o.state(), full.state())
			}
			// The loaded aggregate keeps working: the next save expects version 13.
			if err := o.AddItem("z", 1); err != nil {
				t.Fatal(err)
			}
			if _, err := tt.repo.Save(ctx, o); err != nil {
				t.Fatalf("Save after load: %v", err)
			}
			full, err = plain.Load(ctx, "o1")
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// failingSnapshots is a store whose SaveSnapshot fails.
type failingSnapshots struct{ *memory.Store }

func (failingSnapshots) SaveSnapshot(context.Context, eventstore.Snapshot) error {
	return errors.New("disk full")
}

func TestSnapshotSaveFailureDoesNotFailSave(t *testing.T) {
	t.Parallel()
	store := failingSnapshots{memory.New(newRegistry())}
	repo := snapRepo(t, store, newSnapOrder("order/v1", false), aggregate.Config{SnapshotEvery: 1})
	writeOrder(t, repo, "o1", 2)
	if v := streamVersion(t, store, "order-o1"); v != 3 {
		t.Fatalf("stream version = %d, want 3", v)
	}
}
