package card_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/aggregate"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/giftcard/card"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
)

// The hot-card scenario: writers goroutines each redeem commands orders of
// 1 cent from one card at once, through Repository.Update.
const (
	writers  = 8
	commands = 20
)

// oldRetries approximates the Repository's retry policy before issue 9: 3
// retries, one right after the other.
var oldRetries = aggregate.Config{MaxRetries: 3, RetryBackoff: time.Nanosecond, MaxRetryBackoff: time.Nanosecond}

// hotCard runs the scenario on a new card in store with cfg and returns the
// number of commands that failed and the card's final balance.
func hotCard(tb testing.TB, store *postgres.Store, cfg aggregate.Config) (failed int64, balance int64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg.Logger = slog.New(slog.DiscardHandler)
	cards, err := aggregate.NewRepository(store, card.Category, card.New, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	id := uuid.NewString()
	now := time.Now()
	if _, err := cards.Create(ctx, id, func(c *card.Card) error {
		return c.Issue("ada", "EUR", writers*commands, now.Add(time.Hour), now)
	}); err != nil {
		tb.Fatal(err)
	}
	var fails atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range commands {
				ref := fmt.Sprintf("order-%d-%d", w, i)
				if _, err := cards.Update(ctx, id, func(c *card.Card) error { return c.Redeem(ref, 1, time.Now()) }); err != nil {
					fails.Add(1)
				}
			}
		})
	}
	wg.Wait()
	c, err := cards.Load(ctx, id)
	if err != nil {
		tb.Fatal(err)
	}
	return fails.Load(), c.BalanceCents
}

func hotStore(tb testing.TB) *postgres.Store {
	db := pgtest.Open(tb)
	store := esoxtest.Store(tb, db, card.NewRegistry(), postgres.Config{Logger: slog.New(slog.DiscardHandler)})
	return store
}

// TestHotCardDefaults: with the Repository's default retries, every one of
// the 160 concurrent redemptions of one card succeeds, each exactly once.
func TestHotCardDefaults(t *testing.T) {
	failed, balance := hotCard(t, hotStore(t), aggregate.Config{})
	if failed != 0 || balance != 0 {
		t.Fatalf("%d of %d redemptions failed, balance %d left; want all to succeed and 0 left", failed, writers*commands, balance)
	}
}

// BenchmarkHotCard counts the failed commands of the hot-card scenario
// with the old retry policy and with the defaults (failed/op; b.N runs of
// the scenario):
//
//	go test -run '^$' -bench HotCard -benchtime 5x ./examples/giftcard/card
func BenchmarkHotCard(b *testing.B) {
	store := hotStore(b)
	for _, bc := range []struct {
		name string
		cfg  aggregate.Config
	}{{"3_immediate_retries", oldRetries}, {"defaults", aggregate.Config{}}} {
		b.Run(bc.name, func(b *testing.B) {
			var failed int64
			for range b.N {
				f, _ := hotCard(b, store, bc.cfg)
				failed += f
			}
			b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
			b.ReportMetric(writers*commands, "commands/op")
		})
	}
}
