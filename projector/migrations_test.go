package projector_test

import (
	"context"
	"testing"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/projector"
)

// TestMigrationsIsWhatMigrateApplies: the projector's migration set
// (projector.Migrations, Runner.Migrations, Inbox.Migrations) is pending
// before Runner.Migrate and applied after, so a command that has no
// projections can plan and apply the projector's tables; applying the set
// alone creates the tables a runner then uses.
func TestMigrationsIsWhatMigrateApplies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	r, err := projector.NewRunner(b.store, projector.Config{Logger: testLogger(t)}, b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := projector.NewInbox(b.db, b.reg, projector.InboxConfig{Schema: b.schema, Consumer: "c", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []postgres.MigrationParams{r.Migrations(), in.Migrations()} {
		if set.Component != projector.Component || set.Schema != b.schema {
			t.Fatalf("set = %+v", set)
		}
	}
	st, err := postgres.ReadMigrationStatus(ctx, b.db, b.schema, projector.Migrations(b.schema))
	if err != nil || len(st.Pending) != 4 {
		t.Fatalf("status before Migrate: %+v, %v; want the projector's 4 migrations pending", st, err)
	}
	if res, err := postgres.ApplyMigrationSets(ctx, b.db, b.schema, r.Migrations()); err != nil || len(res.Applied) != 4 {
		t.Fatalf("apply the set: %+v, %v", res, err)
	}
	// The runner finds its tables made and only registers its projection.
	if res, err := r.Migrate(ctx); err != nil || len(res.Applied) != 0 {
		t.Fatalf("Runner.Migrate after the set: %+v, %v; want nothing left to apply", res, err)
	}
	st, err = postgres.ReadMigrationStatus(ctx, b.db, b.schema, in.Migrations())
	if err != nil || !st.UpToDate() {
		t.Fatalf("status after Migrate: %+v, %v", st, err)
	}
	if _, err := r.Status(ctx); err != nil {
		t.Fatalf("Status: %v", err)
	}
}
