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
	CheckpointsPkey, CheckpointsActiveKeyQualified        string
	CheckpointsPartitionCheck                             string
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

// migrate creates or updates the projector's tables (checkpoints, dead
// letters, inbox) in schema with postgres.ApplyMigrations under the
// component Component. It is idempotent, safe to run from several processes
// at once, and runs no DDL once every migration is applied. ctx bounds the
// run. Errors wrap the database's, or match eventstore.ErrInvalidArgument for
// a bad schema name.
func migrate(ctx context.Context, db *sqlx.DB, schema string) (postgres.MigrateResult, error) {
	if err := postgres.ValidateSchemaName(schema); err != nil {
		return postgres.MigrateResult{}, fmt.Errorf("projector: migrate: schema: %w", err)
	}
	files, err := fs.Sub(embeddedMigrations, "migrations")
	if err != nil {
		return postgres.MigrateResult{}, fmt.Errorf("projector: migrations: %w", err)
	}
	t := tablesIn(schema)
	res, err := postgres.ApplyMigrations(ctx, db, postgres.MigrationParams{
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
			CheckpointsPkey:       postgres.QuoteIdentifier(CheckpointsTable + "_pkey"),
			CheckpointsActiveKeyQualified: postgres.QuoteIdentifier(schema) + "." +
				postgres.QuoteIdentifier(CheckpointsTable+"_active_key"),
			CheckpointsPartitionCheck: postgres.QuoteIdentifier(CheckpointsTable + "_partition_check"),
		},
	})
	if err != nil {
		return res, fmt.Errorf("projector: %w", err)
	}
	return res, nil
}
