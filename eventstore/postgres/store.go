package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// Store is the PostgreSQL event store. Create it with New and its tables with
// Migrate. A Store is safe for concurrent use; its statements are prepared
// once, on first use, and reused.
type Store struct {
	db  *sqlx.DB
	reg *eventstore.Registry
	cfg Config
	log *slog.Logger
	tel *storeTelemetry // nil: no telemetry at all (the benchmarks' baseline)
	// noTraceContext: spans and metrics, but no trace context in the
	// events (BenchmarkAppendTelemetry's measure of what recording it costs).
	noTraceContext bool

	events, snapshots, seals                            string   // quoted, qualified
	pkeyName, eventIDKeyName, streamVersionKeyName      string   // unquoted constraint names
	valuesSQL                                           []string // by event count
	chainedValuesSQL                                    []string // by event count; nil with DisableChain
	heads                                               *headCache
	appendArraySQL, readStreamSQL, readAllSQL, headSQL  string
	streamInfoSQL, saveSnapshotSQL, loadSnapshotSQL     string
	conflictSQL, lookupSQL, probeSQL, sameTxNeighborSQL string

	stmtMu sync.Mutex
	stmts  map[string]*sqlx.Stmt
	closed bool
	hub    hub // subscriptions and the feed watcher (watch.go)
}

var _ eventstore.Store = (*Store)(nil)

// New returns a Store on db that encodes and decodes events with reg. cfg's
// zero value means all defaults (schema "esox", tables "events" and
// "snapshots"). New does not touch the database; call Migrate before the
// first append.
//
// The store prepares its statements on each pooled connection the first time
// it uses it there. database/sql keeps only 2 idle connections by default;
// with more concurrent appenders, raise db.SetMaxIdleConns to about the
// number of concurrent callers so connections, and their prepared
// statements, are reused rather than reopened.
//
// It returns an error matching eventstore.ErrInvalidArgument for a nil db or
// reg or an invalid cfg; the message names the bad field.
func New(db *sqlx.DB, reg *eventstore.Registry, cfg Config) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("eventstore/postgres: %w", &eventstore.InvalidArgumentError{Field: "db", Reason: "must not be nil"})
	}
	if reg == nil {
		return nil, fmt.Errorf("eventstore/postgres: %w", &eventstore.InvalidArgumentError{Field: "reg", Reason: "must not be nil"})
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("eventstore/postgres: %w", err)
	}
	schema := QuoteIdentifier(cfg.Schema)
	s := &Store{
		db:                   db,
		reg:                  reg,
		cfg:                  cfg,
		log:                  cfg.Logger.With("component", "eventstore/postgres"),
		events:               schema + "." + QuoteIdentifier(cfg.EventsTable),
		snapshots:            schema + "." + QuoteIdentifier(cfg.SnapshotsTable),
		seals:                schema + "." + QuoteIdentifier(sealsTable(cfg)),
		pkeyName:             constraintName(cfg.EventsTable, "pkey"),
		eventIDKeyName:       constraintName(cfg.EventsTable, "event_id_key"),
		streamVersionKeyName: constraintName(cfg.EventsTable, "stream_version_key"),
		stmts:                map[string]*sqlx.Stmt{},
		tel:                  newStoreTelemetry(cfg),
		heads:                newHeadCache(cfg.ChainHeads),
	}
	s.buildSQL()
	return s, nil
}

// DB returns the pool the store uses.
func (s *Store) DB() *sqlx.DB { return s.db }

// Registry returns the registry the store encodes and decodes with.
func (s *Store) Registry() *eventstore.Registry { return s.reg }

// Schema returns the store's schema name, unquoted.
func (s *Store) Schema() string { return s.cfg.Schema }

// QualifiedEventsTable returns the events table's quoted, schema-qualified
// name, e.g. "esox"."events", for use in SQL built by other packages.
func (s *Store) QualifiedEventsTable() string { return s.events }

// QualifiedSnapshotsTable returns the snapshots table's quoted,
// schema-qualified name.
func (s *Store) QualifiedSnapshotsTable() string { return s.snapshots }

// Close releases the store's prepared statements. It does not close the DB.
// The store must not be used afterwards. It is safe to call more than once.
func (s *Store) Close() error {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	s.closed = true
	var first error
	for k, st := range s.stmts {
		if err := st.Close(); err != nil && first == nil {
			first = err
		}
		delete(s.stmts, k)
	}
	return first
}

// stmt returns the prepared statement for query, preparing it on first use.
// ctx bounds only the preparation.
func (s *Store) stmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("eventstore/postgres: store is closed")
	}
	if st, ok := s.stmts[query]; ok {
		return st, nil
	}
	st, err := s.db.PreparexContext(ctx, query)
	if err != nil {
		return nil, translate(ctx, "prepare", err)
	}
	s.stmts[query] = st
	return st, nil
}

// Head returns the position of the last record ReadAll can return now: the
// feed's end, ignoring records of transactions that may still be followed by
// earlier ones (see ReadAll). It returns the zero Position when the feed is
// empty. Safe for concurrent use; run it outside any transaction.
func (s *Store) Head(ctx context.Context) (eventstore.Position, error) {
	st, err := s.stmt(ctx, s.headSQL)
	if err != nil {
		return eventstore.Position{}, err
	}
	var p eventstore.Position
	err = st.QueryRowContext(ctx).Scan(&p.TransactionID, &p.Position)
	if isNoRows(err) {
		return eventstore.Position{}, nil
	}
	if err != nil {
		return eventstore.Position{}, translate(ctx, "head", err)
	}
	return p, nil
}
