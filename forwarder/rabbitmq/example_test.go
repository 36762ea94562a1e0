package rabbitmq_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" database/sql driver

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/forwarder/rabbitmq"
)

// Example forwards the events table to RabbitMQ: a durable fanout exchange
// per stream category ("order", …), persistent messages, Publish returning
// once RabbitMQ confirmed the message. A consumer reads them with
// watermill-amqp's Subscriber from a durable queue of its own bound to the
// exchange. (Not run by go test: it needs PostgreSQL and RabbitMQ, and runs
// until interrupted.)
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	const amqpURL = "amqp://guest:guest@127.0.0.1:5672/"

	db, err := sqlx.Open("postgres", "postgres://postgres@127.0.0.1:5432/app?sslmode=disable")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	store, err := postgres.New(db, eventstore.NewRegistry(), postgres.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// The consumer side first, so that its queue is bound before events
	// flow: with Mandatory, the forwarder retries an event until then.
	subCfg := wamqp.NewDurablePubSubConfig(amqpURL, wamqp.GenerateQueueNameTopicNameWithSuffix("shipping"))
	sub, err := wamqp.NewSubscriber(subCfg, watermill.NopLogger{})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	orders, err := sub.Subscribe(ctx, "order") // queue "order_shipping"
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for msg := range orders {
			rec, err := forwarder.RecordFromMessage(msg)
			if err == nil {
				log.Printf("%s v%d: %s", rec.StreamID, rec.StreamVersion, rec.Type)
			}
			msg.Ack()
		}
	}()

	pub, err := rabbitmq.NewPublisher(rabbitmq.Config{URL: amqpURL, Mandatory: true})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close() // after Run returned: waits for what is in flight
	fwd, err := forwarder.New(store, pub, forwarder.Config{ConsumerGroup: "rabbitmq"})
	if err != nil {
		log.Fatal(err)
	}
	if err := fwd.Run(ctx); err != nil { // nil once ctx is cancelled
		log.Fatal(err)
	}
}
