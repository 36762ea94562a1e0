package main_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// The application's side of the projection tests: a runner in the test
// process, with the code the command does not have (handlers, Reset). The
// command, run as a process, acts through the database; this runner
// notices and performs what needs its code.

// service is the test's projections over b's store.
type service struct {
	b       *bundle
	applied atomic.Int64 // records the "orders" handler applied
	fixed   atomic.Bool  // the poison no longer fails
	runner  *projector.Runner
	cancel  context.CancelFunc
	done    chan error
}

func (b *bundle) q(table string) string {
	return postgres.QuoteIdentifier(b.cli.schema) + "." + postgres.QuoteIdentifier(table)
}

// projections returns the service's projections: "orders" counts the
// orders per customer (with Reset), "strict" stops on a poison order
// (customer "poison"), "parking" parks it (dead letters), "parts" is
// partitioned.
func (s *service) projections() []projector.Projection {
	b := s.b
	table := func(name string) (func(context.Context, postgres.Tx) error, func(context.Context, postgres.Tx) error) {
		setup := func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+b.q(name)+` (customer text PRIMARY KEY, n int NOT NULL)`)
			return err
		}
		reset := func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+b.q(name))
			return err
		}
		return setup, reset
	}
	handler := func(name string, count bool) projector.Handler {
		return projector.Records(func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
			e := r.Data.(orderPlaced)
			if e.Customer == "poison" && name != "orders" && name != "parts" && !s.fixed.Load() {
				return errors.New("poison cannot be applied")
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO `+b.q(name)+` (customer, n) VALUES ($1, 1)
				ON CONFLICT (customer) DO UPDATE SET n = `+b.q(name)+`.n + 1`, e.Customer)
			if err == nil && count {
				s.applied.Add(1)
			}
			return err
		}, "order_placed")
	}
	var ps []projector.Projection
	for _, p := range []struct {
		name       string
		partitions int
		deadLetter bool
	}{{"orders", 0, false}, {"parking", 0, true}, {"parts", 2, false}, {"strict", 0, false}} {
		setup, reset := table(p.name)
		ps = append(ps, projector.Projection{Name: p.name, Handler: handler(p.name, p.name == "orders"), Setup: setup, Reset: reset,
			Partitions: p.partitions, DeadLetter: p.deadLetter})
	}
	return ps
}

// start runs the service's runner until stop (or the test's end).
func (s *service) start(t *testing.T) {
	t.Helper()
	r, err := projector.NewRunner(s.b.store, projector.Config{PollInterval: 5 * time.Millisecond, LeaderRetryInterval: 100 * time.Millisecond,
		RetryBackoff: time.Millisecond, DisableRetries: true, Logger: quietLogger()}, s.projections()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.runner, s.cancel, s.done = r, cancel, make(chan error, 1)
	go func() { s.done <- r.Run(ctx) }()
	t.Cleanup(func() { s.stop(t) })
}

func (s *service) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		t.Errorf("Run = %v", err)
	}
	s.cancel = nil
}

func (s *service) status(t *testing.T, name string) []projector.ProjectionStatus {
	t.Helper()
	st, err := projector.ReadProjection(testCtx(t), s.b.store, name)
	if errors.Is(err, projector.ErrProjectionNotFound) {
		return nil // not registered yet
	}
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitState waits until every partition of name's live version is in
// state at pos or later.
func (s *service) waitState(t *testing.T, name string, state projector.State, pos eventstore.Position) {
	t.Helper()
	testwait.Until(t, name+" to be "+string(state)+" at "+pos.String(), func() bool {
		st := s.status(t, name)
		for _, st := range st {
			if st.Live && (st.State != state || st.Checkpoint.Less(pos)) {
				return false
			}
		}
		return len(st) > 0
	})
}

func (s *service) count(t *testing.T, table, customer string) int {
	t.Helper()
	var n int
	if err := s.b.db.Get(&n, `SELECT coalesce((SELECT n FROM `+s.b.q(table)+` WHERE customer = $1), 0)`, customer); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestProjections: projections list and status show every version and
// partition; rebuild (waiting for the runner's leader, or recorded when
// none runs), set-checkpoint, skip and resume act through the database on
// a runner in another process; unknown projections, versions and
// partitions exit 3, bad positions 2, a missing --yes 5. Completion offers
// the projection names.
func TestProjections(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.cli
	if r := c.ok("projections", "list"); !strings.Contains(r.stdout, "no projections in schema") {
		t.Fatalf("projections list without projections:\n%s", r)
	}
	c.fails(3, []string{`projection "orders" not found`, "none: no runner has registered"}, "projections", "status", "orders")
	s := &service{b: b}
	s.start(t)
	b.append(t, "order-1", orderPlaced{"alice", 10})
	b.append(t, "order-2", orderPlaced{"bob", 20})
	last := b.append(t, "order-3", orderPlaced{"alice", 30}).LastPosition
	for _, name := range []string{"orders", "parking", "parts", "strict"} {
		s.waitState(t, name, projector.StateRunning, last)
	}

	r := c.ok("projections", "list")
	for _, w := range []string{"feed head", "PROJECTION", "orders ", "parts ", "live", "running", "2 "} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("projections list lacks %q:\n%s", w, r)
		}
	}
	if !regexp.MustCompile(`parts +1 +live +running +2 +` + regexp.QuoteMeta(last.String()) + ` +0 +0 +running`).MatchString(r.stdout) {
		t.Fatalf("projections list's parts row:\n%s", r)
	}
	var list []struct {
		Projection  string `json:"projection"`
		Version     int    `json:"version"`
		Status      string `json:"status"`
		State       string `json:"state"`
		Partitions  int    `json:"partitions"`
		Checkpoint  string `json:"checkpoint"`
		Leaders     int    `json:"leaders"`
		DeadLetters int64  `json:"dead_letters"`
	}
	c.jsonOut(&list, "projections", "list")
	if len(list) != 4 || list[2].Projection != "parts" || list[2].Partitions != 2 || list[2].Leaders != 2 || list[2].Checkpoint != last.String() || list[0].State != "running" {
		t.Fatalf("projections list --json = %+v", list)
	}
	r = c.ok("projections", "status", "parts")
	if !strings.Contains(r.stdout, "0/2") || !strings.Contains(r.stdout, "1/2") {
		t.Fatalf("projections status parts:\n%s", r)
	}
	c.fails(3, []string{`projection "order" not found (known projections: orders, parking, parts, strict)`}, "projections", "status", "order")
	if r := c.ok("__complete", "projection", "rebuild", ""); !strings.Contains(r.stdout, "orders\nparking\nparts\nstrict\n") {
		t.Fatalf("completion of a projection:\n%s", r)
	}

	// rebuild: refusals, then waiting for the runner's leader.
	c.fails(5, []string{"not confirmed", "--yes"}, "projection", "rebuild", "orders")
	c.fails(3, []string{`projection "order" not found`}, "projection", "rebuild", "order", "--yes")
	c.fails(3, []string{`projection "orders" has no version 2`}, "projection", "rebuild", "orders", "--version", "2", "--yes")
	if _, err := b.db.Exec(`INSERT INTO ` + b.q("orders") + ` (customer, n) VALUES ('stale', 1)`); err != nil {
		t.Fatal(err)
	}
	before := s.applied.Load()
	r = c.ok("projection", "rebuild", "orders", "--yes")
	if !strings.Contains(r.stdout, "projection orders version 1 rebuilt: caught up at") || !strings.Contains(r.stderr, "waiting for its leader") {
		t.Fatalf("projection rebuild:\n%s", r)
	}
	if n := s.applied.Load() - before; n != 3 || s.count(t, "orders", "stale") != 0 || s.count(t, "orders", "alice") != 2 {
		t.Fatalf("after the rebuild: %d records applied (want 3), stale %d (want 0), alice %d (want 2)", n, s.count(t, "orders", "stale"), s.count(t, "orders", "alice"))
	}
	var rb struct {
		Projection string `json:"projection"`
		Requested  bool   `json:"requested"`
		Completed  bool   `json:"completed"`
		Checkpoint string `json:"checkpoint"`
	}
	c.jsonOut(&rb, "projection", "rebuild", "parts", "--yes")
	if !rb.Requested || !rb.Completed || rb.Checkpoint != last.String() {
		t.Fatalf("projection rebuild --json = %+v", rb)
	}

	// set-checkpoint: refusals change nothing; back to 0/0 replays.
	c.fails(2, []string{"position", "transaction_id/position"}, "projection", "set-checkpoint", "orders", "later", "--yes")
	ahead := eventstore.Position{TransactionID: last.TransactionID + 1_000_000, Position: 1}.String()
	c.fails(2, []string{"after the feed's head"}, "projection", "set-checkpoint", "orders", ahead, "--yes")
	c.fails(3, []string{`version 1 has no partition 2 (its partitions are 0 to 1)`}, "projection", "set-checkpoint", "parts", "0/0", "--partition", "2", "--yes")
	c.fails(5, []string{"not confirmed", "applied again"}, "projection", "set-checkpoint", "orders", "0/0")
	before = s.applied.Load()
	r = c.ok("projection", "set-checkpoint", "orders", "0/0", "--yes")
	if !strings.Contains(r.stdout, "projection orders version 1: checkpoint moved from "+last.String()+" to 0/0") {
		t.Fatalf("set-checkpoint:\n%s", r)
	}
	testwait.Until(t, "the leader to replay after set-checkpoint", func() bool { return s.applied.Load()-before == 3 })
	s.waitState(t, "orders", projector.StateRunning, last)

	// skip: the strict projection stops on a poison order, skip passes over
	// it; skip refuses a running projection.
	c.fails(2, []string{"not stopped on an event", "--event"}, "projection", "skip", "strict", "--yes")
	poison := b.append(t, "order-4", orderPlaced{"poison", 1})
	after := b.append(t, "order-5", orderPlaced{"carol", 1}).LastPosition
	testwait.Until(t, "strict to stop on the poison", func() bool { return s.status(t, "strict")[0].State == projector.StateStoppedWithError })
	r = c.ok("projections", "status", "strict")
	if !strings.Contains(r.stdout, "stopped_with_error") || !strings.Contains(r.stdout, "poison cannot be applied") || !strings.Contains(r.stdout, "it stopped on event "+poison.EventIDs[0].String()) {
		t.Fatalf("status of the stopped projection:\n%s", r)
	}
	c.fails(3, []string{"not found"}, "projection", "skip", "strict", "--event", uuid.NewString(), "--yes")
	c.fails(5, []string{"not confirmed", "Skip event " + poison.EventIDs[0].String()}, "projection", "skip", "strict")
	r = c.ok("projection", "skip", "strict", "--yes")
	if !strings.Contains(r.stdout, "event "+poison.EventIDs[0].String()+" at "+poison.LastPosition.String()+" will be passed over") {
		t.Fatalf("skip:\n%s", r)
	}
	s.waitState(t, "strict", projector.StateRunning, after)
	if s.count(t, "strict", "poison") != 0 || s.count(t, "strict", "carol") != 1 {
		t.Fatal("after the skip: the poison was applied or carol was not")
	}
	c.fails(2, []string{"before the checkpoint", "forward only"}, "projection", "skip", "strict", "--to", "0/0", "--yes")

	// resume: stopped again, fixed, resumed.
	if r := c.ok("projection", "resume", "strict"); !strings.Contains(r.stdout, "nothing to resume") {
		t.Fatalf("resume of a running projection:\n%s", r)
	}
	b.append(t, "order-6", orderPlaced{"poison", 2})
	testwait.Until(t, "strict to stop again", func() bool { return s.status(t, "strict")[0].State == projector.StateStoppedWithError })
	s.fixed.Store(true)
	r = c.ok("projection", "resume", "strict")
	if !strings.Contains(r.stdout, "projection strict version 1: resumed partition(s) 0") {
		t.Fatalf("resume:\n%s", r)
	}
	end := b.append(t, "order-7", orderPlaced{"dave", 1}).LastPosition
	s.waitState(t, "strict", projector.StateRunning, end)
	if s.count(t, "strict", "poison") != 1 {
		t.Fatal("the resumed projection did not apply the fixed event")
	}
	s.waitState(t, "orders", projector.StateRunning, end)

	// No runner: the rebuild is recorded, and performed when one starts.
	s.stop(t)
	testwait.Until(t, "the leaders to be gone", func() bool { return !s.status(t, "orders")[0].LeaderRunning })
	r = c.ok("projection", "rebuild", "orders", "--yes")
	if !strings.Contains(r.stdout, "no process runs it now") {
		t.Fatalf("rebuild without a runner:\n%s", r)
	}
	if r := c.ok("projections", "list"); !regexp.MustCompile(`orders +1 +live +rebuild_requested`).MatchString(r.stdout) {
		t.Fatalf("projections list with the rebuild pending:\n%s", r)
	}
	before = s.applied.Load()
	s.start(t)
	testwait.Until(t, "the new runner to perform the rebuild", func() bool {
		st := s.status(t, "orders")[0]
		return !st.RebuildRequested && !st.Rebuilding && st.Checkpoint == end
	})
	if n := s.applied.Load() - before; n != 7 {
		t.Fatalf("the rebuild applied %d records, want the 7 of the feed", n)
	}
	if r := c.ok("projection", "rebuild", "orders", "--no-wait", "--yes"); !strings.Contains(r.stdout, "its leader performs it") {
		t.Fatalf("rebuild --no-wait:\n%s", r)
	}
}
