package loyalty_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"

	"github.com/esox-go/esox/examples/giftcard/card"
	"github.com/esox-go/esox/examples/giftcard/loyalty"
	"github.com/esox-go/esox/internal/pgtest"
)

// TestRedemptionCountsOnce: a Redeemed message delivered three times (as an
// at-least-once broker may) gives its points once; another holder's
// redemption and an event of another type are applied or ignored; Run
// stops when its context ends.
func TestRedemptionCountsOnce(t *testing.T) {
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	gc := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, watermill.NewSlogLogger(log))
	defer gc.Close()
	c, err := loyalty.New(db, card.NewRegistry(), gc, schema, "giftcard", log)
	if err != nil {
		t.Fatal(err)
	}
	for _, migrate := range []func(context.Context) error{
		func(ctx context.Context) error { _, err := c.Inbox().Migrate(ctx); return err },
		func(ctx context.Context) error { _, err := c.Migrate(ctx); return err },
	} {
		if err := migrate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	select {
	case <-c.Running():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}

	msg := func(id string, typ string, e any) *message.Message {
		payload, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		m := message.NewMessage(id, payload)
		m.Metadata.Set("event_type", typ)
		return m
	}
	ada := uuid.NewString()
	for _, m := range []*message.Message{
		msg(uuid.NewString(), "giftcard.issued", card.Issued{CardID: "a", Holder: "ada", Currency: "EUR", AmountCents: 5000}),
		msg(ada, "giftcard.redeemed", card.Redeemed{CardID: "a", Holder: "ada", AmountCents: 1250}),
		msg(ada, "giftcard.redeemed", card.Redeemed{CardID: "a", Holder: "ada", AmountCents: 1250}),
		msg(uuid.NewString(), "giftcard.redeemed", card.Redeemed{CardID: "b", Holder: "bob", AmountCents: 99}),
		msg(ada, "giftcard.redeemed", card.Redeemed{CardID: "a", Holder: "ada", AmountCents: 1250}),
	} {
		// BlockPublishUntilSubscriberAck: Publish returns once acked.
		if err := gc.Publish("giftcard", m); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for holder, want := range map[string]loyalty.Points{
		"ada": {Holder: "ada", Points: 12, Redemptions: 1},
		"bob": {Holder: "bob", Points: 0, Redemptions: 1},
	} {
		if got, err := loyalty.Get(ctx, db, schema, holder); err != nil || got != want {
			t.Errorf("points of %s: %+v, %v; want %+v", holder, got, err, want)
		}
	}
	if _, err := loyalty.Get(ctx, db, schema, "eve"); !errors.Is(err, loyalty.ErrNotFound) {
		t.Errorf("points of a holder without redemptions: %v, want ErrNotFound", err)
	}
}
