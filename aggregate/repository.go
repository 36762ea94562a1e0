package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/telemetry"
)

// Defaults of Config.
const (
	// SnapshotEveryDefault is Config.SnapshotEvery's default.
	SnapshotEveryDefault = 100
	// MaxRetriesDefault is Config.MaxRetries's default. With the default
	// backoff it lets 8 goroutines that update one aggregate at once on
	// PostgreSQL all succeed, on a busy machine too: measured on 2 shared
	// cores under 5x overload, the unluckiest Update of 160 needed 12
	// retries and 2.8 s; 25 retries wait at least 4.8 s.
	MaxRetriesDefault = 25
	// RetryBackoffDefault is Config.RetryBackoff's default.
	RetryBackoffDefault = 5 * time.Millisecond
	// MaxRetryBackoffDefault is Config.MaxRetryBackoff's default.
	MaxRetryBackoffDefault = 500 * time.Millisecond
)

// Config tunes a Repository. The zero value means all defaults.
type Config struct {
	// SnapshotEvery saves a snapshot of an aggregate that implements
	// Snapshotter whenever a Save moves its version across a multiple of
	// SnapshotEvery (with 100: on reaching or passing versions 100, 200, …).
	// Defaults to SnapshotEveryDefault (100); must not be negative.
	SnapshotEvery int
	// DisableSnapshots stops the Repository from saving and loading
	// snapshots even when the aggregate implements Snapshotter.
	DisableSnapshots bool
	// MaxRetries bounds how often Update (and Retry) runs again after a
	// concurrency conflict: at most 1+MaxRetries attempts. Defaults to
	// MaxRetriesDefault (25); must not be negative. Raise it for an
	// aggregate that more writers change at once.
	MaxRetries int
	// DisableRetries makes Update and Retry return the first concurrency
	// conflict.
	DisableRetries bool
	// RetryBackoff is the ceiling of the wait before the first retry; the
	// ceiling doubles with every further retry, up to MaxRetryBackoff.
	// Each wait is drawn at random between half the ceiling and the
	// ceiling, so writers that collided spread out instead of colliding
	// again. Defaults to RetryBackoffDefault (5 ms); must not be negative.
	RetryBackoff time.Duration
	// MaxRetryBackoff caps the ceiling of the waits between retries.
	// Defaults to MaxRetryBackoffDefault (500 ms), or RetryBackoff when
	// that is larger; must not be negative or less than RetryBackoff. With
	// the defaults, the waits of an Update that uses all its retries add up
	// to between about 4.8 and 9.6 s (ctx bounds them).
	MaxRetryBackoff time.Duration
	// Logger receives a Warn when a snapshot cannot be decoded or saved and
	// a Debug per retried conflict. Defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider gives the Repository's tracer: a span per Load,
	// Create, CreateTx, Update and UpdateTx, named "<operation>
	// <category>", whose children are the store's reads and appends (see
	// docs/observability.md). Defaults to the global provider,
	// otel.GetTracerProvider(), a no-op until the application installs one:
	// until then the Repository starts no span at all.
	TracerProvider trace.TracerProvider
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = SnapshotEveryDefault
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = MaxRetriesDefault
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = RetryBackoffDefault
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = max(MaxRetryBackoffDefault, c.RetryBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate returns an error naming the first invalid field of c.
func (c Config) Validate() error {
	switch {
	case c.SnapshotEvery < 0:
		return fmt.Errorf("aggregate: invalid config: SnapshotEvery must not be negative, got %d (set DisableSnapshots to turn snapshots off)", c.SnapshotEvery)
	case c.MaxRetries < 0:
		return fmt.Errorf("aggregate: invalid config: MaxRetries must not be negative, got %d (set DisableRetries to turn retries off)", c.MaxRetries)
	case c.RetryBackoff < 0:
		return fmt.Errorf("aggregate: invalid config: RetryBackoff must not be negative, got %s", c.RetryBackoff)
	case c.MaxRetryBackoff < 0:
		return fmt.Errorf("aggregate: invalid config: MaxRetryBackoff must not be negative, got %s", c.MaxRetryBackoff)
	case c.MaxRetryBackoff > 0 && c.MaxRetryBackoff < c.RetryBackoff:
		return fmt.Errorf("aggregate: invalid config: MaxRetryBackoff (%s) must not be less than RetryBackoff (%s)", c.MaxRetryBackoff, c.RetryBackoff)
	}
	return nil
}

// Repository loads and saves aggregates of one type T, each in the stream
// "<category>-<id>" of an eventstore.Store.
//
// A Repository is safe for concurrent use; the aggregates it returns are
// not. Writers of the same aggregate are kept apart by optimistic
// concurrency: Save appends with the version the aggregate was loaded at and
// fails with an error matching eventstore.ErrConcurrencyConflict when another
// writer got there first. Update retries such conflicts with backoff, and
// Retry does the same for a transaction of the caller's that uses the Tx
// forms (SaveTx, CreateTx, UpdateTx).
type Repository[T Root] struct {
	store    eventstore.Store
	category string
	newFunc  func(id string) T
	cfg      Config
	logger   *slog.Logger
	tracer   trace.Tracer
	gate     telemetry.Gate
	names    spanNames
}

// NewRepository returns a Repository of the aggregates newFunc constructs,
// stored in store under category (the stream ID prefix, e.g. "order").
// newFunc returns an empty aggregate, a non-nil pointer; the Repository sets
// its Base itself.
//
// It returns an error when store or newFunc is nil, category is empty,
// contains '-' or is not a valid stream ID, or cfg is invalid.
func NewRepository[T Root](store eventstore.Store, category string, newFunc func(id string) T, cfg Config) (*Repository[T], error) {
	switch {
	case store == nil:
		return nil, errors.New("aggregate: store must not be nil")
	case newFunc == nil:
		return nil, errors.New("aggregate: newFunc must not be nil")
	case category == "":
		return nil, errors.New("aggregate: category must not be empty")
	case strings.Contains(category, "-"):
		return nil, fmt.Errorf("aggregate: category %q must not contain '-', which separates it from the ID in stream IDs", category)
	}
	if err := eventstore.ValidateStreamID(category); err != nil {
		return nil, fmt.Errorf("aggregate: category: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	return &Repository[T]{
		store:    store,
		category: category,
		newFunc:  newFunc,
		cfg:      cfg,
		logger:   cfg.Logger.With("component", "aggregate", "category", category),
		tracer:   telemetry.Tracer(cfg.TracerProvider, Scope),
		gate:     telemetry.NewTracerGate(cfg.TracerProvider),
		names:    newSpanNames(category),
	}, nil
}

// Category returns the stream ID prefix of the Repository's aggregates.
func (r *Repository[T]) Category() string { return r.category }

// Config returns a copy of the Repository's configuration, defaults filled.
func (r *Repository[T]) Config() Config { return r.cfg }

// StreamID returns the stream ID of the aggregate id: "<category>-<id>".
func (r *Repository[T]) StreamID(id string) string { return eventstore.StreamID(r.category, id) }

// New returns an empty aggregate with ID id at version 0, not stored: the
// start of a new aggregate to Save (Create does this for you).
func (r *Repository[T]) New(id string) T { return New(r.newFunc, id) }

// loadPageSize is how many stored events Load reads per query.
const loadPageSize = 1000

// Load returns the aggregate id rebuilt from its stream: from its latest
// snapshot, when T implements Snapshotter, snapshots are enabled and one of
// the current SnapshotType and snapshot schema version exists, then every
// event after it.
//
// Events stored at older schema versions are upcast by the store's registry
// before Apply sees them (docs/evolution.md): Apply gets the current Go
// types only. A stored event that upcasters split is applied as the events
// it reads as, in order; one they drop is not applied. Either way the
// aggregate's Version is the stream's stored version, so optimistic
// concurrency is unchanged.
//
// It returns an error matching eventstore.ErrStreamNotFound when the stream
// has no events; one matching eventstore.ErrUnknownSchemaVersion (an
// *eventstore.SchemaVersionError) when an event was written with a schema
// version newer than this code's registry knows (by a newer deployment:
// the aggregate is not loaded from a guess, see docs/evolution.md for the
// deploy order); and the store's other errors (wrapped). ctx bounds the
// reads.
func (r *Repository[T]) Load(ctx context.Context, id string) (T, error) {
	ctx, op := r.startOp(ctx, r.names.load, id)
	agg, err := r.load(ctx, id)
	var version int64
	if err == nil {
		version = agg.aggregateBase().version
	}
	op.end(version, err)
	return agg, err
}

func (r *Repository[T]) load(ctx context.Context, id string) (T, error) {
	streamID := r.StreamID(id)
	agg, err := r.loadSnapshot(ctx, id, streamID)
	if err != nil {
		var zero T
		return zero, err
	}
	b := agg.aggregateBase()
	reg := r.store.Registry()
	var recs []eventstore.Record
	// Raw, to count every stored event, also those that read as none.
	for {
		raws, err := r.store.ReadStreamRaw(ctx, streamID, b.version+1, loadPageSize)
		if err == nil {
			err = reg.Decrypt(ctx, raws) // personal data (docs/compliance.md)
		}
		if err != nil {
			var zero T
			return zero, fmt.Errorf("aggregate: load %s: %w", streamID, err)
		}
		for _, raw := range raws {
			if raw.StreamVersion != b.version+1 {
				var zero T
				return zero, fmt.Errorf("aggregate: load %s: read version %d after version %d", streamID, raw.StreamVersion, b.version)
			}
			if recs, err = raw.AppendDecoded(recs[:0], reg); err != nil {
				var zero T
				return zero, fmt.Errorf("aggregate: load %s: %w", streamID, err)
			}
			for _, rec := range recs {
				agg.Apply(rec.Data)
			}
			b.version = raw.StreamVersion
		}
		if len(raws) < loadPageSize {
			break
		}
	}
	if b.version == 0 {
		var zero T
		return zero, fmt.Errorf("aggregate: load %s: %w", streamID, eventstore.ErrStreamNotFound)
	}
	return agg, nil
}

// loadSnapshot returns a fresh aggregate, restored from the stream's
// snapshot when there is a usable one.
func (r *Repository[T]) loadSnapshot(ctx context.Context, id, streamID string) (T, error) {
	agg := r.New(id)
	s, ok := any(agg).(Snapshotter)
	if !ok || r.cfg.DisableSnapshots {
		return agg, nil
	}
	snap, err := r.store.LoadSnapshot(ctx, streamID)
	switch {
	case errors.Is(err, eventstore.ErrSnapshotNotFound):
		return agg, nil
	case err != nil:
		var zero T
		return zero, fmt.Errorf("aggregate: load %s: snapshot: %w", streamID, err)
	case snap.Type != s.SnapshotType():
		r.logger.Debug("ignoring snapshot of another type; the next save replaces it", "stream_id", streamID, "snapshot_type", snap.Type, "want_type", s.SnapshotType())
		agg.aggregateBase().staleSnapshot = true
		return agg, nil
	case max(snap.SchemaVersion, 1) != snapshotVersion(s):
		r.logger.Debug("ignoring snapshot of another schema version; the next save replaces it", "stream_id", streamID,
			"snapshot_schema_version", snap.SchemaVersion, "want_schema_version", snapshotVersion(s))
		agg.aggregateBase().staleSnapshot = true
		return agg, nil
	}
	if err := s.UnmarshalSnapshot(snap.Payload); err != nil {
		r.logger.Warn("cannot decode snapshot, replaying the stream; the next save replaces it", "stream_id", streamID, "version", snap.Version, "error", err)
		agg = r.New(id)
		agg.aggregateBase().staleSnapshot = true
		return agg, nil
	}
	agg.aggregateBase().version = snap.Version
	return agg, nil
}

// Save appends agg's pending events to its stream, expecting the stream to
// be at agg.Version() (no stream at all for version 0), with the metadata
// ctx carries (see eventstore.WithMetadata). On success the pending events
// are cleared and agg's Version becomes the last event's; then, if the save
// crossed a multiple of Config.SnapshotEvery, a snapshot is saved (a failed
// snapshot is logged, not returned: the events are committed).
//
// With no pending events Save writes nothing and returns a result with
// LastVersion agg.Version() and no EventIDs.
//
// Errors are the store's, wrapped: a *eventstore.ConcurrencyError (matching
// eventstore.ErrConcurrencyConflict) when another writer saved first,
// eventstore.ErrUnknownEventType for an unregistered event, and so on. On
// error agg is unchanged, pending events included. ctx bounds the append and
// the snapshot.
func (r *Repository[T]) Save(ctx context.Context, agg T) (eventstore.AppendResult, error) {
	before := agg.aggregateBase().version
	res, err := r.save(ctx, agg, r.store.Append)
	if err != nil || len(res.EventIDs) == 0 {
		return res, err
	}
	r.maybeSnapshot(ctx, agg, res.StreamID, before)
	return res, nil
}

// SaveTx is Save inside the caller's transaction tx: agg's pending events
// are appended through the store's AppendTx and commit or roll back with
// whatever else the caller writes in tx (guarantee 4 in
// docs/guarantees.md). The caller begins tx, commits it and, on any error
// from SaveTx, rolls it back.
//
// On success agg's pending events are cleared and its Version moves to the
// last event's, as with Save, although tx has not committed yet: if the
// caller then rolls tx back, agg no longer matches the store, so discard
// it and load the aggregate again. Saving agg again in the same tx is
// fine: tx sees its own events.
//
// SaveTx never saves a snapshot: the Repository cannot know whether tx
// commits, and a snapshot of events that were rolled back would make every
// later load skip the events that replace them. An aggregate written only
// through the Tx forms is therefore not snapshotted; the next Save that
// crosses a multiple of Config.SnapshotEvery snapshots it.
//
// Errors: Save's, plus an error matching ErrTxNotSupported when the
// Repository's store does not implement eventstore.TxAppender (the
// in-memory store, or a wrapper that does not forward AppendTx), and an
// *eventstore.InvalidArgumentError for a nil tx; in both cases nothing is
// done. A conflict may also be a *eventstore.ConcurrencyError with a
// Reason: tx got its transaction id before the transaction that wrote the
// stream's last event (guarantee 3): roll back and retry in a new
// transaction, e.g. with Retry. ctx bounds the append. tx is used by one
// goroutine at a time.
func (r *Repository[T]) SaveTx(ctx context.Context, tx eventstore.Tx, agg T) (eventstore.AppendResult, error) {
	appendTx, err := r.txAppend(tx)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("aggregate: save %s: %w", r.StreamID(agg.aggregateBase().id), err)
	}
	return r.save(ctx, agg, appendTx)
}

// appendFunc is Store.Append, or TxAppender.AppendTx bound to a transaction.
type appendFunc func(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error)

// txAppend returns the store's AppendTx bound to tx, or why there is none.
func (r *Repository[T]) txAppend(tx eventstore.Tx) (appendFunc, error) {
	if tx == nil {
		return nil, &eventstore.InvalidArgumentError{Field: "tx", Reason: "must not be nil"}
	}
	ta, ok := r.store.(eventstore.TxAppender)
	if !ok {
		return nil, fmt.Errorf("%w: the Repository's store, a %T, does not implement eventstore.TxAppender (use the PostgreSQL store; a wrapping store must forward AppendTx)", ErrTxNotSupported, r.store)
	}
	return func(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events []eventstore.Event) (eventstore.AppendResult, error) {
		return ta.AppendTx(ctx, tx, streamID, expected, events)
	}, nil
}

// save appends agg's pending events with appendFn, expecting agg's version,
// and on success moves agg to the saved version.
func (r *Repository[T]) save(ctx context.Context, agg T, appendFn appendFunc) (eventstore.AppendResult, error) {
	b := agg.aggregateBase()
	streamID := r.StreamID(b.id)
	if b.id == "" {
		return eventstore.AppendResult{}, fmt.Errorf("aggregate: save: %w", &eventstore.InvalidArgumentError{Field: "aggregate ID", Reason: "is empty: construct aggregates with Repository.New, Create or Load"})
	}
	if len(b.pending) == 0 {
		return eventstore.AppendResult{StreamID: streamID, LastVersion: b.version}, nil
	}
	events := make([]eventstore.Event, len(b.pending))
	for i, e := range b.pending {
		events[i] = eventstore.Event{Data: e}
	}
	res, err := appendFn(ctx, streamID, eventstore.Exact(b.version), events)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("aggregate: save %s: %w", streamID, err)
	}
	b.version = res.LastVersion
	b.pending = nil
	return res, nil
}

// maybeSnapshot saves a snapshot of agg when the policy asks for one, or
// when its load ignored a stored snapshot of another type or version.
func (r *Repository[T]) maybeSnapshot(ctx context.Context, agg T, streamID string, before int64) {
	s, ok := any(agg).(Snapshotter)
	if !ok || r.cfg.DisableSnapshots {
		return
	}
	b := agg.aggregateBase()
	every := int64(r.cfg.SnapshotEvery)
	after := b.version
	if before/every == after/every && !b.staleSnapshot {
		return
	}
	payload, err := s.MarshalSnapshot()
	if err == nil && !json.Valid(payload) {
		err = errors.New("MarshalSnapshot returned invalid JSON")
	}
	if err == nil {
		err = r.store.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: streamID, Version: after, Type: s.SnapshotType(), SchemaVersion: snapshotVersion(s), Payload: payload})
	}
	if err != nil {
		r.logger.Warn("cannot save snapshot", "stream_id", streamID, "version", after, "error", err)
		return
	}
	b.staleSnapshot = false
}

