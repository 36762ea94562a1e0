package forwarder_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/internal/pgtest"
)

type OrderPlaced struct {
	Total int `json:"total"`
}

// Example appends an event and receives it from a Watermill GoChannel, fed
// by a Forwarder. With RabbitMQ or NATS only the publisher changes.
func Example() {
	ctx := context.Background()
	db, err := sqlx.Open("postgres", pgtest.DatabaseURL()) // your database
	if err != nil {
		panic(err)
	}
	defer db.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "esoxexample_" + hex.EncodeToString(b[:])
	defer db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)

	reg := eventstore.NewRegistry()
	eventstore.MustRegister[OrderPlaced](reg, "order_placed")
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		panic(err)
	}

	// The broker. Subscribe before publishing: GoChannel keeps nothing.
	pubSub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	defer pubSub.Close()
	orders, err := pubSub.Subscribe(ctx, "order") // the default topic is the stream's category
	if err != nil {
		panic(err)
	}

	fwd, err := forwarder.New(store, pubSub, forwarder.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fwd.Run(runCtx) }()

	if _, err := store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{{Data: OrderPlaced{Total: 42}}}); err != nil {
		panic(err)
	}
	msg := <-orders
	fmt.Println(msg.Metadata.Get(forwarder.MetadataStreamID), msg.Metadata.Get(forwarder.MetadataStreamVersion),
		msg.Metadata.Get(forwarder.MetadataEventType), string(msg.Payload))
	msg.Ack()

	stop()
	if err := <-done; err != nil {
		panic(err)
	}
	// Output: order-1 1 order_placed {"total": 42}
}
