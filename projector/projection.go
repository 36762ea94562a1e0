package projector

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// Handler applies records to a read model. It is the extension point of a
// Projection; build one with Batch, Records or NewHandlers and On.
//
// Handle receives the records of one batch, in feed order, whose Type is in
// EventTypes (all records when EventTypes returns nil), with Data decoded by
// the registry. It must write only through tx: the runner commits tx together
// with the projection's checkpoint, or rolls both back, so an effect is
// applied exactly once (guarantee 5 in docs/guarantees.md). It must not keep state in memory
// across calls that a rolled-back tx would leave wrong, and must not commit or
// roll back tx. A Runner may call a Handler concurrently for different
// projections and for different partitions of one projection (see
// Projection.Partitions), never concurrently for the same partition. A Handler used with
// InlineHook runs in each appender's transaction, and one used with an
// Inbox in each message's: both are called concurrently (also
// with duplicates of one message), so such a Handler must be safe for
// concurrent use.
type Handler interface {
	// EventTypes returns the registered event type names the handler
	// applies; records of other types are passed over (the checkpoint still
	// moves past them). nil means every type.
	EventTypes() []string
	// Handle applies records through tx. An error rolls the batch back.
	Handle(ctx context.Context, tx postgres.Tx, records []eventstore.Record) error
}

// BatchFunc applies a whole batch of records through tx. Seeing the batch lets
// a projection write it with one multi-row statement.
type BatchFunc func(ctx context.Context, tx postgres.Tx, records []eventstore.Record) error

// RecordFunc applies one record through tx.
type RecordFunc func(ctx context.Context, tx postgres.Tx, record eventstore.Record) error

// Batch returns a Handler that passes each batch's records of the given types
// (every type when types is empty) to fn at once.
func Batch(fn BatchFunc, types ...string) Handler {
	return batchHandler{fn: fn, types: nilIfEmpty(types)}
}

// Records returns a Handler that calls fn once per record of the given types
// (every type when types is empty), in feed order.
func Records(fn RecordFunc, types ...string) Handler {
	return batchHandler{types: nilIfEmpty(types), fn: func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		for _, r := range recs {
			if err := fn(ctx, tx, r); err != nil {
				return recordError(r, err)
			}
		}
		return nil
	}}
}

type batchHandler struct {
	fn    BatchFunc
	types []string
}

func (b batchHandler) EventTypes() []string { return b.types }
func (b batchHandler) Handle(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
	return b.fn(ctx, tx, recs)
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

// recordError names the record a handler failed on.
func recordError(r eventstore.Record, err error) error {
	return &recordErr{id: r.ID, err: fmt.Errorf("event %s (%s, stream %q version %d, position %s): %w", r.ID, r.Type, r.StreamID, r.StreamVersion, r.Position, err)}
}

// recordErr is a handler failure that names its record, so that a
// projection that stops on it can record which event it stopped on (and
// Skip can pass over that event).
type recordErr struct {
	id  uuid.UUID
	err error
}

func (e *recordErr) Error() string { return e.err.Error() }
func (e *recordErr) Unwrap() error { return e.err }

// failedEvent returns the event err names (the innermost one a handler
// named), uuid.Nil when it names none.
func failedEvent(err error) uuid.UUID {
	id := uuid.Nil
	for err != nil {
		if re, ok := err.(*recordErr); ok {
			id = re.id
		}
		err = errors.Unwrap(err)
	}
	return id
}

// Handlers is a Handler built from one typed function per event type with On.
// Its EventTypes are the types given to On. Build it before the runner
// starts; it is safe for concurrent use once built.
type Handlers struct {
	reg   *eventstore.Registry
	byTyp map[string]RecordFunc
	types []string
	err   error
}

// NewHandlers returns an empty Handlers that maps Go event types to their
// names with reg.
func NewHandlers(reg *eventstore.Registry) *Handlers {
	return &Handlers{reg: reg, byTyp: map[string]RecordFunc{}}
}

// On registers fn for the event type E (E must be registered in h's
// registry) and returns h for chaining. fn receives the record and its Data
// as an E (decoded from the payload if Data holds something else, such as a
// *E from an inline append). A registration error (E not registered, a nil
// registry, E handled twice) is kept and returned by Err; NewRunner and
// InlineHook refuse a Handlers with an error.
func On[E any](h *Handlers, fn func(ctx context.Context, tx postgres.Tx, record eventstore.Record, event E) error) *Handlers {
	if h.err != nil {
		return h
	}
	if h.reg == nil {
		h.err = fmt.Errorf("projector: On: %w", &eventstore.InvalidArgumentError{Field: "registry", Reason: "NewHandlers was given a nil registry"})
		return h
	}
	name, err := h.reg.NameOf(*new(E))
	if err != nil {
		h.err = fmt.Errorf("projector: On: %w", err)
		return h
	}
	if _, dup := h.byTyp[name]; dup {
		h.err = fmt.Errorf("projector: On: %w", &eventstore.InvalidArgumentError{Field: "handler", Reason: fmt.Sprintf("event type %q is handled twice", name)})
		return h
	}
	reg := h.reg
	h.byTyp[name] = func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
		var e E
		switch d := r.Data.(type) {
		case E:
			e = d
		case *E:
			if d == nil {
				return fmt.Errorf("nil *%T in record data", e)
			}
			e = *d
		default:
			v, err := reg.Decode(r.Type, r.Payload)
			if err != nil {
				return err
			}
			var ok bool
			if e, ok = v.(E); !ok {
				return fmt.Errorf("event type %q decodes to %T, not %T", r.Type, v, e)
			}
		}
		return fn(ctx, tx, r, e)
	}
	h.types = append(h.types, name)
	return h
}

