package readmodel_test

import (
	"cmp"
	"os"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/esox-go/esox/examples/giftcard/card"
	"github.com/esox-go/esox/examples/giftcard/readmodel"
	"github.com/esox-go/esox/projector/projectortest"
)

// openTestDB connects to the test database: $ESOX_TEST_DATABASE_URL, else
// the local server. projectortest makes a fresh schema in it per test.
func openTestDB(t *testing.T) *sqlx.DB {
	db, err := sqlx.Open("postgres", cmp.Or(os.Getenv("ESOX_TEST_DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var day = time.Date(2027, 1, 10, 12, 0, 0, 0, time.UTC)

func TestBalances(t *testing.T) {
	reg := card.NewRegistry()
	fx := projectortest.New(t, openTestDB(t), reg, projectortest.Config{})
	fx.Apply(t, readmodel.Balances(reg, fx.Schema),
		projectortest.Stream("giftcard-a",
			card.Issued{CardID: "a", Holder: "ada", Currency: "EUR", AmountCents: 5000},
			card.Redeemed{CardID: "a", OrderRef: "o1", AmountCents: 1200, BalanceCents: 3800},
			card.Reloaded{CardID: "a", AmountCents: 200, BalanceCents: 4000}),
		projectortest.Stream("giftcard-b",
			card.Issued{CardID: "b", Holder: "bob", Currency: "USD", AmountCents: 700},
			card.Frozen{CardID: "b", Reason: "stolen"},
			card.Expired{CardID: "b", ForfeitedCents: 700}),
	)
	projectortest.RequireRows(t, fx, []readmodel.Balance{
		{CardID: "a", Holder: "ada", Currency: "EUR", BalanceCents: 4000, Status: "active", Version: 3},
		{CardID: "b", Holder: "bob", Currency: "USD", BalanceCents: 0, Status: "expired", Version: 3},
	}, `SELECT card_id, holder, currency, balance_cents, status, version FROM `+fx.Table("card_balances")+` ORDER BY card_id`)
}

func TestLedger(t *testing.T) {
	reg := card.NewRegistry()
	fx := projectortest.New(t, openTestDB(t), reg, projectortest.Config{})
	redeemed := func(id, order string, cents int64, at time.Time) card.Redeemed {
		return card.Redeemed{CardID: id, Currency: "EUR", OrderRef: order, AmountCents: cents, RedeemedAt: at}
	}
	fx.Apply(t, readmodel.Ledger(reg, fx.Schema),
		projectortest.Stream("giftcard-a", redeemed("a", "o1", 1200, day), redeemed("a", "o2", 300, day.Add(time.Hour))),
		projectortest.Stream("giftcard-b", redeemed("b", "o3", 500, day.Add(24*time.Hour))),
	)
	projectortest.RequireRows(t, fx, []readmodel.Day{
		{Day: "2027-01-10", Currency: "EUR", Redemptions: 2, AmountCents: 1500},
		{Day: "2027-01-11", Currency: "EUR", Redemptions: 1, AmountCents: 500},
	}, `SELECT day::text, currency, redemptions, amount_cents FROM `+fx.Table("redemption_ledger")+` ORDER BY day`)
}
