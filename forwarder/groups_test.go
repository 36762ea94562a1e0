package forwarder

import (
	"errors"
	"slices"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/testwait"
)

// TestGroupsWithoutPublisher: ListGroups and ReadGroup report each
// group's offset, lag and whether a leader runs it; SetGroupOffset moves
// an offset without a Publisher, and refuses, changing nothing, a group
// whose leader runs, an unknown group and a position after the head.
func TestGroupsWithoutPublisher(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	if gs, err := ListGroups(ctx, b.store); err != nil || len(gs) != 0 {
		t.Fatalf("ListGroups before the offsets table exists = %+v, %v", gs, err)
	}
	if _, err := SetGroupOffset(ctx, b.store, "live", eventstore.Position{}); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("SetGroupOffset before the offsets table exists = %v, want ErrGroupNotFound", err)
	}
	b.appendSpread(t, []string{"order-1", "order-2"}, 3)
	head := b.waitFeed(t, 6)
	recs, err := b.store.ReadAll(ctx, eventstore.Position{}, 10)
	if err != nil || len(recs) != 6 {
		t.Fatalf("ReadAll: %d, %v", len(recs), err)
	}

	live := newForwarder(t, b, &recordingPublisher{}, Config{ConsumerGroup: "live"})
	stop, _, _ := runForwarder(t, live)
	testwait.Until(t, "the live group to publish everything", func() bool {
		off, err := live.Offset(ctx)
		return err == nil && off == head
	})
	// A group that has an offset and no running forwarder.
	idle := newForwarder(t, b, &recordingPublisher{}, Config{ConsumerGroup: "idle"})
	if err := idle.SetOffset(ctx, eventstore.Position{}); err != nil {
		t.Fatal(err)
	}

	gs, err := ListGroups(ctx, b.store)
	if err != nil || len(gs) != 2 {
		t.Fatalf("ListGroups = %+v, %v", gs, err)
	}
	if g := gs[0]; g.ConsumerGroup != "idle" || !g.Offset.IsZero() || g.Lag != 6 || g.LeaderRunning || g.Head != head || g.UpdatedAt.IsZero() {
		t.Errorf("idle group = %+v, want offset 0/0, lag 6, no leader", g)
	}
	if g := gs[1]; g.ConsumerGroup != "live" || g.Offset != head || g.Lag != 0 || !g.LeaderRunning {
		t.Errorf("live group = %+v, want offset at the head %s, lag 0, a leader", g, head)
	}

	// Refusals change nothing.
	if _, err := SetGroupOffset(ctx, b.store, "live", recs[1].Position); !errors.Is(err, ErrForwarderRunning) {
		t.Fatalf("SetGroupOffset while the leader runs = %v, want ErrForwarderRunning", err)
	}
	var nf *GroupNotFoundError
	if _, err := SetGroupOffset(ctx, b.store, "liev", recs[1].Position); !errors.As(err, &nf) || !slices.Equal(nf.Known, []string{"idle", "live"}) || !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("SetGroupOffset of an unknown group = %v, want a GroupNotFoundError listing idle and live", err)
	}
	if _, err := ReadGroup(ctx, b.store, "liev"); !errors.Is(err, ErrGroupNotFound) {
		t.Fatalf("ReadGroup of an unknown group = %v", err)
	}
	after := eventstore.Position{TransactionID: head.TransactionID + 1_000_000, Position: 1}
	if _, err := SetGroupOffset(ctx, b.store, "idle", after); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("SetGroupOffset after the head = %v, want ErrInvalidArgument", err)
	}
	if _, err := SetGroupOffset(ctx, b.store, "idle", eventstore.Position{Position: -1}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("SetGroupOffset with a negative position = %v, want ErrInvalidArgument", err)
	}
	gs2, err := ListGroups(ctx, b.store)
	if err != nil || len(gs2) != 2 || gs2[0].Offset != gs[0].Offset || gs2[1].Offset != gs[1].Offset {
		t.Fatalf("groups after refusals = %+v, %v; want them unchanged", gs2, err)
	}

	prev, err := SetGroupOffset(ctx, b.store, "idle", recs[1].Position)
	if err != nil || !prev.IsZero() {
		t.Fatalf("SetGroupOffset = %s, %v; want the previous offset 0/0", prev, err)
	}
	g, err := ReadGroup(ctx, b.store, "idle")
	if err != nil || g.Offset != recs[1].Position || g.Lag != 4 {
		t.Fatalf("idle after SetGroupOffset = %+v, %v; want offset %s, lag 4", g, err, recs[1].Position)
	}

	// Once the leader stops, its group's offset can move too.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the live group's leader lock to be released", func() bool {
		g, err := ReadGroup(ctx, b.store, "live")
		return err == nil && !g.LeaderRunning
	})
	if prev, err := SetGroupOffset(ctx, b.store, "live", head); err != nil || prev != head {
		t.Fatalf("SetGroupOffset of the stopped group = %s, %v", prev, err)
	}
}

// TestMigrationsIsWhatMigrateApplies: the forwarder's migration set is
// pending before Migrate and applied after.
func TestMigrationsIsWhatMigrateApplies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := testCtx(t)
	f := newForwarder(t, b, &recordingPublisher{}, Config{})
	st, err := postgres.ReadMigrationStatus(ctx, b.db, b.schema, Migrations(b.schema))
	if err != nil || len(st.Pending) != 1 || st.Pending[0].Component != Component {
		t.Fatalf("status before Migrate = %+v, %v", st, err)
	}
	if _, err := f.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = postgres.ReadMigrationStatus(ctx, b.db, b.schema, f.Migrations())
	if err != nil || !st.UpToDate() {
		t.Fatalf("status after Migrate = %+v, %v", st, err)
	}
}
