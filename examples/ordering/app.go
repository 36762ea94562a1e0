package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the PostgreSQL driver

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/httpapi"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/readmodel"
	"github.com/esox-go/esox/examples/ordering/shipping"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

// forwarderGroup is the forwarder's consumer group.
const forwarderGroup = "ordering"

// shutdownTimeout bounds how long in-flight requests may take to finish
// after SIGTERM.
const shutdownTimeout = 10 * time.Second

// run wires the service and serves until ctx ends (SIGINT/SIGTERM) or a
// component fails. It returns nil after a clean shutdown.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	slog.SetDefault(log)
	// Before any component: they take the global providers (telemetry.go).
	tel, err := setupTelemetry(ctx, os.Getenv, stdout)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry shutdown", "error", err)
		}
	}()

	db, err := openDB(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return err
	}
	defer db.Close()

	// The domain's events, the store, and the idempotency keys, which a
	// command with a key records in the transaction that appends its
	// events (see httpapi.Idempotency).
	reg := order.NewRegistry()
	idem, err := httpapi.NewIdempotency(db, cfg.Schema)
	if err != nil {
		return err
	}
	store, err := postgres.New(db, reg, postgres.Config{Schema: cfg.Schema, Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()

	tables, err := readmodel.TablesIn(cfg.Schema)
	if err != nil {
		return err
	}
	runner, err := projector.NewRunner(store, projector.Config{Logger: log},
		readmodel.OrdersProjection(reg, tables),
		readmodel.CustomerStatsProjection(reg, tables))
	if err != nil {
		return err
	}

	brk, err := openBroker(cfg.Broker, log)
	if err != nil {
		return err
	}
	defer brk.Close()
	topic := cfg.TopicPrefix + order.Category
	fwd, err := forwarder.New(store, brk.pub, forwarder.Config{
		ConsumerGroup: "ordering",
		Categories:    []string{order.Category},
		Topic: func(rec eventstore.Record) (string, error) {
			return cfg.TopicPrefix + eventstore.Category(rec.StreamID), nil
		},
		DisableMigrate: true,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	// Migrations: every component's, each idempotent and advisory-locked,
	// so several instances may start at once.
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = migrate(mctx, db, cfg.Schema, store, runner, fwd)
	cancel()
	if err != nil {
		return err
	}

	ship, err := shipping.New(db, reg, brk.sub, shipping.Config{Schema: cfg.Schema, Topic: topic, Logger: log})
	if err != nil {
		return err
	}

	orders, err := aggregate.NewRepository(store, order.Category, order.New, aggregate.Config{Logger: log})
	if err != nil {
		return err
	}
	api, err := httpapi.New(httpapi.Config{
		Orders:      orders,
		DB:          db,
		Tables:      tables,
		Idempotency: idem,
		WaitFor: func(ctx context.Context, pos eventstore.Position) error {
			for _, name := range []string{readmodel.OrdersName, readmodel.CustomerStatsName} {
				if err := runner.WaitFor(ctx, name, pos); err != nil {
					return err
				}
			}
			return nil
		},
		WaitTimeout: cfg.WaitTimeout,
		Metrics:     tel.Metrics,
		Logger:      log,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      writeTimeout(cfg.WaitTimeout),
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	// The background components, each with its own context so they stop
	// in order: the forwarder before the consumer it feeds (with GoChannel
	// a publish waits for the consumer's ack), the projector last.
	fail := make(chan error, 4) // one per component at most
	var wg sync.WaitGroup
	start := func(name string, ctx context.Context, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				fail <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	projCtx, stopProj := context.WithCancel(context.WithoutCancel(ctx))
	shipCtx, stopShip := context.WithCancel(context.WithoutCancel(ctx))
	fwdCtx, stopFwd := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProj()
	defer stopShip()
	defer stopFwd()
	msgs, err := ship.Subscribe(shipCtx)
	if err != nil {
		return err
	}
	var shipWG, fwdWG sync.WaitGroup
	shipWG.Add(1)
	go func() {
		defer shipWG.Done()
		_ = ship.Run(shipCtx, msgs)
		if shipCtx.Err() == nil {
			fail <- errors.New("shipping: the broker closed the subscription")
		}
	}()
	start("projector", projCtx, runner.Run)
	fwdWG.Add(1)
	go func() {
		defer fwdWG.Done()
		if err := fwd.Run(fwdCtx); err != nil && fwdCtx.Err() == nil {
			fail <- fmt.Errorf("forwarder: %w", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail <- fmt.Errorf("http server: %w", err)
		}
	}()

	_, redacted, _ := brokerKind(cfg.Broker)
	log.Info("ordering service started", "addr", "http://"+ln.Addr().String(), "schema", cfg.Schema, "broker", redacted, "topic", topic, "traces", tel.Traces)
	printWalkthrough(stdout, "http://"+ln.Addr().String())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "reason", context.Cause(ctx))
	case runErr = <-fail:
		log.Error("a component failed, shutting down", "error", runErr)
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown did not finish in time", "error", err)
		_ = srv.Close()
	}
	stopFwd()
	fwdWG.Wait()
	stopShip()
	shipWG.Wait()
	stopProj()
	wg.Wait()
	log.Info("stopped")
	return runErr
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(withTraceIDs(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(withTraceIDs(slog.NewTextHandler(w, opts)))
}

// openDB opens the pool and waits up to 30 s for the database to answer.
func openDB(ctx context.Context, url string, log *slog.Logger) (*sqlx.DB, error) {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	db.SetMaxOpenConns(40)
	db.SetMaxIdleConns(10)
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = db.PingContext(pctx)
		cancel()
		if err == nil {
			return db, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			db.Close()
			return nil, fmt.Errorf("database does not answer (set DATABASE_URL or -database-url): %w", err)
		}
		log.Warn("database does not answer yet, retrying", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// migrate applies every component's migrations in schema.
func migrate(ctx context.Context, db *sqlx.DB, schema string, store *postgres.Store, runner *projector.Runner, fwd *forwarder.Forwarder) error {
	if _, err := store.Migrate(ctx); err != nil {
		return err
	}
	if _, err := fwd.Migrate(ctx); err != nil {
		return err
	}
	if _, err := httpapi.Migrate(ctx, db, schema); err != nil {
		return err
	}
	if _, err := shipping.Migrate(ctx, db, schema); err != nil {
		return err
	}
	// Creates the projector's tables (checkpoints, inbox) and registers
	// the projections, creating their tables.
	_, err := runner.Migrate(ctx)
	return err
}

func printWalkthrough(w io.Writer, base string) {
	fmt.Fprintf(w, `
ordering service listening on %[1]s  (API: examples/ordering/API.md)

Try it from another terminal (Ctrl-C here stops the service):

  ID=$(curl -s -X POST %[1]s/orders -d '{"customer_id":"alice","currency":"EUR","lines":[{"sku":"book","quantity":2,"unit_price_cents":1500}]}' | sed -E 's/.*"id":"([^"]+)".*/\1/')
  curl -s -X POST %[1]s/orders/$ID/discount -d '{"percent":10}'
  curl -s -X POST %[1]s/orders/$ID/pay -d '{"amount_cents":2700}'
  curl -s -X POST %[1]s/orders/$ID/ship
  curl -s %[1]s/orders/$ID
  curl -s '%[1]s/orders?customer_id=alice&status=shipped'
  curl -s %[1]s/customers/alice/stats
  curl -s %[1]s/metrics | grep -E '^(esox_projection_lag_seconds|esox_forwarder_lag_seconds|ordering_shipping_shipments_total)'

`, base)
}

// writeTimeout is the HTTP server's WriteTimeout for a -wait-timeout of
// wait: the wait plus 30 s for the command itself. A fixed WriteTimeout at
// or below the wait would cut a command off while it waits for the read
// models: its events committed, the client sees a dropped connection
// instead of the response with X-Read-Models: stale.
func writeTimeout(wait time.Duration) time.Duration { return wait + 30*time.Second }
