package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	nc "github.com/nats-io/nats.go"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/internal/pgtest"
)

const (
	amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
	natsURL = "nats://127.0.0.1:4222"
)

func requireBroker(t *testing.T, name, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		pgtest.SkipOrFailBroker(t, name, err)
		return
	}
	_ = conn.Close()
}

func quietLogger() watermill.LoggerAdapter {
	return watermill.NewSlogLogger(slog.New(slog.DiscardHandler))
}

// TestEndToEndRabbitMQ runs the service with RabbitMQ, checks the messages
// the forwarder published from a subscriber of its own, and the shipping
// record the service's consumer made from them.
func TestEndToEndRabbitMQ(t *testing.T) {
	requireBroker(t, "RabbitMQ", "127.0.0.1:5672")
	pgtest.LockBroker(t, "rabbitmq", false)
	s := startService(t, amqpURL)
	topic := s.prefix + order.Category
	t.Cleanup(func() { deleteRabbitTopology(t, topic) })

	// A queue of the test's own, bound to the service's exchange: it sees
	// every message the forwarder publishes from now on.
	cfg := amqp.NewDurablePubSubConfig(amqpURL, amqp.GenerateQueueNameTopicNameWithSuffix("e2e_probe"))
	cfg.Queue.Durable, cfg.Queue.AutoDelete = false, true
	sub, err := amqp.NewSubscriber(cfg, quietLogger())
	if err != nil {
		t.Fatalf("amqp subscriber: %v", err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	brokerScenario(t, s, sub, topic)
}

// deleteRabbitTopology deletes the durable queue and exchange the service
// declared for topic, so test runs leave nothing behind.
func deleteRabbitTopology(t *testing.T, topic string) {
	conn, err := amqp091.Dial(amqpURL)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer ch.Close()
	for _, q := range []string{topic + "_ordering_shipping", topic + "_e2e_probe"} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Logf("cleanup: delete queue %s: %v", q, err)
			return
		}
	}
	if err := ch.ExchangeDelete(topic, false, false); err != nil {
		t.Logf("cleanup: delete exchange %s: %v", topic, err)
	}
}

// TestEndToEndNATS runs the service with NATS JetStream.
func TestEndToEndNATS(t *testing.T) {
	requireBroker(t, "NATS", "127.0.0.1:4222")
	s := startService(t, natsURL)
	topic := s.prefix + order.Category
	t.Cleanup(func() {
		conn, err := nc.Connect(natsURL)
		if err != nil {
			return
		}
		defer conn.Close()
		if js, err := conn.JetStream(); err == nil {
			_ = js.DeleteStream(topic)
		}
	})
	sub, err := wnats.NewSubscriber(wnats.SubscriberConfig{
		URL: natsURL, SubscribersCount: 1, AckWaitTimeout: 30 * time.Second, CloseTimeout: 5 * time.Second,
		Unmarshaler: &wnats.NATSMarshaler{},
		JetStream: wnats.JetStreamConfig{
			AutoProvision:    true,
			SubscribeOptions: []nc.SubOpt{nc.DeliverAll(), nc.AckExplicit()},
			DurablePrefix:    "e2e_probe",
		},
	}, quietLogger())
	if err != nil {
		t.Fatalf("nats subscriber: %v", err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	brokerScenario(t, s, sub, topic)
}

// brokerScenario subscribes to topic, drives an order's lifecycle and checks
// that its six events reached the broker in stream order with the
// forwarder's metadata and the events' IDs as message UUIDs, that the
// shipping consumer recorded one shipment, and that the service stops
// cleanly on SIGTERM.
func brokerScenario(t *testing.T, s *service, sub message.Subscriber, topic string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", topic, err)
	}
	id := lifecycle(t, s, "zoe-"+uuid.NewString()[:8])
	waitShipment(t, s, id)

	wantTypes := []string{order.TypeOrderPlaced, order.TypeLineAdded, order.TypeLineRemoved, order.TypeDiscountApplied, order.TypeOrderPaid, order.TypeOrderShipped}
	var got []*message.Message
	deadline := time.After(60 * time.Second)
	for len(got) < len(wantTypes) {
		select {
		case m := <-msgs:
			m.Ack()
			if m.Metadata.Get("stream_id") == order.Category+"-"+id {
				got = append(got, m)
			}
		case <-deadline:
			t.Fatalf("got %d of the order's %d messages after 60 s", len(got), len(wantTypes))
		}
	}
	for i, m := range got {
		if typ := m.Metadata.Get("event_type"); typ != wantTypes[i] {
			t.Errorf("message %d: event_type %q, want %q", i, typ, wantTypes[i])
		}
		if v := m.Metadata.Get("stream_version"); v != strconv.Itoa(i+1) {
			t.Errorf("message %d: stream_version %q, want %d", i, v, i+1)
		}
		for _, k := range []string{"position", "transaction_id", "recorded_at"} {
			if m.Metadata.Get(k) == "" {
				t.Errorf("message %d: no %s metadata", i, k)
			}
		}
		var eventID string
		if err := s.db.Get(&eventID, `SELECT event_id::text FROM "`+s.schema+`".events WHERE stream_id = $1 AND stream_version = $2`, order.Category+"-"+id, i+1); err != nil {
			t.Fatal(err)
		}
		if m.UUID != eventID {
			t.Errorf("message %d: UUID %s, want the event ID %s", i, m.UUID, eventID)
		}
	}
	if v := metric(t, s, `ordering_shipping_shipments_total`); v != 1 {
		t.Errorf("ordering_shipping_shipments_total = %v, want 1", v)
	}
	r := s.do("GET", "/healthz", "")
	want(t, "healthz", r, http.StatusOK, "")
	s.stop()
}
