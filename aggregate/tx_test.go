package aggregate_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// txBundle is a PostgreSQL store with a repository of orders and a notes
// table beside the events, for the caller's other writes.
type txBundle struct {
	store *postgres.Store
	db    *sqlx.DB
	repo  *aggregate.Repository[*Order]
	notes string
}

func txSetup(t *testing.T, cfg aggregate.Config) *txBundle {
	t.Helper()
	store := postgresStore(t)
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	repo, err := aggregate.NewRepository(store, "order", NewOrder, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := &txBundle{store: store, db: store.DB(), repo: repo, notes: postgres.QuoteIdentifier(store.Schema()) + ".notes"}
	if _, err := b.db.Exec(`CREATE TABLE ` + b.notes + ` (note text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return b
}

// inTx runs fn in a transaction and commits it when commit is set and fn
// succeeds, else rolls it back.
func (b *txBundle) inTx(t *testing.T, commit bool, fn func(tx *sqlx.Tx) error) error {
	t.Helper()
	ctx := context.Background()
	tx, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if !commit {
		return tx.Rollback()
	}
	return tx.Commit()
}

func (b *txBundle) note(ctx context.Context, tx eventstore.Tx, note string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO `+b.notes+` (note) VALUES ($1)`, note)
	return err
}

func (b *txBundle) notesCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.db.Get(&n, `SELECT count(*) FROM `+b.notes); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPostgresTxFormsCommitWithCaller: CreateTx, UpdateTx and SaveTx append
// in the caller's transaction: the events and the caller's other writes
// are stored together on commit and not at all on rollback (guarantee 4).
func TestPostgresTxFormsCommitWithCaller(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := txSetup(t, aggregate.Config{})
	ops := []struct {
		name string
		run  func(tx *sqlx.Tx) error
	}{
		{"CreateTx", func(tx *sqlx.Tx) error {
			_, err := b.repo.CreateTx(ctx, tx, "o1", func(o *Order) error { return o.Place("ada") })
			return err
		}},
		{"UpdateTx", func(tx *sqlx.Tx) error {
			_, err := b.repo.UpdateTx(ctx, postgres.NewTx(tx), "o1", func(o *Order) error { return o.AddItem("pear", 1) })
			return err
		}},
		{"SaveTx twice", func(tx *sqlx.Tx) error {
			o, err := b.repo.Load(ctx, "o1")
			if err != nil {
				return err
			}
			// Saving the same aggregate again in the same tx works: the
			// second append expects the version the first one wrote.
			for _, sku := range []string{"apple", "plum"} {
				if err := o.AddItem(sku, 1); err != nil {
					return err
				}
				if _, err := b.repo.SaveTx(ctx, tx.Tx, o); err != nil { // a *sql.Tx
					return err
				}
			}
			return nil
		}},
	}
	version := int64(0)
	for i, op := range ops {
		before := b.notesCount(t)
		if err := b.inTx(t, false, func(tx *sqlx.Tx) error {
			if err := op.run(tx); err != nil {
				return err
			}
			return b.note(ctx, tx, op.name)
		}); err != nil {
			t.Fatalf("%s, rolled back: %v", op.name, err)
		}
		if v := streamVersion(t, b.store, "order-o1"); v != version || b.notesCount(t) != before {
			t.Fatalf("%s rolled back: stream at version %d with %d notes, want %d and %d", op.name, v, b.notesCount(t), version, before)
		}
		if err := b.inTx(t, true, func(tx *sqlx.Tx) error {
			if err := op.run(tx); err != nil {
				return err
			}
			return b.note(ctx, tx, op.name)
		}); err != nil {
			t.Fatalf("%s, committed: %v", op.name, err)
		}
		version += []int64{1, 1, 2}[i]
		if v := streamVersion(t, b.store, "order-o1"); v != version || b.notesCount(t) != before+1 {
			t.Fatalf("%s committed: stream at version %d with %d notes, want %d and %d", op.name, v, b.notesCount(t), version, before+1)
		}
	}
	o, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"pear": 1, "apple": 1, "plum": 1}; o.Customer != "ada" || !reflect.DeepEqual(o.Items, want) {
		t.Fatalf("loaded %+v, want ada's order with %v", o.state(), want)
	}
}

// TestPostgresCreateExisting: Create and CreateTx of an existing stream are
// refused with the *AlreadyExistsError, and write nothing.
func TestPostgresCreateExisting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := txSetup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")
	_, err := b.repo.Create(ctx, "o1", func(o *Order) error { return o.Place("bob") })
	requireAlreadyExists(t, err, "order-o1", 1)

	err = b.inTx(t, true, func(tx *sqlx.Tx) error {
		_, err := b.repo.CreateTx(ctx, tx, "o1", func(o *Order) error { return o.Place("bob") })
		return err
	})
	requireAlreadyExists(t, err, "order-o1", 1)
	if v := streamVersion(t, b.store, "order-o1"); v != 1 {
		t.Fatalf("stream version %d after refused creates, want 1", v)
	}
}

// TestPostgresSaveTxSkipsSnapshots: a save in the caller's transaction
// never snapshots, since the repository cannot know whether it commits;
// the same change through Update does.
func TestPostgresSaveTxSkipsSnapshots(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := postgresStore(t)
	repo := snapRepo(t, store, newSnapOrder("order/v1", false), aggregate.Config{SnapshotEvery: 2})
	if _, err := repo.Create(ctx, "o1", func(o *SnapOrder) error { return o.Place("ada") }); err != nil {
		t.Fatal(err)
	}
	tx, err := store.DB().BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := repo.UpdateTx(ctx, tx, "o1", func(o *SnapOrder) error { return o.AddItem("pear", 1) }); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.LoadSnapshot(ctx, "order-o1"); !errors.Is(err, eventstore.ErrSnapshotNotFound) {
		t.Fatalf("after UpdateTx crossed version 2: LoadSnapshot err = %v, want ErrSnapshotNotFound", err)
	}
	mustUpdate(t, repo, "o1", func(o *SnapOrder) error { return o.AddItem("pear", 1) })
	mustUpdate(t, repo, "o1", func(o *SnapOrder) error { return o.AddItem("pear", 1) })
	if snap, err := store.LoadSnapshot(ctx, "order-o1"); err != nil || snap.Version != 4 {
		t.Fatalf("after Update crossed version 4: snapshot version %d, err %v; want 4", snap.Version, err)
	}
}

