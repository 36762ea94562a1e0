// Package pgtest hands tests an isolated PostgreSQL schema on the test
// database, and tells broker tests whether they must run.
//
// The database comes from ESOX_TEST_DATABASE_URL, defaulting to the local
// server (DefaultDatabaseURL). Each schema has a random name prefixed with
// "esoxtest_", is created on demand and dropped in t.Cleanup; schemas left by
// runs that died more than an hour ago are dropped too.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, which the driver-neutral tests also run on
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" driver, the tests' default
)

// DefaultDatabaseURL is the test database when ESOX_TEST_DATABASE_URL is unset.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DatabaseURL returns ESOX_TEST_DATABASE_URL or DefaultDatabaseURL.
func DatabaseURL() string {
	if u := os.Getenv("ESOX_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultDatabaseURL
}

// Drivers are the database/sql drivers esox supports, by registered name:
// lib/pq ("postgres") and pgx's stdlib ("pgx"). Tests that prove esox is
// driver-neutral run once per driver.
var Drivers = []string{"postgres", "pgx"}

// Open returns a pool to the test database over lib/pq, closed at cleanup.
// It fails the test when the database does not answer.
func Open(t testing.TB) *sqlx.DB {
	t.Helper()
	return OpenDriver(t, "postgres")
}

// OpenDriver is Open over the database/sql driver registered as driver
// (one of Drivers).
func OpenDriver(t testing.TB, driver string) *sqlx.DB {
	t.Helper()
	db, err := sqlx.Open(driver, DatabaseURL())
	if err != nil {
		t.Fatalf("pgtest: open: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		t.Fatalf("pgtest: the test database does not answer (set ESOX_TEST_DATABASE_URL or run make test): %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Schema creates a fresh schema with a random name and returns the name. The
// schema and everything in it are dropped at cleanup.
func Schema(t testing.TB, db *sqlx.DB) string {
	t.Helper()
	ctx := context.Background()
	dropStale(ctx, db)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := fmt.Sprintf("esoxtest_%d_%s", time.Now().Unix(), hex.EncodeToString(b[:]))
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+name); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+name+` CASCADE`); err != nil {
			t.Logf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return name
}

// dropStale drops test schemas created more than an hour ago by runs that
// never cleaned up.
func dropStale(ctx context.Context, db *sqlx.DB) {
	var names []string
	if err := db.SelectContext(ctx, &names, `SELECT nspname FROM pg_namespace WHERE nspname LIKE 'esoxtest\_%'`); err != nil {
		return
	}
	cutoff := time.Now().Add(-time.Hour).Unix()
	for _, n := range names {
		parts := strings.Split(n, "_")
		if len(parts) != 3 {
			continue
		}
		created, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || created > cutoff {
			continue
		}
		_, _ = db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+n+` CASCADE`)
	}
}

// RequireBrokers reports whether ESOX_REQUIRE_BROKERS=1: broker tests must
// fail, not skip, when their broker is unreachable.
func RequireBrokers() bool { return os.Getenv("ESOX_REQUIRE_BROKERS") == "1" }

// SkipOrFailBroker skips t with a clear message when a broker is unreachable,
// or fails it when RequireBrokers is true.
//
// When err is a failed TCP dial, it first waits until no test holds the
// broker's lock (LockBroker, named strings.ToLower(broker)) exclusively, as
// a test that stops and starts the broker does, and dials again: if the
// broker answers then, it returns and t goes on. So a broker test may probe
// its broker before it takes the lock.
func SkipOrFailBroker(t testing.TB, broker string, err error) {
	t.Helper()
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && op.Addr != nil {
		waitBrokerIdle(strings.ToLower(broker))
		conn, derr := net.DialTimeout(op.Net, op.Addr.String(), 2*time.Second)
		if derr == nil {
			_ = conn.Close()
			return
		}
		err = derr
	}
	if RequireBrokers() {
		t.Fatalf("%s is required (ESOX_REQUIRE_BROKERS=1) but unreachable: %v", broker, err)
	}
	t.Skipf("%s unreachable, skipping (set ESOX_REQUIRE_BROKERS=1 to fail instead): %v", broker, err)
}
