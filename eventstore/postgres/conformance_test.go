package postgres_test

import (
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/eventstore/storetest"
	"github.com/esox-go/esox/internal/pgtest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	storetest.Run(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		s, err := postgres.New(db, reg, postgres.Config{Schema: pgtest.Schema(t, db), ReadStreamPageSize: 7})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if _, err := s.Migrate(t.Context()); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return s
	})
	storetest.RunMaxEventSize(t, func(t *testing.T, reg *eventstore.Registry, maxEventSize int) eventstore.Store {
		s, err := postgres.New(db, reg, postgres.Config{Schema: pgtest.Schema(t, db), MaxEventSize: maxEventSize})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if _, err := s.Migrate(t.Context()); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return s
	})
}
