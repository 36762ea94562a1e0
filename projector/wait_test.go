package projector_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// requireWaitError checks that err is a *WaitError in state, matching
// ErrNotProgressing, and returns it.
func requireWaitError(t *testing.T, err error, state projector.State) *projector.WaitError {
	t.Helper()
	var we *projector.WaitError
	if !errors.As(err, &we) || !errors.Is(err, projector.ErrNotProgressing) || we.State != state {
		t.Fatalf("WaitFor = %v, want a *WaitError in state %s matching ErrNotProgressing", err, state)
	}
	return we
}

// TestWaitForRefusesWhatCannotCome: WaitFor returns at once, with the
// state and the checkpoint, for a projection nobody registered, one nobody
// runs, one that stopped leading, and one without a live version, instead
// of waiting until its context ends (here, a minute: a WaitFor that waited
// fails the test with DeadlineExceeded).
func TestWaitForRefusesWhatCannotCome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	last := b.appendDeposits(t, 10, 2, 2)
	r, err := projector.NewRunner(b.store, fastConfig(t), b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}

	// Not registered: the projector's tables do not even exist yet.
	we := requireWaitError(t, r.WaitFor(ctx, "balances", last.LastPosition), projector.StateNotRegistered)
	if !errors.Is(we, projector.ErrNotRegistered) || errors.Is(we, projector.ErrStopped) || we.Position != last.LastPosition ||
		!strings.Contains(we.Error(), "not registered") {
		t.Fatalf("not registered: %+v (%v)", we, we)
	}
	if s := statusOf(t, r, "balances", 1); s.State != projector.StateNotRegistered {
		t.Fatalf("Status before Migrate: %s, want not_registered", s.State)
	}
	// Not registered, with the tables there (another runner migrated).
	other, err := projector.NewRunner(b.store, fastConfig(t), b.balances("other", "other"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	requireWaitError(t, r.WaitFor(ctx, "balances", last.LastPosition), projector.StateNotRegistered)

	// Registered, but no process runs it.
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	we = requireWaitError(t, r.WaitFor(ctx, "balances", last.LastPosition), projector.StateNotRunning)
	if we.Version != 1 || !we.Checkpoint.IsZero() || errors.Is(we, projector.ErrNotRegistered) || !strings.Contains(we.Error(), "no process leads") {
		t.Fatalf("not running: %+v (%v)", we, we)
	}

	// Run by another process (another Runner): this one, which only waits,
	// waits.
	runner2, err := projector.NewRunner(b.store, fastConfig(t), b.balances("balances", "balances"))
	if err != nil {
		t.Fatal(err)
	}
	rr := start(t, runner2)
	testwait.Until(t, "the other runner to lead", func() bool { return statusOf(t, runner2, "balances", 1).Leading })
	waitFor(t, r, "balances", last.LastPosition)

	// The leader stops while a WaitFor waits for what has not been
	// appended yet: WaitFor notices within about a second.
	ahead := eventstore.Position{TransactionID: last.LastPosition.TransactionID + 1<<40}
	done := make(chan error, 1)
	go func() { done <- r.WaitFor(ctx, "balances", ahead) }()
	rr.stop(t)
	we = requireWaitError(t, <-done, projector.StateNotRunning)
	if we.Checkpoint.Compare(last.LastPosition) < 0 || we.Position != ahead {
		t.Fatalf("after the leader stopped: %+v", we)
	}

	// No live version (every version retired, by hand).
	if _, err := b.db.Exec(`UPDATE ` + b.q(projector.CheckpointsTable) + ` SET status = 'retired' WHERE projection = 'balances'`); err != nil {
		t.Fatal(err)
	}
	requireWaitError(t, r.WaitFor(ctx, "balances", ahead), projector.StateRetired)
}

// TestWaitForDuringStartup: while this runner's Run is registering the
// projection (its Setup runs), and then while it takes leadership, WaitFor
// waits instead of reporting a projection that is not registered or not
// running.
func TestWaitForDuringStartup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	last := b.appendDeposits(t, 10, 2, 2)
	p := b.balances("balances", "balances")
	inSetup, release := make(chan struct{}), make(chan struct{})
	setup := p.Setup
	p.Setup = func(ctx context.Context, tx postgres.Tx) error {
		close(inSetup)
		<-release
		return setup(ctx, tx)
	}
	r, err := projector.NewRunner(b.store, fastConfig(t), p)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	<-inSetup
	// Registration has not committed: WaitFor waits (here until its
	// deadline) rather than refusing.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err = r.WaitFor(ctx, "balances", last.LastPosition)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor while Run registers = %v, want it to wait until its deadline", err)
	}
	close(release)
	// Straight after registration, leadership may not be taken yet.
	waitFor(t, r, "balances", last.LastPosition)
	equalBalances(t, "model", b.model(t, "balances"), b.foldAll(t))
}

