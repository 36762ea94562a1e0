package projector

import (
	"context"
	"fmt"
	"reflect"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// InlineHook returns a postgres.AppendHook that applies projections inside
// every append's transaction (set it in postgres.Config.AppendHooks): their
// read models commit or roll back with the events and never lag, and a
// handler error rolls the append back and is returned by Append.
//
// Records reach the handlers as written: positions, versions and
// recorded_at set, and Data as given to Append with a pointer dereferenced.
// Inline projections have no checkpoint, so Setup, Reset, Activate,
// Version, Partitions and DeadLetter are ignored: create their tables in
// your migrations. Do not also run an inline projection in a Runner, or
// events are applied twice.
// Inline handlers lengthen every append's transaction and run once per
// append, so keep them to a few statements; prefer a Runner unless the read
// model must never lag. Appends made with AppendTx run the hook in the
// caller's transaction too.
//
// It returns an error matching eventstore.ErrInvalidArgument (or a Handlers'
// Err) for an invalid projection or a duplicate name. The hook is safe for
// concurrent use if the projections' handlers are: concurrent appends call
// them concurrently.
func InlineHook(projections ...Projection) (postgres.AppendHook, error) {
	seen := map[string]bool{}
	for _, p := range projections {
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("projector: inline hook: %w", err)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("projector: inline hook: %w", &eventstore.InvalidArgumentError{Field: "projections", Reason: fmt.Sprintf("projection %q is given twice", p.Name)})
		}
		seen[p.Name] = true
	}
	type inline struct {
		name  string
		types []string
		h     Handler
	}
	ps := make([]inline, len(projections))
	for i, p := range projections {
		ps[i] = inline{name: p.Name, types: p.Handler.EventTypes(), h: p.Handler}
	}
	return func(ctx context.Context, tx postgres.Tx, records []eventstore.Record) error {
		var recs []eventstore.Record
		for _, p := range ps {
			recs = recs[:0]
			for _, r := range records {
				if wants(p.types, r.Type) {
					r.Data = deref(r.Data)
					recs = append(recs, r)
				}
			}
			if len(recs) == 0 {
				continue
			}
			if err := p.h.Handle(ctx, tx, recs); err != nil {
				return fmt.Errorf("projector: inline projection %q: %w", p.name, err)
			}
		}
		return nil
	}, nil
}

// deref returns the value a non-nil pointer points to, or v.
func deref(v any) any {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		return rv.Elem().Interface()
	}
	return v
}
