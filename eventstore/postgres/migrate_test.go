package postgres_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

func TestMigrateConcurrentOnFreshSchema(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	// pgtest.Schema creates the schema and drops it at cleanup; drop it now
	// so Migrate starts from nothing.
	schema := pgtest.Schema(t, db)
	if _, err := db.ExecContext(ctx, `DROP SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	const workers = 8
	results := make([]postgres.MigrateResult, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range workers {
		wg.Go(func() {
			// Each goroutine has its own Store, as separate processes would.
			s, err := postgres.New(db, testRegistry(), postgres.Config{Schema: schema})
			if err != nil {
				errs[i] = err
				return
			}
			defer s.Close()
			<-start
			results[i], errs[i] = s.Migrate(ctx)
		})
	}
	close(start)
	wg.Wait()
	applied := 0
	for i := range workers {
		if errs[i] != nil {
			t.Fatalf("Migrate %d: %v", i, errs[i])
		}
		applied += len(results[i].Applied)
	}
	if applied != storeMigrations {
		t.Fatalf("migrations applied across all runs: %d, want %d (each exactly once)", applied, storeMigrations)
	}

	s, err := postgres.New(db, testRegistry(), postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Migrate(ctx)
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(res.Applied) != 0 {
		t.Fatalf("second Migrate applied %v, want nothing", res.Applied)
	}
	var rows []struct {
		Component string `db:"component"`
		Version   int    `db:"version"`
		Name      string `db:"name"`
	}
	if err := db.SelectContext(ctx, &rows, `SELECT component, version, name FROM "`+schema+`".esox_migrations ORDER BY version`); err != nil {
		t.Fatal(err)
	}
	if len(rows) != storeMigrations || rows[0].Component != postgres.Component || rows[0].Version != 1 || rows[storeMigrations-1].Version != storeMigrations {
		t.Fatalf("esox_migrations rows: %+v", rows)
	}
	// The store works on the migrated schema.
	if _, err := s.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 1)}); err != nil {
		t.Fatalf("Append after migrate: %v", err)
	}
}

// storeMigrations is the number of the store's migrations.
const storeMigrations = 4

func TestApplyMigrationsGeneric(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, db)
	files := fstest.MapFS{
		"001_first.up.sql":    {Data: []byte(`CREATE TABLE {{quote .Schema}}.{{quote .Table}} (id int)`)},
		"002_second.up.sql":   {Data: []byte(`ALTER TABLE {{quote .Schema}}.{{quote .Table}} ADD COLUMN name text`)},
		"002_second.down.sql": {Data: []byte(`this is not applied`)},
		"README.md":           {Data: []byte(`ignored`)},
	}
	data := map[string]string{"Schema": schema, "Table": "Mixed_Case"}
	p := postgres.MigrationParams{Schema: schema, Component: "widget", Files: files, Data: data}
	res, err := postgres.ApplyMigrations(ctx, db, p)
	if err != nil {
		t.Fatalf("ApplyMigrations: %v", err)
	}
	if len(res.Applied) != 2 || res.Applied[0].Name != "first" || res.Applied[1].Version != 2 {
		t.Fatalf("applied: %+v", res.Applied)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO "`+schema+`"."Mixed_Case" (id, name) VALUES (1, 'x')`); err != nil {
		t.Fatalf("migrated table: %v", err)
	}

	// A third migration is applied alone; the store's component is separate.
	files["003_third.up.sql"] = &fstest.MapFile{Data: []byte(`CREATE INDEX ON {{quote .Schema}}.{{quote .Table}} (name)`)}
	res, err = postgres.ApplyMigrations(ctx, db, p)
	if err != nil || len(res.Applied) != 1 || res.Applied[0].Version != 3 {
		t.Fatalf("third: %+v, %v", res, err)
	}

	// A failing migration applies nothing of its run.
	files["004_bad.up.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE {{quote .Schema}}.t4 (id int)`)}
	files["005_bad.up.sql"] = &fstest.MapFile{Data: []byte(`SELECT no_such_function()`)}
	if _, err := postgres.ApplyMigrations(ctx, db, p); err == nil || !strings.Contains(err.Error(), "005_bad") {
		t.Fatalf("failing migration: err = %v, want one naming 005_bad", err)
	}
	var exists bool
	if err := db.GetContext(ctx, &exists, `SELECT to_regclass($1) IS NOT NULL`, `"`+schema+`".t4`); err != nil || exists {
		t.Fatalf("004 must have been rolled back with 005: exists=%v err=%v", exists, err)
	}
	delete(files, "004_bad.up.sql")
	delete(files, "005_bad.up.sql")

	bad := []struct {
		name string
		p    postgres.MigrationParams
	}{
		{"bad schema", postgres.MigrationParams{Schema: `x"; DROP TABLE y; --`, Component: "c", Files: files}},
		{"reserved schema", postgres.MigrationParams{Schema: "pg_esox", Component: "c", Files: files}},
		{"no component", postgres.MigrationParams{Schema: schema, Files: files}},
		{"no files", postgres.MigrationParams{Schema: schema, Component: "c"}},
		{"duplicate version", postgres.MigrationParams{Schema: schema, Component: "c", Files: fstest.MapFS{
			"001_a.up.sql": {Data: []byte(`SELECT 1`)}, "0001_b.up.sql": {Data: []byte(`SELECT 1`)}}}},
		{"version zero", postgres.MigrationParams{Schema: schema, Component: "c", Files: fstest.MapFS{
			"000_a.up.sql": {Data: []byte(`SELECT 1`)}}}},
	}
	for _, tc := range bad {
		if _, err := postgres.ApplyMigrations(ctx, db, tc.p); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", tc.name, err)
		}
	}
	// A template referring to missing data fails before touching the database.
	_, err = postgres.ApplyMigrations(ctx, db, postgres.MigrationParams{Schema: schema, Component: "tmpl",
		Files: fstest.MapFS{"001_a.up.sql": {Data: []byte(`CREATE TABLE {{.Nope}} (id int)`)}}, Data: map[string]string{}})
	if err == nil {
		t.Fatal("missing template key: want an error")
	}
}

