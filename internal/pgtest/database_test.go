package pgtest

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"
)

func TestWithDatabase(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable": "postgres://postgres@127.0.0.1:5432/other?sslmode=disable",
		"postgresql://u:p@h/db":                                   "postgresql://u:p@h/other",
		"postgres://h":                                            "postgres://h/other",
		"host=127.0.0.1 user=postgres dbname=test":                "host=127.0.0.1 user=postgres dbname=test dbname=other",
	} {
		if got := withDatabase(in, "other"); got != want {
			t.Errorf("withDatabase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDatabase(t *testing.T) {
	db := Open(t)
	var name string
	t.Run("create", func(t *testing.T) {
		var u string
		name, u = Database(t, db)
		other, err := sqlx.Open("postgres", u)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		var current string
		if err := other.QueryRowContext(context.Background(), `SELECT current_database()`).Scan(&current); err != nil {
			t.Fatal(err)
		}
		if current != name {
			t.Fatalf("connected to %q, want the new database %q", current, name)
		}
	})
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if name == "" || n != 0 {
		t.Fatalf("database %q still exists after its test's cleanup", name)
	}
}
