package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// Database creates a fresh, empty database with a random name prefixed
// with "esoxtest_" on the test server (through db, a pool to the test
// database) and returns its name and a URL to it. It is dropped (WITH
// (FORCE), ending its sessions) at cleanup; databases left by runs that
// died more than an hour ago are dropped too. Counters kept per database,
// such as pg_stat_database.xact_commit, then count only the work done in it,
// whatever else runs on the server.
//
// The test database's role needs CREATEDB; without it, t is skipped with
// a message saying so.
func Database(t testing.TB, db *sqlx.DB) (name, dbURL string) {
	t.Helper()
	ctx := context.Background()
	dropStaleDatabases(ctx, db)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name = fmt.Sprintf("esoxtest_%d_%s", time.Now().Unix(), hex.EncodeToString(b[:]))
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		t.Skipf("pgtest: cannot create a database (the test role needs CREATEDB): %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	return name, withDatabase(DatabaseURL(), name)
}

// withDatabase returns the connection string u (a postgres:// URL or a
// key=value string) pointing at the database name.
func withDatabase(u, name string) string {
	if p, err := url.Parse(u); err == nil && (p.Scheme == "postgres" || p.Scheme == "postgresql") {
		p.Path = "/" + name
		p.RawPath = ""
		return p.String()
	}
	// key=value: a later dbname overrides an earlier one.
	return strings.TrimSpace(u) + " dbname=" + name
}

// dropStaleDatabases drops test databases created more than an hour ago by
// runs that never cleaned up.
func dropStaleDatabases(ctx context.Context, db *sqlx.DB) {
	var names []string
	if err := db.SelectContext(ctx, &names, `SELECT datname FROM pg_database WHERE datname LIKE 'esoxtest\_%'`); err != nil {
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
		_, _ = db.ExecContext(ctx, `DROP DATABASE IF EXISTS `+n+` WITH (FORCE)`)
	}
}