func TestMigrateHonorsContext(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	s, err := postgres.New(db, testRegistry(), postgres.Config{Schema: pgtest.Schema(t, db)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Migrate(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Migrate with cancelled ctx: %v, want context.Canceled", err)
	}
}

// TestMigrateTwoStoresInOneSchema: a store with other table names in a schema
// that another store already migrated gets its own tables, not "nothing to
// do" (migrations are recorded per set of table names).
func TestMigrateTwoStoresInOneSchema(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	second, err := postgres.New(b.db, testRegistry(), postgres.Config{Schema: b.schema, EventsTable: "events_b", SnapshotsTable: "snapshots_b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Close() })
	res, err := second.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Applied) == 0 {
		t.Fatal("the second store's Migrate applied nothing")
	}
	for _, s := range []*postgres.Store{b.store, second} {
		if _, err := s.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 1)}); err != nil {
			t.Fatalf("append through %s: %v", s.QualifiedEventsTable(), err)
		}
	}
	if res, err := second.Migrate(ctx); err != nil || len(res.Applied) != 0 {
		t.Fatalf("second Migrate of the second store: %+v, %v; want nothing applied", res, err)
	}
}

// TestMigrateLeastPrivilege: a schema owned by a role that may not create
// schemas (no CREATE on the database) is migrated by that role, and an
// application role with only USAGE on the schema and DML on its tables then
// runs Migrate (nothing to do, no DDL) and the store. With a migration
// pending, the application role gets the permission error and a hint.
func TestMigrateLeastPrivilege(t *testing.T) {
	t.Parallel()
	admin := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, admin)
	owner, app := pgtest.Role(t, admin), pgtest.Role(t, admin)
	if _, err := admin.ExecContext(ctx, `ALTER SCHEMA `+schema+` OWNER TO `+owner); err != nil {
		t.Fatal(err)
	}
	ownerDB := pgtest.OpenAs(t, "postgres", owner)
	appDB := pgtest.OpenAs(t, "postgres", app)

	// The owner migrates: its schema exists, so no CREATE SCHEMA (which
	// needs CREATE on the database) is attempted.
	ownerStore, err := postgres.New(ownerDB, testRegistry(), postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer ownerStore.Close()
	if res, err := ownerStore.Migrate(ctx); err != nil || len(res.Applied) != storeMigrations {
		t.Fatalf("owner Migrate: %+v, %v; want %d applied", res, err, storeMigrations)
	}
	for _, q := range []string{
		`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + app,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ` + schema + ` TO ` + app,
	} {
		if _, err := ownerDB.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The application role really has no DDL rights.
	if _, err := appDB.ExecContext(ctx, `CREATE TABLE `+schema+`.probe (id int)`); postgres.SQLState(err) != "42501" {
		t.Fatalf("CREATE TABLE as the application role: %v, want insufficient_privilege", err)
	}

	as, err := postgres.New(appDB, testRegistry(), postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer as.Close()
	if res, err := as.Migrate(ctx); err != nil || len(res.Applied) != 0 {
		t.Fatalf("application role Migrate: %+v, %v; want nothing applied and no error", res, err)
	}
	res, err := as.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 1)})
	if err != nil {
		t.Fatalf("Append as the application role: %v", err)
	}
	var recs []eventstore.Record
	for rec, err := range as.ReadStream(ctx, "order-1", 0) {
		if err != nil {
			t.Fatalf("ReadStream as the application role: %v", err)
		}
		recs = append(recs, rec)
	}
	if len(recs) != 1 || recs[0].Position != res.LastPosition {
		t.Fatalf("ReadStream as the application role: %+v", recs)
	}

	// A pending migration needs the owner: the application role gets the
	// permission error, with a hint, and nothing is recorded.
	p := postgres.MigrationParams{Schema: schema, Component: "widget", Files: fstest.MapFS{
		"001_widgets.up.sql": {Data: []byte(`CREATE TABLE {{quote .}}.widgets (id int)`)}}, Data: schema}
	_, err = postgres.ApplyMigrations(ctx, appDB, p)
	if postgres.SQLState(err) != "42501" || !strings.Contains(err.Error(), "schema's owner") {
		t.Fatalf("pending migration as the application role: %v, want insufficient_privilege with a hint", err)
	}
	if res, err := postgres.ApplyMigrations(ctx, ownerDB, p); err != nil || len(res.Applied) != 1 {
		t.Fatalf("pending migration as the owner: %+v, %v", res, err)
	}
}
