package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/internal/pgtest"
)

// TestResetAfterRestore simulates a pg_dump/pg_restore into a younger
// cluster — the stored transaction ids, checkpoints and offset far ahead of
// the cluster's next transaction id — then runs `ordering
// reset-after-restore` and checks that the restarted service works: new
// orders reach the read models (commands wait for them) and the shipping
// consumer, and nothing restored is applied twice.
//
// "straddling": the old cluster's transaction ids straddle the new one's
// next id — the first three events keep ids below it, the rest (and the
// checkpoints and offset past them) move far ahead. Every event is a
// restored one; the reset used to refuse this as "appended after the
// restore".
func TestResetAfterRestore(t *testing.T) {
	t.Run("all ahead", func(t *testing.T) { testResetAfterRestore(t, 0) })
	t.Run("straddling", func(t *testing.T) { testResetAfterRestore(t, 3) })
}

// testResetAfterRestore runs the scenario keeping the transaction ids of
// the first keep events (by position) and shifting the rest.
func testResetAfterRestore(t *testing.T, keep int) {
	s := startService(t, "gochannel")
	alice := "alice-" + uuid.NewString()[:8]
	first := lifecycle(t, s, alice)
	waitShipment(t, s, first)
	s.stop()

	const shift = "1099511627776" // 2^40: a cluster that ran ~256 epochs of xids longer
	q := `"` + s.schema + `".`
	// The shift applies past the keep-th event in feed order: (0, 0) when
	// keep is 0. One lifecycle's commands commit one after another, so
	// position order is feed order and the shift keeps it.
	var kt, kp string
	if err := s.db.QueryRow(`SELECT coalesce(max(transaction_id::text), '0'), coalesce(max(position), 0)::text FROM
		(SELECT transaction_id, position FROM `+q+`events ORDER BY transaction_id, position LIMIT $1) k`, keep).Scan(&kt, &kp); err != nil {
		t.Fatal(err)
	}
	past := ` (transaction_id, position) > ('` + kt + `'::xid8, ` + kp + `)`
	for _, stmt := range []string{
		`UPDATE ` + q + `events SET transaction_id = ((transaction_id::text)::numeric + ` + shift + `)::text::xid8 WHERE` + past,
		`UPDATE ` + q + `projector_checkpoints SET transaction_id = ((transaction_id::text)::numeric + ` + shift + `)::text::xid8 WHERE position > 0 AND` + past,
		`UPDATE ` + q + `forwarder_offsets SET transaction_id = ((transaction_id::text)::numeric + ` + shift + `)::text::xid8 WHERE position > 0 AND` + past,
	} {
		if _, err := s.db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}

	reset := func() string {
		cmd := exec.Command(binPath, "reset-after-restore", "-schema", s.schema)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+pgtest.DatabaseURL())
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("reset-after-restore: %v\n%s", err, out)
		}
		return string(out)
	}
	out := reset()
	for _, want := range []string{"projection ordering_orders: checkpoint", "projection ordering_customer_stats: checkpoint", "forwarder: offset", "renumbered"} {
		if !strings.Contains(out, want) {
			t.Errorf("reset output lacks %q:\n%s", want, out)
		}
	}
	if out := reset(); !strings.Contains(out, "events: 0 renumbered") || strings.Contains(out, "checkpoint") {
		t.Errorf("a second reset changed something:\n%s", out)
	}

	s2 := startAgain(t, s, "gochannel")
	bob := "bob-" + uuid.NewString()[:8]
	second := lifecycle(t, s2, bob) // fails unless the projections read the new events
	waitShipment(t, s2, second)
	if o := s2.getOrder(first); o.Status != "shipped" || o.Version != 6 {
		t.Fatalf("restored order: %+v", o)
	}
	var stats struct {
		Orders, PaidOrders int64
	}
	r := s2.do("GET", "/customers/"+alice+"/stats", "")
	r.json(t, &struct {
		Orders     *int64 `json:"orders"`
		PaidOrders *int64 `json:"paid_orders"`
	}{&stats.Orders, &stats.PaidOrders})
	if stats.Orders != 1 || stats.PaidOrders != 1 {
		t.Fatalf("restored customer's stats %+v: applied twice?", stats)
	}
	var n int
	if err := s2.db.Get(&n, `SELECT count(*) FROM `+q+`shipments`); err != nil || n != 2 {
		t.Fatalf("%d shipments (%v), want 2", n, err)
	}
	s2.stop()
}
