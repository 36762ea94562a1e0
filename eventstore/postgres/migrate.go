package postgres

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"text/template"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// migrationsTable records applied migrations in each schema.
const migrationsTable = "esox_migrations"

// Component is the component name under which Store.Migrate
// records its migrations for the default table names. A store with other
// table names records them as "eventstore:<events table>,<snapshots table>",
// so several stores can share a schema.
const Component = "eventstore"

// migrationComponent names a store's migrations in esox_migrations: the
// tables they create, so that a second store in the same schema with other
// table names is migrated too.
func migrationComponent(cfg Config) string {
	if cfg.EventsTable == EventsTableDefault && cfg.SnapshotsTable == SnapshotsTableDefault {
		return Component
	}
	return Component + ":" + cfg.EventsTable + "," + cfg.SnapshotsTable
}

//go:embed migrations/*.up.sql
var embeddedMigrations embed.FS

// MigrationParams says which migrations ApplyMigrations applies, and where.
type MigrationParams struct {
	// Schema is created if missing and holds the esox_migrations table. It
	// must pass ValidateSchemaName.
	Schema string
	// Component names the set of migrations (e.g. "eventstore",
	// "projector"); versions are numbered per component. Required.
	Component string
	// Files holds the migrations at its root, named NNN_name.up.sql with NNN
	// a positive number unique in Files. Other files are ignored. Each is a
	// text/template executed with Data; the template function "quote"
	// quotes an identifier (QuoteIdentifier).
	Files fs.FS
	// Data is the templates' data, typically quoted identifiers.
	Data any
}

// MigrateResult reports what a migration run did.
type MigrateResult struct {
	// Applied lists the migrations applied by this run, in order; empty
	// when everything was already applied.
	Applied []Migration
}

// Migration identifies one migration file.
type Migration struct {
	// Component is the MigrationParams.Component it belongs to.
	Component string
	// Version is the file's number, NNN in NNN_name.up.sql.
	Version int
	// Name is the file's name part, name in NNN_name.up.sql.
	Name string
}

var migrationName = regexp.MustCompile(`^([0-9]+)_([A-Za-z0-9_]+)\.up\.sql$`)

type migrationFile struct {
	Migration
	sql string
}