// TestDisableMigrate: a runner with DisableMigrate neither migrates nor
// registers: Run refuses projection versions nobody registered, naming
// them, and runs once Runner.Migrate (e.g. as the schema's owner) has
// registered them, without running their Setup again.
func TestDisableMigrate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	last := b.appendDeposits(t, 10, 2, 2)
	var setups atomic.Int64
	p := b.balances("balances", "balances")
	setup := p.Setup
	p.Setup = func(ctx context.Context, tx postgres.Tx) error {
		setups.Add(1)
		return setup(ctx, tx)
	}
	cfg := fastConfig(t)
	cfg.DisableMigrate = true
	r, err := projector.NewRunner(b.store, cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); !errors.Is(err, projector.ErrNotRegistered) || !strings.Contains(err.Error(), `"balances" version 1`) {
		t.Fatalf("Run with DisableMigrate on an unmigrated schema = %v, want ErrNotRegistered naming the version", err)
	}
	var exists bool
	if err := b.db.Get(&exists, `SELECT to_regclass($1) IS NOT NULL`, b.q(projector.CheckpointsTable)); err != nil || exists {
		t.Fatalf("Run with DisableMigrate created the checkpoints table (exists=%v, %v)", exists, err)
	}

	// The owner's runner (without DisableMigrate) migrates and registers.
	owner, err := projector.NewRunner(b.store, fastConfig(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	start(t, r)
	waitFor(t, r, "balances", last.LastPosition)
	equalBalances(t, "model", b.model(t, "balances"), b.foldAll(t))
	if n := setups.Load(); n != 1 {
		t.Fatalf("Setup ran %d times, want once (by Migrate)", n)
	}

	// A new version is not registered by a DisableMigrate runner either.
	p2 := b.balances("balances", "balances_v2")
	p2.Version = 2
	r2, err := projector.NewRunner(b.store, cfg, p, p2)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Run(ctx); !errors.Is(err, projector.ErrNotRegistered) || !strings.Contains(err.Error(), `"balances" version 2`) ||
		strings.Contains(err.Error(), "version 1") {
		t.Fatalf("Run with an unregistered version = %v, want ErrNotRegistered naming version 2 only", err)
	}
}

// TestWaitForJustBeforeRun: WaitFor called just before Run starts in a
// goroutine (the usual `go r.Run(ctx)` and WaitFor), on a fresh schema or a
// registered projection, or just before another process's runner starts,
// waits for it rather than reporting the projection not registered or not
// running: those states are refused only once they last
// Config.LeaderRetryInterval (5 s here).
func TestWaitForJustBeforeRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                  string
		registered, otherProc bool
	}{{"fresh", false, false}, {"registered", true, false}, {"another process", true, true}} {
		b := setup(t)
		last := b.appendDeposits(t, 10, 2, 2)
		cfg := fastConfig(t)
		cfg.LeaderRetryInterval = 5 * time.Second
		newRunner := func() *projector.Runner {
			r, err := projector.NewRunner(b.store, cfg, b.balances("balances", "balances"))
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		waiter := newRunner()
		if tc.registered {
			if _, err := waiter.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		runner := waiter
		if tc.otherProc {
			runner = newRunner()
		}
		done := make(chan error, 1)
		go func() { done <- waiter.WaitFor(context.Background(), "balances", last.LastPosition) }()
		// Only orders the goroutines, so that WaitFor's first look (made at
		// once) usually sees nothing running; the test asserts a success.
		time.Sleep(20 * time.Millisecond)
		start(t, runner)
		if err := <-done; err != nil {
			t.Fatalf("%s: WaitFor as Run starts = %v", tc.name, err)
		}
	}
}
