package projectortest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
	"github.com/esox-go/esox/projector/projectortest"
)

func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }

// Deposited and Noted are the test event types.
type Deposited struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

type Noted struct {
	Text string `json:"text"`
}

func registry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[Deposited](reg, "deposited")
	eventstore.MustRegister[Noted](reg, "noted")
	return reg
}

// balances projects deposits into table: a total and a count per account.
// A deposit of a negative amount fails the handler.
func balances(reg *eventstore.Registry, table string) projector.Projection {
	hs := projector.NewHandlers(reg)
	projector.On(hs, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e Deposited) error {
		if e.Amount < 0 {
			return errors.New("negative deposit")
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` AS b (account, total, n) VALUES ($1, $2, 1)
			ON CONFLICT (account) DO UPDATE SET total = b.total + excluded.total, n = b.n + 1`, e.Account, e.Amount)
		return err
	})
	return projector.Projection{
		Name:    "balances",
		Handler: hs,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+table+` (account text PRIMARY KEY, total bigint NOT NULL, n bigint NOT NULL)`)
			return err
		},
	}
}

type balance struct {
	Account string `db:"account"`
	Total   int64  `db:"total"`
	N       int64  `db:"n"`
}

// recorder is a projectortest.TB that records failures instead of ending
// the test, and runs cleanups when told.
type recorder struct {
	t        *testing.T
	fatals   []string
	cleanups []func()
}

func (r *recorder) Helper()                         {}
func (r *recorder) Logf(format string, args ...any) { r.t.Logf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
}
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *recorder) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}

// requireFailure checks that r recorded exactly one failure containing
// every part, and forgets it.
func (r *recorder) requireFailure(what string, parts ...string) {
	r.t.Helper()
	if len(r.fatals) != 1 {
		r.t.Fatalf("%s: %d failures reported, want 1: %q", what, len(r.fatals), r.fatals)
	}
	for _, p := range parts {
		if !strings.Contains(r.fatals[0], p) {
			r.t.Fatalf("%s: failure %q does not mention %q", what, r.fatals[0], p)
		}
	}
	r.fatals = nil
}

func TestApplyThenRequireRows(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	reg := registry()
	fx := projectortest.New(t, db, reg, projectortest.Config{})
	if err := postgres.ValidateSchemaName(fx.Schema); err != nil || !strings.HasPrefix(fx.Schema, projectortest.SchemaPrefix) {
		t.Fatalf("schema %q: %v", fx.Schema, err)
	}
	p := balances(reg, fx.Table("balances"))
	last := fx.Apply(t, p,
		projectortest.Stream("account-a", Deposited{"a", 10}, Noted{"not applied"}, Deposited{"a", 5}),
		projectortest.Stream("account-b", eventstore.Event{Data: Deposited{"b", 7}, Metadata: eventstore.Metadata{CorrelationID: "c1"}}),
	)
	if last.IsZero() {
		t.Fatal("Apply returned the zero position")
	}
	query := `SELECT account, total, n FROM ` + fx.Table("balances") + ` ORDER BY account`
	projectortest.RequireRows(t, fx, []balance{{"a", 15, 2}, {"b", 7, 1}}, query)
	projectortest.RequireRows(t, fx, []string{"a", "b"}, `SELECT account FROM `+fx.Table("balances")+` ORDER BY 1`)

	// More events: the projection goes on from its checkpoint, Setup does
	// not run again (it would fail: CREATE TABLE without IF NOT EXISTS).
	next := fx.Apply(t, p, projectortest.Stream("account-a", Deposited{"a", 1}))
	if next.Compare(last) <= 0 {
		t.Fatalf("second Apply returned %s, not after %s", next, last)
	}
	projectortest.RequireRows(t, fx, []balance{{"a", 16, 3}, {"b", 7, 1}}, query)
	// Nothing new: Apply catches up with what is there.
	if head := fx.Apply(t, p); head.Compare(next) < 0 {
		t.Fatalf("Apply without events returned %s, before %s", head, next)
	}
	projectortest.RequireRows(t, fx, []balance(nil), `SELECT account, total, n FROM `+fx.Table("balances")+` WHERE account = $1`, "nobody")
}

