// Package projectortest tests projections on a real PostgreSQL: given
// events, apply a projection in a fresh, migrated schema, then assert the
// rows of its read model.
//
//	func TestOrdersProjection(t *testing.T) {
//		fx := projectortest.New(t, db, reg, projectortest.Config{})
//		p := OrdersProjection(reg, fx.Schema) // your projection, writing to fx.Schema
//		fx.Apply(t, p,
//			projectortest.Stream("order-1", OrderPlaced{ID: "1", Total: 10}, OrderShipped{ID: "1"}),
//			projectortest.Stream("order-2", OrderPlaced{ID: "2", Total: 5}),
//		)
//		projectortest.RequireRows(t, fx, []Order{{"1", 10, "shipped"}, {"2", 5, "placed"}},
//			`SELECT id, total, status FROM `+fx.Table("orders")+` ORDER BY id`)
//	}
//
// Apply appends the events through a postgres.Store, registers the
// projection (its Setup runs), and runs it with a projector.Runner until it
// has applied every event, exactly as in production: one transaction per
// batch, the checkpoint committed with the read model. It waits with
// Runner.WaitFor (woken as batches commit, not by sleeping) and fails the
// test with the handler's error when the projection stops on one.
//
// The helpers report through TB, which *testing.T satisfies; failures call
// Fatalf. The package is meant for tests only.
package projectortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/projector"
)

// TB is the part of testing.TB the helpers use. *testing.T and *testing.B
// satisfy it; so does a recorder in a test of the helpers' own failures.
// Fatalf must end the test (or, in a recorder, record the failure: the
// helpers return after it).
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// TimeoutDefault is Config.Timeout's default.
const TimeoutDefault = time.Minute

// SchemaPrefix starts the name of every schema New creates.
const SchemaPrefix = "projectortest_"

// Config configures New. The zero value means all defaults.
type Config struct {
	// Timeout bounds each Apply: appending, registering the projection and
	// running it until it has applied the events. Defaults to
	// TimeoutDefault (1 minute).
	Timeout time.Duration
	// Logger receives the store's and the runner's logs. Defaults to
	// warnings and errors through TB.Logf.
	Logger *slog.Logger
	// DisableCleanup keeps the schema after the test, for inspection; by
	// default it is dropped with everything in it at cleanup.
	DisableCleanup bool
}

// Fixture is one test's schema: fresh, with a migrated event store. Use it
// from one goroutine at a time.
type Fixture struct {
	// DB is the pool given to New.
	DB *sqlx.DB
	// Schema is the fixture's schema, unquoted: "projectortest_" followed by
	// the creation time (Unix seconds) and random hex. It passes
	// postgres.ValidateSchemaName.
	Schema string
	// Store is the event store in Schema; Apply appends through it.
	Store *postgres.Store

	cfg Config
}

// New creates a fresh schema through db, migrates an event store into it
// (decoding with reg), and drops the schema with everything in it at t's
// cleanup (unless cfg.DisableCleanup). Schemas with SchemaPrefix left more
// than an hour ago by runs that died are dropped too. db must connect as a
// role that may create schemas. On failure it calls t.Fatalf and returns
// nil.
func New(t TB, db *sqlx.DB, reg *eventstore.Registry, cfg Config) *Fixture {
	t.Helper()
	switch {
	case db == nil:
		t.Fatalf("projectortest: New: db is nil")
		return nil
	case reg == nil:
		t.Fatalf("projectortest: New: registry is nil")
		return nil
	case cfg.Timeout < 0:
		t.Fatalf("projectortest: New: Config.Timeout must not be negative")
		return nil
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = TimeoutDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tbWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	dropStale(ctx, db)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := fmt.Sprintf("%s%d_%s", SchemaPrefix, time.Now().Unix(), hex.EncodeToString(b[:]))
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+postgres.QuoteIdentifier(schema)); err != nil {
		t.Fatalf("projectortest: create schema: %v", err)
		return nil
	}
	if !cfg.DisableCleanup {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+postgres.QuoteIdentifier(schema)+` CASCADE`); err != nil {
				t.Logf("projectortest: drop schema %s: %v", schema, err)
			}
		})
	}
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema, Logger: cfg.Logger})
	if err != nil {
		t.Fatalf("projectortest: store: %v", err)
		return nil
	}
	t.Cleanup(func() { _ = store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatalf("projectortest: migrate the store: %v", err)
		return nil
	}
	return &Fixture{DB: db, Schema: schema, Store: store, cfg: cfg}
}

// Table returns name qualified with the fixture's schema and quoted, for
// queries: fx.Table("orders") is "projectortest_…"."orders".
func (f *Fixture) Table(name string) string {
	return postgres.QuoteIdentifier(f.Schema) + "." + postgres.QuoteIdentifier(name)
}

// StreamEvents are events to append to one stream, in order.
type StreamEvents struct {
	// ID is the stream, "<category>-<id>".
	ID string
	// Events are appended with eventstore.Any.
	Events []eventstore.Event
}

