package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/pgtest"
)

// TestFeedQueryIsAnIndexRangeScan pins what keeps a poll's cost independent
// of how far behind a reader (projection, forwarder) is: the feed query walks the events
// table's primary key from the checkpoint and stops at the batch size, with
// no sort of everything after the checkpoint (which selecting
// transaction_id::text under its own name once caused).
func TestFeedQueryIsAnIndexRangeScan(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	store, err := New(db, eventstore.NewRegistry(), Config{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off`); err != nil {
		t.Fatal(err)
	}
	var plan []string
	if err := tx.SelectContext(ctx, &plan, `EXPLAIN `+store.readAllSQL, "5", 3, 100); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(plan, "\n")
	if strings.Contains(joined, "Sort") || !strings.Contains(joined, "Index Scan") || !strings.Contains(joined, "Limit") {
		t.Fatalf("the feed query is not a limited primary-key range scan:\n%s", joined)
	}
}