// Create runs fn on a new, empty aggregate id and saves the events it raises
// as the start of the stream. It is the command path for "place an order".
//
// If the stream already has events, Create writes nothing and returns an
// *AlreadyExistsError, which matches ErrAlreadyExists and, for callers that
// treat it as any other conflict, also eventstore.ErrConcurrencyConflict
// (it unwraps to the store's *eventstore.ConcurrencyError, Expected
// eventstore.NoStream). Create does not retry: the stream will still exist.
//
// An error from fn is returned as is, and nothing is saved. ctx bounds the
// append.
func (r *Repository[T]) Create(ctx context.Context, id string, fn func(T) error) (eventstore.AppendResult, error) {
	ctx, op := r.startOp(ctx, r.names.create, id)
	res, err := r.create(ctx, id, fn, r.Save)
	op.end(res.LastVersion, err)
	return res, err
}

// CreateTx is Create inside the caller's transaction tx (see SaveTx): the
// new stream commits or rolls back with the caller's other writes. It
// returns the same errors as Create and SaveTx; on any error the caller
// rolls tx back. fn is not run when the store cannot append in a
// transaction or tx is nil.
func (r *Repository[T]) CreateTx(ctx context.Context, tx eventstore.Tx, id string, fn func(T) error) (eventstore.AppendResult, error) {
	if _, err := r.txAppend(tx); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("aggregate: create %s: %w", r.StreamID(id), err)
	}
	ctx, op := r.startOp(ctx, r.names.create, id)
	res, err := r.create(ctx, id, fn, func(ctx context.Context, agg T) (eventstore.AppendResult, error) {
		return r.SaveTx(ctx, tx, agg)
	})
	op.end(res.LastVersion, err)
	return res, err
}

