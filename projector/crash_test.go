package projector_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/leader"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

func TestCancelMidBatchRollsBackWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendDeposits(t, 50, 5, 5)
	p := b.balances("balances", "balances")
	inner := p.Handler
	inside := make(chan struct{})
	var once sync.Once
	p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		if err := inner.Handle(ctx, tx, recs); err != nil {
			return err
		}
		once.Do(func() { close(inside) })
		<-ctx.Done() // the process is told to stop between handler and commit
		return ctx.Err()
	}, "deposited")
	r, err := projector.NewRunner(b.store, fastConfig(t), p)
	if err != nil {
		t.Fatal(err)
	}
	run := start(t, r)
	select {
	case <-inside:
	case <-time.After(30 * time.Second):
		t.Fatal("handler never ran")
	}
	run.stop(t)
	if got := b.model(t, "balances"); len(got) != 0 {
		t.Fatalf("the cancelled batch left effects: %v", got)
	}
	if s := statusOf(t, r, "balances", 1); !s.Checkpoint.IsZero() {
		t.Fatalf("the cancelled batch moved the checkpoint to %s", s.Checkpoint)
	}

	r2, err := projector.NewRunner(b.store, fastConfig(t), b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	start(t, r2)
	waitFor(t, r2, "balances", b.lastEvent(t))
	equalBalances(t, "after restart", b.model(t, "balances"), b.foldAll(t))
}

const (
	childEnv       = "ESOX_PROJECTOR_TEST_CHILD"
	childSchemaEnv = "ESOX_PROJECTOR_TEST_CHILD_SCHEMA"
	childURLEnv    = "ESOX_PROJECTOR_TEST_CHILD_URL"
)

