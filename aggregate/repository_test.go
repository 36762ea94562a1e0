package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/memory"
)

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

type testBundle struct {
	store *memory.Store
	repo  *aggregate.Repository[*Order]
}

func setup(t *testing.T, cfg aggregate.Config) *testBundle {
	t.Helper()
	store := memory.New(newRegistry())
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	repo, err := aggregate.NewRepository(store, "order", NewOrder, cfg)
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	return &testBundle{store: store, repo: repo}
}

func mustUpdate[T aggregate.Root](t *testing.T, repo *aggregate.Repository[T], id string, fn func(T) error) eventstore.AppendResult {
	t.Helper()
	res, err := repo.Update(context.Background(), id, fn)
	if err != nil {
		t.Fatalf("Update(%s): %v", id, err)
	}
	return res
}

func streamVersion(t *testing.T, store eventstore.Store, streamID string) int64 {
	t.Helper()
	info, err := store.StreamInfo(context.Background(), streamID)
	if err != nil {
		t.Fatalf("StreamInfo: %v", err)
	}
	return info.Version
}

func TestCreateLoadUpdate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})

	res, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") })
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if res.StreamID != "order-o1" || res.FirstVersion != 1 || res.LastVersion != 1 || len(res.EventIDs) != 1 {
		t.Fatalf("Create result = %+v, want stream order-o1 version 1 with one event", res)
	}
	res = mustUpdate(t, b.repo, "o1", func(o *Order) error {
		if err := o.AddItem("apple", 2); err != nil {
			return err
		}
		return o.Ship()
	})
	if res.FirstVersion != 2 || res.LastVersion != 3 {
		t.Fatalf("Update result = %+v, want versions 2..3", res)
	}

	o, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := orderState{Customer: "ada", Items: map[string]int{"apple": 2}, Shipped: true}
	if o.ID() != "o1" || o.Version() != 3 || len(o.Pending()) != 0 || !reflect.DeepEqual(o.state(), want) {
		t.Fatalf("Load = id %q version %d pending %v state %+v; want o1, 3, none, %+v", o.ID(), o.Version(), o.Pending(), o.state(), want)
	}

	// The stored events are the values raised, the pointer dereferenced.
	var got []any
	for rec, err := range b.store.ReadStream(ctx, "order-o1", 1) {
		if err != nil {
			t.Fatalf("ReadStream: %v", err)
		}
		got = append(got, rec.Data)
	}
	wantEvents := []any{OrderPlaced{Customer: "ada"}, ItemAdded{SKU: "apple", Qty: 2}, OrderShipped{}}
	if !reflect.DeepEqual(got, wantEvents) {
		t.Fatalf("stored events = %#v, want %#v", got, wantEvents)
	}
}

func TestCreateExistingIsConflict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	if _, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("bob") })
	var ce *eventstore.ConcurrencyError
	if !errors.Is(err, eventstore.ErrConcurrencyConflict) || !errors.As(err, &ce) {
		t.Fatalf("second Create: err = %v, want a *eventstore.ConcurrencyError", err)
	}
	if ce.Expected != eventstore.NoStream || ce.Actual != 1 || ce.StreamID != "order-o1" {
		t.Fatalf("conflict = %+v, want stream order-o1 expected no_stream actual 1", ce)
	}
	if v := streamVersion(t, b.store, "order-o1"); v != 1 {
		t.Fatalf("stream version after refused Create = %d, want 1", v)
	}
}

func TestLoadMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	if _, err := b.repo.Load(ctx, "nope"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("Load: err = %v, want ErrStreamNotFound", err)
	}
	called := false
	_, err := b.repo.Update(ctx, "nope", func(*Order) error { called = true; return nil })
	if !errors.Is(err, eventstore.ErrStreamNotFound) || called {
		t.Fatalf("Update: err = %v, fn called %v; want ErrStreamNotFound without calling fn", err, called)
	}
}

func TestFuncErrorReturnedAsIsAndNothingSaved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	boom := errors.New("boom")

	_, err := b.repo.Create(ctx, "o1", func(o *Order) error {
		_ = o.Place("ada") // raises, then fails: nothing may be saved
		return boom
	})
	if err != boom {
		t.Fatalf("Create: err = %v, want boom itself", err)
	}
	if v := streamVersion(t, b.store, "order-o1"); v != 0 {
		t.Fatalf("stream version after failed Create = %d, want 0", v)
	}

	if _, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_, err = b.repo.Update(ctx, "o1", func(o *Order) error {
		_ = o.AddItem("apple", 1)
		return boom
	})
	if err != boom {
		t.Fatalf("Update: err = %v, want boom itself", err)
	}
	_, err = b.repo.Update(ctx, "o1", func(o *Order) error { return o.Place("bob") })
	if err != errAlreadyPlaced {
		t.Fatalf("Update: err = %v, want errAlreadyPlaced itself", err)
	}
	if v := streamVersion(t, b.store, "order-o1"); v != 1 {
		t.Fatalf("stream version after failed Updates = %d, want 1", v)
	}
}

