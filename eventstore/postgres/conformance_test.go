package postgres_test

import (
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/gojson"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/eventstore/storetest"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
)

// TestConformance runs the conformance suite on the PostgreSQL store over
// each supported database/sql driver (lib/pq and pgx): the store classifies
// errors through SQLState() and sends only text parameters, so it works the
// same on both.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, driver := range pgtest.Drivers {
		t.Run(driver, func(t *testing.T) {
			t.Parallel()
			db := pgtest.OpenDriver(t, driver)
			storetest.Run(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
				s := esoxtest.Store(t, db, reg, postgres.Config{ReadStreamPageSize: 7})
				return s
			})
			storetest.RunEvolution(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
				s := esoxtest.Store(t, db, reg, postgres.Config{ReadStreamPageSize: 2})
				return s
			}, func(t *testing.T, s eventstore.Store, reg *eventstore.Registry) eventstore.Store {
				// Another release: a second Store on the same schema.
				ps := s.(*postgres.Store)
				other, err := postgres.New(ps.DB(), reg, postgres.Config{Schema: ps.Schema(), ReadStreamPageSize: 2})
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				t.Cleanup(func() { _ = other.Close() })
				return other
			})
			storetest.RunChain(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
				s := esoxtest.Store(t, db, reg, postgres.Config{ReadStreamPageSize: 7})
				return s
			})
			storetest.RunPersonalData(t, func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
				s := esoxtest.Store(t, db, reg, postgres.Config{ReadStreamPageSize: 7})
				return s
			}, func(t *testing.T, s eventstore.Store, reg *eventstore.Registry) eventstore.Store {
				ps := s.(*postgres.Store)
				other, err := postgres.New(ps.DB(), reg, postgres.Config{Schema: ps.Schema()})
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				t.Cleanup(func() { _ = other.Close() })
				return other
			}, keyStoreOn(db))
			storetest.RunMaxEventSize(t, func(t *testing.T, reg *eventstore.Registry, maxEventSize int) eventstore.Store {
				s := esoxtest.Store(t, db, reg, postgres.Config{MaxEventSize: maxEventSize})
				return s
			})
		})
	}
}

// TestConformanceGoJSON runs the conformance suites of encoding and
// decoding (events, evolution, personal data) on the PostgreSQL store with
// the eventstore/gojson Codec: payloads go through jsonb, which rewrites
// their text, and must read back as with encoding/json.
func TestConformanceGoJSON(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	newStore := func(t *testing.T, reg *eventstore.Registry) eventstore.Store {
		reg.SetCodec(gojson.Codec{})
		s, err := postgres.New(db, reg, postgres.Config{Schema: pgtest.Schema(t, db), ReadStreamPageSize: 7})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		if _, err := s.Migrate(t.Context()); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return s
	}
	reopen := func(t *testing.T, s eventstore.Store, reg *eventstore.Registry) eventstore.Store {
		reg.SetCodec(gojson.Codec{})
		ps := s.(*postgres.Store)
		other, err := postgres.New(ps.DB(), reg, postgres.Config{Schema: ps.Schema()})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = other.Close() })
		return other
	}
	storetest.Run(t, newStore)
	storetest.RunEvolution(t, newStore, reopen)
	storetest.RunPersonalData(t, newStore, reopen, keyStoreOn(db))
}

// keyStoreOn returns the conformance suites' KeyStore factory: a migrated
// key store on a fresh schema of db.
func keyStoreOn(db *sqlx.DB) func(*testing.T) eventstore.KeyStore {
	return func(t *testing.T) eventstore.KeyStore {
		ks, err := postgres.NewKeyStore(db, postgres.KeyStoreConfig{Schema: pgtest.Schema(t, db)})
		if err != nil {
			t.Fatalf("NewKeyStore: %v", err)
		}
		if _, err := ks.Migrate(t.Context()); err != nil {
			t.Fatalf("KeyStore.Migrate: %v", err)
		}
		return ks
	}
}
