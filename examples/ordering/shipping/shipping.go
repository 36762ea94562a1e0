// Package shipping is the ordering example's downstream consumer: a separate
// component that learns about paid orders only through the broker, as
// another service would, and records one shipment per paid order in its own
// table.
//
// The forwarder publishes every order event at least once (guarantee 6
// in docs/guarantees.md); the Consumer applies each message through a projector.Inbox, which
// records the message's UUID (the event ID) in the inbox table in the same
// transaction as the shipment, so a redelivered OrderPaid is acknowledged
// without a second shipment: exactly one shipment per order.
package shipping

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/projector"
)

// ShipmentsTable is the consumer's table, in the service's schema.
const ShipmentsTable = "shipments"

// ConsumerName is the consumer's name in the projector inbox.
const ConsumerName = "ordering_shipping"

// Component records the package's migrations in esox_migrations.
const Component = "ordering_shipping"

//go:embed migrations/*.up.sql
var migrations embed.FS

// Migrate creates the shipments table in schema (the projector's
// Runner.Migrate, or the consumer's Inbox().Migrate, creates the inbox
// tables). Idempotent, safe from several processes; ctx bounds it.
func Migrate(ctx context.Context, db *sqlx.DB, schema string) (postgres.MigrateResult, error) {
	files, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return postgres.MigrateResult{}, err
	}
	res, err := postgres.ApplyMigrations(ctx, db, postgres.MigrationParams{
		Schema: schema, Component: Component, Files: files,
		Data: struct{ Shipments string }{table(schema)},
	})
	if err != nil {
		return res, fmt.Errorf("shipping: migrate: %w", err)
	}
	return res, nil
}

func table(schema string) string {
	return postgres.QuoteIdentifier(schema) + "." + postgres.QuoteIdentifier(ShipmentsTable)
}

// Shipment is one row of the shipments table.
type Shipment struct {
	OrderID     string    `json:"order_id"`
	CustomerID  string    `json:"customer_id"`
	Currency    string    `json:"currency"`
	AmountCents int64     `json:"amount_cents"`
	EventID     string    `json:"event_id"`
	CreatedAt   time.Time `json:"created_at"`
}

// ErrNotFound is returned by Get for an order without a shipment.
var ErrNotFound = errors.New("shipping: no shipment")

// Config configures a Consumer.
type Config struct {
	// Schema holds the shipments and inbox tables. Required.
	Schema string
	// Topic is the broker topic the order events arrive on. Required.
	Topic string
	// RetryDelay is the pause after a message fails before it is nacked
	// (redelivered). Defaults to 100 ms.
	RetryDelay time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider and MeterProvider give the consumer's (and its
	// inbox's) tracer and meter. Default to the global providers.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
}

// Consumer records shipments for paid orders from broker messages. Safe for
// concurrent use; Run once.
type Consumer struct {
	db      *sqlx.DB
	sub     message.Subscriber
	cfg     Config
	log     *slog.Logger
	inbox   *projector.Inbox
	handle  message.NoPublishHandlerFunc
	table   string
	tel     *consumerTelemetry
	applied atomic.Int64
	seen    atomic.Int64
	failed  atomic.Int64
}

