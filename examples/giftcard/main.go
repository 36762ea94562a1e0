// Command giftcard is the service docs/tutorial.md builds step by step: gift
// cards (issue, redeem with an idempotent order reference, reload, freeze,
// expire) behind a JSON HTTP API, two read models (balances and a daily
// redemption ledger), every event forwarded to NATS JetStream, and a
// loyalty consumer that reads the redemptions back from NATS.
//
//	go run ./examples/giftcard
//
// It needs PostgreSQL and NATS with JetStream (nats-server -js), and reads
// its configuration from the environment:
//
//	ADDR          127.0.0.1:8081
//	DATABASE_URL  postgres://postgres@127.0.0.1:5432/test?sslmode=disable
//	NATS_URL      nats://127.0.0.1:4222
//	SCHEMA        giftcard
//	TOPIC_PREFIX  "" (set one per environment sharing a NATS server, e.g. staging_)
package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the PostgreSQL driver

	"github.com/esox-go/esox"
	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/examples/giftcard/card"
	"github.com/esox-go/esox/examples/giftcard/loyalty"
	"github.com/esox-go/esox/examples/giftcard/readmodel"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

type config struct {
	Addr, DatabaseURL, NATSURL, Schema, TopicPrefix string
	// Now is the clock of the commands; nil means time.Now.
	Now func() time.Time
}

func main() {
	cfg := config{
		Addr:        cmp.Or(os.Getenv("ADDR"), "127.0.0.1:8081"),
		DatabaseURL: cmp.Or(os.Getenv("DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"),
		NATSURL:     cmp.Or(os.Getenv("NATS_URL"), "nats://127.0.0.1:4222"),
		Schema:      cmp.Or(os.Getenv("SCHEMA"), "giftcard"),
		TopicPrefix: os.Getenv("TOPIC_PREFIX"),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err == nil {
		fmt.Printf("giftcard service on http://%s\n", ln.Addr())
		err = run(ctx, cfg, ln)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "giftcard:", err)
		os.Exit(1)
	}
}

// run wires the service and serves on ln until ctx ends, then shuts down
// gracefully; it returns nil after a clean stop.
func run(ctx context.Context, cfg config, ln net.Listener) error {
	log := slog.Default()
	db, err := sqlx.Open("postgres", cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	pub, sub, err := openNATS(cfg.NATSURL, log)
	if err != nil {
		return err
	}
	defer pub.Close()
	defer sub.Close()

	reg := card.NewRegistry()
	points, err := loyalty.New(db, reg, sub, cfg.Schema, cfg.TopicPrefix+card.Category, log)
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second}
	app, err := esox.New(db, reg, esox.Config{
		Schema:      cfg.Schema,
		Projections: []projector.Projection{readmodel.Balances(reg, cfg.Schema), readmodel.Ledger(reg, cfg.Schema)},
		Publisher:   pub,
		Forwarder: forwarder.Config{
			ConsumerGroup: "giftcard",
			Topic: func(rec eventstore.Record) (string, error) {
				return cfg.TopicPrefix + eventstore.Category(rec.StreamID), nil
			},
		},
		Inboxes: []*projector.Inbox{points.Inbox()},
		Components: []esox.Component{
			{Name: "loyalty", Migrate: points.Migrate, Run: points.Run, Ready: points.Running()},
			esox.HTTPServer(srv, ln, 10*time.Second),
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	cards, err := aggregate.NewRepository(app.Store(), card.Category, card.New, aggregate.Config{Logger: log})
	if err != nil {
		return err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	srv.Handler = newAPI(app, cards, cfg.Now)
	return app.Run(ctx)
}