// OnType registers an untyped fn for the event type name and returns h.
func (h *Handlers) OnType(name string, fn RecordFunc) *Handlers {
	if h.err != nil {
		return h
	}
	if _, dup := h.byTyp[name]; dup {
		h.err = fmt.Errorf("projector: OnType: %w", &eventstore.InvalidArgumentError{Field: "handler", Reason: fmt.Sprintf("event type %q is handled twice", name)})
		return h
	}
	h.byTyp[name] = fn
	h.types = append(h.types, name)
	return h
}

// Err returns the first registration error, if any.
func (h *Handlers) Err() error { return h.err }

// EventTypes returns the types registered with On and OnType.
func (h *Handlers) EventTypes() []string {
	if len(h.types) == 0 {
		// A Handlers without handlers handles nothing, not everything.
		return []string{}
	}
	return slices.Clone(h.types)
}

// Handle calls the function registered for each record's type, in order.
func (h *Handlers) Handle(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
	for _, r := range recs {
		fn, ok := h.byTyp[r.Type]
		if !ok {
			continue
		}
		if err := fn(ctx, tx, r); err != nil {
			return recordError(r, err)
		}
	}
	return nil
}

// Projection is a read model built from the events feed.
//
// Setup, Reset, Activate and the Handler write the projection's own tables;
// they belong to one Version of the projection, so a new version can write
// new tables beside the old ones (see Version and docs/projections.md).
type Projection struct {
	// Name identifies the projection in checkpoints, status and logs. It
	// must pass postgres.ValidateIdentifier (ASCII letters, digits,
	// underscores), so it can also prefix table names. Required.
	Name string
	// Version is the version of the read model's shape and code; 0 means 1.
	// Running a higher Version than the live one fills the new version from
	// the start of the feed beside the live one, then switches it live in
	// one transaction once it has caught up (blue/green rebuild): its
	// Activate runs in that transaction and the lower versions are retired.
	Version int
	// Handler applies records. Required.
	Handler Handler
	// Setup creates the version's tables. The runner calls it once, when
	// it first registers this version (in the transaction that creates its
	// checkpoint). Optional: create tables in your own migrations instead.
	Setup func(ctx context.Context, tx postgres.Tx) error
	// Reset empties the version's tables for Rebuild (e.g. TRUNCATE).
	// Optional; Rebuild refuses a projection without it.
	Reset func(ctx context.Context, tx postgres.Tx) error
	// Activate makes this version the one readers see, e.g.
	// CREATE OR REPLACE VIEW orders AS SELECT * FROM orders_v2. It runs in
	// the transaction that switches the version live, so readers never see
	// a half-built model. Optional.
	Activate func(ctx context.Context, tx postgres.Tx) error
	// Partitions splits the projection into that many partitions by
	// stream (0 means 1; at most PartitionsLimit), applied in parallel:
	// the records of a stream belong to partition PartitionOf(streamID,
	// Partitions). Each partition has its own checkpoint and its own
	// leader (any process may lead any partition; see
	// Config.MaxPartitions), reads the whole feed, and applies only its
	// streams' records, in feed order, each exactly once; its checkpoint
	// still moves over the others' records. Records of different streams
	// may therefore be applied out of feed order, and the Handler is
	// called concurrently for different partitions: it must be safe for
	// that, and the read model must not depend on the order of events of
	// different streams (per-stream rows, or commutative updates).
	//
	// The count is fixed for a Version's life, because a stream's
	// partition depends on it: a runner refuses to start a registered
	// version with another count (a *PartitionsError matching
	// ErrPartitionsChanged). To change it, deploy a new Version with the
	// new count: it fills from the start of the feed beside the live one
	// and switches live once every one of its partitions has caught up
	// (see docs/projections.md).
	Partitions int
	// DeadLetter opts in to parking events the handler keeps failing on:
	// after Config.MaxRetries failed attempts at a batch, the runner applies
	// it record by record, stores each failing record with its error in the
	// dead_letters table and goes on. Without it (the default) the
	// projection stops with the error in its status; others go on.
	DeadLetter bool
}

