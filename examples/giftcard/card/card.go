// Package card is the gift-card domain of the service docs/tutorial.md
// builds: the Card aggregate, its events and its errors. It does no I/O;
// the clock is an argument of the commands that need it.
package card

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore"
)

// Category is the stream category of cards: a card's events are in the
// stream "giftcard-<id>".
const Category = "giftcard"

// MaxBalanceCents is the most a card may hold.
const MaxBalanceCents = 1_000_000

// Issued is the first event of a card.
type Issued struct {
	CardID      string    `json:"card_id"`
	Holder      string    `json:"holder"`
	Currency    string    `json:"currency"`
	AmountCents int64     `json:"amount_cents"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// Redeemed records a payment with the card for an order. It carries the
// holder and currency so that consumers (the ledger, loyalty) need nothing
// else.
type Redeemed struct {
	CardID       string    `json:"card_id"`
	Holder       string    `json:"holder"`
	Currency     string    `json:"currency"`
	OrderRef     string    `json:"order_ref"`
	AmountCents  int64     `json:"amount_cents"`
	BalanceCents int64     `json:"balance_cents"`
	RedeemedAt   time.Time `json:"redeemed_at"`
}

// Reloaded adds money to a card.
type Reloaded struct {
	CardID       string `json:"card_id"`
	AmountCents  int64  `json:"amount_cents"`
	BalanceCents int64  `json:"balance_cents"`
}

// Frozen stops a card from being redeemed or reloaded.
type Frozen struct {
	CardID string `json:"card_id"`
	Reason string `json:"reason"`
}

// Expired ends a card past its expiry date; its balance is forfeited.
type Expired struct {
	CardID         string `json:"card_id"`
	ForfeitedCents int64  `json:"forfeited_cents"`
}

// NewRegistry registers the events under the names stored with them (never
// rename one: it is in every row and every broker message).
func NewRegistry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[Issued](reg, "giftcard.issued")
	eventstore.MustRegister[Redeemed](reg, "giftcard.redeemed")
	eventstore.MustRegister[Reloaded](reg, "giftcard.reloaded")
	eventstore.MustRegister[Frozen](reg, "giftcard.frozen")
	eventstore.MustRegister[Expired](reg, "giftcard.expired")
	return reg
}

// ErrInvalid is matched by errors of malformed input (400 in the API).
var ErrInvalid = errors.New("invalid input")

// ErrRule is matched by every broken rule below (409 in the API).
var ErrRule = errors.New("rule broken")

// The rules a command may break. Each matches ErrRule.
var (
	ErrNotIssued         error = rule("the card was not issued")
	ErrFrozen            error = rule("the card is frozen")
	ErrExpired           error = rule("the card has expired")
	ErrNotDue            error = rule("the card does not expire yet")
	ErrInsufficientFunds error = rule("the balance is too low")
	ErrBalanceLimit      error = rule("the balance would pass the limit")
	ErrOrderRefReused    error = rule("the order was redeemed with another amount")
)

type rule string

func (e rule) Error() string        { return string(e) }
func (e rule) Is(target error) bool { return target == ErrRule }

var currencyCode = regexp.MustCompile(`^[A-Z]{3}$`)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Status is where a card is in its life.
type Status string

// The statuses of an issued card.
const (
	StatusActive  Status = "active"
	StatusFrozen  Status = "frozen"
	StatusExpired Status = "expired"
)

// Card is the gift-card aggregate. Not safe for concurrent use: load one
// per command (the Repository does).
type Card struct {
	aggregate.Base

	Holder       string
	Currency     string
	BalanceCents int64
	ExpiresAt    time.Time
	Status       Status
	redeemed     map[string]int64 // order reference → amount
}

// New returns an empty card, for aggregate.NewRepository.
func New(string) *Card { return &Card{} }

// Apply folds one event into the state. It checks nothing: the commands did.
func (c *Card) Apply(event any) {
	switch e := event.(type) {
	case Issued:
		c.Holder, c.Currency, c.ExpiresAt, c.Status = e.Holder, e.Currency, e.ExpiresAt, StatusActive
		c.BalanceCents = e.AmountCents
		c.redeemed = map[string]int64{}
	case Redeemed:
		c.BalanceCents = e.BalanceCents
		c.redeemed[e.OrderRef] = e.AmountCents
	case Reloaded:
		c.BalanceCents = e.BalanceCents
	case Frozen:
		c.Status = StatusFrozen
	case Expired:
		c.Status, c.BalanceCents = StatusExpired, 0
	}
}

// Issue starts a card for holder with amountCents in currency (an ISO
// 4217 code such as "EUR"), valid until expiresAt.
func (c *Card) Issue(holder, currency string, amountCents int64, expiresAt, now time.Time) error {
	switch {
	case holder == "" || len(holder) > 64:
		return invalid("holder must have 1 to 64 bytes")
	case !currencyCode.MatchString(currency):
		return invalid("currency must be a code such as EUR, got %q", currency)
	case amountCents <= 0 || amountCents > MaxBalanceCents:
		return invalid("amount_cents must be from 1 to %d, got %d", MaxBalanceCents, amountCents)
	case !expiresAt.After(now):
		return invalid("expires_at must be in the future")
	}
	aggregate.Raise(c, Issued{CardID: c.ID(), Holder: holder, Currency: currency, AmountCents: amountCents, ExpiresAt: expiresAt})
	return nil
}

// Redeem pays amountCents of the order orderRef with the card. It is
// idempotent per order: redeeming an order again with the same amount
// raises nothing and succeeds, with another amount it fails.
func (c *Card) Redeem(orderRef string, amountCents int64, now time.Time) error {
	if orderRef == "" || len(orderRef) > 64 {
		return invalid("order_ref must have 1 to 64 bytes")
	}
	if amountCents <= 0 {
		return invalid("amount_cents must be positive, got %d", amountCents)
	}
	if prev, ok := c.redeemed[orderRef]; ok {
		if prev != amountCents {
			return fmt.Errorf("%w: order %s was redeemed for %d cents", ErrOrderRefReused, orderRef, prev)
		}
		return nil // done before: nothing to do
	}
	if err := c.usable(now); err != nil {
		return err
	}
	if amountCents > c.BalanceCents {
		return fmt.Errorf("%w: %d cents left, %d asked", ErrInsufficientFunds, c.BalanceCents, amountCents)
	}
	aggregate.Raise(c, Redeemed{
		CardID: c.ID(), Holder: c.Holder, Currency: c.Currency, OrderRef: orderRef,
		AmountCents: amountCents, BalanceCents: c.BalanceCents - amountCents, RedeemedAt: now,
	})
	return nil
}

// Reload adds amountCents to the card.
func (c *Card) Reload(amountCents int64, now time.Time) error {
	if amountCents <= 0 {
		return invalid("amount_cents must be positive, got %d", amountCents)
	}
	if err := c.usable(now); err != nil {
		return err
	}
	if c.BalanceCents+amountCents > MaxBalanceCents {
		return fmt.Errorf("%w of %d cents", ErrBalanceLimit, MaxBalanceCents)
	}
	aggregate.Raise(c, Reloaded{CardID: c.ID(), AmountCents: amountCents, BalanceCents: c.BalanceCents + amountCents})
	return nil
}

// Freeze stops the card from being redeemed or reloaded, e.g. when it was
// reported stolen.
func (c *Card) Freeze(reason string) error {
	if reason == "" {
		return invalid("reason must not be empty")
	}
	switch c.Status {
	case "":
		return ErrNotIssued
	case StatusFrozen:
		return ErrFrozen
	case StatusExpired:
		return ErrExpired
	}
	aggregate.Raise(c, Frozen{CardID: c.ID(), Reason: reason})
	return nil
}

// Expire ends a card whose expiry date has passed, forfeiting its balance.
// Expiring an expired card raises nothing, so a periodic job may run it
// again.
func (c *Card) Expire(now time.Time) error {
	switch {
	case c.Status == "":
		return ErrNotIssued
	case c.Status == StatusExpired:
		return nil
	case now.Before(c.ExpiresAt):
		return fmt.Errorf("%w: it expires at %s", ErrNotDue, c.ExpiresAt.Format(time.RFC3339))
	}
	aggregate.Raise(c, Expired{CardID: c.ID(), ForfeitedCents: c.BalanceCents})
	return nil
}

// usable returns why the card cannot be redeemed or reloaded at now, if it
// cannot.
func (c *Card) usable(now time.Time) error {
	switch {
	case c.Status == "":
		return ErrNotIssued
	case c.Status == StatusFrozen:
		return ErrFrozen
	case c.Status == StatusExpired || !now.Before(c.ExpiresAt):
		return ErrExpired
	}
	return nil
}
