package card_test

import (
	"testing"
	"time"

	"github.com/esox-go/esox/aggregate/aggregatetest"
	"github.com/esox-go/esox/examples/giftcard/card"
)

var (
	now     = time.Date(2027, 1, 10, 12, 0, 0, 0, time.UTC)
	expires = time.Date(2027, 12, 31, 0, 0, 0, 0, time.UTC)
	issued  = card.Issued{CardID: "test", Holder: "ada", Currency: "EUR", AmountCents: 5000, ExpiresAt: expires}
)

func TestIssue(t *testing.T) {
	aggregatetest.New(t, card.New).WithRegistry(card.NewRegistry()).
		When(func(c *card.Card) error { return c.Issue("ada", "EUR", 5000, expires, now) }).
		Then(issued)
}

func TestRedeem(t *testing.T) {
	c := aggregatetest.New(t, card.New).WithRegistry(card.NewRegistry()).
		Given(issued).
		When(func(c *card.Card) error { return c.Redeem("order-1", 1200, now) }).
		Then(card.Redeemed{CardID: "test", Holder: "ada", Currency: "EUR", OrderRef: "order-1",
			AmountCents: 1200, BalanceCents: 3800, RedeemedAt: now})
	if c.BalanceCents != 3800 {
		t.Errorf("balance %d, want 3800", c.BalanceCents)
	}
}

// TestRedeemIsIdempotentPerOrder: the same order redeemed again (a client
// retrying after a timeout) changes nothing and succeeds.
func TestRedeemIsIdempotentPerOrder(t *testing.T) {
	aggregatetest.New(t, card.New).
		Given(issued, card.Redeemed{CardID: "test", OrderRef: "order-1", AmountCents: 1200, BalanceCents: 3800}).
		When(func(c *card.Card) error { return c.Redeem("order-1", 1200, now) }).
		ThenNoEvents()
}

func TestRefusals(t *testing.T) {
	redeemed := card.Redeemed{CardID: "test", OrderRef: "order-1", AmountCents: 1200, BalanceCents: 3800}
	frozen := card.Frozen{CardID: "test", Reason: "stolen"}
	for _, tc := range []struct {
		name    string
		given   []any
		command func(*card.Card) error
		want    error
	}{
		{"issue without holder", nil, func(c *card.Card) error { return c.Issue("", "EUR", 5000, expires, now) }, card.ErrInvalid},
		{"issue expired", nil, func(c *card.Card) error { return c.Issue("ada", "EUR", 5000, now, now) }, card.ErrInvalid},
		{"redeem too much", []any{issued}, func(c *card.Card) error { return c.Redeem("order-2", 5001, now) }, card.ErrInsufficientFunds},
		{"redeem an order again with another amount", []any{issued, redeemed}, func(c *card.Card) error { return c.Redeem("order-1", 1, now) }, card.ErrOrderRefReused},
		{"redeem a frozen card", []any{issued, frozen}, func(c *card.Card) error { return c.Redeem("order-2", 1, now) }, card.ErrFrozen},
		{"redeem after the expiry date", []any{issued}, func(c *card.Card) error { return c.Redeem("order-2", 1, expires) }, card.ErrExpired},
		{"reload past the limit", []any{issued}, func(c *card.Card) error { return c.Reload(card.MaxBalanceCents, now) }, card.ErrBalanceLimit},
		{"freeze twice", []any{issued, frozen}, func(c *card.Card) error { return c.Freeze("again") }, card.ErrFrozen},
		{"expire too early", []any{issued}, func(c *card.Card) error { return c.Expire(now) }, card.ErrNotDue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aggregatetest.New(t, card.New).Given(tc.given...).When(tc.command).ThenError(tc.want)
		})
	}
}

func TestReloadFreezeExpire(t *testing.T) {
	aggregatetest.New(t, card.New).Given(issued).
		When(func(c *card.Card) error { return c.Reload(1000, now) }).
		Then(card.Reloaded{CardID: "test", AmountCents: 1000, BalanceCents: 6000})
	aggregatetest.New(t, card.New).Given(issued).
		When(func(c *card.Card) error { return c.Freeze("stolen") }).
		Then(card.Frozen{CardID: "test", Reason: "stolen"})
	aggregatetest.New(t, card.New).Given(issued, card.Frozen{CardID: "test", Reason: "stolen"}).
		When(func(c *card.Card) error { return c.Expire(expires) }).
		Then(card.Expired{CardID: "test", ForfeitedCents: 5000})
	aggregatetest.New(t, card.New).Given(issued, card.Expired{CardID: "test", ForfeitedCents: 5000}).
		When(func(c *card.Card) error { return c.Expire(expires) }).
		ThenNoEvents()
}