func (p Projection) version() int {
	if p.Version == 0 {
		return 1
	}
	return p.Version
}

func (p Projection) partitions() int {
	if p.Partitions == 0 {
		return 1
	}
	return p.Partitions
}

// PartitionsLimit is the most partitions a Projection may have.
const PartitionsLimit = 256

// PartitionOf returns the partition, of partitions (at least 1), that
// applies the records of streamID: the FNV-32a hash of the stream ID, modulo
// partitions. It is stable across processes, versions and releases, so a
// stream always belongs to the same partition for a given count.
func PartitionOf(streamID string, partitions int) int {
	if partitions <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(streamID))
	return int(h.Sum32() % uint32(partitions))
}

func (p Projection) validate() error {
	if err := postgres.ValidateIdentifier(p.Name); err != nil {
		return fmt.Errorf("projection name: %w", err)
	}
	if p.Version < 0 {
		return fmt.Errorf("projection %q: Version: %w", p.Name, &eventstore.InvalidArgumentError{Field: "Version", Reason: fmt.Sprintf("must not be negative, got %d", p.Version)})
	}
	if p.Partitions < 0 || p.Partitions > PartitionsLimit {
		return fmt.Errorf("projection %q: Partitions: %w", p.Name, &eventstore.InvalidArgumentError{Field: "Partitions", Reason: fmt.Sprintf("must be between 0 (one partition) and %d, got %d", PartitionsLimit, p.Partitions)})
	}
	if p.Handler == nil {
		return fmt.Errorf("projection %q: Handler: %w", p.Name, &eventstore.InvalidArgumentError{Field: "Handler", Reason: "must not be nil"})
	}
	if h, ok := p.Handler.(interface{ Err() error }); ok {
		if err := h.Err(); err != nil {
			return fmt.Errorf("projection %q: Handler: %w", p.Name, err)
		}
	}
	return nil
}

// wants reports whether h applies records of type typ.
func wants(types []string, typ string) bool {
	return types == nil || slices.Contains(types, typ)
}

// wantsRaw reports whether a stored event may read as a record of a type
// in types, after upcasting (eventstore.Registry.ReadsAs). An event the
// registry cannot read (a version newer than it knows, or unknown type) is
// wanted by the projections that handle its stored type, which then stop on
// it; the others pass over it.
func wantsRaw(types []string, reg *eventstore.Registry, rr eventstore.RawRecord) bool {
	if types == nil {
		return true
	}
	names := reg.ReadsAs(rr.Type, rr.SchemaVersion)
	if names == nil {
		return wants(types, rr.Type)
	}
	for _, n := range names {
		if wants(types, n) {
			return true
		}
	}
	return false
}
