// Package aggregate turns event streams into domain objects and back: an
// aggregate embeds Base, applies its events in Apply, and its commands Raise
// new events; a Repository loads it from its stream, saves what it raised
// with optimistic concurrency, and retries conflicting updates.
//
// # Writing an aggregate
//
// An aggregate is a struct that embeds Base, used through a pointer that
// implements Root by adding one method, Apply:
//
//	type Order struct {
//		aggregate.Base
//		Status string
//	}
//
//	func NewOrder(id string) *Order { return &Order{} }
//
//	func (o *Order) Apply(event any) {
//		switch event.(type) {
//		case OrderPlaced:
//			o.Status = "placed"
//		case OrderShipped:
//			o.Status = "shipped"
//		}
//	}
//
//	func (o *Order) Ship() error {
//		if o.Status != "placed" {
//			return ErrNotPlaced
//		}
//		aggregate.Raise(o, OrderShipped{})
//		return nil
//	}
//
// Events are plain structs registered in the store's eventstore.Registry.
// Apply sees value types only (Raise dereferences pointers), both for raised
// events and for events loaded from the store. Test aggregates without a
// store with package aggregatetest.
//
// # Loading and saving
//
// A Repository[T] keeps aggregates of type T in the streams
// "<category>-<id>" of an eventstore.Store (eventstore/postgres in
// production, eventstore/memory in tests):
//
//	orders, err := aggregate.NewRepository(store, "order", NewOrder, aggregate.Config{})
//	_, err = orders.Create(ctx, id, func(o *Order) error { return o.Place(customer) })
//	_, err = orders.Update(ctx, id, func(o *Order) error { return o.Ship() })
//
// Create starts a stream and fails with an *AlreadyExistsError
// (ErrAlreadyExists) if it exists. Update loads, runs the command and
// saves, and on a concurrency conflict waits, reloads and reruns the
// command: up to Config.MaxRetries (25) times, with exponential backoff and
// jitter from Config.RetryBackoff (5 ms) to Config.MaxRetryBackoff
// (500 ms), enough for 8 goroutines hammering one aggregate. Load and Save
// are the parts, for callers who need them separately. Metadata carried by
// the context (eventstore.WithCorrelationID, WithActor, …) is stored with
// every saved event.
//
// # The caller's transaction
//
// SaveTx, CreateTx and UpdateTx append through the store's
// eventstore.TxAppender inside a transaction the caller began, so a command
// and the caller's other writes (an idempotency key, an outbox row, a
// second aggregate) commit or roll back together. They take an
// eventstore.Tx: a *sql.Tx, a *sqlx.Tx, or the postgres.Tx handed to
// projection handlers. A conflict cannot be retried inside the
// transaction; Retry reruns the whole transaction with Update's backoff:
//
//	err := orders.Retry(ctx, func(ctx context.Context) error {
//		tx, err := db.BeginTxx(ctx, nil)
//		if err != nil {
//			return err
//		}
//		defer tx.Rollback()
//		if _, err := orders.UpdateTx(ctx, tx, id, func(o *Order) error { return o.Ship() }); err != nil {
//			return err
//		}
//		if _, err := tx.ExecContext(ctx, insertShipmentLabel, id); err != nil {
//			return err
//		}
//		return tx.Commit()
//	})
//
// The Tx forms never save snapshots (the Repository cannot know whether the
// transaction commits), and UpdateTx loads outside the transaction, which
// is correct at READ COMMITTED; see UpdateTx.
//
// # Snapshots
//
// An aggregate that also implements Snapshotter is snapshotted whenever a
// save crosses a multiple of Config.SnapshotEvery events, and loaded from its
// latest snapshot plus the events after it. A snapshot whose SnapshotType or
// schema version (SnapshotVersioner, 1 without it) differs from the
// aggregate's current one is ignored, never decoded, and replaced on the
// next save, so changing the state only needs a new version.
//
// # Schema evolution
//
// Events stored at older schema versions of their types are upcast by the
// store's registry before Apply sees them (eventstore.Registry.Upcast and
// docs/evolution.md), so Apply handles the current Go types only. An event
// written by a newer release, at a version this code does not know, makes
// Load fail with an error matching eventstore.ErrUnknownSchemaVersion
// rather than apply a guess.
//
// # Guarantees
//
// The package keeps guarantee 1 in docs/guarantees.md (optimistic
// concurrency) at the aggregate level: Save expects the stream at the
// version the aggregate was loaded at, so of two writers that loaded the
// same version exactly one saves and the other gets a
// *eventstore.ConcurrencyError matching eventstore.ErrConcurrencyConflict,
// with nothing written. Its Tx forms carry guarantee 4 (appends in the
// caller's transaction) to aggregates. It relies on the store for guarantee
// 8: unregistered events and bad stream IDs are refused with the store's
// typed errors.
package aggregate
