package aggregate

import (
	"fmt"
	"reflect"
	"slices"
)

// Base is the bookkeeping every aggregate embeds: its ID, the version of the
// last event applied from the store, and the events raised since then that
// are not saved yet.
//
// Embed it by value in the aggregate struct and use the aggregate through a
// pointer:
//
//	type Order struct {
//		aggregate.Base
//		Status string
//	}
//
//	func (o *Order) Apply(event any) { ... }
//
// The zero Base is an aggregate without ID at version 0; a Repository (or New)
// sets the ID. A Base, like the aggregate around it, is not safe for
// concurrent use: load one per request and let the Repository's optimistic
// concurrency sort out concurrent writers.
type Base struct {
	id      string
	version int64
	pending []any
	// staleSnapshot: the load ignored the stream's stored snapshot (of
	// another type or schema version, or undecodable), so the next Save
	// replaces it.
	staleSnapshot bool
}

// ID returns the aggregate's ID, the part of its stream ID after the
// category ("7f3c" in "order-7f3c").
func (b *Base) ID() string { return b.id }

// Version returns the stream version of the last event applied from the
// store (or by Replay): 0 for an aggregate never saved. Raising events does
// not change it; a successful Save moves it to the last saved event's
// version. It is the version a Save expects the stream to be at.
func (b *Base) Version() int64 { return b.version }

// Pending returns a copy of the events raised since the aggregate was loaded
// or last saved, in the order they were raised.
func (b *Base) Pending() []any { return slices.Clone(b.pending) }

// aggregateBase lets Root be satisfied by embedding Base, and only so.
func (b *Base) aggregateBase() *Base { return b }

// Root is an aggregate a Repository can load and save: a pointer to a struct
// that embeds Base and applies its events.
//
// Apply changes the aggregate's state for one event. It is called with every
// event from the store when loading and with every event passed to Raise, in
// order, and always with the event's value type (a raised *OrderPlaced is
// applied, stored and loaded as OrderPlaced), so a type switch over value
// types covers both. Apply must not fail and must not check invariants: an
// event is a fact; commands check invariants before they Raise.
//
// Embedding Base provides every method but Apply; Root cannot be satisfied
// otherwise.
type Root interface {
	Apply(event any)
	ID() string
	Version() int64
	Pending() []any
	baser
}

// baser is the part of Root only Base implements.
type baser interface{ aggregateBase() *Base }

var _ baser = (*Base)(nil)

// Raise records events as the outcome of a command on r: each is applied to
// r with r.Apply, then appended to r's pending events for the next Save.
// Pointer events are dereferenced first, so the pending and applied values
// are what a load will decode.
//
// Call it from the aggregate's command methods once the command's invariants
// hold:
//
//	func (o *Order) Ship() error {
//		if o.Status != "placed" {
//			return ErrNotPlaced
//		}
//		aggregate.Raise(o, OrderShipped{})
//		return nil
//	}
func Raise(r Root, events ...any) {
	b := r.aggregateBase()
	for _, e := range events {
		e = valueOf(e)
		r.Apply(e)
		b.pending = append(b.pending, e)
	}
}

// Replay applies events to r as history that is already stored: each is
// applied with r.Apply and advances r's Version by one, and none becomes
// pending. The Repository loads aggregates this way; tests (see
// aggregatetest) use it to build an aggregate's past without a store.
func Replay(r Root, events ...any) {
	b := r.aggregateBase()
	for _, e := range events {
		r.Apply(valueOf(e))
		b.version++
	}
}

// New returns newFunc(id) with its Base reset to id, version 0 and nothing
// pending: the empty aggregate a Repository loads or creates into. It panics
// when newFunc returns a nil pointer, which is a programming error.
func New[T Root](newFunc func(id string) T, id string) T {
	agg := newFunc(id)
	if v := reflect.ValueOf(agg); !v.IsValid() || (v.Kind() == reflect.Pointer && v.IsNil()) {
		panic(fmt.Sprintf("aggregate: the new function returned a nil %T for id %q", agg, id))
	}
	*agg.aggregateBase() = Base{id: id}
	return agg
}

// valueOf dereferences a non-nil pointer event, so that Apply always sees the
// value type the registry decodes.
func valueOf(e any) any {
	v := reflect.ValueOf(e)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		return v.Elem().Interface()
	}
	return e
}
