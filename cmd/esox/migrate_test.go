package main_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

type migrationOut struct {
	Component string  `json:"component"`
	Version   int     `json:"version"`
	Name      string  `json:"name"`
	AppliedAt *string `json:"applied_at"`
	Known     *bool   `json:"known"`
	SQL       string  `json:"sql"`
}

func names(ms []migrationOut) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Component+"/"+m.Name)
	}
	return strings.Join(out, " ")
}

const allMigrations = "eventstore/events eventstore/snapshots eventstore/schema_versions eventstore/chain projector/projector projector/inbox projector/partitions projector/operations forwarder/offsets keys/keys"

// TestMigrate: plan, status and apply --dry-run on a schema that does not
// exist read only; apply --component applies one component's migrations,
// apply the rest; status then lists each with its time, and a migration of
// the application's own as not one of esox's; a second apply finds
// nothing to do; an unknown component is a usage error.
func TestMigrate(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	if _, err := db.Exec(`DROP SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	c := cli{t: t, schema: schema}

	r := c.ok("migrate", "plan")
	for _, w := range []string{"10 pending", "eventstore  001      events", "forwarder   001      offsets"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("plan lacks %q:\n%s", w, r)
		}
	}
	var plan struct {
		Schema  string         `json:"schema"`
		Pending []migrationOut `json:"pending"`
	}
	c.jsonOut(&plan, "migrate", "plan")
	if plan.Schema != schema || names(plan.Pending) != allMigrations || plan.Pending[0].Version != 1 {
		t.Fatalf("plan --json = %+v", plan)
	}
	var status struct {
		SchemaExists bool           `json:"schema_exists"`
		UpToDate     bool           `json:"up_to_date"`
		Applied      []migrationOut `json:"applied"`
		Pending      []migrationOut `json:"pending"`
	}
	c.jsonOut(&status, "migrate", "status")
	if status.SchemaExists || status.UpToDate || len(status.Applied) != 0 || names(status.Pending) != allMigrations {
		t.Fatalf("status --json of a missing schema = %+v", status)
	}

	r = c.ok("migrate", "apply", "--dry-run")
	for _, w := range []string{`CREATE SCHEMA IF NOT EXISTS "` + schema + `"`, `CREATE TABLE "` + schema + `"."events"`, "INSERT INTO", "-- forwarder 001_offsets", "COMMIT;"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("dry run lacks %q:\n%s", w, r)
		}
	}
	var dry struct {
		DryRun  bool           `json:"dry_run"`
		Pending []migrationOut `json:"pending"`
		Script  string         `json:"script"`
	}
	c.jsonOut(&dry, "migrate", "apply", "--dry-run")
	if !dry.DryRun || names(dry.Pending) != allMigrations || !strings.Contains(dry.Pending[0].SQL, "CREATE TABLE") || dry.Script != r.stdout {
		t.Fatalf("apply --dry-run --json = %+v", dry)
	}
	var exists bool
	if err := db.Get(&exists, `SELECT to_regnamespace($1) IS NOT NULL`, schema); err != nil || exists {
		t.Fatalf("plan, status or the dry run created the schema (%v, %v)", exists, err)
	}

	r = c.ok("migrate", "apply", "--component", "eventstore")
	if !strings.Contains(r.stdout, "applied eventstore 001_events") || !strings.Contains(r.stdout, "4 migration(s) applied") || strings.Contains(r.stdout, "projector") {
		t.Fatalf("apply --component eventstore:\n%s", r)
	}
	var applied struct {
		Applied []migrationOut `json:"applied"`
	}
	c.jsonOut(&applied, "migrate", "apply")
	if names(applied.Applied) != "projector/projector projector/inbox projector/partitions projector/operations forwarder/offsets keys/keys" {
		t.Fatalf("apply --json = %+v", applied)
	}
	// A migration of the application's own component.
	if _, err := postgres.ApplyMigrations(testCtx(t), db, postgres.MigrationParams{Schema: schema, Component: "billing",
		Files: fstest.MapFS{"001_invoices.up.sql": {Data: []byte(`CREATE TABLE {{quote .}}.invoices (id int)`)}}, Data: schema}); err != nil {
		t.Fatal(err)
	}
	r = c.ok("migrate", "status")
	if !strings.Contains(r.stdout, "is up to date") || strings.Count(r.stdout, "  applied  ") != 10 || !regexp.MustCompile(`billing +001 +invoices +applied \(not one of esox's\)`).MatchString(r.stdout) {
		t.Fatalf("status:\n%s", r)
	}
	c.jsonOut(&status, "migrate", "status")
	if !status.UpToDate || len(status.Applied) != 11 || len(status.Pending) != 0 || status.Applied[0].AppliedAt == nil || !*status.Applied[0].Known {
		t.Fatalf("status --json = %+v", status)
	}
	if r := c.ok("migrate", "apply"); !strings.Contains(r.stdout, "up to date: nothing applied") {
		t.Fatalf("second apply:\n%s", r)
	}
	if r := c.ok("migrate", "apply", "--dry-run"); !strings.Contains(r.stdout, "up to date") {
		t.Fatalf("dry run when up to date:\n%s", r)
	}
	c.fails(2, []string{`unknown component "nope"`, "eventstore, projector, forwarder"}, "migrate", "plan", "--component", "nope")
}

// TestInterruptAndTimeout: an apply waiting for the schema's migration lock
// (held here, as a concurrent apply would) stops at SIGINT with exit 130,
// and at --timeout with exit 1; neither applies anything.
func TestInterruptAndTimeout(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, db)
	c := cli{t: t, schema: schema}
	key := postgres.LockKey("esox_migrations:" + schema)
	if !strings.Contains(c.ok("migrate", "apply", "--dry-run").stdout, fmt.Sprintf("pg_advisory_xact_lock(%d)", key)) {
		t.Fatal("the dry run does not take the lock this test holds")
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		t.Fatal(err)
	}
	waiting := func() bool {
		k := uint64(key)
		var n int
		if err := db.GetContext(ctx, &n, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1 AND objid = $2`, int64(k>>32), int64(k&0xffffffff)); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	cmd := c.command(ctx, "migrate", "apply")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the apply to wait for the migration lock", waiting)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("apply interrupted: %v, want exit 130\nstderr: %s", err, stderr.String())
	}

	r := c.run("--timeout", "500ms", "migrate", "apply")
	if r.code != 1 || !strings.Contains(r.stderr, "--timeout 500ms ran out") {
		t.Fatalf("apply past --timeout: %s", r)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
		t.Fatal(err)
	}
	if r := c.ok("migrate", "plan"); !strings.Contains(r.stdout, "10 pending") {
		t.Fatalf("after the interrupted applies:\n%s", r)
	}
}
