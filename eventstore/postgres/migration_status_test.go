package postgres_test

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

// widgetSet is a migration set of a component of the test's own.
func widgetSet(schema string, files int) postgres.MigrationParams {
	fs := fstest.MapFS{"001_widgets.up.sql": {Data: []byte(`CREATE TABLE {{quote .}}.widgets (id int);`)}}
	if files > 1 {
		fs["002_gadgets.up.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE {{quote .}}.gadgets (id int);`)}
	}
	return postgres.MigrationParams{Schema: schema, Component: "widget", Files: fs, Data: schema}
}

// TestMigrationStatusPlansAndScriptApplies: on a schema that does not
// exist, ReadMigrationStatus lists every migration as pending, in apply
// order, and creates nothing; the dry-run Script, run as it is, leaves the
// schema exactly as ApplyMigrationSets would (up to date, a store that
// works); afterwards the status lists each migration as applied, with its
// time, and a recorded migration of a set not asked about as unknown.
func TestMigrationStatusPlansAndScriptApplies(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, db)
	if _, err := db.ExecContext(ctx, `DROP SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	store, err := postgres.New(db, testRegistry(), postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sets := []postgres.MigrationParams{store.Migrations(), widgetSet(schema, 2)}

	st, err := postgres.ReadMigrationStatus(ctx, db, schema, sets...)
	if err != nil {
		t.Fatalf("ReadMigrationStatus: %v", err)
	}
	if st.SchemaExists || st.TableExists || len(st.Applied) != 0 || st.UpToDate() {
		t.Fatalf("status of a missing schema: %+v", st)
	}
	var got []string
	for _, p := range st.Pending {
		got = append(got, p.Component+"/"+p.Name)
	}
	if want := "eventstore/events eventstore/snapshots eventstore/schema_versions eventstore/chain widget/widgets widget/gadgets"; strings.Join(got, " ") != want {
		t.Fatalf("pending = %v, want %s", got, want)
	}
	if !strings.Contains(st.Pending[0].SQL, `CREATE TABLE "`+schema+`"."events"`) {
		t.Fatalf("pending SQL is not rendered: %s", st.Pending[0].SQL)
	}
	var exists bool
	if err := db.GetContext(ctx, &exists, `SELECT to_regnamespace($1) IS NOT NULL`, schema); err != nil || exists {
		t.Fatalf("ReadMigrationStatus created the schema (%v, %v)", exists, err)
	}

	script := st.Script()
	for _, want := range []string{"CREATE SCHEMA IF NOT EXISTS", "esox_migrations", "pg_advisory_xact_lock", "-- eventstore 001_events", "-- widget 002_gadgets", "COMMIT;"} {
		if !strings.Contains(script, want) {
			t.Fatalf("script lacks %q:\n%s", want, script)
		}
	}
	if n := strings.Count(script, "BEGIN;"); n != 2 {
		t.Fatalf("script has %d transactions, want one per component:\n%s", n, script)
	}
	if _, err := db.ExecContext(ctx, script); err != nil {
		t.Fatalf("run the dry-run script: %v\n%s", err, script)
	}
	if res, err := postgres.ApplyMigrationSets(ctx, db, schema, sets...); err != nil || len(res.Applied) != 0 {
		t.Fatalf("ApplyMigrationSets after the script: %+v, %v; want nothing left to apply", res, err)
	}
	if _, err := store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{placed("1", 1)}); err != nil {
		t.Fatalf("Append on the schema the script made: %v", err)
	}

	st, err = postgres.ReadMigrationStatus(ctx, db, schema, store.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	if !st.SchemaExists || !st.TableExists || !st.UpToDate() || st.Script() != "" || len(st.Applied) != storeMigrations+2 {
		t.Fatalf("status after the script: %+v", st)
	}
	for _, a := range st.Applied {
		if a.AppliedAt.IsZero() || a.Known != (a.Component == postgres.Component) {
			t.Errorf("applied %+v: want a time, and known only for the store's set", a)
		}
	}
}

// TestApplyMigrationSets applies several components' sets, records each
// under its component, and a second run finds nothing to do.
func TestApplyMigrationSets(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, db)
	store, err := postgres.StoreMigrations(postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	res, err := postgres.ApplyMigrationSets(ctx, db, schema, store, widgetSet(schema, 1))
	if err != nil || len(res.Applied) != storeMigrations+1 || res.Applied[storeMigrations].Component != "widget" {
		t.Fatalf("ApplyMigrationSets = %+v, %v; want the store's %d and the widget's 1", res, err, storeMigrations)
	}
	// A new migration of one set is all that is pending, and all that runs.
	st, err := postgres.ReadMigrationStatus(ctx, db, schema, store, widgetSet(schema, 2))
	if err != nil || len(st.Pending) != 1 || st.Pending[0].Name != "gadgets" || strings.Contains(st.Script(), "CREATE SCHEMA") {
		t.Fatalf("status with one new migration: %+v, %v", st, err)
	}
	if res, err := postgres.ApplyMigrationSets(ctx, db, schema, store, widgetSet(schema, 2)); err != nil || len(res.Applied) != 1 {
		t.Fatalf("second ApplyMigrationSets = %+v, %v; want the new one only", res, err)
	}
}

// TestMigrationSetsRefused: sets of another schema, a component given
// twice, a bad schema or a bad file are refused before anything is read or
// applied.
func TestMigrationSetsRefused(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, db)
	bad := widgetSet(schema, 1)
	bad.Files = fstest.MapFS{"0_x.up.sql": {Data: []byte(`SELECT 1`)}}
	cases := map[string][]postgres.MigrationParams{
		"other schema":   {widgetSet("other_schema", 1)},
		"twice":          {widgetSet(schema, 1), widgetSet(schema, 2)},
		"bad file":       {widgetSet(schema, 1), bad},
		"no component":   {{Schema: schema, Files: fstest.MapFS{}}},
		"nil files":      {{Schema: schema, Component: "x"}},
		"invalid schema": nil,
	}
	for name, sets := range cases {
		s := schema
		if name == "invalid schema" {
			s = "pg_nope"
		}
		if _, err := postgres.ReadMigrationStatus(ctx, db, s, sets...); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("%s: ReadMigrationStatus = %v, want ErrInvalidArgument", name, err)
		}
		if _, err := postgres.ApplyMigrationSets(ctx, db, s, sets...); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("%s: ApplyMigrationSets = %v, want ErrInvalidArgument", name, err)
		}
	}
	var tables int
	if err := db.GetContext(ctx, &tables, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, schema); err != nil || tables != 0 {
		t.Fatalf("refused sets created %d tables (%v)", tables, err)
	}
}

// TestMigrationStatusLeastPrivilege: a role with only USAGE on the schema
// and SELECT on esox_migrations reads the status; it has no right to run
// any DDL.
func TestMigrationStatusLeastPrivilege(t *testing.T) {
	t.Parallel()
	admin := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, admin)
	store, err := postgres.StoreMigrations(postgres.Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.ApplyMigrationSets(ctx, admin, schema, store); err != nil {
		t.Fatal(err)
	}
	reader := pgtest.Role(t, admin)
	for _, q := range []string{`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + reader, `GRANT SELECT ON ` + schema + `.esox_migrations TO ` + reader} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db := pgtest.OpenAs(t, "postgres", reader)
	st, err := postgres.ReadMigrationStatus(ctx, db, schema, store, widgetSet(schema, 1))
	if err != nil {
		t.Fatalf("ReadMigrationStatus as a reader: %v", err)
	}
	if len(st.Applied) != storeMigrations || len(st.Pending) != 1 || st.Pending[0].Component != "widget" {
		t.Fatalf("status as a reader: %+v", st)
	}
}
