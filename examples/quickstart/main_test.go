package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/esox-go/esox/internal/pgtest"
)

// TestRun runs the tour twice against real PostgreSQL in a fresh schema, so
// that `make run` cannot rot: the first run applies the migrations, the
// second applies none, and each shows the conflict, the folded balance and
// its three events in the global feed, in stream order.
func TestRun(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx := context.Background()

	for i, wantMigrations := range []string{"4 migration(s) applied", "0 migration(s) applied"} {
		var out bytes.Buffer
		if err := run(ctx, &out, pgtest.DatabaseURL(), schema); err != nil {
			t.Fatalf("run %d: %v\noutput:\n%s", i+1, err, out.String())
		}
		got := out.String()
		stream := regexp.MustCompile(`appended versions 1\.\.2 to (account-[0-9a-f-]{36})\n`).FindStringSubmatch(got)
		if stream == nil {
			t.Fatalf("run %d: no first append in output:\n%s", i+1, got)
		}
		for _, want := range []string{
			wantMigrations,
			"appended version 3\n",
			"stale append refused: expected version 2, actual 3\n",
			"  v1 account_opened owner=Ada\n  v2 money_deposited amount=10000\n  v3 money_deposited amount=2500\n",
			"balance of " + stream[1] + ": 125.00\n",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("run %d: output lacks %q:\n%s", i+1, want, got)
			}
		}
		feed := regexp.MustCompile(`(?m)^  \d+/\d+ `+regexp.QuoteMeta(stream[1])+` v(\d) `).FindAllStringSubmatch(got, -1)
		if len(feed) != 3 || feed[0][1] != "1" || feed[1][1] != "2" || feed[2][1] != "3" {
			t.Errorf("run %d: global feed lines for %s = %v, want versions 1, 2, 3:\n%s", i+1, stream[1], feed, got)
		}
	}
}
