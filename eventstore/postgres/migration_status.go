package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
)

// migrationsTableDDL creates <schema>.esox_migrations; %s is the table's
// quoted, qualified name.
const migrationsTableDDL = `CREATE TABLE IF NOT EXISTS %s (
    component  text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)`

// AppliedMigration is a migration recorded in a schema's esox_migrations.
type AppliedMigration struct {
	Migration
	// AppliedAt is when it was applied (the database's clock).
	AppliedAt time.Time
	// Known reports whether the migration belongs to one of the sets
	// ReadMigrationStatus was given. A recorded migration that is not
	// known belongs to a component not asked about (the application's
	// own, a store with other table names) or was applied by a newer
	// version of the code.
	Known bool
}

// PendingMigration is a migration of a set that is not recorded yet.
type PendingMigration struct {
	Migration
	// SQL is the migration's SQL as ApplyMigrations would run it: the
	// file's template rendered with the set's Data.
	SQL string
}

// MigrationStatus is what ReadMigrationStatus found in one schema: what is
// applied, and what ApplyMigrationSets would apply.
type MigrationStatus struct {
	// Schema is the schema read.
	Schema string
	// SchemaExists and TableExists report whether the schema and its
	// esox_migrations table exist; an apply creates what is missing.
	SchemaExists, TableExists bool
	// Applied lists every migration recorded in the schema, of any
	// component, in the order they were applied.
	Applied []AppliedMigration
	// Pending lists the sets' migrations not recorded yet, in the order
	// ApplyMigrationSets applies them: set by set, by version within a set.
	// Empty when the schema is up to date.
	Pending []PendingMigration
}

// UpToDate reports whether nothing is pending.
func (s MigrationStatus) UpToDate() bool { return len(s.Pending) == 0 }

// Script returns the SQL an apply of the pending migrations runs, in order,
// as a psql script: per component one transaction that takes the schema's
// migration lock, creates the schema and esox_migrations when missing, runs
// each pending migration and records it. It is what ApplyMigrationSets
// would run now (a dry run); a DBA may review it, or run it with psql
// instead of the apply. It returns "" when nothing is pending.
func (s MigrationStatus) Script() string {
	if len(s.Pending) == 0 {
		return ""
	}
	schema := QuoteIdentifier(s.Schema)
	table := schema + "." + QuoteIdentifier(migrationsTable)
	var b strings.Builder
	fmt.Fprintf(&b, "-- esox: %d pending migration(s) in schema %s\n", len(s.Pending), schema)
	created := false
	for i, m := range s.Pending {
		if i == 0 || s.Pending[i-1].Component != m.Component {
			fmt.Fprintf(&b, "\n-- component %s\nBEGIN;\nSELECT pg_advisory_xact_lock(%d);\n", m.Component, migrationLockKey(s.Schema))
			if !created {
				if !s.SchemaExists {
					fmt.Fprintf(&b, "CREATE SCHEMA IF NOT EXISTS %s;\n", schema)
				}
				if !s.TableExists {
					b.WriteString(fmt.Sprintf(migrationsTableDDL, table) + ";\n")
				}
				created = true
			}
		}
		fmt.Fprintf(&b, "\n-- %s %03d_%s\n%s\n", m.Component, m.Version, m.Name, strings.TrimRight(m.SQL, "\n"))
		fmt.Fprintf(&b, "INSERT INTO %s (component, version, name) VALUES (%s, %d, %s);\n", table, quoteLiteral(m.Component), m.Version, quoteLiteral(m.Name))
		if i == len(s.Pending)-1 || s.Pending[i+1].Component != m.Component {
			b.WriteString("COMMIT;\n")
		}
	}
	return b.String()
}

// quoteLiteral quotes s as an SQL string literal, valid whatever
// standard_conforming_strings says.
func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		return "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// checkSets validates sets for schema and renders their files, in order.
func checkSets(schema string, sets []MigrationParams) ([][]migrationFile, error) {
	if err := ValidateSchemaName(schema); err != nil {
		return nil, fmt.Errorf("migrations: schema: %w", err)
	}
	out := make([][]migrationFile, len(sets))
	for i, p := range sets {
		switch {
		case p.Schema != schema:
			return nil, fmt.Errorf("migrations: %w", &eventstore.InvalidArgumentError{Field: "sets[" + strconv.Itoa(i) + "].Schema", Reason: fmt.Sprintf("%q is not the schema %q: every set must be of the same schema", p.Schema, schema)})
		case p.Component == "":
			return nil, fmt.Errorf("migrations: %w", &eventstore.InvalidArgumentError{Field: "sets[" + strconv.Itoa(i) + "].Component", Reason: "must not be empty"})
		case p.Files == nil:
			return nil, fmt.Errorf("migrations: %w", &eventstore.InvalidArgumentError{Field: "sets[" + strconv.Itoa(i) + "].Files", Reason: "must not be nil"})
		}
		for _, q := range sets[:i] {
			if q.Component == p.Component {
				return nil, fmt.Errorf("migrations: %w", &eventstore.InvalidArgumentError{Field: "sets[" + strconv.Itoa(i) + "].Component", Reason: fmt.Sprintf("component %q is given twice", p.Component)})
			}
		}
		files, err := loadMigrations(p)
		if err != nil {
			return nil, err
		}
		out[i] = files
	}
	return out, nil
}

