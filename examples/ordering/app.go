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
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the PostgreSQL driver

	"github.com/esox-go/esox"
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
	brk, err := openBroker(cfg.Broker, log)
	if err != nil {
		return err
	}
	defer brk.Close()

	reg, shredder, keys, err := newRegistry(db, cfg, log)
	if err != nil {
		return err
	}
	tables, err := readmodel.TablesIn(cfg.Schema)
	if err != nil {
		return err
	}
	topic := cfg.TopicPrefix + order.Category
	ship, err := shipping.New(db, reg, brk.sub, shipping.Config{Schema: cfg.Schema, Topic: topic, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      writeTimeout(cfg.WaitTimeout),
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// The HTTP server serves from the start (503 until the App is ready)
	// and stops first; the idempotency keys' table migrates with the rest.
	web := esox.HTTPServer(srv, ln, shutdownTimeout)
	web.Migrate = func(ctx context.Context) (postgres.MigrateResult, error) { return httpapi.Migrate(ctx, db, cfg.Schema) }

	// One App: the store, the three projections, the forwarder to the
	// broker, the shipping consumer (its Inbox and its table migrate with
	// the rest) and the HTTP server.
	projections := []projector.Projection{readmodel.OrdersProjection(reg, tables), readmodel.CustomerStatsProjection(reg, tables),
		readmodel.CustomersProjection(reg, tables)}
	app, err := esox.New(db, reg, esox.Config{
		Schema:      cfg.Schema,
		Projections: projections,
		Publisher:   brk.pub,
		Forwarder: forwarder.Config{
			ConsumerGroup: forwarderGroup,
			Categories:    []string{order.Category},
			Topic: func(rec eventstore.Record) (string, error) {
				return cfg.TopicPrefix + eventstore.Category(rec.StreamID), nil
			},
			// RabbitMQ refuses a message over its max_message_size by
			// closing the channel, which cannot be told from an outage:
			// check the size first, so such an event is a poison event
			// (docs/forwarding.md). 0 for the other brokers, whose
			// refusals the forwarder recognises.
			MaxMessageSize: brk.maxMessageSize,
		},
		KeyStore:   keys,
		Inboxes:    []*projector.Inbox{ship.Inbox()},
		Components: []esox.Component{shippingComponent(ship, db, cfg.Schema), web},
		Logger:     log,
	})
	if err != nil {
		return err
	}
	defer app.Store().Close()

	// The API: commands through a repository over the store, idempotency
	// keys recorded in each command's transaction, read-your-writes through
	// the App's projections, and /metrics from the OpenTelemetry
	// Prometheus exporter (telemetry.go).
	orders, err := aggregate.NewRepository(app.Store(), order.Category, order.New, aggregate.Config{Logger: log})
	if err != nil {
		return err
	}
	idem, err := httpapi.NewIdempotency(db, cfg.Schema)
	if err != nil {
		return err
	}
	if srv.Handler, err = httpapi.New(httpapi.Config{
		Orders: orders, DB: db, Tables: tables, Idempotency: idem,
		Shredder: shredder, Store: app.Store(),
		WaitFor: app.WaitFor, WaitTimeout: cfg.WaitTimeout, Ready: app.Ready,
		Metrics: tel.Metrics, Logger: log,
	}); err != nil {
		return err
	}

	_, redacted, _ := brokerKind(cfg.Broker)
	log.Info("ordering service started", "addr", "http://"+ln.Addr().String(), "schema", cfg.Schema, "broker", redacted, "topic", topic, "traces", tel.Traces)
	printWalkthrough(stdout, "http://"+ln.Addr().String())
	return app.Run(ctx)
}

// newRegistry returns the order events' registry with its Shredder: the
// customers' data keys in the keys table of cfg.Schema (migrated with the
// HTTP server's tables), wrapped by cfg.KEK (docs/compliance.md). A KMS
// would take LocalKeyEncrypter's place in production.
func newRegistry(db *sqlx.DB, cfg config, log *slog.Logger) (*eventstore.Registry, *eventstore.Shredder, *postgres.KeyStore, error) {
	keys, err := postgres.NewKeyStore(db, postgres.KeyStoreConfig{Schema: cfg.Schema, Logger: log})
	if err != nil {
		return nil, nil, nil, err
	}
	if len(cfg.KEK) == 0 {
		cfg.KEK, cfg.DevKEK = devKEK, true
	}
	kek, err := eventstore.NewLocalKeyEncrypter(cfg.KEK)
	if err != nil {
		return nil, nil, nil, err
	}
	if cfg.DevKEK {
		log.Warn("KEY_ENCRYPTION_KEY is not set: personal data is encrypted under the public development key; set it for real data")
	}
	sh, err := eventstore.NewShredder(keys, kek, eventstore.ShredderConfig{})
	if err != nil {
		return nil, nil, nil, err
	}
	reg := order.NewRegistry()
	reg.SetShredder(sh)
	return reg, sh, keys, nil
}

// shippingComponent runs the shipping consumer under the App: it creates
// the shipments table with the App's migrations, and is ready once it has
// subscribed, so the forwarder publishes nothing it could miss.
func shippingComponent(ship *shipping.Consumer, db *sqlx.DB, schema string) esox.Component {
	subscribed := make(chan struct{})
	return esox.Component{
		Name:    "shipping",
		Migrate: func(ctx context.Context) (postgres.MigrateResult, error) { return shipping.Migrate(ctx, db, schema) },
		Ready:   subscribed,
		Run: func(ctx context.Context) error {
			msgs, err := ship.Subscribe(ctx)
			if err != nil {
				return err
			}
			close(subscribed)
			if err := ship.Run(ctx, msgs); err != nil || ctx.Err() != nil {
				return err
			}
			return errors.New("the broker closed the subscription")
		},
	}
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
  curl -s %[1]s/customers/alice                     # the contact, when the order had one ("contact":{"name",…})
  curl -s -X DELETE %[1]s/customers/alice/personal-data -H 'X-Actor: dpo' -d '{"reason":"erasure request"}'
  curl -s %[1]s/metrics | grep -E '^(esox_projection_lag_seconds|esox_forwarder_lag_seconds|ordering_shipping_shipments_total)'

`, base)
}

// writeTimeout is the HTTP server's WriteTimeout for a -wait-timeout of
// wait: the wait plus 30 s for the command itself. A fixed WriteTimeout at
// or below the wait would cut a command off while it waits for the read
// models: its events committed, the client sees a dropped connection
// instead of the response with X-Read-Models: stale.
func writeTimeout(wait time.Duration) time.Duration { return wait + 30*time.Second }
