package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/esox-go/esox/eventstore"
)

// Defaults of Config.
const (
	// SnapshotEveryDefault is Config.SnapshotEvery's default.
	SnapshotEveryDefault = 100
	// MaxRetriesDefault is Config.MaxRetries's default.
	MaxRetriesDefault = 3
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
	// MaxRetries bounds how often Update reloads the aggregate and runs its
	// function again after a concurrency conflict: Update makes at most
	// 1+MaxRetries attempts. Defaults to MaxRetriesDefault (3); must not be
	// negative.
	MaxRetries int
	// DisableRetries makes Update return the first concurrency conflict.
	DisableRetries bool
	// Logger receives a Warn when a snapshot cannot be decoded or saved and
	// a Debug per retried conflict. Defaults to slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = SnapshotEveryDefault
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = MaxRetriesDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate returns an error naming the first invalid field of c.
func (c Config) Validate() error {
	if c.SnapshotEvery < 0 {
		return fmt.Errorf("aggregate: invalid config: SnapshotEvery must not be negative, got %d (set DisableSnapshots to turn snapshots off)", c.SnapshotEvery)
	}
	if c.MaxRetries < 0 {
		return fmt.Errorf("aggregate: invalid config: MaxRetries must not be negative, got %d (set DisableRetries to turn retries off)", c.MaxRetries)
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
// writer got there first. Update retries such conflicts.
type Repository[T Root] struct {
	store    eventstore.Store
	category string
	newFunc  func(id string) T
	cfg      Config
	logger   *slog.Logger
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

// Load returns the aggregate id rebuilt from its stream: from its latest
// snapshot, when T implements Snapshotter, snapshots are enabled and one of
// the current SnapshotType exists, then every event after it.
//
// It returns an error matching eventstore.ErrStreamNotFound when the stream
// has no events, and the store's errors (wrapped) otherwise. ctx bounds the
// reads.
func (r *Repository[T]) Load(ctx context.Context, id string) (T, error) {
	streamID := r.StreamID(id)
	agg, err := r.loadSnapshot(ctx, id, streamID)
	if err != nil {
		var zero T
		return zero, err
	}
	b := agg.aggregateBase()
	for rec, err := range r.store.ReadStream(ctx, streamID, b.version+1) {
		if err != nil {
			var zero T
			return zero, fmt.Errorf("aggregate: load %s: %w", streamID, err)
		}
		if rec.StreamVersion != b.version+1 {
			var zero T
			return zero, fmt.Errorf("aggregate: load %s: read version %d after version %d", streamID, rec.StreamVersion, b.version)
		}
		agg.Apply(rec.Data)
		b.version = rec.StreamVersion
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
		r.logger.Debug("ignoring snapshot of another type", "stream_id", streamID, "snapshot_type", snap.Type, "want_type", s.SnapshotType())
		return agg, nil
	}
	if err := s.UnmarshalSnapshot(snap.Payload); err != nil {
		r.logger.Warn("cannot decode snapshot, replaying the stream", "stream_id", streamID, "version", snap.Version, "error", err)
		return r.New(id), nil
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
	res, err := r.store.Append(ctx, streamID, eventstore.Exact(b.version), events)
	if err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("aggregate: save %s: %w", streamID, err)
	}
	before := b.version
	b.version = res.LastVersion
	b.pending = nil
	r.maybeSnapshot(ctx, agg, streamID, before)
	return res, nil
}

// maybeSnapshot saves a snapshot of agg when the policy asks for one.
func (r *Repository[T]) maybeSnapshot(ctx context.Context, agg T, streamID string, before int64) {
	s, ok := any(agg).(Snapshotter)
	if !ok || r.cfg.DisableSnapshots {
		return
	}
	every := int64(r.cfg.SnapshotEvery)
	after := agg.aggregateBase().version
	if before/every == after/every {
		return
	}
	payload, err := s.MarshalSnapshot()
	if err == nil && !json.Valid(payload) {
		err = errors.New("MarshalSnapshot returned invalid JSON")
	}
	if err == nil {
		err = r.store.SaveSnapshot(ctx, eventstore.Snapshot{StreamID: streamID, Version: after, Type: s.SnapshotType(), Payload: payload})
	}
	if err != nil {
		r.logger.Warn("cannot save snapshot", "stream_id", streamID, "version", after, "error", err)
	}
}

// Create runs fn on a new, empty aggregate id and saves the events it raises
// as the start of the stream. It is the command path for "place an order":
// if the stream already has events, Create returns a
// *eventstore.ConcurrencyError (matching eventstore.ErrConcurrencyConflict)
// with Expected eventstore.NoStream, and writes nothing.
//
// An error from fn is returned as is, and nothing is saved. ctx bounds the
// append.
func (r *Repository[T]) Create(ctx context.Context, id string, fn func(T) error) (eventstore.AppendResult, error) {
	agg := r.New(id)
	if err := fn(agg); err != nil {
		return eventstore.AppendResult{}, err
	}
	return r.Save(ctx, agg)
}

// Update loads the aggregate id, runs fn on it and saves the events fn
// raised. When the save meets a concurrency conflict (another writer saved
// the aggregate since the load), Update loads it again and reruns fn, up to
// Config.MaxRetries more times; fn must therefore have no effects besides
// the aggregate's. If every attempt conflicts, the last
// *eventstore.ConcurrencyError is returned, wrapped.
//
// An error from fn is returned as is, and nothing is saved. A missing
// aggregate returns an error matching eventstore.ErrStreamNotFound. When fn
// raises nothing, nothing is written (see Save). ctx bounds every attempt.
func (r *Repository[T]) Update(ctx context.Context, id string, fn func(T) error) (eventstore.AppendResult, error) {
	attempts := 1 + r.cfg.MaxRetries
	if r.cfg.DisableRetries {
		attempts = 1
	}
	var lastErr error
	for attempt := 1; attempt <= attempts; attempt++ {
		if attempt > 1 {
			if err := ctx.Err(); err != nil {
				return eventstore.AppendResult{}, fmt.Errorf("aggregate: update %s: %w (after %w)", r.StreamID(id), err, lastErr)
			}
		}
		agg, err := r.Load(ctx, id)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		if err := fn(agg); err != nil {
			return eventstore.AppendResult{}, err
		}
		res, err := r.Save(ctx, agg)
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, eventstore.ErrConcurrencyConflict) {
			return eventstore.AppendResult{}, err
		}
		lastErr = err
		if attempt < attempts {
			r.logger.Debug("concurrency conflict, retrying", "stream_id", r.StreamID(id), "attempt", attempt, "error", err)
		}
	}
	return eventstore.AppendResult{}, fmt.Errorf("aggregate: update %s: gave up after %d attempts: %w", r.StreamID(id), attempts, lastErr)
}
