package projector_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(leaktest.Run(m))
}

// Event types of the tests.
type Deposited struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

type Noted struct {
	Text string `json:"text"`
}

func newRegistry() *eventstore.Registry {
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[Deposited](reg, "deposited")
	eventstore.MustRegister[Noted](reg, "noted")
	return reg
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// bundle is one test's database, schema and store.
type bundle struct {
	db     *sqlx.DB
	schema string
	reg    *eventstore.Registry
	store  *postgres.Store
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := pgtest.Open(t)
	return setupOn(t, db, pgtest.Schema(t, db), nil, nil)
}

// setupOn makes a migrated store in schema; reg nil means a new registry.
func setupOn(t testing.TB, db *sqlx.DB, schema string, reg *eventstore.Registry, hooks []postgres.AppendHook) *bundle {
	t.Helper()
	if reg == nil {
		reg = newRegistry()
	}
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema, AppendHooks: hooks, Logger: testLogger(t)})
	return &bundle{db: db, schema: schema, reg: reg, store: store}
}

func (b *bundle) q(name string) string {
	return postgres.QuoteIdentifier(b.schema) + "." + postgres.QuoteIdentifier(name)
}

// balances returns a projection of deposits into table: one upsert per event
// that adds the amount and counts the event, so a doubled or lost event
// shows in the totals.
func (b *bundle) balances(name, table string) projector.Projection {
	tbl := b.q(table)
	hs := projector.NewHandlers(b.reg)
	projector.On(hs, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e Deposited) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+tbl+` (account, total, n) VALUES ($1, $2, 1)
			ON CONFLICT (account) DO UPDATE SET total = `+tbl+`.total + excluded.total, n = `+tbl+`.n + 1`, e.Account, e.Amount)
		return err
	})
	return projector.Projection{
		Name:    name,
		Handler: hs,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+tbl+` (account text PRIMARY KEY, total bigint NOT NULL, n bigint NOT NULL)`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+tbl)
			return err
		},
	}
}

// appendDeposits appends n deposits spread over accounts, in appends of per
// events, and returns the last result.
func (b *bundle) appendDeposits(t testing.TB, n, accounts, per int) eventstore.AppendResult {
	t.Helper()
	var last eventstore.AppendResult
	for i := 0; i < n; i += per {
		acct := fmt.Sprintf("a%d", (i/per)%accounts)
		evs := make([]eventstore.Event, 0, per)
		for j := i; j < min(i+per, n); j++ {
			evs = append(evs, eventstore.Event{Data: Deposited{Account: acct, Amount: int64(j%7 + 1)}})
		}
		res, err := b.store.Append(context.Background(), "account-"+acct, eventstore.Any, evs)
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		last = res
	}
	return last
}

// lastEvent returns the feed position of the last committed event. Unlike
// Store.Head it is not held back by open transactions (such as a runner's
// batch), so once writers are done, waiting for it waits for everything.
func (b *bundle) lastEvent(t testing.TB) eventstore.Position {
	t.Helper()
	var txid string
	var p eventstore.Position
	if err := b.db.QueryRow(`SELECT transaction_id::text AS txid, position FROM `+b.store.QualifiedEventsTable()+`
		ORDER BY transaction_id DESC, position DESC LIMIT 1`).Scan(&txid, &p.Position); err != nil {
		t.Fatalf("last event: %v", err)
	}
	fmt.Sscan(txid, &p.TransactionID)
	return p
}

type balance struct {
	Account string `db:"account"`
	Total   int64  `db:"total"`
	N       int64  `db:"n"`
}

// foldAll computes the expected balances from every event in the table.
func (b *bundle) foldAll(t testing.TB) map[string]balance {
	t.Helper()
	return b.fold(t, eventstore.Position{TransactionID: 1<<63 - 1})
}

// fold computes the expected balances straight from the events table, up to
// and including upTo (nothing when upTo is zero).
func (b *bundle) fold(t testing.TB, upTo eventstore.Position) map[string]balance {
	t.Helper()
	q := `SELECT payload->>'account' AS account, sum((payload->>'amount')::bigint) AS total, count(*) AS n
		FROM ` + b.store.QualifiedEventsTable() + ` WHERE event_type = 'deposited'
		AND (transaction_id, position) <= ($1::xid8, $2::bigint) GROUP BY 1`
	args := []any{fmt.Sprint(upTo.TransactionID), upTo.Position}
	var rows []balance
	if err := b.db.Select(&rows, q, args...); err != nil {
		t.Fatalf("fold: %v", err)
	}
	out := map[string]balance{}
	for _, r := range rows {
		out[r.Account] = r
	}
	return out
}

func (b *bundle) model(t testing.TB, table string) map[string]balance {
	t.Helper()
	var rows []balance
	if err := b.db.Select(&rows, `SELECT account, total, n FROM `+b.q(table)); err != nil {
		t.Fatalf("read model: %v", err)
	}
	out := map[string]balance{}
	for _, r := range rows {
		out[r.Account] = r
	}
	return out
}

func equalBalances(t testing.TB, what string, got, want map[string]balance) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d accounts, want %d\ngot  %v\nwant %v", what, len(got), len(want), got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Fatalf("%s: account %s = %+v, want %+v", what, k, got[k], w)
		}
	}
}

// running is a Runner started in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs r until stop (or cleanup); Run must return nil.
func start(t testing.TB, r *projector.Runner) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rr := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(ctx) }()
	t.Cleanup(func() { rr.stop(t) })
	return rr
}

// stop cancels the runner and waits for Run to return; safe to call twice.
func (rr *running) stop(t testing.TB) {
	t.Helper()
	rr.cancel()
	select {
	case err, ok := <-rr.done:
		if ok && err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
		if ok {
			close(rr.done)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func fastConfig(t testing.TB) projector.Config {
	return projector.Config{
		BatchSize:           100,
		PollInterval:        5 * time.Millisecond,
		RetryBackoff:        10 * time.Millisecond,
		MaxRetryBackoff:     200 * time.Millisecond,
		LeaderRetryInterval: 100 * time.Millisecond,
		Logger:              testLogger(t),
	}
}

func waitFor(t testing.TB, r *projector.Runner, name string, pos eventstore.Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := r.WaitFor(ctx, name, pos); err != nil {
		t.Fatalf("WaitFor(%s, %s): %v", name, pos, err)
	}
}

func statusOf(t testing.TB, r *projector.Runner, name string, version int) projector.ProjectionStatus {
	t.Helper()
	st, err := r.Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	for _, s := range st {
		if s.Name == name && s.Version == version {
			return s
		}
	}
	t.Fatalf("Status has no %s v%d: %+v", name, version, st)
	return projector.ProjectionStatus{}
}
