package leader_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/leader"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
)

func TestMain(m *testing.M) {
	os.Exit(leaktest.Run(m))
}

const retry = 100 * time.Millisecond

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// contender runs leader.Run in a goroutine and records what its work sees.
type contender struct {
	name    string
	cancel  context.CancelFunc
	done    chan error
	started chan struct{} // receives each time work starts
	stopped chan struct{} // receives each time work returns
	paused  *atomic.Bool  // true: the leader skips its pings (frozen)
}

// race tracks how many contenders work at once.
type race struct {
	active  atomic.Int32
	maxSeen atomic.Int32
}

func (r *race) enter() {
	n := r.active.Add(1)
	for {
		m := r.maxSeen.Load()
		if n <= m || r.maxSeen.CompareAndSwap(m, n) {
			return
		}
	}
}

func start(t *testing.T, db *sqlx.DB, key, name string, r *race, workErr func() error) *contender {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &contender{name: name, cancel: cancel, done: make(chan error, 1), started: make(chan struct{}, 16), stopped: make(chan struct{}, 16),
		paused: new(atomic.Bool)}
	cfg := leader.WithPausedPings(leader.Config{Key: key, RetryInterval: retry, Logger: testLogger(t)}, c.paused)
	go func() {
		c.done <- leader.Run(ctx, db, cfg, func(wctx context.Context) error {
			r.enter()
			c.started <- struct{}{}
			defer func() {
				r.active.Add(-1)
				c.stopped <- struct{}{}
			}()
			if workErr != nil {
				select {
				case <-wctx.Done():
					return nil
				case <-time.After(3 * retry):
					return workErr()
				}
			}
			<-wctx.Done()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-c.done:
			if err != nil {
				t.Errorf("%s: Run returned %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not return after cancel", name)
		}
	})
	return c
}

// firstLeader waits for one of cs to start working and returns it and the other.
func firstLeader(t *testing.T, a, b *contender) (*contender, *contender) {
	t.Helper()
	select {
	case <-a.started:
		return a, b
	case <-b.started:
		return b, a
	case <-time.After(10 * time.Second):
		t.Fatal("no contender became leader")
	}
	return nil, nil
}

func waitStarted(t *testing.T, c *contender, what string) {
	t.Helper()
	select {
	case <-c.started:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: %s did not take over", what, c.name)
	}
}

func uniqueKey(t *testing.T) string {
	return fmt.Sprintf("esox:test:%s:%d", t.Name(), time.Now().UnixNano())
}

func TestOneLeaderAndTakeoverOnCancel(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	key := uniqueKey(t)
	r := &race{}
	a := start(t, db, key, "a", r, nil)
	b := start(t, db, key, "b", r, nil)
	lead, standby := firstLeader(t, a, b)

	// Several retry intervals pass; the standby must stay out.
	select {
	case <-standby.started:
		t.Fatal("standby started working while the leader holds the lock")
	case <-time.After(5 * retry):
	}
	lead.cancel()
	if err := <-lead.done; err != nil {
		t.Fatalf("leader Run: %v", err)
	}
	lead.done <- nil // for the cleanup
	waitStarted(t, standby, "after leader cancel")
	if m := r.maxSeen.Load(); m != 1 {
		t.Fatalf("max concurrent workers = %d, want 1", m)
	}
}

func TestTakeoverWhenLeaderConnectionKilled(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	key := uniqueKey(t)
	r := &race{}
	a := start(t, db, key, "a", r, nil)
	b := start(t, db, key, "b", r, nil)
	lead, standby := firstLeader(t, a, b)

	var pid int
	k := uint64(postgres.LockKey(key))
	err := db.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = $1 AND objid = $2 AND objsubid = 1`, int64(k>>32), int64(k&0xffffffff)).Scan(&pid)
	if err != nil {
		t.Fatalf("find lock holder: %v", err)
	}
	if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatalf("terminate: %v", err)
	}
	// The old leader notices on its next ping and steps down; the standby
	// takes over. (The old leader may win again, which is fine: what matters
	// is that somebody works and never two at once.)
	select {
	case <-lead.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("leader did not step down after its connection was killed")
	}
	select {
	case <-standby.started:
	case <-lead.started:
	case <-time.After(10 * time.Second):
		t.Fatal("nobody took over after the leader's connection was killed")
	}
	// Right after the kill both may briefly work (the old leader learns of
	// its loss on its next ping: leadership is advisory, writers fence).
	// Once it has stepped down, exactly one works.
	time.Sleep(3 * retry)
	if n := r.active.Load(); n != 1 {
		t.Fatalf("active workers after takeover = %d, want 1", n)
	}
}

// TestTakeoverWhenLeaderFrozen: a leader whose process freezes (its work
// blocks and it stops pinging) closes no socket, so only the server can end
// its session: idle_session_timeout on the lock session does, and a standby
// takes over within about IdleSessionTimeout instead of when TCP keepalives
// give up (hours with common server settings).
func TestTakeoverWhenLeaderFrozen(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	key := uniqueKey(t)
	r := &race{}
	a := start(t, db, key, "a", r, nil)
	b := start(t, db, key, "b", r, nil)
	lead, standby := firstLeader(t, a, b)
	lead.paused.Store(true)
	frozenAt := time.Now()

	select {
	case <-standby.started:
		t.Logf("standby took over %s after the leader froze (idle_session_timeout %s)",
			time.Since(frozenAt).Round(time.Millisecond), leader.IdleSessionTimeout(retry))
	case <-lead.stopped:
		t.Fatal("the frozen leader's work returned although it never pinged")
	case <-time.After(leader.IdleSessionTimeout(retry) + 15*time.Second):
		t.Fatal("standby did not take over from a frozen leader")
	}
	// The frozen leader thaws: its next ping fails and it steps down.
	lead.paused.Store(false)
	select {
	case <-lead.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the thawed leader did not notice it lost its session")
	}
	eventually(t, "exactly one worker after the thawed leader stepped down", func() bool { return r.active.Load() == 1 })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWorkErrorReleasesLeadership(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	key := uniqueKey(t)
	r := &race{}
	var mu sync.Mutex
	calls := 0
	fail := func() error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return errors.New("boom")
	}
	a := start(t, db, key, "a", r, fail)
	b := start(t, db, key, "b", r, fail)
	lead, _ := firstLeader(t, a, b)
	select {
	case <-lead.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("failing work did not return")
	}
	// Somebody competes and works again after the error.
	select {
	case <-a.started:
	case <-b.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no new leader after a work error")
	}
	if m := r.maxSeen.Load(); m != 1 {
		t.Fatalf("max concurrent workers = %d, want 1", m)
	}
}

func TestInvalidConfig(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	for _, cfg := range []leader.Config{{}, {Key: "k", RetryInterval: -1}} {
		err := leader.Run(context.Background(), db, cfg, func(context.Context) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "invalid config") {
			t.Errorf("Run(%+v) = %v, want an invalid config error", cfg, err)
		}
	}
}

func TestLockNotLeakedToPool(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	key := uniqueKey(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	working := make(chan struct{})
	go func() {
		done <- leader.Run(ctx, db, leader.Config{Key: key, RetryInterval: retry, Logger: testLogger(t)}, func(wctx context.Context) error {
			close(working)
			<-wctx.Done()
			return nil
		})
	}()
	<-working
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var n int
	k := uint64(postgres.LockKey(key))
	if err := db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
		AND classid = $1 AND objid = $2 AND objsubid = 1`, int64(k>>32), int64(k&0xffffffff)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("lock still held by %d sessions after Run returned", n)
	}
}