// TestPostgresUpdateTxConflictRetriedWhole: UpdateTx returns a conflict at
// once (it cannot retry inside the caller's transaction); Retry runs the
// whole transaction again, after which the change and the caller's other
// write are stored exactly once, next to the concurrent writer's event.
func TestPostgresUpdateTxConflictRetriedWhole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := txSetup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")

	// A writer saves between UpdateTx's load and its append.
	interfere := func() {
		mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
	}
	calls := 0
	err := b.inTx(t, true, func(tx *sqlx.Tx) error {
		_, err := b.repo.UpdateTx(ctx, tx, "o1", func(o *Order) error {
			calls++
			interfere()
			return o.AddItem("apple", 1)
		})
		return err
	})
	var ce *eventstore.ConcurrencyError
	if !errors.As(err, &ce) || calls != 1 || ce.Actual != 2 {
		t.Fatalf("UpdateTx: err = %v after %d calls; want the conflict (actual 2) after 1", err, calls)
	}

	attempts := 0
	err = b.repo.Retry(ctx, func(ctx context.Context) error {
		attempts++
		return b.inTx(t, true, func(tx *sqlx.Tx) error {
			if err := b.note(ctx, tx, "apple added"); err != nil {
				return err
			}
			_, err := b.repo.UpdateTx(ctx, tx, "o1", func(o *Order) error {
				if attempts == 1 {
					interfere()
				}
				return o.AddItem("apple", 1)
			})
			return err
		})
	})
	if err != nil || attempts != 2 {
		t.Fatalf("Retry: err = %v after %d attempts, want success after 2", err, attempts)
	}
	o, err := b.repo.Load(ctx, "o1")
	if err != nil {
		t.Fatal(err)
	}
	if o.Version() != 4 || o.Items["pear"] != 2 || o.Items["apple"] != 1 || b.notesCount(t) != 1 {
		t.Fatalf("version %d items %v notes %d; want version 4, two pears, one apple, one note", o.Version(), o.Items, b.notesCount(t))
	}
}

// TestPostgresRetryAfterOlderTransaction: a transaction that took its
// transaction id (here by writing a note) before another writer appended
// to the stream is refused even though the version it loaded is current
// (guarantee 3, a *ConcurrencyError with a Reason); Retry runs it again in
// a new transaction, which succeeds.
func TestPostgresRetryAfterOlderTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := txSetup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")
	var errs []error
	err := b.repo.Retry(ctx, func(ctx context.Context) error {
		err := b.inTx(t, true, func(tx *sqlx.Tx) error {
			if err := b.note(ctx, tx, "first"); err != nil { // takes a transaction id
				return err
			}
			if len(errs) == 0 {
				// A newer transaction appends and commits before our load.
				mustUpdate(t, b.repo, "o1", func(o *Order) error { return o.AddItem("pear", 1) })
			}
			_, err := b.repo.UpdateTx(ctx, tx, "o1", func(o *Order) error { return o.AddItem("apple", 1) })
			return err
		})
		errs = append(errs, err)
		return err
	})
	if err != nil || len(errs) != 2 {
		t.Fatalf("Retry: err = %v after attempts %v, want success on the second", err, errs)
	}
	var ce *eventstore.ConcurrencyError
	if !errors.As(errs[0], &ce) || ce.Reason == "" || ce.Expected != eventstore.Exact(2) || ce.Actual != 2 {
		t.Fatalf("first attempt: %v, want the older-transaction conflict at version 2", errs[0])
	}
	if v := streamVersion(t, b.store, "order-o1"); v != 3 || b.notesCount(t) != 1 {
		t.Fatalf("version %d, %d notes; want 3 and 1", v, b.notesCount(t))
	}
}

// TestPostgresUpdateTxTwiceInOneTx: UpdateTx loads outside the caller's
// transaction, so it does not see events the transaction itself appended:
// a second UpdateTx of the same aggregate in one transaction conflicts, as
// the UpdateTx godoc says (SaveTx of the aggregate kept from the first
// change works: TestPostgresTxFormsCommitWithCaller).
func TestPostgresUpdateTxTwiceInOneTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := txSetup(t, aggregate.Config{})
	mustCreate(t, b.repo, "o1")
	err := b.inTx(t, true, func(tx *sqlx.Tx) error {
		if _, err := b.repo.UpdateTx(ctx, tx, "o1", func(o *Order) error { return o.AddItem("pear", 1) }); err != nil {
			return err
		}
		_, err := b.repo.UpdateTx(ctx, tx, "o1", func(o *Order) error { return o.AddItem("apple", 1) })
		return err
	})
	var ce *eventstore.ConcurrencyError
	if !errors.As(err, &ce) || ce.Expected != eventstore.Exact(1) || ce.Actual != 2 {
		t.Fatalf("second UpdateTx in one tx: %v, want a conflict expecting 1, actual 2 (the tx's own event)", err)
	}
	if v := streamVersion(t, b.store, "order-o1"); v != 1 {
		t.Fatalf("version %d after the rolled-back tx, want 1", v)
	}
}
