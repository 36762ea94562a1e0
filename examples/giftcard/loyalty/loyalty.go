// Package loyalty is a downstream consumer of the gift-card service: it
// learns about redemptions only through the broker, as another service
// would, and gives card holders one point per whole currency unit they
// redeem. A projector.Inbox applies each message once, so the broker's
// redeliveries (at least once, guarantee 6 in docs/guarantees.md) never
// count a redemption twice.
package loyalty

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/giftcard/card"
	"github.com/esox-go/esox/projector"
)

// ConsumerName names the consumer in the inbox (and, in the NATS
// subscriber, its durable JetStream consumer).
const ConsumerName = "giftcard_loyalty"

//go:embed migrations/*.up.sql
var migrations embed.FS

// Points is one holder's row of the points table.
type Points struct {
	Holder      string `db:"holder" json:"holder"`
	Points      int64  `db:"points" json:"points"`
	Redemptions int64  `db:"redemptions" json:"redemptions"`
}

// ErrNotFound is returned for a holder without points.
var ErrNotFound = errors.New("not found")

// Consumer applies the Redeemed events it receives on a topic to the points
// table through an inbox, with a Watermill router. Run it once.
type Consumer struct {
	db     *sqlx.DB
	schema string
	inbox  *projector.Inbox
	router *message.Router
}

// New returns the Consumer of sub's messages on topic, with its tables in
// schema.
func New(db *sqlx.DB, reg *eventstore.Registry, sub message.Subscriber, schema, topic string, log *slog.Logger) (*Consumer, error) {
	table := postgres.QuoteIdentifier(schema) + ".loyalty_points"
	h := projector.NewHandlers(reg)
	projector.On(h, func(ctx context.Context, tx postgres.Tx, _ eventstore.Record, e card.Redeemed) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` AS p (holder, points, redemptions) VALUES ($1, $2, 1)
			ON CONFLICT (holder) DO UPDATE SET points = p.points + excluded.points, redemptions = p.redemptions + 1`,
			e.Holder, e.AmountCents/100)
		return err
	})
	inbox, err := projector.NewInbox(db, reg, projector.InboxConfig{Schema: schema, Consumer: ConsumerName, Logger: log})
	if err != nil {
		return nil, err
	}
	handle, err := inbox.Handler(h)
	if err != nil {
		return nil, err
	}
	wlog := watermill.NewSlogLogger(log.With("component", "loyalty"))
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	// A message that fails is retried here a few times, then nacked: the
	// broker delivers it again later.
	router.AddMiddleware(middleware.Retry{
		MaxRetries: 3, InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2, Logger: wlog,
	}.Middleware)
	router.AddConsumerHandler(ConsumerName, topic, sub, handle)
	return &Consumer{db: db, schema: schema, inbox: inbox, router: router}, nil
}

// Inbox returns the consumer's inbox (for esox.Config.Inboxes, which
// migrates it, and for its Status and WaitFor).
func (c *Consumer) Inbox() *projector.Inbox { return c.inbox }

// Migrate creates the points table.
func (c *Consumer) Migrate(ctx context.Context) (postgres.MigrateResult, error) {
	files, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return postgres.MigrateResult{}, err
	}
	return postgres.ApplyMigrations(ctx, c.db, postgres.MigrationParams{
		Schema: c.schema, Component: ConsumerName, Files: files,
		Data: struct{ Points string }{postgres.QuoteIdentifier(c.schema) + ".loyalty_points"},
	})
}

// Run subscribes and applies messages until ctx ends.
func (c *Consumer) Run(ctx context.Context) error { return c.router.Run(ctx) }

// Running is closed once Run has subscribed.
func (c *Consumer) Running() <-chan struct{} { return c.router.Running() }

// Get returns holder's points, or an error matching ErrNotFound.
func Get(ctx context.Context, db sqlx.QueryerContext, schema, holder string) (Points, error) {
	var p Points
	err := sqlx.GetContext(ctx, db, &p, `SELECT holder, points, redemptions FROM `+postgres.QuoteIdentifier(schema)+`.loyalty_points WHERE holder = $1`, holder)
	if errors.Is(err, sql.ErrNoRows) {
		return Points{}, fmt.Errorf("holder %q: %w", holder, ErrNotFound)
	}
	return p, err
}