// New returns a Consumer of sub's messages on cfg.Topic, decoding events
// with reg. It does no I/O.
func New(db *sqlx.DB, reg *eventstore.Registry, sub message.Subscriber, cfg Config) (*Consumer, error) {
	switch {
	case db == nil || reg == nil || sub == nil:
		return nil, errors.New("shipping: db, reg and sub are required")
	case cfg.Topic == "":
		return nil, errors.New("shipping: invalid config: Topic is required")
	}
	if err := postgres.ValidateSchemaName(cfg.Schema); err != nil {
		return nil, fmt.Errorf("shipping: invalid config: Schema: %w", err)
	}
	if cfg.RetryDelay == 0 {
		cfg.RetryDelay = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Consumer{db: db, sub: sub, cfg: cfg, log: cfg.Logger.With("component", "shipping"), table: table(cfg.Schema), tel: newConsumerTelemetry(cfg)}
	h := projector.NewHandlers(reg)
	projector.On(h, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e order.OrderPaid) error {
		wctx, span := c.tel.write(ctx, cfg.Schema+"."+ShipmentsTable, e.OrderID)
		_, err := tx.ExecContext(wctx, `INSERT INTO `+c.table+` (order_id, customer_id, currency, amount_cents, event_id)
			VALUES ($1, $2, $3, $4, $5)`, e.OrderID, e.CustomerID, e.Amount.Currency, e.Amount.MinorUnits, r.ID.String())
		end(span, err)
		if err != nil {
			return err
		}
		c.applied.Add(1)
		c.tel.shipments.Add(ctx, 1)
		c.log.InfoContext(ctx, "shipment recorded", "order_id", e.OrderID, "event_id", r.ID.String())
		return nil
	})
	inbox, err := projector.NewInbox(db, reg, projector.InboxConfig{Schema: cfg.Schema, Consumer: ConsumerName, Logger: cfg.Logger,
		TracerProvider: cfg.TracerProvider, MeterProvider: cfg.MeterProvider})
	if err != nil {
		return nil, fmt.Errorf("shipping: %w", err)
	}
	handle, err := inbox.Handler(h)
	if err != nil {
		return nil, fmt.Errorf("shipping: %w", err)
	}
	c.inbox, c.handle = inbox, handle
	return c, nil
}

// Inbox returns the consumer's inbox: its Migrate creates the inbox
// tables, Status and WaitFor report on and wait for the messages it
// applied, and Prune trims its records.
func (c *Consumer) Inbox() *projector.Inbox { return c.inbox }

// Stats counts what the Consumer did since New.
type Stats struct {
	// Messages counts messages received, redeliveries included.
	Messages int64
	// Shipments counts shipments recorded (an applied OrderPaid).
	Shipments int64
	// Failures counts messages nacked after an error.
	Failures int64
}

// Stats returns the counters. Safe for concurrent use.
func (c *Consumer) Stats() Stats {
	return Stats{Messages: c.seen.Load(), Shipments: c.applied.Load(), Failures: c.failed.Load()}
}

// Subscribe subscribes to the topic and returns the message channel; call
// it before the forwarder starts publishing when the broker keeps nothing
// for absent subscribers (GoChannel). ctx ends the subscription.
func (c *Consumer) Subscribe(ctx context.Context) (<-chan *message.Message, error) {
	msgs, err := c.sub.Subscribe(ctx, c.cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("shipping: subscribe to %q: %w", c.cfg.Topic, err)
	}
	return msgs, nil
}

// Run handles msgs (from Subscribe) until ctx ends or the channel closes,
// and returns nil then. Each message is applied once through the inbox and
// acked, under a span ("process <topic>") that continues the trace the
// message carries (the forwarder's publish span); a failure is logged, and the message nacked after RetryDelay, so
// the broker redelivers it.
func (c *Consumer) Run(ctx context.Context, msgs <-chan *message.Message) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			c.seen.Add(1)
			mctx, span := c.tel.process(ctx, c.cfg.Topic, msg)
			c.tel.messages.Add(mctx, 1)
			msg.SetContext(mctx)
			err := c.handle(msg)
			end(span, err)
			if err != nil {
				c.failed.Add(1)
				c.tel.failures.Add(ctx, 1)
				c.log.WarnContext(ctx, "message failed, will be redelivered", "message_uuid", msg.UUID, "error", err)
				select {
				case <-ctx.Done():
				case <-time.After(c.cfg.RetryDelay):
				}
				msg.Nack()
				continue
			}
			msg.Ack()
		}
	}
}

// Get returns the shipment of orderID, or an error matching ErrNotFound.
func Get(ctx context.Context, db sqlx.QueryerContext, schema, orderID string) (Shipment, error) {
	var s Shipment
	err := db.QueryRowxContext(ctx, `SELECT order_id, customer_id, currency, amount_cents, event_id::text, created_at FROM `+table(schema)+` WHERE order_id = $1`, orderID).
		Scan(&s.OrderID, &s.CustomerID, &s.Currency, &s.AmountCents, &s.EventID, &s.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Shipment{}, fmt.Errorf("shipping: order %q: %w", orderID, ErrNotFound)
	}
	if err != nil {
		return Shipment{}, fmt.Errorf("shipping: get: %w", err)
	}
	s.CreatedAt = s.CreatedAt.UTC()
	return s, nil
}