func TestSaveWithoutPendingIsNoop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")
	o, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	before := len(b.store.All())
	res, err := b.repo.Save(ctx, o)
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	if res.StreamID != "order-o1" || res.LastVersion != 1 || len(res.EventIDs) != 0 || !res.LastPosition.IsZero() {
		t.Fatalf("Save result = %+v, want stream order-o1, LastVersion 1, no events", res)
	}
	// An Update whose function raises nothing writes nothing either.
	if res := mustUpdate(t, b.repo, "o1", func(*Order) error { return nil }); len(res.EventIDs) != 0 || res.LastVersion != 1 {
		t.Fatalf("no-op Update result = %+v", res)
	}
	if after := len(b.store.All()); after != before {
		t.Fatalf("store holds %d events after no-op saves, want %d", after, before)
	}
	// A fresh aggregate with nothing raised writes nothing: the stream stays absent.
	if _, err := b.repo.Save(ctx, b.repo.New("o2")); err != nil {
		t.Fatalf("Save of empty new aggregate: %v", err)
	}
	if v := streamVersion(t, b.store, "order-o2"); v != 0 {
		t.Fatalf("order-o2 version = %d, want 0", v)
	}
}

func mustCreate(t *testing.T, repo *aggregate.Repository[*Order], id string) {
	t.Helper()
	if _, err := repo.Create(context.Background(), id, func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create(%s): %v", id, err)
	}
}

func TestSaveConflictKeepsAggregate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")
	stale, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })

	if err := stale.AddItem("apple", 1); err != nil {
		t.Fatalf("AddItem: %v", err)
	}
	_, err = b.repo.Save(ctx, stale)
	var ce *eventstore.ConcurrencyError
	if !errors.As(err, &ce) || ce.Expected != eventstore.Exact(1) || ce.Actual != 2 {
		t.Fatalf("Save: err = %v, want a conflict expecting 1, actual 2", err)
	}
	if stale.Version() != 1 || !reflect.DeepEqual(stale.Pending(), []any{ItemAdded{SKU: "apple", Qty: 1}}) {
		t.Fatalf("after the conflict: version %d pending %#v; want 1 and the unsaved event", stale.Version(), stale.Pending())
	}
}

func TestSaveMetadataFromContext(t *testing.T) {
	t.Parallel()
	b := setup(t, aggregate.Config{})
	ctx := eventstore.WithCorrelationID(context.Background(), "req-1")
	ctx = eventstore.WithActor(ctx, "user-7")
	if _, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("ada") }); err != nil {
		t.Fatalf("Create: %v", err)
	}
	for rec, err := range b.store.ReadStream(ctx, "order-o1", 1) {
		if err != nil {
			t.Fatalf("ReadStream: %v", err)
		}
		if rec.Metadata.CorrelationID != "req-1" || rec.Metadata.Actor != "user-7" {
			t.Fatalf("metadata = %+v, want correlation req-1 and actor user-7", rec.Metadata)
		}
	}
}

func TestSaveWithoutID(t *testing.T) {
	t.Parallel()
	b := setup(t, aggregate.Config{})
	o := &Order{} // not from New, Create or Load
	_ = o.Place("ada")
	if _, err := b.repo.Save(context.Background(), o); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("Save: err = %v, want ErrInvalidArgument", err)
	}
}

func TestUpdateRetriesConflict(t *testing.T) {
	t.Parallel()
	b := setup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")

	attempts := 0
	res := mustUpdate(t, b.repo, "o1", func(o *Order) error {
		attempts++
		if attempts == 1 {
			// A concurrent writer saves between our load and our save.
			mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
		}
		return o.AddItem("apple", 1)
	})
	if attempts != 2 {
		t.Fatalf("fn ran %d times, want 2", attempts)
	}
	if res.FirstVersion != 3 || res.LastVersion != 3 {
		t.Fatalf("Update result = %+v, want version 3", res)
	}
	o, err := b.repo.Load(context.Background(), "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := map[string]int{"pear": 1, "apple": 1}; !reflect.DeepEqual(o.Items, want) {
		t.Fatalf("items = %v, want %v: both writers' events", o.Items, want)
	}
}

