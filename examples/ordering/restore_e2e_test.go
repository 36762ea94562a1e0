package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/examples/ordering/order"
	"github.com/esox-go/esox/examples/ordering/readmodel"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// restoreSchema is the schema the restore test's service runs in, in its
// private clusters.
const restoreSchema = "ordering"

// TestRestoreIntoAnotherCluster runs the service on a private cluster
// whose transaction ids are in epoch 5 (as after five wraparounds), dumps
// its schema with pg_dump, restores it with pg_restore into a fresh
// cluster (epoch 0: every restored transaction id is far ahead of the new
// cluster's), runs `esox restore reset`, and starts the service there
// again. Besides the service's two live projections, its forwarder group
// and its shipping consumer, the schema holds what the reference service's
// old reset mishandled: a blue/green version still building (partitioned,
// built part of the way) and a second consumer group. After the reset:
//
//   - new orders reach the read models (commands wait for them) and the
//     shipping consumer; the restored order and its customer's stats are
//     as before, nothing applied twice;
//   - the service's forwarder publishes the new events only (its published
//     count), and the second group too;
//   - the building version resumes where it was, applies every later event
//     exactly once and goes live.
//
// A second reset finds nothing to do; a reset while the service runs is
// refused (exit 4).
func TestRestoreIntoAnotherCluster(t *testing.T) {
	t.Parallel()
	old := pgtest.StartCluster(t)
	old.SetXIDEpoch(t, 5)
	oldDB := old.Open(t)
	s := launch(t, oldDB, old.URL, restoreSchema, "e2e_restore_", "gochannel")
	alice := "alice-" + uuid.NewString()[:8]
	first := lifecycle(t, s, alice)
	waitShipment(t, s, first)

	// The blue/green version and the second group, run in this process.
	oldStore := newStore(t, oldDB)
	green := greenProjection()
	if _, err := newRunner(t, oldStore, green).Migrate(testContext(t)); err != nil {
		t.Fatal(err)
	}
	raws, err := oldStore.ReadFeed(testContext(t), eventstore.Position{}, 10)
	if err != nil || len(raws) != 6 {
		t.Fatalf("the feed before the dump: %d events, %v", len(raws), err)
	}
	builtTo := raws[2].Position // the version has applied the first three
	if _, err := projector.SetCheckpoint(testContext(t), oldStore, projector.Target{Projection: readmodel.CustomerStatsName, Version: 2}, builtTo, nil); err != nil {
		t.Fatal(err)
	}
	forward(t, oldStore, "audit", raws[5].Position)
	esoxRun(t, old.URL, 4, "restore", "reset", "--yes") // the service runs
	s.stop()

	// Dump, and restore into a younger cluster.
	dump := filepath.Join(t.TempDir(), "ordering.dump")
	runProgram(t, old.Bin("pg_dump"), "--format=custom", "--schema="+restoreSchema, "--file="+dump, old.URL)
	young := pgtest.StartCluster(t)
	runProgram(t, young.Bin("pg_restore"), "--dbname="+young.URL, "--no-owner", dump)
	youngDB := young.Open(t)
	var next, restored string
	if err := youngDB.QueryRow(`SELECT pg_snapshot_xmax(pg_current_snapshot())::text, min(transaction_id)::text FROM `+restoreSchema+`.events`).Scan(&next, &restored); err != nil {
		t.Fatal(err)
	}
	t.Logf("restored transaction ids from %s, the new cluster's next is %s", restored, next)

	out := esoxRun(t, young.URL, 0, "restore", "reset", "--yes")
	for _, w := range []string{readmodel.OrdersName, readmodel.CustomerStatsName, readmodel.CustomersName, "building", "ordering", "audit", "6 event(s) renumbered",
		"5 checkpoint(s) and 2 offset(s) moved", // three live projections, two building partitions
	} {
		if !strings.Contains(out, w) {
			t.Errorf("esox restore reset lacks %q:\n%s", w, out)
		}
	}
	if out := esoxRun(t, young.URL, 0, "restore", "reset", "--yes"); !strings.Contains(out, "nothing to do") {
		t.Errorf("a second reset:\n%s", out)
	}

	s2 := launch(t, youngDB, young.URL, restoreSchema, "e2e_restore_", "gochannel")
	bob := "bob-" + uuid.NewString()[:8]
	second := lifecycle(t, s2, bob) // fails unless the projections read the new events
	waitShipment(t, s2, second)
	if o := s2.getOrder(first); o.Status != "shipped" || o.Version != 6 {
		t.Fatalf("restored order: %+v", o)
	}
	var stats struct {
		Orders     int64 `json:"orders"`
		PaidOrders int64 `json:"paid_orders"`
	}
	s2.do("GET", "/customers/"+alice+"/stats", "").json(t, &stats)
	if stats.Orders != 1 || stats.PaidOrders != 1 {
		t.Fatalf("restored customer's stats %+v: applied twice?", stats)
	}
	var n int
	if err := youngDB.Get(&n, `SELECT count(*) FROM `+restoreSchema+`.shipments`); err != nil || n != 2 {
		t.Fatalf("%d shipments (%v), want 2", n, err)
	}
	// The forwarder publishes in feed order: had it replayed the restored
	// events, it would have published them before bob's.
	testwait.Until(t, "the forwarder to publish bob's events", func() bool {
		return metric(t, s2, "esox_forwarder_published_total", "esox_forwarder_consumer_group", forwarderGroup) >= 6
	})
	if v := metric(t, s2, "esox_forwarder_published_total", "esox_forwarder_consumer_group", forwarderGroup); v != 6 {
		t.Errorf("the forwarder published %v events after the restore, want bob's 6", v)
	}
	s2.stop()

	youngStore := newStore(t, youngDB)
	end, err := youngStore.Head(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	var fresh []string
	all, err := youngStore.ReadFeed(testContext(t), eventstore.Position{}, 100)
	if err != nil || len(all) != 12 {
		t.Fatalf("the feed after the restore: %d events, %v", len(all), err)
	}
	for _, r := range all[6:] {
		fresh = append(fresh, r.ID.String())
	}
	// The second group publishes the new events, and only them.
	if got := forward(t, youngStore, "audit", end); !slices.Equal(sorted(got), sorted(fresh)) {
		t.Errorf("the audit group published %v after the restore, want the new events %v", got, fresh)
	}
	// The building version goes on from where it was: each later event
	// once, then it goes live.
	r := newRunner(t, youngStore, greenProjection())
	runUntil(t, r, "the building version to catch up and go live", func() bool {
		st, err := projector.ReadProjection(testContext(t), youngStore, readmodel.CustomerStatsName)
		if err != nil {
			t.Fatal(err)
		}
		return st[len(st)-1].Live && !st[len(st)-1].Checkpoint.Less(end) && !st[len(st)-2].Checkpoint.Less(end)
	})
	var applied []struct {
		ID uuid.UUID `db:"event_id"`
		N  int       `db:"n"`
	}
	if err := youngDB.Select(&applied, `SELECT event_id, n FROM `+restoreSchema+`.restore_green ORDER BY event_id`); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range all[3:] {
		want = append(want, r.ID.String())
	}
	var got []string
	for _, a := range applied {
		if a.N != 1 {
			t.Errorf("the building version applied event %s %d times", a.ID, a.N)
		}
		got = append(got, a.ID.String())
	}
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("the building version applied %v, want the events after its checkpoint %v", got, want)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newStore(t *testing.T, db *sqlx.DB) *postgres.Store {
	t.Helper()
	store, err := postgres.New(db, order.NewRegistry(), postgres.Config{Schema: restoreSchema, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// greenProjection is a version 2 of the customer stats, partitioned, that
// records how many times it applied each event in its own table.
func greenProjection() projector.Projection {
	table := restoreSchema + ".restore_green"
	return projector.Projection{
		Name: readmodel.CustomerStatsName, Version: 2, Partitions: 2,
		Handler: projector.Records(func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (event_id, n) VALUES ($1, 1)
				ON CONFLICT (event_id) DO UPDATE SET n = restore_green.n + 1`, r.ID)
			return err
		}),
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE `+table+` (event_id uuid PRIMARY KEY, n int NOT NULL)`)
			return err
		},
	}
}

func newRunner(t *testing.T, store *postgres.Store, ps ...projector.Projection) *projector.Runner {
	t.Helper()
	r, err := projector.NewRunner(store, projector.Config{PollInterval: 5 * time.Millisecond, LeaderRetryInterval: 100 * time.Millisecond, Logger: quietLog()}, ps...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runUntil runs r until cond holds.
func runUntil(t *testing.T, r *projector.Runner, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testwait.Until(t, what, cond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// recorder is a Publisher that records the message UUIDs.
type recorder struct {
	mu    sync.Mutex
	uuids []string
}

func (p *recorder) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.uuids = append(p.uuids, m.UUID)
	}
	return nil
}

func (p *recorder) Close() error { return nil }

// forward runs a forwarder of group until its offset reaches until, and
// returns what it published.
func forward(t *testing.T, store *postgres.Store, group string, until eventstore.Position) []string {
	t.Helper()
	pub := &recorder{}
	f, err := forwarder.New(store, pub, forwarder.Config{ConsumerGroup: group, PollInterval: 5 * time.Millisecond, LeaderRetryInterval: 100 * time.Millisecond, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	testwait.Until(t, "group "+group+" to reach "+until.String(), func() bool {
		off, err := f.Offset(context.Background())
		return err == nil && !off.Less(until)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("forwarder Run = %v", err)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	return slices.Clone(pub.uuids)
}

// esoxRun runs the esox command on the restore schema of the database at
// url and returns its output, failing the test unless it exits with code.
func esoxRun(t *testing.T, url string, code int, args ...string) string {
	t.Helper()
	cmd := exec.Command(esoxPath, append([]string{"--schema", restoreSchema}, args...)...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("esox %v: %v", args, err)
	}
	if got != code {
		t.Fatalf("esox %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, got, code, stdout.String(), stderr.String())
	}
	return stdout.String() + stderr.String()
}

// runProgram runs a program, failing the test when it fails.
func runProgram(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
