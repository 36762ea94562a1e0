package projector_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// Example runs a projection of deposits into a balances table, appends two
// events and reads its own writes with WaitFor.
func Example() {
	ctx := context.Background()
	db, err := sqlx.Open("postgres", pgtest.DatabaseURL())
	if err != nil {
		panic(err)
	}
	defer db.Close()
	schema := fmt.Sprintf("esoxtest_%d_example", time.Now().Unix())
	defer db.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	reg := eventstore.NewRegistry()
	eventstore.MustRegister[Deposited](reg, "deposited")
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema, Logger: quiet})
	if err != nil {
		panic(err)
	}
	if _, err := store.Migrate(ctx); err != nil {
		panic(err)
	}

	table := schema + ".balances"
	hs := projector.NewHandlers(reg)
	projector.On(hs, func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e Deposited) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (account, total) VALUES ($1, $2)
			ON CONFLICT (account) DO UPDATE SET total = balances.total + excluded.total`, e.Account, e.Amount)
		return err
	})
	balances := projector.Projection{
		Name:    "balances",
		Handler: hs,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+table+` (account text PRIMARY KEY, total bigint NOT NULL)`)
			return err
		},
	}
	runner, err := projector.NewRunner(store, projector.Config{Logger: quiet}, balances)
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(runCtx) }()

	res, err := store.Append(ctx, "account-42", eventstore.Any, []eventstore.Event{
		{Data: Deposited{Account: "42", Amount: 10}},
		{Data: Deposited{Account: "42", Amount: 5}},
	})
	if err != nil {
		panic(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := runner.WaitFor(waitCtx, "balances", res.LastPosition); err != nil {
		panic(err)
	}
	var total int64
	if err := db.QueryRow(`SELECT total FROM ` + table + ` WHERE account = '42'`).Scan(&total); err != nil {
		panic(err)
	}
	fmt.Println("balance of account 42:", total)

	stop()
	fmt.Println("Run returned:", <-done)
	// Output:
	// balance of account 42: 15
	// Run returned: <nil>
}
