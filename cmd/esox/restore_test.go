package main_test

import (
	"strings"
	"testing"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// TestRestoreReset: restore reset finds nothing to do on a schema that was
// not restored; refuses while a runner leads (exit 4) and without --yes
// (exit 5), changing nothing; after a simulated restore into a younger
// cluster (every transaction id far ahead), --dry-run prints the plan and
// changes nothing, and the reset moves every checkpoint and offset and
// renumbers the events, after which the runner applies new events (and
// only them) and a second reset has nothing to do. The restore e2e test in
// examples/ordering does it with a real dump and restore.
func TestRestoreReset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.cli
	if r := c.ok("restore", "reset", "--yes"); !strings.Contains(r.stdout, "nothing to do") {
		t.Fatalf("reset of a fresh schema:\n%s", r)
	}
	s := &service{b: b}
	s.start(t)
	b.append(t, "order-1", orderPlaced{"alice", 1})
	last := b.append(t, "order-2", orderPlaced{"bob", 2}).LastPosition
	for _, name := range []string{"orders", "parts"} {
		s.waitState(t, name, projector.StateRunning, last)
	}
	if err := mustForwarder(t, b, "ship").SetOffset(testCtx(t), last); err != nil {
		t.Fatal(err)
	}
	c.fails(4, []string{"refused: a leader is running in this schema", `projection "orders" version 1`, "stop every instance"}, "restore", "reset", "--yes")
	s.stop(t)
	testwait.Until(t, "the leaders to be gone", func() bool { return !s.status(t, "orders")[0].LeaderRunning })

	const shift = "1099511627776"
	for _, stmt := range []string{
		`UPDATE ` + b.store.QualifiedEventsTable() + ` SET transaction_id = ((transaction_id::text)::numeric + ` + shift + `)::text::xid8`,
		`UPDATE ` + b.q(projector.CheckpointsTable) + ` SET transaction_id = ((transaction_id::text)::numeric + ` + shift + `)::text::xid8 WHERE position > 0`,
		`UPDATE ` + b.q(forwarder.OffsetsTable) + ` SET transaction_id = ((transaction_id::text)::numeric + ` + shift + `)::text::xid8 WHERE position > 0`,
	} {
		if _, err := b.db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	moved := eventstore.Position{TransactionID: 1, Position: last.Position}.String()
	r := c.ok("restore", "reset", "--dry-run")
	for _, w := range []string{"restored events to renumber: 2", "orders", "parts", "ship", "MOVES TO", moved, "exact"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("restore reset --dry-run lacks %q:\n%s", w, r)
		}
	}
	c.fails(5, []string{"not confirmed", "Renumber 2 restored event(s)"}, "restore", "reset")
	var plan struct {
		DryRun      bool  `json:"dry_run"`
		Restored    bool  `json:"restored"`
		Events      int64 `json:"events"`
		Checkpoints []struct {
			Projection string `json:"projection"`
			To         string `json:"to"`
			Exact      bool   `json:"exact"`
		} `json:"checkpoints"`
	}
	c.jsonOut(&plan, "restore", "reset", "--dry-run")
	if !plan.DryRun || !plan.Restored || plan.Events != 2 || len(plan.Checkpoints) != 5 || plan.Checkpoints[0].To != moved || !plan.Checkpoints[0].Exact {
		t.Fatalf("restore reset --dry-run --json = %+v", plan)
	}

	r = c.ok("restore", "reset", "--yes")
	if !strings.Contains(r.stdout, "2 event(s) renumbered to transaction id 1, 5 checkpoint(s) and 1 offset(s) moved") {
		t.Fatalf("restore reset:\n%s", r)
	}
	if r := c.ok("restore", "reset", "--yes"); !strings.Contains(r.stdout, "nothing to do") {
		t.Fatalf("a second reset:\n%s", r)
	}
	if g := b.groups(t)["ship"]; g.Offset != moved || g.Lag != 0 {
		t.Fatalf("ship after the reset = %+v", g)
	}

	before := s.applied.Load()
	s.start(t)
	end := b.append(t, "order-3", orderPlaced{"alice", 3}).LastPosition
	s.waitState(t, "orders", projector.StateRunning, end)
	if n := s.applied.Load() - before; n != 1 || s.count(t, "orders", "alice") != 2 {
		t.Fatalf("after the reset the runner applied %d records (want only the new one), alice %d (want 2)", n, s.count(t, "orders", "alice"))
	}
}
