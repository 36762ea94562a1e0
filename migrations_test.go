package esox_test

import (
	"errors"
	"testing"

	"github.com/esox-go/esox"
	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// TestMigrations: esox.Migrations is the store's, the projector's and the
// forwarder's sets; App.Migrations is its parts' sets (the projector's
// once, for the runner and the inbox), all pending before App.Migrate and
// none after.
func TestMigrations(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx := testCtx(t)
	all, err := esox.Migrations(schema)
	if err != nil {
		t.Fatal(err)
	}
	var comps []string
	for _, s := range all {
		comps = append(comps, s.Component)
	}
	if len(comps) != 4 || comps[0] != postgres.Component || comps[1] != projector.Component || comps[2] != forwarder.Component || comps[3] != postgres.KeysComponent {
		t.Fatalf("esox.Migrations components = %v", comps)
	}
	if _, err := esox.Migrations("pg_bad"); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("esox.Migrations(pg_bad) = %v", err)
	}

	reg := registry()
	inbox, err := projector.NewInbox(db, reg, projector.InboxConfig{Schema: schema, Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := postgres.NewKeyStore(db, postgres.KeyStoreConfig{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	a, err := esox.New(db, reg, esox.Config{Schema: schema, Projections: []projector.Projection{balances(reg, schema)},
		Inboxes: []*projector.Inbox{inbox}, Publisher: newPublisher(), KeyStore: keys, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	sets := a.Migrations()
	if len(sets) != 4 {
		t.Fatalf("App.Migrations = %d sets, want store, projector, forwarder, key store", len(sets))
	}
	st, err := postgres.ReadMigrationStatus(ctx, db, schema, sets...)
	if err != nil || len(st.Pending) == 0 {
		t.Fatalf("status before Migrate = %+v, %v", st, err)
	}
	if _, err := a.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = postgres.ReadMigrationStatus(ctx, db, schema, sets...)
	if err != nil || !st.UpToDate() {
		t.Fatalf("status after Migrate = %+v, %v", st, err)
	}
	// The command's full set agrees: nothing left for it either.
	if st, err := postgres.ReadMigrationStatus(ctx, db, schema, all...); err != nil || !st.UpToDate() {
		t.Fatalf("esox.Migrations status after App.Migrate = %+v, %v", st, err)
	}
}
