package leader_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
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
	"github.com/esox-go/esox/internal/testwait"
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
	return startWith(t, db, leader.Config{Key: key, RetryInterval: retry}, name, r, workErr)
}

// startWith is start with a Config (Logger set by it).
func startWith(t *testing.T, db *sqlx.DB, cfg leader.Config, name string, r *race, workErr func() error) *contender {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &contender{name: name, cancel: cancel, done: make(chan error, 1), started: make(chan struct{}, 16), stopped: make(chan struct{}, 16),
		paused: new(atomic.Bool)}
	cfg.Logger = testLogger(t)
	cfg = leader.WithPausedPings(cfg, c.paused)
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

// standbyTries waits until this process has tried key's lock n more times
// (leader.Tries), the sign that a standby really competed, or until broken
// reports what the caller checks next already went wrong (so that it fails
// at once with its own message).
func standbyTries(t *testing.T, key string, n int64, broken func() bool) {
	t.Helper()
	from := leader.Tries(key)
	testwait.Until(t, fmt.Sprintf("%d more tries of the lock by the standby", n), func() bool {
		return leader.Tries(key) >= from+n || broken()
	})
}

func uniqueKey(t *testing.T) string {
	return fmt.Sprintf("esox:test:%s:%d", t.Name(), time.Now().UnixNano())
}

func TestOneLeaderAndTakeoverOnCancel(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	key := uniqueKey(t)
	r := &race{}
	// Two processes: each its own pool, and so its own group that tries.
	a := start(t, db, key, "a", r, nil)
	b := start(t, pgtest.Open(t), key, "b", r, nil)
	lead, standby := firstLeader(t, a, b)

	// The standby tries the lock twice more and must stay out.
	standbyTries(t, key, 2, func() bool { return len(standby.started) > 0 })
	select {
	case <-standby.started:
		t.Fatal("standby started working while the leader holds the lock")
	default:
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

// TestTriesCountsTheStandbysAttempts: leader.Tries counts every try of a
// key, the one a leader won and each one its standby (another pool) lost.
func TestTriesCountsTheStandbysAttempts(t *testing.T) {
	t.Parallel()
	key := uniqueKey(t)
	if n := leader.Tries(key); n != 0 {
		t.Fatalf("Tries of a key never tried = %d, want 0", n)
	}
	r := &race{}
	a := start(t, pgtest.Open(t), key, "a", r, nil)
	waitStarted(t, a, "alone")
	if n := leader.Tries(key); n < 1 {
		t.Fatalf("Tries after a leader won the key = %d, want at least 1", n)
	}
	b := start(t, pgtest.Open(t), key, "b", r, nil)
	standbyTries(t, key, 3, func() bool { return len(b.started) > 0 })
	if len(b.started) > 0 {
		t.Fatal("the standby leads while the leader holds the lock")
	}
}

func TestTakeoverWhenLeaderConnectionKilled(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	key := uniqueKey(t)
	r := &race{}
	// Two processes: each its own pool, and so its own group that tries.
	a := start(t, db, key, "a", r, nil)
	b := start(t, pgtest.Open(t), key, "b", r, nil)
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
	// Once it has stepped down, exactly one works, also after the other
	// has tried the lock twice more.
	standbyTries(t, key, 2, func() bool { return r.active.Load() != 1 })
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
	// Two processes: each its own pool, and so its own lock session.
	a := start(t, db, key, "a", r, nil)
	b := start(t, pgtest.Open(t), key, "b", r, nil)
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
	testwait.Until(t, "exactly one worker after the thawed leader stepped down", func() bool { return r.active.Load() == 1 })
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

// lockHolders returns, for each key held in pg_locks, the backend pid
// holding it.
func lockHolders(t *testing.T, db *sqlx.DB, keys []string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, key := range keys {
		k := uint64(postgres.LockKey(key))
		var pid int
		err := db.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND classid = $1 AND objid = $2 AND objsubid = 1`, int64(k>>32), int64(k&0xffffffff)).Scan(&pid)
		if err == nil {
			out[key] = pid
		}
	}
	return out
}

// tryLocksSQL is the one statement a group sends per interval.
const tryLocksSQL = `SELECT k FROM unnest($1::text::bigint[]) AS k WHERE pg_try_advisory_lock(k)`

// TestOneSessionForAllJobs: 50 jobs of one process (one pool), 25 of whose
// keys another process leads, hold their 25 locks on one session, and each
// interval the process sends the server one statement (trying the 25
// wanted locks and pinging the session), not one per job. When the other
// process's session is killed, this process takes its 25 jobs over on the
// same session.
func TestOneSessionForAllJobs(t *testing.T) {
	t.Parallel()
	db, stmts := pgtest.OpenCounting(t)
	other := pgtest.Open(t)
	base := uniqueKey(t)
	var keys []string
	for i := range 50 {
		keys = append(keys, fmt.Sprintf("%s:%d", base, i))
	}
	r := &race{}
	// The other process leads the odd keys first.
	var theirs []*contender
	for i := 1; i < 50; i += 2 {
		c := start(t, other, keys[i], "other-"+keys[i], r, nil)
		waitStarted(t, c, "the other process")
		theirs = append(theirs, c)
	}
	var ours []*contender
	for i := range 50 {
		ours = append(ours, start(t, db, keys[i], "ours-"+keys[i], r, nil))
	}
	for i := 0; i < 50; i += 2 {
		waitStarted(t, ours[i], "this process")
	}
	holders := lockHolders(t, other, keys)
	pids := map[int]bool{}
	for i := 0; i < 50; i += 2 {
		pids[holders[keys[i]]] = true
	}
	if len(pids) != 1 {
		t.Fatalf("this process's 25 locks are held by %d sessions, want 1", len(pids))
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mark := stmts.Len()
	got, err := stmts.Wait(ctx, mark, 5, func(q string) bool { return q == tryLocksSQL })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("5 intervals with 25 jobs leading and 25 standing by sent %d statements, want 5:%s", len(got), pgtest.Summary(got))
	}

	// The other process's session dies: its jobs move here, onto the same
	// session, and no job of this process that led stops.
	var pid int
	for i := 1; i < 50; i += 2 {
		pid = holders[keys[i]]
	}
	if _, err := other.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 50; i += 2 {
		select {
		case <-ours[i].started:
		case <-theirs[i/2].started:
		case <-time.After(10 * time.Second):
			t.Fatalf("nobody took %s over", keys[i])
		}
	}
	for i := 0; i < 50; i += 2 {
		select {
		case <-ours[i].stopped:
			t.Fatalf("%s stopped leading although its session lived", keys[i])
		default:
		}
	}
}

// TestBudgetSpreadsJobsOverProcesses: with a budget of 4, a process leads
// 4 of 8 jobs and stands by for the others, which a second process leads;
// when the first process's session dies, its jobs are taken over while the
// second's keep their leader.
func TestBudgetSpreadsJobsOverProcesses(t *testing.T) {
	t.Parallel()
	dbA, stmtsA := pgtest.OpenCounting(t)
	dbB := pgtest.Open(t)
	base := uniqueKey(t)
	r := &race{}
	budget := leader.NewBudget(4)
	var a, b []*contender
	for i := range 8 {
		a = append(a, startWith(t, dbA, leader.Config{Key: fmt.Sprintf("%s:%d", base, i), RetryInterval: retry, Budget: budget}, fmt.Sprint("a", i), r, nil))
	}
	// A leads 4 jobs; several intervals later, still those 4.
	var ledByA []int
	for len(ledByA) < 4 {
		cases := make([]reflect.SelectCase, 0, 9)
		for _, c := range a {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c.started)})
		}
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(time.After(10 * time.Second))})
		i, _, _ := reflect.Select(cases)
		if i == 8 {
			t.Fatalf("process A leads jobs %v after 10 s, want 4 of them", ledByA)
		}
		ledByA = append(ledByA, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := stmtsA.Wait(ctx, stmtsA.Len(), 3, func(q string) bool { return q == tryLocksSQL }); err != nil {
		t.Fatal(err)
	}
	for i, c := range a {
		select {
		case <-c.started:
			t.Fatalf("a%d leads too, beside %v: more than the budget of 4", i, ledByA)
		default:
		}
	}
	for i := range 8 {
		b = append(b, start(t, dbB, fmt.Sprintf("%s:%d", base, i), fmt.Sprint("b", i), r, nil))
	}
	var ledByB []int
	for i := range 8 {
		if slices.Contains(ledByA, i) {
			continue
		}
		waitStarted(t, b[i], "process B")
		ledByB = append(ledByB, i)
	}

	// A's session dies: its 4 jobs move (to B, or back to A), B's stay.
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s:%d", base, i)
	}
	pid := lockHolders(t, dbB, keys)[keys[ledByA[0]]]
	if _, err := dbB.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	for _, i := range ledByA {
		select {
		case <-a[i].stopped:
		case <-time.After(10 * time.Second):
			t.Fatalf("a%d did not step down after its session was killed", i)
		}
	}
	for _, i := range ledByA {
		select {
		case <-a[i].started:
		case <-b[i].started:
		case <-time.After(10 * time.Second):
			t.Fatalf("nobody took job %d over", i)
		}
	}
	for _, i := range ledByB {
		select {
		case <-b[i].stopped:
			t.Fatalf("b%d stopped leading although only A's session died", i)
		default:
		}
	}
}
