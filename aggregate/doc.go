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
// Create starts a stream and fails with a conflict if it exists. Update
// loads, runs the command and saves, and on a concurrency conflict reloads
// and reruns the command, up to Config.MaxRetries times. Load and Save are
// the parts, for callers who need them separately. Metadata carried by the
// context (eventstore.WithCorrelationID, WithActor, …) is stored with every
// saved event.
//
// # Snapshots
//
// An aggregate that also implements Snapshotter is snapshotted whenever a
// save crosses a multiple of Config.SnapshotEvery events, and loaded from its
// latest snapshot plus the events after it. A snapshot whose SnapshotType
// differs from the aggregate's current one is ignored, so changing the state
// only needs a new type name.
//
// # Guarantees
//
// The package keeps DESIGN guarantee 1 (optimistic concurrency) at the
// aggregate level: Save expects the stream at the version the aggregate was
// loaded at, so of two writers that loaded the same version exactly one
// saves and the other gets a *eventstore.ConcurrencyError matching
// eventstore.ErrConcurrencyConflict, with nothing written. It relies on the
// store for guarantee 8: unregistered events and bad stream IDs are refused
// with the store's typed errors.
package aggregate
