package esoxtest_test

import (
	"os"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }

// TestStoreIsMigratedOnAFreshSchema: the store's tables exist (Head reads
// them), its schema is a new one, and a given schema is kept.
func TestStoreIsMigratedOnAFreshSchema(t *testing.T) {
	db := pgtest.Open(t)
	s := esoxtest.Store(t, db, eventstore.NewRegistry(), postgres.Config{})
	if _, err := s.Head(t.Context()); err != nil {
		t.Fatalf("Head of the migrated store: %v", err)
	}
	other := esoxtest.Store(t, db, eventstore.NewRegistry(), postgres.Config{})
	if other.Schema() == s.Schema() {
		t.Fatalf("two stores share the schema %s", s.Schema())
	}
	same := esoxtest.Store(t, db, eventstore.NewRegistry(), postgres.Config{Schema: s.Schema()})
	if same.Schema() != s.Schema() {
		t.Fatalf("Store used schema %s, not the given %s", same.Schema(), s.Schema())
	}
}
