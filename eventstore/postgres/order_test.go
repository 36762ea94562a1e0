package postgres_test

import (
	"fmt"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// TestFeedOrdersTransactionIDsNumerically pins the feed order to the xid8
// value, not its text: rows written by transactions 9, 10 and 100 (far
// below any server's running transaction ids, so visible to the feed at
// once; 10000 was not, on a fresh cluster) (inserted directly, in another order) must come back 9 first from
// ReadAll, from a resume after it, and from Head. When the read query selected
// transaction_id::text under the column's own name, ORDER BY transaction_id
// sorted the text ("10" < "100" < "9"): a reader checkpointing at
// (100, …) then resumed with the xid8 row comparison and never saw 9 — a
// lost event once the server's transaction ids cross a power of ten.
func TestFeedOrdersTransactionIDsNumerically(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	for i, txid := range []string{"10", "9", "100"} {
		_, err := b.db.ExecContext(ctx, `INSERT INTO `+b.store.QualifiedEventsTable()+`
(transaction_id, event_id, stream_id, stream_version, event_type, payload)
VALUES ($1::xid8, gen_random_uuid(), $2, 1, 'item_added', '{"sku":"x","n":1}')`, txid, fmt.Sprintf("tx-%d", i))
		if err != nil {
			t.Fatal(err)
		}
	}
	recs, err := b.store.ReadAll(ctx, eventstore.Position{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, r := range recs {
		got = append(got, r.Position.TransactionID)
	}
	if fmt.Sprint(got) != "[9 10 100]" {
		t.Fatalf("feed transaction ids %v, want [9 10 100]", got)
	}
	rest, err := b.store.ReadAll(ctx, recs[0].Position, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 2 || rest[0].Position != recs[1].Position || rest[1].Position != recs[2].Position {
		t.Fatalf("resume after %v returned %v, want the 10 and 100 records", recs[0].Position, rest)
	}
	head, err := b.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if head != recs[2].Position {
		t.Fatalf("Head = %v, want %v (transaction 100)", head, recs[2].Position)
	}
}
