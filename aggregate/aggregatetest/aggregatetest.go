// Package aggregatetest tests aggregates without a database, in the
// Given/When/Then style: given the events already in an aggregate's stream,
// when a command runs, then it raises exactly these events, or fails with
// this error.
//
//	func TestShip(t *testing.T) {
//		aggregatetest.New(t, NewOrder).
//			Given(OrderPlaced{Total: 10}).
//			When(func(o *Order) error { return o.Ship() }).
//			Then(OrderShipped{})
//	}
//
// A mismatch fails the test with a line diff of the expected and raised
// events, each rendered with %#v. Given events are applied with
// aggregate.Replay, so the aggregate's Version counts them, and the
// command's events with aggregate.Raise, exactly as in production.
//
// The package is stable; it never touches a store.
package aggregatetest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
)

// TB is the part of testing.TB a Scenario reports through. *testing.T,
// *testing.B and *testing.F satisfy it; so does a recorder in a test of the
// scenario's own failure messages.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// DefaultID is the ID of the aggregate a Scenario tests, unless WithID
// changes it.
const DefaultID = "test"

// Scenario is one Given/When/Then test of an aggregate of type T. Build it
// with New, then call Given (optional), When and one of Then, ThenNoEvents or
// ThenError; each Scenario runs once. A Scenario is not safe for concurrent
// use.
type Scenario[T aggregate.Root] struct {
	t        TB
	newFunc  func(id string) T
	id       string
	given    []any
	when     func(T) error
	registry *eventstore.Registry
	done     bool
}

// New starts a Scenario for the aggregates newFunc constructs (the function
// given to aggregate.NewRepository).
func New[T aggregate.Root](t TB, newFunc func(id string) T) *Scenario[T] {
	return &Scenario[T]{t: t, newFunc: newFunc, id: DefaultID}
}

// WithID sets the aggregate's ID, DefaultID otherwise.
func (s *Scenario[T]) WithID(id string) *Scenario[T] {
	s.id = id
	return s
}

// WithRegistry makes the Scenario check that every given and raised event is
// registered in r and survives its JSON round trip unchanged (an unexported
// or untagged field would not), as a stored event must. Without it, events
// are compared as raised.
func (s *Scenario[T]) WithRegistry(r *eventstore.Registry) *Scenario[T] {
	s.registry = r
	return s
}

// Given sets the events already stored for the aggregate, oldest first; they
// are applied, in order, before the command runs. Calls add up.
func (s *Scenario[T]) Given(events ...any) *Scenario[T] {
	s.given = append(s.given, events...)
	return s
}

// When sets the command under test: fn runs on the aggregate rebuilt from
// the Given events, and raises events or returns an error.
func (s *Scenario[T]) When(fn func(T) error) *Scenario[T] {
	s.when = fn
	return s
}

// Then runs the scenario and reports an error unless the command succeeded
// and raised exactly want, in order, compared with reflect.DeepEqual. It
// returns the aggregate after the command, for checks of its state.
func (s *Scenario[T]) Then(want ...any) T {
	s.t.Helper()
	agg, err, ok := s.run()
	if !ok {
		return agg
	}
	got := agg.Pending()
	if err != nil {
		s.t.Errorf("aggregatetest: When returned error %v; want events:\n%s", err, render(want))
		return agg
	}
	s.checkRoundTrip("raised", got)
	if !equalEvents(normalize(want), got) {
		s.t.Errorf("aggregatetest: raised events differ (-want +got):\n%s", Diff(want, got))
	}
	return agg
}

// ThenNoEvents runs the scenario and reports an error unless the command
// succeeded without raising an event. It returns the aggregate after the
// command.
func (s *Scenario[T]) ThenNoEvents() T {
	s.t.Helper()
	return s.Then()
}

// ThenError runs the scenario and reports an error unless the command
// returned an error matching want (errors.Is) and raised nothing: a
// rejected command must leave no events behind. It returns the aggregate
// after the command.
func (s *Scenario[T]) ThenError(want error) T {
	s.t.Helper()
	if want == nil {
		s.t.Fatalf("aggregatetest: ThenError(nil): use ThenNoEvents or Then to expect success")
		var zero T
		return zero
	}
	agg, err, ok := s.run()
	if !ok {
		return agg
	}
	got := agg.Pending()
	switch {
	case err == nil:
		s.t.Errorf("aggregatetest: When returned no error; want error %v\nraised events:\n%s", want, render(got))
	case !errors.Is(err, want):
		s.t.Errorf("aggregatetest: When returned error %v; want an error matching %v", err, want)
	case len(got) > 0:
		s.t.Errorf("aggregatetest: When returned the expected error %v but raised events; a rejected command must raise none:\n%s", err, render(got))
	}
	return agg
}

// run builds the aggregate from the Given events and runs the command. ok
// is false when the scenario is misused, already reported with Fatalf.
func (s *Scenario[T]) run() (agg T, err error, ok bool) {
	s.t.Helper()
	switch {
	case s.done:
		s.t.Fatalf("aggregatetest: the scenario already ran; start another with New")
		return agg, nil, false
	case s.when == nil:
		s.t.Fatalf("aggregatetest: When was not called; it sets the command under test")
		return agg, nil, false
	}
	s.done = true
	s.checkRoundTrip("given", s.given)
	agg = aggregate.New(s.newFunc, s.id)
	aggregate.Replay(agg, s.given...)
	return agg, s.when(agg), true
}

// checkRoundTrip reports events that the registry cannot store unchanged.
func (s *Scenario[T]) checkRoundTrip(what string, events []any) {
	s.t.Helper()
	if s.registry == nil {
		return
	}
	for i, e := range events {
		e = normalize([]any{e})[0]
		name, payload, err := s.registry.Encode(e)
		if err != nil {
			s.t.Errorf("aggregatetest: %s event %d (%T) cannot be stored: %v", what, i, e, err)
			continue
		}
		back, err := s.registry.Decode(name, payload)
		if err != nil {
			s.t.Errorf("aggregatetest: %s event %d (%T) cannot be decoded: %v", what, i, e, err)
			continue
		}
		if !reflect.DeepEqual(e, back) {
			s.t.Errorf("aggregatetest: %s event %d (%T) changes in its JSON round trip (unexported or untagged fields?):\nbefore: %#v\nafter:  %#v\njson:   %s", what, i, e, e, back, payload)
		}
	}
}

// normalize dereferences pointer events, as aggregate.Raise does, so that
// want may list either.
func normalize(events []any) []any {
	out := make([]any, len(events))
	for i, e := range events {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer && !v.IsNil() {
			e = v.Elem().Interface()
		}
		out[i] = e
	}
	return out
}

// equalEvents reports whether two event lists are equal element by element;
// nil and empty lists are equal.
func equalEvents(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !reflect.DeepEqual(a[i], b[i]) {
			return false
		}
	}
	return true
}

// render formats events one per line with %#v, or "(none)".
func render(events []any) string {
	if len(events) == 0 {
		return "\t(none)\n"
	}
	var b strings.Builder
	for _, e := range normalize(events) {
		fmt.Fprintf(&b, "\t%#v\n", e)
	}
	return b.String()
}