// TestFailuresAreReported: each helper fails the test with a message that
// says what went wrong.
func TestFailuresAreReported(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	reg := registry()
	r := &recorder{t: t}
	t.Cleanup(r.cleanup)

	if fx := projectortest.New(r, db, nil, projectortest.Config{}); fx != nil {
		t.Fatal("New with a nil registry returned a fixture")
	}
	r.requireFailure("nil registry", "registry is nil")
	projectortest.New(r, nil, reg, projectortest.Config{})
	r.requireFailure("nil db", "db is nil")

	fx := projectortest.New(r, db, reg, projectortest.Config{})
	if len(r.fatals) != 0 {
		t.Fatalf("New: %q", r.fatals)
	}
	p := balances(reg, fx.Table("balances"))

	// The handler fails on an event: the message names the event and the
	// handler's error.
	if pos := fx.Apply(r, p, projectortest.Stream("account-a", Deposited{"a", 1}, Deposited{"a", -1})); !pos.IsZero() {
		t.Fatalf("a failed Apply returned %s", pos)
	}
	r.requireFailure("handler error", `projection "balances"`, "negative deposit", "deposited", `stream "account-a" version 2`)

	// An event the registry does not know is refused at append.
	type unregistered struct{}
	fx.Apply(r, p, projectortest.Stream("account-b", unregistered{}))
	r.requireFailure("unregistered event", `append to "account-b"`)

	// An invalid projection.
	bad := p
	bad.Name = "no spaces allowed"
	fx.Apply(r, bad)
	r.requireFailure("invalid projection", "projection name")

	// Rows that differ: both lists, the differing row marked.
	other := projectortest.New(r, db, reg, projectortest.Config{})
	q := balances(reg, other.Table("balances"))
	other.Apply(r, q, projectortest.Stream("account-a", Deposited{"a", 1}))
	query := `SELECT account, total, n FROM ` + other.Table("balances")
	if projectortest.RequireRows(r, other, []balance{{"a", 2, 1}}, query) {
		t.Fatal("RequireRows matched different rows")
	}
	r.requireFailure("rows differ", "! row 0: got  {Account:a Total:1 N:1}", "want {Account:a Total:2 N:1}")
	projectortest.RequireRows(r, other, []balance{{"a", 1, 1}, {"b", 1, 1}}, query)
	r.requireFailure("missing row", "row 1: got  (none)")
	projectortest.RequireRows(r, other, []balance{}, `SELECT nope FROM `+other.Table("balances"))
	r.requireFailure("bad query", "nope")
}

// TestCleanupDropsTheSchema: the fixture's schema is dropped at cleanup,
// and kept with DisableCleanup.
func TestCleanupDropsTheSchema(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	exists := func(schema string) bool {
		var ok bool
		if err := db.Get(&ok, `SELECT to_regnamespace($1) IS NOT NULL`, postgres.QuoteIdentifier(schema)); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	for _, keep := range []bool{false, true} {
		r := &recorder{t: t}
		fx := projectortest.New(r, db, registry(), projectortest.Config{DisableCleanup: keep})
		fx.Apply(r, balances(fx.Store.Registry(), fx.Table("balances")), projectortest.Stream("account-a", Deposited{"a", 1}))
		if len(r.fatals) != 0 || !exists(fx.Schema) {
			t.Fatalf("keep=%v: %q, schema exists: %v", keep, r.fatals, exists(fx.Schema))
		}
		r.cleanup()
		if exists(fx.Schema) != keep {
			t.Fatalf("keep=%v: after cleanup the schema exists: %v", keep, !keep)
		}
		if keep {
			if _, err := db.Exec(`DROP SCHEMA ` + postgres.QuoteIdentifier(fx.Schema) + ` CASCADE`); err != nil {
				t.Fatal(err)
			}
		}
	}
}