func (r *Repository[T]) create(ctx context.Context, id string, fn func(T) error, save func(context.Context, T) (eventstore.AppendResult, error)) (eventstore.AppendResult, error) {
	agg := r.New(id)
	if err := fn(agg); err != nil {
		return eventstore.AppendResult{}, err
	}
	res, err := save(ctx, agg)
	var ce *eventstore.ConcurrencyError
	if errors.As(err, &ce) && ce.Actual > 0 {
		return eventstore.AppendResult{}, &AlreadyExistsError{StreamID: ce.StreamID, Version: ce.Actual, Err: ce}
	}
	return res, err
}

// Update loads the aggregate id, runs fn on it and saves the events fn
// raised. When the save meets a concurrency conflict (another writer saved
// the aggregate since the load), Update waits (see Config.RetryBackoff),
// loads it again and reruns fn, up to Config.MaxRetries more times; fn must
// therefore have no effects besides the aggregate's. The defaults let 8
// goroutines that update one aggregate at once on PostgreSQL all succeed.
//
// If every attempt conflicts, Update gives up with an error that wraps the
// last *eventstore.ConcurrencyError (matching
// eventstore.ErrConcurrencyConflict) and names Config.MaxRetries, the knob
// to raise for a hot aggregate.
//
// An error from fn is returned as is, and nothing is saved. A missing
// aggregate returns an error matching eventstore.ErrStreamNotFound. When fn
// raises nothing, nothing is written (see Save). ctx bounds every attempt
// and the waits between them: when it ends, Update returns its error
// (wrapping the last conflict too).
func (r *Repository[T]) Update(ctx context.Context, id string, fn func(T) error) (eventstore.AppendResult, error) {
	ctx, op := r.startOp(ctx, r.names.update, id)
	res, err := r.update(ctx, id, fn)
	op.end(res.LastVersion, err)
	return res, err
}

