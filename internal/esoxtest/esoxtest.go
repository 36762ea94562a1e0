// Package esoxtest hands esox's own tests a migrated event store on a
// fresh schema of the test database (see internal/pgtest).
//
// It is apart from pgtest because it imports eventstore/postgres, whose
// internal tests import pgtest: pgtest importing it back would be a cycle.
package esoxtest

import (
	"context"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

// MigrateTimeout bounds the Migrate that Store runs.
const MigrateTimeout = time.Minute

// Store returns a *postgres.Store over db with reg and cfg, migrated. When
// cfg.Schema is empty the store gets a fresh schema (pgtest.Schema, dropped
// with everything in it at cleanup); otherwise it uses cfg.Schema as it
// is, which the caller owns. The store is closed at cleanup, and its
// schema is store.Schema(). Store fails t when New or Migrate fails.
//
// Tests that test Migrate itself (what it applies, its locking, its
// privileges) call postgres.New and Migrate themselves.
func Store(t testing.TB, db *sqlx.DB, reg *eventstore.Registry, cfg postgres.Config) *postgres.Store {
	t.Helper()
	if cfg.Schema == "" {
		cfg.Schema = pgtest.Schema(t, db)
	}
	s, err := postgres.New(db, reg, cfg)
	if err != nil {
		t.Fatalf("esoxtest: postgres.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), MigrateTimeout)
	defer cancel()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("esoxtest: Migrate: %v", err)
	}
	return s
}
