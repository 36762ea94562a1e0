package postgres_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

func TestValidateIdentifier(t *testing.T) {
	t.Parallel()
	good := []string{"esox", "_x", "Events_2", "a", strings.Repeat("a", 63), "pg_table"}
	for _, name := range good {
		if err := postgres.ValidateIdentifier(name); err != nil {
			t.Errorf("ValidateIdentifier(%q) = %v, want nil", name, err)
		}
	}
	bad := []string{
		"", "1abc", "a-b", "a b", `a"b`, "a;b", "a.b", "é", "a\x00", "a\n",
		strings.Repeat("a", 64), `x"; DROP SCHEMA public; --`, "$1", "a'b",
	}
	for _, name := range bad {
		err := postgres.ValidateIdentifier(name)
		var iae *eventstore.InvalidArgumentError
		if !errors.Is(err, eventstore.ErrInvalidArgument) || !errors.As(err, &iae) {
			t.Errorf("ValidateIdentifier(%q) = %v, want an *InvalidArgumentError", name, err)
		}
	}
	if err := postgres.ValidateSchemaName("pg_esox"); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("ValidateSchemaName(pg_esox) = %v, want ErrInvalidArgument", err)
	}
}

func TestQuoteIdentifier(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"events": `"events"`, `a"b`: `"a""b"`, "": `""`} {
		if got := postgres.QuoteIdentifier(in); got != want {
			t.Errorf("QuoteIdentifier(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	cases := []struct {
		cfg   postgres.Config
		field string
	}{
		{postgres.Config{Schema: "bad schema"}, "Schema"},
		{postgres.Config{Schema: "pg_catalog"}, "Schema"},
		{postgres.Config{EventsTable: `e"vents`}, "EventsTable"},
		{postgres.Config{SnapshotsTable: "1snap"}, "SnapshotsTable"},
		{postgres.Config{EventsTable: "x", SnapshotsTable: "x"}, "SnapshotsTable"},
		{postgres.Config{ReadStreamPageSize: -1}, "ReadStreamPageSize"},
		{postgres.Config{AppendHooks: []postgres.AppendHook{nil}}, "AppendHooks"},
		{postgres.Config{MaxEventSize: -1}, "MaxEventSize"},
		{postgres.Config{SettleTimeout: -time.Second}, "SettleTimeout"},
	}
	for _, tc := range cases {
		_, err := postgres.New(db, testRegistry(), tc.cfg)
		if !errors.Is(err, eventstore.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("New(%+v) = %v, want ErrInvalidArgument naming %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := postgres.New(nil, testRegistry(), postgres.Config{}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("New(nil db) = %v", err)
	}
	if _, err := postgres.New(db, nil, postgres.Config{}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("New(nil registry) = %v", err)
	}
}

// FuzzValidateIdentifier checks that whatever ValidateIdentifier accepts,
// quoted, never breaks out of its quotes and works as a table name, and that
// whatever ValidateSchemaName accepts works as a schema name.
func FuzzValidateIdentifier(f *testing.F) {
	for _, s := range []string{"esoxfuzzseed", "Events", "_a1", `a"b`, "a;b", "pg_x", "1a", "", strings.Repeat("z", 63), "ünï"} {
		f.Add(s)
	}
	db := pgtest.Open(f)
	schema := pgtest.Schema(f, db)
	f.Fuzz(func(t *testing.T, name string) {
		if postgres.ValidateIdentifier(name) != nil {
			return
		}
		q := postgres.QuoteIdentifier(name)
		if strings.Contains(q[1:len(q)-1], `"`) {
			t.Fatalf("valid identifier %q quotes to %s, which contains a quote", name, q)
		}
		ctx := t.Context()
		table := `"` + schema + `".` + q
		if _, err := db.ExecContext(ctx, `CREATE TABLE `+table+` (id int)`); err != nil {
			t.Fatalf("CREATE TABLE %s: %v", table, err)
		}
		if _, err := db.ExecContext(ctx, `DROP TABLE `+table); err != nil {
			t.Fatalf("DROP TABLE %s: %v", table, err)
		}
		if postgres.ValidateSchemaName(name) != nil {
			return
		}
		// A schema of the fuzzed name could collide with a real one; only
		// create it when it does not exist yet.
		var exists bool
		if err := db.GetContext(ctx, &exists, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, name); err != nil {
			t.Fatal(err)
		}
		if exists {
			return
		}
		if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+q); err != nil {
			t.Fatalf("CREATE SCHEMA %s: %v", q, err)
		}
		if _, err := db.ExecContext(ctx, `DROP SCHEMA `+q); err != nil {
			t.Fatalf("DROP SCHEMA %s: %v", q, err)
		}
	})
}