// childMain runs a runner until the parent test kills the process. Its
// handler lingers inside each batch's transaction, so a kill lands between
// handler and commit.
func childMain() int {
	db, err := sqlx.Open("postgres", os.Getenv(childURLEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	schema := os.Getenv(childSchemaEnv)
	reg := newRegistry()
	store, err := postgres.New(db, reg, postgres.Config{Schema: schema})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	b := &bundle{db: db, schema: schema, reg: reg, store: store}
	p := b.balances("balances", "balances")
	inner := p.Handler
	p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		if err := inner.Handle(ctx, tx, recs); err != nil {
			return err
		}
		time.Sleep(30 * time.Millisecond)
		return nil
	}, "deposited")
	r, err := projector.NewRunner(store, projector.Config{BatchSize: 20, LeaderRetryInterval: 100 * time.Millisecond}, p)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := r.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestKilledProcessNeitherLosesNorDoubles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendDeposits(t, 1000, 9, 4)
	cfg := fastConfig(t)
	cfg.LeaderRetryInterval = 0 // the default (1 s) must meet the 5 s takeover
	r, err := projector.NewRunner(b.store, cfg, b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}

	app := "esox_child_" + b.schema[len(b.schema)-12:]
	url := pgtest.DatabaseURL()
	if strings.Contains(url, "?") {
		url += "&application_name=" + app
	} else {
		url += "?application_name=" + app
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childSchemaEnv+"="+b.schema, childURLEnv+"="+url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()

	// Once the child leads and has committed a batch, this process runs the
	// same projection as a standby.
	testwait.Until(t, "the child to commit a batch", func() bool {
		return statusOf(t, r, "balances", 1).Checkpoint.Position > 0
	})
	key := projector.LeaderKey(b.schema, "balances", 1, 0, 1)
	from := leader.Tries(key)
	start(t, r)
	// The standby tries the lock twice (leader.Tries: the server answered
	// both); had it won either, it would lead.
	testwait.Until(t, "the standby to try the lock twice", func() bool {
		return leader.Tries(key) >= from+2 || statusOf(t, r, "balances", 1).Leading
	})
	if statusOf(t, r, "balances", 1).Leading {
		t.Fatal("the standby leads while the child holds the projection")
	}

	// Kill the child while it is inside a batch whose writes are made but
	// not committed.
	testwait.Until(t, "the child to be mid-batch", func() bool {
		var mid bool
		err := b.db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1
			AND state = 'idle in transaction' AND backend_xid IS NOT NULL)`, app).Scan(&mid)
		return err == nil && mid
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-exited
	t.Logf("child stderr: %s", stderr.String())

	// The standby takes over within 5 s (guarantee 7 in docs/guarantees.md; issue 3).
	testwait.UntilWithin(t, 5*time.Second, "the standby to take over", func() bool {
		return statusOf(t, r, "balances", 1).Leading
	})
	t.Logf("took over %s after the kill", time.Since(killed).Round(time.Millisecond))

	// What is committed is consistent at every moment: in one snapshot, the
	// model is the fold of the events up to the checkpoint.
	tx, err := b.db.BeginTxx(context.Background(), &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var txid string
	var cp eventstore.Position
	if err := tx.QueryRow(`SELECT transaction_id::text AS txid, position FROM `+b.q(projector.CheckpointsTable)+` WHERE projection = 'balances'`).Scan(&txid, &cp.Position); err != nil {
		t.Fatal(err)
	}
	fmt.Sscan(txid, &cp.TransactionID)
	var rows []balance
	if err := tx.Select(&rows, `SELECT account, total, n FROM `+b.q("balances")); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback()
	snap := map[string]balance{}
	for _, r := range rows {
		snap[r.Account] = r
	}
	equalBalances(t, "snapshot after the kill", snap, b.fold(t, cp))

	// The standby finishes the job: every event exactly once.
	waitFor(t, r, "balances", b.lastEvent(t))
	equalBalances(t, "after recovery", b.model(t, "balances"), b.foldAll(t))
}

func TestTwoRunnersRaceForOneProjection(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var inHandler, maxIn atomic.Int32
	mk := func() *projector.Runner {
		p := b.balances("balances", "balances")
		inner := p.Handler
		p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
			n := inHandler.Add(1)
			defer inHandler.Add(-1)
			for m := maxIn.Load(); n > m && !maxIn.CompareAndSwap(m, n); m = maxIn.Load() {
			}
			return inner.Handle(ctx, tx, recs)
		}, "deposited")
		r, err := projector.NewRunner(b.store, fastConfig(t), p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r1, r2 := mk(), mk()
	run1, run2 := start(t, r1), start(t, r2)

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { b.appendDeposits(t, 300, 6, 2) })
	}
	wg.Wait()
	waitFor(t, r1, "balances", b.lastEvent(t))
	equalBalances(t, "raced", b.model(t, "balances"), b.foldAll(t))
	if m := maxIn.Load(); m != 1 {
		t.Fatalf("%d handlers ran at once, want 1", m)
	}
	s1, s2 := statusOf(t, r1, "balances", 1), statusOf(t, r2, "balances", 1)
	if s1.Leading == s2.Leading {
		t.Fatalf("leading: r1 %v, r2 %v; want exactly one", s1.Leading, s2.Leading)
	}

	// The leader goes away; the other takes over.
	leaderRun, other := run1, r2
	if s2.Leading {
		leaderRun, other = run2, r1
	}
	stopped := time.Now()
	leaderRun.stop(t)
	last := b.appendDeposits(t, 40, 6, 2)
	waitFor(t, other, "balances", last.LastPosition)
	t.Logf("takeover and catch-up took %s", time.Since(stopped))
	equalBalances(t, "after takeover", b.model(t, "balances"), b.foldAll(t))
	if !statusOf(t, other, "balances", 1).Leading {
		t.Fatal("the remaining runner does not lead")
	}
}

func TestRecoversFromPostgresRestart(t *testing.T) {
	t.Parallel()
	c := pgtest.StartCluster(t)
	db := c.Open(t)
	b := setupOn(t, db, "restart_test", nil, nil)
	cfg := fastConfig(t)
	r, err := projector.NewRunner(b.store, cfg, b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)

	var appended atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 400 && ctx.Err() == nil; {
			_, err := b.store.Append(ctx, fmt.Sprintf("account-r%d", i%5), eventstore.Any, []eventstore.Event{{Data: Deposited{Account: fmt.Sprintf("r%d", i%5), Amount: 1}}})
			if err != nil {
				time.Sleep(20 * time.Millisecond) // the server is restarting
				continue
			}
			i++
			appended.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
	})
	testwait.Until(t, "some appends", func() bool { return appended.Load() >= 100 })
	c.Restart(t)
	t.Log("server restarted")
	wg.Wait()
	if appended.Load() != 400 {
		t.Fatalf("appended %d", appended.Load())
	}
	waitFor(t, r, "balances", b.lastEvent(t))
	equalBalances(t, "after restart", b.model(t, "balances"), b.foldAll(t))
	if s := statusOf(t, r, "balances", 1); s.State != projector.StateRunning {
		t.Fatalf("status after restart = %+v", s)
	}
}
