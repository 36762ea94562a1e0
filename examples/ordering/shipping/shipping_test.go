package shipping_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/shipping"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// TestExactlyOnce delivers the same OrderPaid message three times (as an
// at-least-once broker may) and an OrderPlaced the consumer ignores: one
// shipment is recorded, every message is acknowledged.
func TestExactlyOnce(t *testing.T) {
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := shipping.Migrate(ctx, db, schema); err != nil {
		t.Fatal(err)
	}
	if _, err := shipping.Migrate(ctx, db, schema); err != nil {
		t.Fatalf("Migrate is not idempotent: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	gc := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NewSlogLogger(log))
	defer gc.Close()
	c, err := shipping.New(db, order.NewRegistry(), gc, shipping.Config{Schema: schema, Topic: "order", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inbox().Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	msgs, err := c.Subscribe(runCtx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx, msgs) }()

	orderID := uuid.NewString()
	paidID := uuid.NewString()
	paid := func() *message.Message {
		// As a release before schema versions published it: order_paid
		// version 1 ({"currency", "amount_cents"}), no schema_version
		// metadata. The inbox upcasts it to version 2.
		m := message.NewMessage(paidID, []byte(`{"order_id":"`+orderID+`","customer_id":"c1","currency":"EUR","amount_cents":2700}`))
		m.Metadata.Set("event_type", order.TypeOrderPaid)
		m.Metadata.Set("stream_id", "order-"+orderID)
		m.Metadata.Set("stream_version", "5")
		return m
	}
	placed := message.NewMessage(uuid.NewString(), []byte(`{"order_id":"`+orderID+`","customer_id":"c1","currency":"EUR","lines":[]}`))
	placed.Metadata.Set("event_type", order.TypeOrderPlaced)
	// BlockPublishUntilSubscriberAck: each Publish returns once acked.
	for _, m := range []*message.Message{placed, paid(), paid(), paid()} {
		if err := gc.Publish("order", m); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s, err := shipping.Get(ctx, db, schema, orderID)
	if err != nil {
		t.Fatal(err)
	}
	if s.AmountCents != 2700 || s.EventID != paidID || s.CustomerID != "c1" {
		t.Errorf("shipment %+v", s)
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM `+postgres.QuoteIdentifier(schema)+`.shipments`); err != nil || n != 1 {
		t.Fatalf("%d shipments (%v), want 1", n, err)
	}
	if st := c.Stats(); st.Messages != 4 || st.Shipments != 1 || st.Failures != 0 {
		t.Errorf("stats %+v, want 4 messages, 1 shipment, 0 failures", st)
	}
	// The inbox recorded the OrderPaid once and knows the duplicates.
	if err := c.Inbox().WaitFor(ctx, uuid.MustParse(paidID)); err != nil {
		t.Fatal(err)
	}
	is, err := c.Inbox().Status(ctx)
	if err != nil || is.Messages != 1 || is.Last.MessageUUID != paidID || is.Last.StreamVersion != 5 ||
		is.Stats != (projector.InboxStats{Applied: 1, Duplicates: 2, Ignored: 1}) {
		t.Errorf("inbox status %+v (%v), want the OrderPaid recorded once, 2 duplicates and 1 ignored", is, err)
	}
	if _, err := shipping.Get(ctx, db, schema, uuid.NewString()); err == nil {
		t.Error("Get of an order without shipment: no error")
	}
}

// TestBadMessageIsRedelivered: a message the consumer cannot decode is
// nacked (and counted), not acknowledged and lost.
func TestBadMessageIsRedelivered(t *testing.T) {
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := shipping.Migrate(ctx, db, schema); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NewSlogLogger(log))
	defer gc.Close()
	c, err := shipping.New(db, order.NewRegistry(), gc, shipping.Config{Schema: schema, Topic: "order", RetryDelay: time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inbox().Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	msgs, err := c.Subscribe(runCtx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx, msgs) }()
	bad := message.NewMessage(uuid.NewString(), []byte(`{"amount_cents":"not a number"}`))
	bad.Metadata.Set("event_type", order.TypeOrderPaid)
	if err := gc.Publish("order", bad); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Failures < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: want the bad message nacked and redelivered", c.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c.Stats().Shipments != 0 {
		t.Errorf("a bad message recorded a shipment")
	}
}
