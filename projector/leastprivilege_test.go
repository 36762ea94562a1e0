package projector_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// TestLeastPrivilege: once a role owning the schema (and no more: it may
// not create schemas) has migrated every component and registered the
// projections, an application role with only USAGE on the schema and
// SELECT, INSERT, UPDATE, DELETE on its tables (and USAGE on its
// sequences) runs the store, a runner and a forwarder with DisableMigrate,
// and an inbox with its stream version guard: every Migrate it calls finds
// nothing to do and runs no DDL. The application role cannot register a
// new projection version: its runner refuses it (ErrNotRegistered).
func TestLeastPrivilege(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := pgtest.Open(t)
	schema := pgtest.Schema(t, admin)
	ownerRole, appRole := pgtest.Role(t, admin), pgtest.Role(t, admin)
	if _, err := admin.ExecContext(ctx, `ALTER SCHEMA `+schema+` OWNER TO `+ownerRole); err != nil {
		t.Fatal(err)
	}
	ownerDB := pgtest.OpenAs(t, "postgres", ownerRole)
	appDB := pgtest.OpenAs(t, "postgres", appRole)
	reg := newRegistry()
	logger := watermill.NewSlogLogger(testLogger(t))
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, logger)
	defer pubsub.Close()

	// The owner's deployment step: every component's Migrate, with the
	// service's projections and inbox.
	owner := setupOn(t, ownerDB, schema, reg, nil)
	ownerRunner, err := projector.NewRunner(owner.store, fastConfig(t), owner.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	ownerFwd, err := forwarder.New(owner.store, pubsub, forwarder.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ownerInbox := newInboxOn(t, ownerDB, schema, reg)
	mirror := newInboxModel(t, owner, "mirror")
	for name, migrate := range map[string]func(context.Context) (postgres.MigrateResult, error){
		"runner": ownerRunner.Migrate, "forwarder": ownerFwd.Migrate, "inbox": ownerInbox.Migrate,
	} {
		if _, err := migrate(ctx); err != nil {
			t.Fatalf("owner: %s Migrate: %v", name, err)
		}
	}
	for _, q := range []string{
		`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + appRole,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ` + schema + ` TO ` + appRole,
		`GRANT USAGE ON ALL SEQUENCES IN SCHEMA ` + schema + ` TO ` + appRole,
	} {
		if _, err := ownerDB.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := appDB.ExecContext(ctx, `CREATE TABLE `+schema+`.probe (id int)`); postgres.SQLState(err) != "42501" {
		t.Fatalf("CREATE TABLE as the application role = %v, want insufficient_privilege", err)
	}

	// The service, as the application role.
	app := setupOn(t, appDB, schema, reg, nil) // calls Store.Migrate: nothing to do
	cfg := fastConfig(t)
	cfg.DisableMigrate = true
	runner, err := projector.NewRunner(app.store, cfg, app.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := runner.Migrate(ctx); err != nil || len(res.Applied) != 0 {
		t.Fatalf("application role: Runner.Migrate of registered projections = %+v, %v; want nothing to do", res, err)
	}
	fwd, err := forwarder.New(app.store, pubsub, forwarder.Config{DisableMigrate: true, PublishConcurrency: 1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	inbox := newInboxOn(t, appDB, schema, reg)
	if res, err := inbox.Migrate(ctx); err != nil || len(res.Applied) != 0 {
		t.Fatalf("application role: Inbox.Migrate = %+v, %v; want nothing to do", res, err)
	}
	handler, err := inbox.Handler(mirror.handler())
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := pubsub.Subscribe(ctx, "account")
	if err != nil {
		t.Fatal(err)
	}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		// GoChannel hands messages over concurrently, out of order: the
		// guard refuses those that come early and GoChannel redelivers
		// them after the nack.
		for msg := range msgs {
			if err := handler(msg); err != nil {
				if !errors.Is(err, projector.ErrOutOfOrder) {
					t.Errorf("inbox: %v", err)
				}
				msg.Nack()
				continue
			}
			msg.Ack()
		}
	}()
	defer func() { _ = pubsub.Close(); <-consumed }()
	start(t, runner)
	fwdCtx, stopFwd := context.WithCancel(ctx)
	fwdDone := make(chan error, 1)
	go func() { fwdDone <- fwd.Run(fwdCtx) }()
	defer func() {
		stopFwd()
		if err := <-fwdDone; err != nil {
			t.Errorf("forwarder: %v", err)
		}
	}()

	last := app.appendDeposits(t, 30, 1, 3)
	waitFor(t, runner, "balances", last.LastPosition)
	equalBalances(t, "projection run by the application role", app.model(t, "balances"), app.foldAll(t))
	if err := inbox.WaitFor(ctx, last.EventIDs[len(last.EventIDs)-1]); err != nil {
		t.Fatalf("inbox WaitFor: %v", err)
	}
	want := make([]int64, 30)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if got := mirror.versions(t, "account-a0"); !slices.Equal(got, want) {
		t.Fatalf("inbox applied versions %v, want 1..30 in order", got)
	}

	// Status reads pg_locks: a runner of this role that does not lead sees
	// the leader's lock.
	waiter, err := projector.NewRunner(app.store, cfg, app.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	if s := statusOf(t, waiter, "balances", 1); s.Leading || s.State != projector.StateRunning {
		t.Fatalf("Status from a standby of the application role = %+v, want running, led elsewhere", s)
	}
	if s, err := inbox.Status(ctx); err != nil || s.Messages != 30 || s.Streams != 1 {
		t.Fatalf("inbox Status = %+v, %v", s, err)
	}

	// A new projection version needs the owner.
	p2 := app.balances("balances", "balances_v2")
	p2.Version = 2
	r2, err := projector.NewRunner(app.store, cfg, p2)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Run(ctx); !errors.Is(err, projector.ErrNotRegistered) {
		t.Fatalf("application role: Run of an unregistered version = %v, want ErrNotRegistered", err)
	}
}

// newInboxOn returns the Inbox of the consumer "mirror", with the stream
// version guard, over db (not migrated).
func newInboxOn(t testing.TB, db *sqlx.DB, schema string, reg *eventstore.Registry) *projector.Inbox {
	t.Helper()
	in, err := projector.NewInbox(db, reg, projector.InboxConfig{Schema: schema, Consumer: "mirror", StreamVersionGuard: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return in
}