// ReadMigrationStatus reports the migrations of schema: every migration
// recorded in its esox_migrations, and the migrations of sets (each a
// component's MigrationParams, as Store.Migrations returns them; all of
// schema, with distinct components) that are not recorded yet, with their
// rendered SQL. It plans an apply without applying: it runs in a read-only
// transaction and takes no lock, so a role without DDL rights (USAGE on the
// schema and SELECT on esox_migrations suffice) may call it, and it works
// on a schema that does not exist yet (everything pending).
//
// Safe for concurrent use; ctx bounds the read. Errors: an
// *eventstore.InvalidArgumentError for a bad schema or sets (a set of
// another schema, a component given twice, bad file names), template
// errors, database errors wrapped.
func ReadMigrationStatus(ctx context.Context, db *sqlx.DB, schema string, sets ...MigrationParams) (MigrationStatus, error) {
	files, err := checkSets(schema, sets)
	if err != nil {
		return MigrationStatus{}, err
	}
	st := MigrationStatus{Schema: schema}
	tx, err := db.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return MigrationStatus{}, fmt.Errorf("migration status: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	qschema := QuoteIdentifier(schema)
	table := qschema + "." + QuoteIdentifier(migrationsTable)
	if err := tx.QueryRowContext(ctx, `SELECT to_regnamespace($1) IS NOT NULL, to_regclass($2) IS NOT NULL`, qschema, table).
		Scan(&st.SchemaExists, &st.TableExists); err != nil {
		return MigrationStatus{}, fmt.Errorf("migration status: look up %s: %w", migrationsTable, err)
	}
	if st.TableExists {
		rows, err := tx.QueryContext(ctx, `SELECT component, version, name, applied_at FROM `+table+` ORDER BY applied_at, component, version`)
		if err != nil {
			return MigrationStatus{}, fmt.Errorf("migration status: read %s: %w", migrationsTable, err)
		}
		defer rows.Close()
		for rows.Next() {
			var a AppliedMigration
			if err := rows.Scan(&a.Component, &a.Version, &a.Name, &a.AppliedAt); err != nil {
				return MigrationStatus{}, fmt.Errorf("migration status: read %s: %w", migrationsTable, err)
			}
			st.Applied = append(st.Applied, a)
		}
		if err := rows.Err(); err != nil {
			return MigrationStatus{}, fmt.Errorf("migration status: read %s: %w", migrationsTable, err)
		}
	}
	for i, set := range files {
		for _, f := range set {
			j := slices.IndexFunc(st.Applied, func(a AppliedMigration) bool {
				return a.Component == sets[i].Component && a.Version == f.Version
			})
			if j >= 0 {
				st.Applied[j].Known = true
				continue
			}
			st.Pending = append(st.Pending, PendingMigration{Migration: f.Migration, SQL: f.sql})
		}
	}
	return st, nil
}

// ApplyMigrationSets applies the pending migrations of every set, in order,
// each set with ApplyMigrations (one transaction per set, under the
// schema's migration lock), and returns what it applied. It checks every set
// (same schema, distinct components, files that load and render) before it
// applies any. When a set fails, the sets before it stay applied and the
// result lists them; the failing set applied nothing.
//
// It is idempotent and safe to run from several processes at once; ctx
// bounds the whole run. Errors are ReadMigrationStatus's and
// ApplyMigrations'.
func ApplyMigrationSets(ctx context.Context, db *sqlx.DB, schema string, sets ...MigrationParams) (MigrateResult, error) {
	if _, err := checkSets(schema, sets); err != nil {
		return MigrateResult{}, err
	}
	var all MigrateResult
	for _, p := range sets {
		res, err := ApplyMigrations(ctx, db, p)
		all.Applied = append(all.Applied, res.Applied...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}