// Stream returns the events of stream id: each of events is an
// eventstore.Event (to set its ID or metadata) or the event's data, a value
// of a type registered in the fixture's registry.
func Stream(id string, events ...any) StreamEvents {
	s := StreamEvents{ID: id, Events: make([]eventstore.Event, 0, len(events))}
	for _, e := range events {
		switch e := e.(type) {
		case eventstore.Event:
			s.Events = append(s.Events, e)
		case *eventstore.Event:
			s.Events = append(s.Events, *e)
		default:
			s.Events = append(s.Events, eventstore.Event{Data: e})
		}
	}
	return s
}

// Apply appends streams, in order, to the fixture's store, then registers
// p (running its Setup the first time this name and version are seen in
// the fixture) and runs it with a projector.Runner until it has applied
// every event in the store, and stops it. It returns the position of the
// last event appended (of the store's head when streams are empty). Call it
// again to apply more events: p goes on from its checkpoint.
//
// The runner makes no retries: a handler error stops the projection, and
// Apply fails the test with it, naming the event. It fails the test too
// when an append is refused (an unregistered type, a bad stream ID), when p
// is invalid, or when Config.Timeout passes. Apply runs one projection
// version: to test a blue/green switch, use a projector.Runner with both.
// On failure it calls t.Fatalf and returns the zero Position.
func (f *Fixture) Apply(t TB, p projector.Projection, streams ...StreamEvents) eventstore.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
	defer cancel()
	var last eventstore.Position
	for _, s := range streams {
		if len(s.Events) == 0 {
			continue
		}
		res, err := f.Store.Append(ctx, s.ID, eventstore.Any, s.Events)
		if err != nil {
			t.Fatalf("projectortest: append to %q: %v", s.ID, err)
			return eventstore.Position{}
		}
		last = res.LastPosition
	}
	if last.IsZero() {
		head, err := f.Store.Head(ctx)
		if err != nil {
			t.Fatalf("projectortest: head of the feed: %v", err)
			return eventstore.Position{}
		}
		last = head
	}
	r, err := projector.NewRunner(f.Store, projector.Config{
		PollInterval:   5 * time.Millisecond,
		DisableRetries: true,
		Logger:         f.cfg.Logger,
	}, p)
	if err != nil {
		t.Fatalf("projectortest: %v", err)
		return eventstore.Position{}
	}
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatalf("projectortest: register projection %q: %v", p.Name, err)
		return eventstore.Position{}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	werr := r.WaitFor(ctx, p.Name, last)
	stop()
	rerr := <-done
	switch {
	case werr != nil:
		t.Fatalf("projectortest: projection %q did not apply the events up to %s: %v", p.Name, last, werr)
		return eventstore.Position{}
	case rerr != nil:
		t.Fatalf("projectortest: run projection %q: %v", p.Name, rerr)
		return eventstore.Position{}
	}
	return last
}

// RequireRows runs query (with args, bound) through the fixture's pool,
// scans the rows into a []T with sqlx (a struct with db tags, or a scalar
// for a one-column query) and fails the test with both lists when they
// differ from want, compared with reflect.DeepEqual (no rows equals an
// empty or nil want). It returns whether they matched.
func RequireRows[T any](t TB, f *Fixture, want []T, query string, args ...any) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
	defer cancel()
	var got []T
	if err := f.DB.SelectContext(ctx, &got, query, args...); err != nil {
		t.Fatalf("projectortest: query %q: %v", query, err)
		return false
	}
	if len(got) == 0 && len(want) == 0 || reflect.DeepEqual(got, want) {
		return true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "projectortest: rows of %q differ:\n", query)
	for i := range max(len(got), len(want)) {
		g, w := "(none)", "(none)"
		if i < len(got) {
			g = fmt.Sprintf("%+v", got[i])
		}
		if i < len(want) {
			w = fmt.Sprintf("%+v", want[i])
		}
		mark := " "
		if g != w {
			mark = "!"
		}
		fmt.Fprintf(&b, "%s row %d: got  %s\n         want %s\n", mark, i, g, w)
	}
	t.Fatalf("%s", strings.TrimRight(b.String(), "\n"))
	return false
}

// tbWriter writes log lines to a TB.
type tbWriter struct{ t TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dropStale drops schemas New created more than an hour ago, left by runs
// that died before their cleanup.
func dropStale(ctx context.Context, db *sqlx.DB) {
	var names []string
	if err := db.SelectContext(ctx, &names, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)`, SchemaPrefix); err != nil {
		return
	}
	cutoff := time.Now().Add(-time.Hour).Unix()
	for _, n := range names {
		created, _, ok := strings.Cut(strings.TrimPrefix(n, SchemaPrefix), "_")
		if !ok {
			continue
		}
		if ts, err := strconv.ParseInt(created, 10, 64); err != nil || ts > cutoff {
			continue
		}
		_, _ = db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+postgres.QuoteIdentifier(n)+` CASCADE`)
	}
}
