package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	nc "github.com/nats-io/nats.go"

	"github.com/esox-go/esox/examples/giftcard/loyalty"
)

// openNATS returns a JetStream publisher for the forwarder and a subscriber
// for the loyalty consumer.
func openNATS(url string, log *slog.Logger) (message.Publisher, message.Subscriber, error) {
	wlog := watermill.NewSlogLogger(log.With("component", "nats"))
	opts := []nc.Option{nc.RetryOnFailedConnect(true), nc.Timeout(10 * time.Second), nc.ReconnectWait(200 * time.Millisecond)}
	js := wnats.JetStreamConfig{
		// Create the stream for a topic on first use, named after the topic.
		AutoProvision: true,
		// Send the message UUID (the event ID) as Nats-Msg-Id: JetStream
		// drops a re-publish within its de-duplication window.
		TrackMsgId: true,
		// The subscriber's durable consumer: after a restart it resumes
		// after the last message it acknowledged.
		DurablePrefix:    loyalty.ConsumerName,
		SubscribeOptions: []nc.SubOpt{nc.DeliverAll(), nc.AckExplicit()},
	}
	pub, err := wnats.NewPublisher(wnats.PublisherConfig{
		URL: url, NatsOptions: opts, JetStream: js, Marshaler: &wnats.NATSMarshaler{},
	}, wlog)
	if err != nil {
		return nil, nil, fmt.Errorf("nats publisher: %w", err)
	}
	sub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
		URL: url, NatsOptions: opts, JetStream: js, Unmarshaler: &wnats.NATSMarshaler{},
		// One subscription handles one message at a time, in stream order.
		SubscribersCount: 1,
		AckWaitTimeout:   30 * time.Second,
		CloseTimeout:     5 * time.Second,
	}, wlog)
	if err != nil {
		_ = pub.Close()
		return nil, nil, fmt.Errorf("nats subscriber: %w", err)
	}
	return pub, sub, nil
}