func (r *Repository[T]) update(ctx context.Context, id string, fn func(T) error) (eventstore.AppendResult, error) {
	var res eventstore.AppendResult
	err := r.retry(ctx, "update "+r.StreamID(id), func(ctx context.Context) (bool, error) {
		agg, err := r.Load(ctx, id)
		if err != nil {
			return false, err
		}
		if err := fn(agg); err != nil {
			return false, err
		}
		res, err = r.Save(ctx, agg)
		return errors.Is(err, eventstore.ErrConcurrencyConflict), err
	})
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	return res, nil
}

// UpdateTx loads the aggregate id, runs fn on it and saves the events fn
// raised inside the caller's transaction tx (see SaveTx), once: a conflict
// cannot be retried inside tx, since PostgreSQL aborts a transaction after
// a failed statement and the caller's other writes may depend on the
// outcome. To retry, run the whole transaction — begin, UpdateTx, the other
// writes, commit, and a deferred rollback — in Retry, which runs it again
// with Update's backoff policy.
//
// The load reads through the store, outside tx (the Store interface reads
// no transaction). Under READ COMMITTED, PostgreSQL's default, that is
// correct: every statement in tx sees the latest committed data too, so
// the load is no staler than a read in tx would be, and the append's
// expected version is checked against the stream as it is when the append
// runs; a writer that slips in between turns into a conflict, never a lost
// update. At REPEATABLE READ or SERIALIZABLE the load may see events
// committed after tx's snapshot, which the append does not see; it then
// fails as a conflict, again without losing an update, and Retry runs a new
// transaction. Reading outside tx has two more consequences:
//
//   - events tx itself appended to this stream are not visible to the load,
//     so a second UpdateTx of the same aggregate in one tx conflicts every
//     time: change the aggregate once per transaction, or keep the
//     aggregate and call SaveTx again;
//   - the load takes a second connection from the store's pool while tx
//     holds one, so a pool whose every connection is held by such a tx
//     waits until ctx ends. Size the pool above the number of transactions
//     that run UpdateTx at once, or Load before you begin tx and SaveTx the
//     aggregate inside it.
//
// Errors: Update's (except the retries: a conflict is returned at once,
// wrapped, matching eventstore.ErrConcurrencyConflict) and SaveTx's; on any
// error the caller rolls tx back. fn is not run when the store cannot append
// in a transaction or tx is nil. ctx bounds the load and the append.
func (r *Repository[T]) UpdateTx(ctx context.Context, tx eventstore.Tx, id string, fn func(T) error) (eventstore.AppendResult, error) {
	if _, err := r.txAppend(tx); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("aggregate: update %s: %w", r.StreamID(id), err)
	}
	ctx, op := r.startOp(ctx, r.names.update, id)
	res, err := r.updateTx(ctx, tx, id, fn)
	op.end(res.LastVersion, err)
	return res, err
}

func (r *Repository[T]) updateTx(ctx context.Context, tx eventstore.Tx, id string, fn func(T) error) (eventstore.AppendResult, error) {
	agg, err := r.Load(ctx, id)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if err := fn(agg); err != nil {
		return eventstore.AppendResult{}, err
	}
	return r.SaveTx(ctx, tx, agg)
}