func TestUpdateGivesUp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		cfg          aggregate.Config
		wantAttempts int
	}{
		{"default", aggregate.Config{}, 1 + aggregate.MaxRetriesDefault},
		{"max_retries_1", aggregate.Config{MaxRetries: 1}, 2},
		{"disabled", aggregate.Config{DisableRetries: true}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.cfg)
			mustCreate(t, b.repo, "o1")
			attempts := 0
			_, err := b.repo.Update(context.Background(), "o1", func(o *Order) error {
				attempts++
				mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
				return o.AddItem("apple", 1)
			})
			var ce *eventstore.ConcurrencyError
			if !errors.Is(err, eventstore.ErrConcurrencyConflict) || !errors.As(err, &ce) {
				t.Fatalf("Update: err = %v, want a *eventstore.ConcurrencyError", err)
			}
			if attempts != tt.wantAttempts {
				t.Fatalf("fn ran %d times, want %d", attempts, tt.wantAttempts)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("gave up after %d attempts", tt.wantAttempts)) {
				t.Fatalf("error %q does not say how many attempts were made", err)
			}
			// Only the concurrent writer's events were stored.
			if v := streamVersion(t, b.store, "order-o1"); v != int64(1+tt.wantAttempts) {
				t.Fatalf("stream version = %d, want %d", v, 1+tt.wantAttempts)
			}
		})
	}
}

func TestUpdateStopsRetryingWhenContextEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, aggregate.Config{MaxRetries: 10})
	mustCreate(t, b.repo, "o1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	attempts := 0
	_, err := b.repo.Update(ctx, "o1", func(o *Order) error {
		attempts++
		mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
		cancel()
		return o.AddItem("apple", 1)
	})
	if !errors.Is(err, context.Canceled) || attempts != 1 {
		t.Fatalf("Update: err = %v after %d attempts, want context.Canceled after 1", err, attempts)
	}
}

func TestNewRepositoryValidates(t *testing.T) {
	t.Parallel()
	store := memory.New(newRegistry())
	for _, tt := range []struct {
		name     string
		store    eventstore.Store
		category string
		newFunc  func(string) *Order
		cfg      aggregate.Config
		want     string
	}{
		{"nil_store", nil, "order", NewOrder, aggregate.Config{}, "store"},
		{"nil_new", store, "order", nil, aggregate.Config{}, "newFunc"},
		{"empty_category", store, "", NewOrder, aggregate.Config{}, "category"},
		{"dash_in_category", store, "sales-order", NewOrder, aggregate.Config{}, "'-'"},
		{"control_in_category", store, "ord\ner", NewOrder, aggregate.Config{}, "control"},
		{"negative_snapshot_every", store, "order", NewOrder, aggregate.Config{SnapshotEvery: -1}, "SnapshotEvery"},
		{"negative_max_retries", store, "order", NewOrder, aggregate.Config{MaxRetries: -1}, "MaxRetries"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := aggregate.NewRepository(tt.store, tt.category, tt.newFunc, tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}

	repo, err := aggregate.NewRepository(store, "order", NewOrder, aggregate.Config{})
	if err != nil {
		t.Fatalf("NewRepository: %v", err)
	}
	cfg := repo.Config()
	if cfg.SnapshotEvery != aggregate.SnapshotEveryDefault || cfg.MaxRetries != aggregate.MaxRetriesDefault || cfg.Logger == nil {
		t.Fatalf("defaults not filled: %+v", cfg)
	}
	if repo.Category() != "order" || repo.StreamID("7f") != "order-7f" {
		t.Fatalf("Category %q StreamID %q", repo.Category(), repo.StreamID("7f"))
	}
}

func TestRaiseAndReplay(t *testing.T) {
	t.Parallel()
	o := aggregate.New(NewOrder, "o1")
	aggregate.Replay(o, OrderPlaced{Customer: "ada"}, &ItemAdded{SKU: "apple", Qty: 1})
	if o.Version() != 2 || len(o.Pending()) != 0 || o.Items["apple"] != 1 {
		t.Fatalf("after Replay: version %d pending %v items %v", o.Version(), o.Pending(), o.Items)
	}
	aggregate.Raise(o, &ItemAdded{SKU: "pear", Qty: 2}, OrderShipped{})
	want := []any{ItemAdded{SKU: "pear", Qty: 2}, OrderShipped{}}
	if o.Version() != 2 || !reflect.DeepEqual(o.Pending(), want) || !o.Shipped {
		t.Fatalf("after Raise: version %d pending %#v shipped %v", o.Version(), o.Pending(), o.Shipped)
	}
	// Pending returns a copy.
	p := o.Pending()
	p[0] = nil
	if o.Pending()[0] == nil {
		t.Fatal("Pending shares its slice with the aggregate")
	}
	// New resets whatever newFunc left in Base.
	if n := aggregate.New(func(string) *Order { return o }, "o2"); n.ID() != "o2" || n.Version() != 0 || len(n.Pending()) != 0 {
		t.Fatalf("New did not reset Base: %q %d %v", n.ID(), n.Version(), n.Pending())
	}
}

func TestNewPanicsOnNil(t *testing.T) {
	t.Parallel()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "nil") {
			t.Fatalf("recover() = %v, want a panic about nil", r)
		}
	}()
	aggregate.New(func(string) *Order { return nil }, "o1")
}
