package main_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/esox-go/esox/projector"
)

type deadLetterOut struct {
	Projection string     `json:"projection"`
	Version    int        `json:"version"`
	EventID    string     `json:"event_id"`
	Position   string     `json:"position"`
	EventType  string     `json:"event_type"`
	Error      string     `json:"error"`
	Retries    int        `json:"retries"`
	Outcome    string     `json:"outcome"`
	Event      *recordOut `json:"event"`
}

// TestDeadLetters: dead-letters list and show print parked events with
// their error and payload; retry has the runner's leader (in this test
// process) re-apply them through the handler: while the handler still
// fails the event stays parked with a new error and the command exits 1,
// once fixed it applies and leaves; discard deletes after confirmation.
// Unknown projections and events exit 3, missing arguments 2.
func TestDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.cli
	s := &service{b: b}
	s.start(t)
	p1 := b.append(t, "order-1", orderPlaced{"poison", 1})
	p2 := b.append(t, "order-2", orderPlaced{"poison", 2})
	last := b.append(t, "order-3", orderPlaced{"alice", 3}).LastPosition
	s.waitState(t, "parking", projector.StateRunning, last)
	id1, id2 := p1.EventIDs[0].String(), p2.EventIDs[0].String()

	r := c.ok("dead-letters", "list")
	for _, w := range []string{"PROJECTION", "parking", id1, id2, "order_placed", "poison cannot be applied"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("dead-letters list lacks %q:\n%s", w, r)
		}
	}
	if strings.Index(r.stdout, id1) > strings.Index(r.stdout, id2) {
		t.Fatalf("dead letters not in feed order:\n%s", r)
	}
	var dls []deadLetterOut
	c.jsonOut(&dls, "dead-letters", "list", "parking", "--limit", "1")
	if len(dls) != 1 || dls[0].EventID != id1 || dls[0].Position != p1.LastPosition.String() || dls[0].Version != 1 {
		t.Fatalf("dead-letters list --json --limit 1 = %+v", dls)
	}
	if r := c.ok("dead-letters", "list", "orders"); !strings.Contains(r.stdout, "no dead letters") {
		t.Fatalf("dead-letters list orders:\n%s", r)
	}
	c.fails(3, []string{`projection "parkin" not found`}, "dead-letters", "list", "parkin")

	r = c.ok("dead-letters", "show", "parking", id1)
	for _, w := range []string{"projection   parking version 1 partition 0", "error        ", "poison cannot be applied", "event_id     " + id1, `"customer": "poison"`} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("dead-letters show lacks %q:\n%s", w, r)
		}
	}
	c.jsonOut(&dls, "dead-letters", "show", "parking", id1)
	if len(dls) != 1 || dls[0].Event == nil || !jsonEqual(dls[0].Event.Payload, `{"customer":"poison","total":1}`) {
		t.Fatalf("dead-letters show --json = %+v", dls)
	}
	unknown := uuid.NewString()
	c.fails(3, []string{"has no dead letter for event " + unknown}, "dead-letters", "show", "parking", unknown)
	c.fails(2, []string{"not a UUID"}, "dead-letters", "show", "parking", "nope")

	// Retry while the handler still fails: parked again, exit 1.
	c.fails(2, []string{"or pass --all"}, "dead-letters", "retry", "parking")
	c.fails(3, []string{"has no dead letter for event " + unknown}, "dead-letters", "retry", "parking", unknown)
	r = c.fails(1, []string{"1 of 1 retried event(s) failed again and stay parked"}, "dead-letters", "retry", "parking", id1)
	if !strings.Contains(r.stdout, "event "+id1) || !strings.Contains(r.stdout, "failed again, still parked: ") {
		t.Fatalf("failed retry:\n%s", r)
	}
	c.jsonOut(&dls, "dead-letters", "list", "parking")
	if len(dls) != 2 || dls[0].Retries != 1 {
		t.Fatalf("after the failed retry = %+v", dls)
	}

	// Fixed: the retry applies it.
	s.fixed.Store(true)
	var outcome []deadLetterOut
	c.jsonOut(&outcome, "dead-letters", "retry", "parking", id1)
	if len(outcome) != 1 || outcome[0].Outcome != "applied" {
		t.Fatalf("retry after the fix = %+v", outcome)
	}
	if n := s.count(t, "parking", "poison"); n != 1 {
		t.Fatalf("poison applied %d times after the retry, want 1", n)
	}

	// Discard the other.
	c.fails(5, []string{"not confirmed", "Discard 1 dead letter(s) of projection parking"}, "dead-letters", "discard", "parking", "--all")
	r = c.ok("dead-letters", "discard", "parking", id2, "--yes")
	if !strings.Contains(r.stdout, "discarded parking v1: event "+id2) || !strings.Contains(r.stdout, "1 dead letter(s) discarded") {
		t.Fatalf("discard:\n%s", r)
	}
	if r := c.ok("dead-letters", "list", "parking"); !strings.Contains(r.stdout, "no dead letters") {
		t.Fatalf("list after discard:\n%s", r)
	}
	if n := s.count(t, "parking", "poison"); n != 1 {
		t.Fatalf("a discarded event was applied: poison %d", n)
	}
	c.fails(3, []string{"has no dead letter for event " + id2}, "dead-letters", "discard", "parking", id2, "--yes")
}
