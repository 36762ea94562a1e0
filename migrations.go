package esox

import (
	"fmt"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

// Migrations returns the migration sets of esox's own components in schema,
// in the order they are applied: the event store's (with the default table
// names), the projector's tables, the forwarder's and the key store's (the
// data keys of crypto-shredding; an empty table for a service that marks
// no personal data). It is what a command without the application's code
// (the esox command) plans and applies.
//
// It does not register projections: a projection version is registered,
// and its Setup run, only by the application (App.Migrate, or
// projector.Runner.Migrate with its projections), since only it has them.
// Nor does it know the application's own components. Pass the sets to
// postgres.ReadMigrationStatus or postgres.ApplyMigrationSets. A bad schema
// name returns an error matching eventstore.ErrInvalidArgument.
func Migrations(schema string) ([]postgres.MigrationParams, error) {
	if err := postgres.ValidateSchemaName(schema); err != nil {
		return nil, fmt.Errorf("esox: migrations: schema: %w", err)
	}
	store, err := postgres.StoreMigrations(postgres.Config{Schema: schema})
	if err != nil {
		return nil, fmt.Errorf("esox: migrations: %w", err)
	}
	keys, err := postgres.KeyStoreMigrations(schema)
	if err != nil {
		return nil, fmt.Errorf("esox: migrations: %w", err)
	}
	return []postgres.MigrationParams{store, projector.Migrations(schema), forwarder.Migrations(schema), keys}, nil
}

// Migrations returns the migration sets of the App's parts, in the order
// Migrate applies them: the store's, the projector's tables (with a runner
// or inboxes; once), the forwarder's (with a publisher), the key store's
// (with Config.KeyStore). Components' migrations are funcs, not sets, and projection registration is not a
// migration: Migrate does both, these sets do not. Use them to plan or
// check a deployment with postgres.ReadMigrationStatus. Safe for
// concurrent use.
func (a *App) Migrations() []postgres.MigrationParams {
	sets := []postgres.MigrationParams{a.store.Migrations()}
	if a.runner != nil || len(a.cfg.Inboxes) > 0 {
		sets = append(sets, projector.Migrations(a.cfg.Schema))
	}
	if a.fwd != nil {
		sets = append(sets, a.fwd.Migrations())
	}
	if a.cfg.KeyStore != nil {
		sets = append(sets, a.cfg.KeyStore.Migrations())
	}
	return sets
}
