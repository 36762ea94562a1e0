package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	nc "github.com/nats-io/nats.go"

	"github.com/esox-go/esox/examples/ordering/shipping"
	"github.com/esox-go/esox/forwarder/rabbitmq"
)

// brokerKind returns "gochannel", "amqp" or "nats" for a -broker value, and
// the URL with its password hidden, for logs.
func brokerKind(b string) (kind, redacted string, err error) {
	if b == "" || b == "gochannel" {
		return "gochannel", "gochannel", nil
	}
	u, err := url.Parse(b)
	if err != nil {
		return "", "", errors.New("not a URL (want gochannel, amqp://… or nats://…)")
	}
	switch u.Scheme {
	case "amqp", "amqps":
		return "amqp", u.Redacted(), nil
	case "nats", "tls":
		return "nats", u.Redacted(), nil
	}
	return "", "", fmt.Errorf("unknown scheme %q (want gochannel, amqp://… or nats://…)", u.Scheme)
}

// rabbitMQMaxMessageSize is RabbitMQ's default max_message_size since 4.0.
const rabbitMQMaxMessageSize = 16 << 20

// broker is a publisher for the forwarder and a subscriber for the shipping
// consumer, on the same broker.
type broker struct {
	kind string
	// maxMessageSize is the broker's message size limit the forwarder
	// checks before publishing (forwarder.Config.MaxMessageSize), 0 for
	// none.
	maxMessageSize int
	pub            message.Publisher
	sub            message.Subscriber
}

func (b *broker) Close() error {
	var errs []error
	if b.pub != nil {
		errs = append(errs, b.pub.Close())
	}
	if b.sub != nil && any(b.sub) != any(b.pub) {
		errs = append(errs, b.sub.Close())
	}
	return errors.Join(errs...)
}

// openBroker connects to the broker rawURL names.
//
//   - gochannel: in-process; Publish blocks until the shipping consumer acks,
//     so the forwarder's offset never passes an event the consumer has not
//     applied, even though nothing survives the process.
//   - amqp://…: RabbitMQ, a durable fanout exchange per topic and a durable
//     queue "<topic>_ordering_shipping" for the consumer (watermill-amqp's
//     Subscriber). The forwarder publishes with esox's forwarder/rabbitmq:
//     persistent messages and pipelined publisher confirms (Publish returns
//     once RabbitMQ has the message, which at-least-once forwarding needs),
//     and the mandatory flag, so an event is retried rather than dropped
//     while no queue is bound to its exchange.
//   - nats://…: NATS JetStream, a stream per topic (created if missing),
//     message de-duplication by UUID within the stream's window, and a
//     durable consumer "ordering_shipping".
func openBroker(rawURL string, log *slog.Logger) (*broker, error) {
	kind, _, err := brokerKind(rawURL)
	if err != nil {
		return nil, err
	}
	wlog := watermill.NewSlogLogger(log.With("component", "broker"))
	b := &broker{kind: kind}
	switch kind {
	case "gochannel":
		gc := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, wlog)
		b.pub, b.sub = gc, gc
	case "amqp":
		// RabbitMQ's default max_message_size from 4.0 (128 MiB before):
		// set it to the server's if you changed it.
		b.maxMessageSize = rabbitMQMaxMessageSize
		if b.pub, err = rabbitmq.NewPublisher(rabbitmq.Config{
			URL:            rawURL,
			Mandatory:      true,
			ConnectionName: "ordering forwarder",
			Logger:         log.With("component", "broker"),
		}); err != nil {
			return nil, fmt.Errorf("rabbitmq publisher: %w", err)
		}
		cfg := amqp.NewDurablePubSubConfig(rawURL, amqp.GenerateQueueNameTopicNameWithSuffix(shipping.ConsumerName))
		cfg.Connection.Reconnect = &amqp.ReconnectConfig{BackoffInitialInterval: 100 * time.Millisecond, BackoffMultiplier: 1.5, BackoffMaxInterval: 5 * time.Second}
		if b.sub, err = amqp.NewSubscriber(cfg, wlog); err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("rabbitmq subscriber: %w", err)
		}
	case "nats":
		opts := []nc.Option{nc.RetryOnFailedConnect(true), nc.Timeout(10 * time.Second), nc.ReconnectWait(200 * time.Millisecond)}
		js := wnats.JetStreamConfig{
			AutoProvision:    true,
			SubscribeOptions: []nc.SubOpt{nc.DeliverAll(), nc.AckExplicit()},
			TrackMsgId:       true,
			DurablePrefix:    shipping.ConsumerName,
		}
		pub, err := wnats.NewPublisher(wnats.PublisherConfig{URL: rawURL, NatsOptions: opts, JetStream: js, Marshaler: &wnats.NATSMarshaler{}}, wlog)
		if err != nil {
			return nil, fmt.Errorf("nats publisher: %w", err)
		}
		b.pub = pub
		sub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
			URL: rawURL, SubscribersCount: 1, AckWaitTimeout: 30 * time.Second, CloseTimeout: 5 * time.Second,
			Unmarshaler: &wnats.NATSMarshaler{}, NatsOptions: opts, JetStream: js,
		}, wlog)
		if err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("nats subscriber: %w", err)
		}
		b.sub = sub
	}
	return b, nil
}