// ApplyMigrations applies the migrations in p.Files that are not yet recorded
// for p.Component in <p.Schema>.esox_migrations, in version order, creating
// the schema and that table if missing. It runs in one transaction holding
// pg_advisory_xact_lock on a key derived from the schema name, so several
// processes may call it at once: one applies, the others then find nothing
// to do. Either every pending migration is applied or none is.
//
// It reads esox_migrations before it runs any DDL: when every migration of
// p.Component is recorded it only reads, so a role without DDL rights (no
// CREATE on the database or the schema, only USAGE on the schema and
// SELECT, INSERT, UPDATE, DELETE on its tables) may call it once a role
// that owns the schema has applied the migrations; see docs/operations.md.
// With migrations pending, such a role gets PostgreSQL's permission error
// (SQLSTATE 42501) wrapped, with a hint.
//
// It is safe for concurrent use; ctx bounds the whole run. Errors: an
// *eventstore.InvalidArgumentError (ErrInvalidArgument) for bad params or
// file names, template errors, and database errors wrapped.
func ApplyMigrations(ctx context.Context, db *sqlx.DB, p MigrationParams) (MigrateResult, error) {
	if err := ValidateSchemaName(p.Schema); err != nil {
		return MigrateResult{}, fmt.Errorf("migrate: Schema: %w", err)
	}
	if p.Component == "" {
		return MigrateResult{}, fmt.Errorf("migrate: %w", &eventstore.InvalidArgumentError{Field: "Component", Reason: "must not be empty"})
	}
	if p.Files == nil {
		return MigrateResult{}, fmt.Errorf("migrate: %w", &eventstore.InvalidArgumentError{Field: "Files", Reason: "must not be nil"})
	}
	files, err := loadMigrations(p)
	if err != nil {
		return MigrateResult{}, err
	}

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: begin: %w", p.Component, err)
	}
	defer func() { _ = tx.Rollback() }()

	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey(p.Schema)); err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: advisory lock: %w", p.Component, err)
	}
	schema := QuoteIdentifier(p.Schema)
	table := schema + "." + QuoteIdentifier(migrationsTable)
	// Read before any DDL: a role without DDL rights (the application's,
	// once an owner has migrated) must find everything applied and change
	// nothing. CREATE … IF NOT EXISTS checks the CREATE privilege even when
	// the object exists, so it is not run when the object is there.
	var schemaExists, tableExists bool
	if err := tx.QueryRowContext(ctx, `SELECT to_regnamespace($1) IS NOT NULL, to_regclass($2) IS NOT NULL`, schema, table).
		Scan(&schemaExists, &tableExists); err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: look up %s: %w", p.Component, migrationsTable, err)
	}
	var done []int
	if tableExists {
		if err := tx.SelectContext(ctx, &done, `SELECT version FROM `+table+` WHERE component = $1`, p.Component); err != nil {
			return MigrateResult{}, fmt.Errorf("migrate %s: read applied versions: %w", p.Component, err)
		}
	}
	pending := slices.DeleteFunc(files, func(f migrationFile) bool { return slices.Contains(done, f.Version) })
	if len(pending) == 0 {
		return MigrateResult{}, nil // the deferred Rollback ends the read-only transaction
	}
	if !schemaExists {
		if _, err := tx.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+schema); err != nil {
			return MigrateResult{}, fmt.Errorf("migrate %s: create schema%s: %w", p.Component, privilegeHint(err), err)
		}
	}
	if !tableExists {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(migrationsTableDDL, table)); err != nil {
			return MigrateResult{}, fmt.Errorf("migrate %s: create %s%s: %w", p.Component, migrationsTable, privilegeHint(err), err)
		}
	}
	var res MigrateResult
	for _, f := range pending {
		if _, err := tx.ExecContext(ctx, f.sql); err != nil {
			return MigrateResult{}, fmt.Errorf("migrate %s: apply %03d_%s%s: %w", p.Component, f.Version, f.Name, privilegeHint(err), err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (component, version, name) VALUES ($1, $2, $3)`, p.Component, f.Version, f.Name); err != nil {
			return MigrateResult{}, fmt.Errorf("migrate %s: record %03d_%s: %w", p.Component, f.Version, f.Name, err)
		}
		res.Applied = append(res.Applied, f.Migration)
	}
	if err := tx.Commit(); err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: commit: %w", p.Component, err)
	}
	return res, nil
}

func loadMigrations(p MigrationParams) ([]migrationFile, error) {
	entries, err := fs.ReadDir(p.Files, ".")
	if err != nil {
		return nil, fmt.Errorf("migrate %s: read files: %w", p.Component, err)
	}
	var files []migrationFile
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if e.IsDir() || m == nil {
			continue
		}
		v, err := strconv.Atoi(m[1])
		if err != nil || v < 1 {
			return nil, fmt.Errorf("migrate %s: %w", p.Component, &eventstore.InvalidArgumentError{Field: "migration file " + e.Name(), Reason: "version must be a positive number"})
		}
		for _, f := range files {
			if f.Version == v {
				return nil, fmt.Errorf("migrate %s: %w", p.Component, &eventstore.InvalidArgumentError{Field: "migration file " + e.Name(), Reason: fmt.Sprintf("version %d is also used by %03d_%s", v, v, f.Name)})
			}
		}
		src, err := fs.ReadFile(p.Files, e.Name())
		if err != nil {
			return nil, fmt.Errorf("migrate %s: read %s: %w", p.Component, e.Name(), err)
		}
		tmpl, err := template.New(e.Name()).Option("missingkey=error").Funcs(template.FuncMap{"quote": QuoteIdentifier}).Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("migrate %s: parse %s: %w", p.Component, e.Name(), err)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, p.Data); err != nil {
			return nil, fmt.Errorf("migrate %s: render %s: %w", p.Component, e.Name(), err)
		}
		files = append(files, migrationFile{Migration: Migration{Component: p.Component, Version: v, Name: m[2]}, sql: buf.String()})
	}
	slices.SortFunc(files, func(a, b migrationFile) int { return a.Version - b.Version })
	return files, nil
}

// privilegeHint explains a permission error met while migrating.
func privilegeHint(err error) string {
	if SQLState(err) != codeInsufficientPrivilege {
		return ""
	}
	return " (pending migrations need a role that may create schemas and tables: run Migrate as the schema's owner before starting the service with a restricted role)"
}

// migrationLockKey derives the advisory lock key of a schema's migrations.
func migrationLockKey(schema string) int64 { return LockKey("esox_migrations:" + schema) }

// storeMigrationData is the template data of the store's own migrations.
type storeMigrationData struct {
	Schema                   string // quoted
	Events                   string // quoted, schema-qualified
	Snapshots                string // quoted, schema-qualified
	EventsPKey               string // quoted constraint names
	EventsEventIDKey         string
	EventsStreamVersionKey   string
	EventsStreamVersionCheck string
	// CHECK constraints of the schema_version columns (003).
	EventsSchemaVersionCheck    string
	SnapshotsSchemaVersionCheck string
	// Seals is the seals table (004), quoted, schema-qualified.
	Seals string
}

// Migrations returns the store's migration set, the one Migrate applies:
// the events and snapshots tables in the store's schema, under the
// component Component (with the table names when they are not the
// defaults). Pass it to ReadMigrationStatus to plan or check an apply, or
// to ApplyMigrationSets with other components' sets. Safe for concurrent
// use.
func (s *Store) Migrations() MigrationParams { return storeMigrations(s.cfg) }

// StoreMigrations returns the migration set of a Store with cfg (see
// Store.Migrations), for a caller that has no Store, such as a command
// that migrates a schema. cfg's zero value means the defaults; an invalid
// cfg returns an error matching eventstore.ErrInvalidArgument.
func StoreMigrations(cfg Config) (MigrationParams, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return MigrationParams{}, fmt.Errorf("eventstore/postgres: %w", err)
	}
	return storeMigrations(cfg), nil
}

// storeMigrations builds the migration set of a defaulted, valid cfg.
func storeMigrations(cfg Config) MigrationParams {
	schema := QuoteIdentifier(cfg.Schema)
	return MigrationParams{
		Schema:    cfg.Schema,
		Component: migrationComponent(cfg),
		Files:     storeMigrationFiles(),
		Data: storeMigrationData{
			Schema:                      schema,
			Events:                      schema + "." + QuoteIdentifier(cfg.EventsTable),
			Snapshots:                   schema + "." + QuoteIdentifier(cfg.SnapshotsTable),
			EventsPKey:                  QuoteIdentifier(constraintName(cfg.EventsTable, "pkey")),
			EventsEventIDKey:            QuoteIdentifier(constraintName(cfg.EventsTable, "event_id_key")),
			EventsStreamVersionKey:      QuoteIdentifier(constraintName(cfg.EventsTable, "stream_version_key")),
			EventsStreamVersionCheck:    QuoteIdentifier(constraintName(cfg.EventsTable, "stream_version_check")),
			EventsSchemaVersionCheck:    QuoteIdentifier(constraintName(cfg.EventsTable, "schema_version_check")),
			SnapshotsSchemaVersionCheck: QuoteIdentifier(constraintName(cfg.SnapshotsTable, "schema_version_check")),
			Seals:                       schema + "." + QuoteIdentifier(sealsTable(cfg)),
		},
	}
}

// storeMigrationFiles returns the store's embedded migrations.
func storeMigrationFiles() fs.FS {
	files, err := fs.Sub(embeddedMigrations, "migrations")
	if err != nil {
		panic("eventstore/postgres: embedded migrations: " + err.Error()) // "migrations" is a valid path
	}
	return files
}

// Migrate creates or updates the store's schema and tables (the events and
// snapshots tables) with ApplyMigrations, applying Migrations. It is
// idempotent and safe to run from several processes at once. ctx bounds
// the run.
func (s *Store) Migrate(ctx context.Context) (MigrateResult, error) {
	res, err := ApplyMigrations(ctx, s.db, s.Migrations())
	if err != nil {
		return res, fmt.Errorf("eventstore/postgres: %w", err)
	}
	if len(res.Applied) > 0 {
		s.log.InfoContext(ctx, "migrated", "schema", s.cfg.Schema, "applied", len(res.Applied))
	}
	return res, nil
}

// constraintName builds a constraint name from a table name and a suffix,
// shortening the table part so the whole fits in MaxIdentifierLength.
func constraintName(table, suffix string) string {
	maxTable := MaxIdentifierLength - len(suffix) - 1
	if len(table) > maxTable {
		table = table[:maxTable]
	}
	return table + "_" + suffix
}
