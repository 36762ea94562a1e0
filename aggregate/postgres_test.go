package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
)

// postgresStore returns a migrated PostgreSQL store in a fresh schema.
func postgresStore(t *testing.T) *postgres.Store {
	t.Helper()
	db := pgtest.Open(t)
	store := esoxtest.Store(t, db, newRegistry(), postgres.Config{Logger: quietLogger})
	return store
}

// TestPostgresConcurrentUpdates runs writers that Update one aggregate at
// once on PostgreSQL: every Update that succeeds is stored exactly once, every
// one that fails fails with the typed conflict after its retries, and the
// aggregate loads to the sum of the successes.
func TestPostgresConcurrentUpdates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := postgresStore(t)
	repo, err := aggregate.NewRepository(store, "order", NewOrder, aggregate.Config{MaxRetries: 20, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, repo, "o1")

	const writers, updates = 8, 10
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		succeeded = map[string]int{}
		failures  []error
		calls     atomic.Int64
	)
	for w := range writers {
		wg.Go(func() {
			sku := fmt.Sprintf("w%d", w)
			for range updates {
				_, err := repo.Update(ctx, "o1", func(o *Order) error {
					calls.Add(1)
					return o.AddItem(sku, 1)
				})
				mu.Lock()
				if err == nil {
					succeeded[sku]++
				} else {
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	total := 0
	for _, n := range succeeded {
		total += n
	}
	for _, err := range failures {
		var ce *eventstore.ConcurrencyError
		if !errors.As(err, &ce) {
			t.Errorf("failed Update: %v, want a *eventstore.ConcurrencyError", err)
		}
	}
	if total == 0 {
		t.Fatalf("no Update succeeded; failures: %v", failures)
	}
	o, err := repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if o.Version() != int64(1+total) || !reflect.DeepEqual(o.Items, succeeded) {
		t.Fatalf("loaded version %d items %v; want version %d and the successful updates %v", o.Version(), o.Items, 1+total, succeeded)
	}
	t.Logf("%d updates succeeded, %d gave up, %d attempts in all", total, len(failures), calls.Load())
}

func TestPostgresSnapshotPlusTailAndRetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := postgresStore(t)
	repo := snapRepo(t, store, newSnapOrder("order/v1", false), aggregate.Config{SnapshotEvery: 5})
	writeOrder(t, repo, "o1", 12) // versions 1..13, snapshot at 10

	snap, err := store.LoadSnapshot(ctx, "order-o1")
	if err != nil || snap.Version != 10 || snap.Type != "order/v1" {
		t.Fatalf("LoadSnapshot = version %d type %q err %v, want 10, order/v1", snap.Version, snap.Type, err)
	}
	plain, err := aggregate.NewRepository(store, "order", NewOrder, aggregate.Config{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	full, err := plain.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("full replay: %v", err)
	}
	o, err := repo.Load(ctx, "o1")
	if err != nil {
		t.Fatalf("snapshot load: %v", err)
	}
	if o.applied != 3 || o.Version() != 13 || full.Version() != 13 || !reflect.DeepEqual(o.state(), full.state()) {
		t.Fatalf("snapshot load: applied %d version %d state %+v; want 3 events on top of the snapshot, version 13, state %+v", o.applied, o.Version(), o.state(), full.state())
	}

	// A conflict forced between load and save is retried.
	attempts := 0
	res := mustUpdate(t, repo, "o1", func(o *SnapOrder) error {
		attempts++
		if attempts == 1 {
			mustUpdate(t, plain, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
		}
		return o.AddItem("apple", 1)
	})
	if attempts != 2 || res.LastVersion != 15 {
		t.Fatalf("Update: %d attempts, version %d; want 2 and 15", attempts, res.LastVersion)
	}
	// Unknown aggregate.
	if _, err := repo.Load(ctx, "missing"); !errors.Is(err, eventstore.ErrStreamNotFound) {
		t.Fatalf("Load missing: %v, want ErrStreamNotFound", err)
	}
}

// hotAggregate runs the scenario of a hot aggregate on PostgreSQL: writers
// goroutines each Update one order updates times, adding one item. It
// returns the errors of the Updates that failed and checks that the stored
// order holds exactly the successful ones.
func hotAggregate(t *testing.T, cfg aggregate.Config, writers, updates int) []error {
	t.Helper()
	ctx := context.Background()
	store := postgresStore(t)
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	repo, err := aggregate.NewRepository(store, "order", NewOrder, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, repo, "hot")
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []error
	)
	for range writers {
		wg.Go(func() {
			for range updates {
				_, err := repo.Update(ctx, "hot", func(o *Order) error { return o.AddItem("sku", 1) })
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	o, err := repo.Load(ctx, "hot")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	ok := writers*updates - len(failures)
	if o.Items["sku"] != ok || o.Version() != int64(1+ok) {
		t.Fatalf("stored %d increments at version %d; want the %d successful Updates at version %d", o.Items["sku"], o.Version(), ok, 1+ok)
	}
	return failures
}

// TestPostgresHotAggregateDefaults: with the default Config, 8 goroutines
// updating one aggregate 20 times each all succeed on PostgreSQL: the
// conflicts are retried with backoff until each command lands, and the
// aggregate holds exactly 160 increments. With the old policy (3 immediate
// retries) a run failed 18 to 43 of the 160.
func TestPostgresHotAggregateDefaults(t *testing.T) {
	t.Parallel()
	const writers, updates = 8, 20
	failures := hotAggregate(t, aggregate.Config{}, writers, updates)
	if len(failures) > 0 {
		t.Fatalf("%d of %d Updates failed with the default Config; first: %v", len(failures), writers*updates, failures[0])
	}
}
