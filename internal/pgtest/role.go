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

// Role creates a login role with no privileges beyond PUBLIC's (it may
// connect, but not create schemas or tables) and returns its name, unique
// per call. The role is dropped at cleanup, with DROP OWNED BY first so
// that privileges granted to it do not keep it; close pools connected as
// the role before that (OpenAs registers its Close after Role's drop, so
// it runs first). Roles left by runs that died more than an hour ago are
// dropped too. db must connect as a role allowed to create roles.
func Role(t testing.TB, db *sqlx.DB) string {
	t.Helper()
	ctx := context.Background()
	dropStaleRoles(ctx, db)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := fmt.Sprintf("esoxrole_%d_%s", time.Now().Unix(), hex.EncodeToString(b[:]))
	if _, err := db.ExecContext(ctx, `CREATE ROLE `+name+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`); err != nil {
		t.Fatalf("pgtest: create role: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dropRole(ctx, db, name, func(err error) { t.Logf("pgtest: drop role %s: %v", name, err) })
	})
	return name
}

// OpenAs returns a pool to the test database over driver (one of Drivers)
// that logs in as role, closed at cleanup. It fails the test when the
// database refuses the role.
func OpenAs(t testing.TB, driver, role string) *sqlx.DB {
	t.Helper()
	dsn, err := withUser(DatabaseURL(), role)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		t.Fatalf("pgtest: open as %s: %v", role, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		t.Fatalf("pgtest: connect as %s: %v", role, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// withUser returns the connection string dsn (a URL or key=value pairs)
// with its user set to role and its password removed.
func withUser(dsn, role string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse ESOX_TEST_DATABASE_URL: %w", err)
		}
		u.User = url.User(role)
		return u.String(), nil
	}
	var kept []string
	for f := range strings.FieldsSeq(dsn) {
		if !strings.HasPrefix(f, "user=") && !strings.HasPrefix(f, "password=") {
			kept = append(kept, f)
		}
	}
	return strings.Join(append(kept, "user="+role), " "), nil
}

func dropRole(ctx context.Context, db *sqlx.DB, name string, report func(error)) {
	// Sessions of the role would keep DROP OWNED waiting on their locks.
	_, _ = db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, name)
	if _, err := db.ExecContext(ctx, `DROP OWNED BY `+name); err != nil {
		report(err)
	}
	if _, err := db.ExecContext(ctx, `DROP ROLE IF EXISTS `+name); err != nil {
		report(err)
	}
}

// dropStaleRoles drops roles created by Role more than an hour ago.
func dropStaleRoles(ctx context.Context, db *sqlx.DB) {
	var names []string
	if err := db.SelectContext(ctx, &names, `SELECT rolname FROM pg_roles WHERE rolname LIKE 'esoxrole\_%'`); err != nil {
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
		dropRole(ctx, db, n, func(error) {})
	}
}
