package projector

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore/postgres"
)

// Component is the name under which the projector's migrations are recorded
// in <schema>.esox_migrations.
const Component = "projector"

// Names of the projector's tables, created in the store's schema by
// Runner.Migrate or Inbox.Migrate.
const (
	CheckpointsTable = "projector_checkpoints"
	DeadLettersTable = "projector_dead_letters"
	InboxTable       = "projector_inbox"
	// InboxStreamsTable holds the last stream version each inbox consumer
	// applied per stream (see InboxConfig.StreamVersionGuard).
	InboxStreamsTable = "projector_inbox_streams"
)

//go:embed migrations/*.up.sql
var embeddedMigrations embed.FS

type migrationData struct {
	Checkpoints, CheckpointsActiveKey, DeadLetters, Inbox string
	InboxProcessedAtIndex, InboxStreams                   string
}

// tables holds the quoted, qualified names of the projector's tables in one
// schema.
type tables struct {
	schema                                        string // unquoted
	checkpoints, deadLetters, inbox, inboxStreams string
}

func tablesIn(schema string) tables {
	q := postgres.QuoteIdentifier(schema) + "."
	return tables{
		schema:       schema,
		checkpoints:  q + postgres.QuoteIdentifier(CheckpointsTable),
		deadLetters:  q + postgres.QuoteIdentifier(DeadLettersTable),
		inbox:        q + postgres.QuoteIdentifier(InboxTable),
		inboxStreams: q + postgres.QuoteIdentifier(InboxStreamsTable),
	}
}

// Migrations returns the projector's migration set in schema: its tables
// (checkpoints, dead letters, inbox) under the component Component,
// without any projection. Runner.Migrate and Inbox.Migrate apply it (the
// runner then registers its projections, which no migration set can do:
// a projection version is registered, and its Setup run, only by
// Runner.Migrate with that projection). Pass it to
// postgres.ReadMigrationStatus to plan or check an apply, or to
// postgres.ApplyMigrationSets with other components' sets. A bad schema
// name is refused by those.
func Migrations(schema string) postgres.MigrationParams {
	files, err := fs.Sub(embeddedMigrations, "migrations")
	if err != nil {
		panic("projector: embedded migrations: " + err.Error()) // "migrations" is a valid path
	}
	t := tablesIn(schema)
	return postgres.MigrationParams{
		Schema:    schema,
		Component: Component,
		Files:     files,
		Data: migrationData{
			Checkpoints:           t.checkpoints,
			CheckpointsActiveKey:  postgres.QuoteIdentifier(CheckpointsTable + "_active_key"),
			DeadLetters:           t.deadLetters,
			Inbox:                 t.inbox,
			InboxProcessedAtIndex: postgres.QuoteIdentifier(InboxTable + "_processed_at_idx"),
			InboxStreams:          t.inboxStreams,
		},
	}
}

// Migrations returns the projector's migration set in the runner's schema
// (see the package function Migrations): the tables Migrate creates, not
// the registration of the runner's projections.
func (r *Runner) Migrations() postgres.MigrationParams { return Migrations(r.t.schema) }

// Migrations returns the projector's migration set in the inbox's schema
// (see the package function Migrations), the one Migrate applies.
func (in *Inbox) Migrations() postgres.MigrationParams { return Migrations(in.cfg.Schema) }

// migrate creates or updates the projector's tables (checkpoints, dead
// letters, inbox) in schema: it applies Migrations(schema) with
// postgres.ApplyMigrations. It is idempotent, safe to run from several
// processes at once, and runs no DDL once every migration is applied. ctx
// bounds the run. Errors wrap the database's, or match
// eventstore.ErrInvalidArgument for a bad schema name.
func migrate(ctx context.Context, db *sqlx.DB, schema string) (postgres.MigrateResult, error) {
	if err := postgres.ValidateSchemaName(schema); err != nil {
		return postgres.MigrateResult{}, fmt.Errorf("projector: migrate: schema: %w", err)
	}
	res, err := postgres.ApplyMigrations(ctx, db, Migrations(schema))
	if err != nil {
		return res, fmt.Errorf("projector: %w", err)
	}
	return res, nil
}
