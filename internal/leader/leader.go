// Package leader elects one active worker per job across processes with a
// PostgreSQL session advisory lock (guarantee 7 in docs/guarantees.md: one active worker per
// job, another takes over within seconds when it dies).
//
// # One lock session per process
//
// Every Run on the same *sqlx.DB with the same RetryInterval joins one
// group, which holds all of its jobs' locks on one dedicated connection (the
// lock session). Every RetryInterval the group sends that session one
// statement, whatever the number of jobs:
//
//	SELECT k FROM unnest($1::text::bigint[]) AS k WHERE pg_try_advisory_lock(k)
//
// with the keys of the jobs that want leadership and do not have it (none
// when every job leads). It tries those locks and pings the session at
// once, so a process's idle load and its connections stay flat in the
// number of jobs it runs: one connection, one statement per interval. A job
// that starts wanting leadership (a Run starting, a leadership ending) has
// the group try at once rather than at the next interval. Jobs of one group
// that share a key exclude each other in the process, as jobs in different
// processes do. The group, its goroutine and its session live while it has
// members: the first Run starts it, and the last Run to return stops it
// and waits for it first.
//
// The locks are session locks, not transaction locks: holding them keeps no
// transaction open, takes no transaction id and so never holds back
// pg_snapshot_xmin for the readers of the global feed (the xid trap, docs/forwarding.md).
// PostgreSQL releases them when the session ends, so a killed process loses
// leadership as soon as the server notices its socket closed.
//
// A process that freezes, or whose host dies or is cut off, closes no socket.
// So that the server still ends its session (and the locks) in bounded time,
// the group sets on its lock session, right after opening it,
// idle_session_timeout to max(3*RetryInterval, 5 s) (PostgreSQL 14 and
// later; older servers log a warning and rely on keepalives alone) and
// server-side TCP keepalives of 2 s idle, 1 s interval, 3 probes (about 5 s
// to detect a dead peer; they do not apply to Unix-socket connections). A
// healthy group sends its statement every RetryInterval, so its session
// never idles that long; a frozen one does, and the server terminates its
// session about idle_session_timeout after its last statement. With the
// default RetryInterval a standby therefore takes over within about 6 s of
// a freeze (5 s + one retry).
//
// When a statement on the lock session fails (the session was terminated,
// the connection broke), the session and every lock on it may be gone: the
// group ends the leadership of each of its jobs (their work's context is
// cancelled), discards the session and opens a new one at the next
// interval, where its jobs compete again.
//
// Leadership is advisory: between the moment a leader's session dies and the
// moment its work notices (at most one interval plus the statement's
// timeout, or, for a frozen process, whenever it thaws), two workers may run.
// Jobs that write must therefore fence their writes too (the projector does,
// with a compare-and-set on its checkpoint).
package leader

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore/postgres"
)

// RetryIntervalDefault is the default Config.RetryInterval.
const RetryIntervalDefault = time.Second

// Config configures Run. The zero value is not valid: Key is required.
type Config struct {
	// Key names the job, e.g. "esox:projector:<schema>:<name>". It is hashed
	// into the int64 advisory-lock key with postgres.LockKey, so every
	// process running the same job must use the same Key. Required.
	Key string
	// RetryInterval is how often the job's group tries the locks its
	// standbys want and pings its lock session. Runs with the same pool and
	// the same RetryInterval share a group. Defaults to
	// RetryIntervalDefault.
	RetryInterval time.Duration
	// Budget, when not nil, caps how many jobs sharing it this process
	// (this group) leads at once: a job whose budget is spent stands by
	// without trying its lock until another job of the budget stops
	// leading. It spreads the partitions of a projection over processes.
	Budget *Budget
	// Logger receives state changes and errors. Defaults to slog.Default().
	Logger *slog.Logger

	// pausePings, when set and true, makes the job's group skip its
	// statements (tests simulate a frozen process with it).
	pausePings *atomic.Bool
}

// Budget caps how many jobs sharing it one process leads at once (see
// Config.Budget). Safe for concurrent use by the jobs that share it.
type Budget struct{ max int }

// NewBudget returns a budget of max jobs; max must be positive.
func NewBudget(max int) *Budget { return &Budget{max: max} }

// IdleSessionTimeout returns the idle_session_timeout Run sets on the lock
// session for retry (a RetryInterval; 0 means RetryIntervalDefault):
// max(3*retry, 5 s). The server ends a group's session, and so releases its
// locks, this long after the group's last statement.
func IdleSessionTimeout(retry time.Duration) time.Duration {
	if retry == 0 {
		retry = RetryIntervalDefault
	}
	return max(3*retry, 5*time.Second)
}

func (c Config) withDefaults() Config {
	if c.RetryInterval == 0 {
		c.RetryInterval = RetryIntervalDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	if c.Key == "" {
		return errors.New("leader: invalid config: Key must not be empty")
	}
	if c.RetryInterval < 0 {
		return fmt.Errorf("leader: invalid config: RetryInterval must not be negative, got %s", c.RetryInterval)
	}
	if c.Budget != nil && c.Budget.max < 1 {
		return fmt.Errorf("leader: invalid config: Budget must allow at least one job, got %d", c.Budget.max)
	}
	return nil
}

// Run competes for leadership of cfg.Key and, whenever it wins, runs work. It
// blocks until ctx is done and returns nil then; it returns an error only for
// an invalid cfg.
//
// Run joins the group of db and cfg.RetryInterval (see the package doc): the
// group's one lock session tries the key for it right away and then every
// cfg.RetryInterval while another session holds it. Once held, Run calls
// work(leaderCtx). leaderCtx is cancelled when ctx is done or when a
// statement on the lock session fails (the lock may be lost); work must
// then return promptly, and Run goes back to standby. When work returns a
// non-nil error, Run logs it, releases the lock, waits cfg.RetryInterval
// and competes again, so another process may take over. When work returns
// nil before leaderCtx is done, Run releases the lock and competes again at
// once.
//
// The group's lock session is never returned to db's pool: the group
// discards it when its last member leaves or a statement on it fails, so no
// pooled session can keep a stale lock. db must allow one open connection
// for the group beside what the work needs. Cleanup runs with
// context.WithoutCancel(ctx) and a timeout.
//
// Run is safe to call concurrently, also with the same key: calls in one
// process exclude each other like calls in different processes.
func Run(ctx context.Context, db *sqlx.DB, cfg Config, work func(ctx context.Context) error) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	g, m := join(ctx, db, cfg)
	defer g.leave(m)
	for {
		g.want(m)
		var leaderCtx context.Context
		select {
		case <-ctx.Done():
			return nil
		case leaderCtx = <-m.acquired:
		}
		m.log.Info("leadership acquired")
		err := work(leaderCtx)
		g.release(ctx, m)
		m.log.Info("leadership released")
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			m.log.Error("leader work failed; released leadership", "error", err)
			if !sleep(ctx, cfg.RetryInterval) {
				return nil
			}
		}
	}
}

// tries counts, per lock key, the tries this process's groups made of it
// (*atomic.Int64 by int64 key); see Tries.
var tries sync.Map

// Tries returns how many times this process has tried the advisory lock of
// key (a Config.Key) since it started, won or not. A group tries a key
// only for a Run that wants leadership and does not have it, and never
// while it holds the key, so while another process (or another pool) leads
// the job, Tries counts the attempts of this process's standbys: each is a
// pg_try_advisory_lock the server answered.
//
// It is for tests and diagnostics: a test that checks that a standby stays
// out waits until Tries has grown, the sign that the standby really tried,
// instead of sleeping and hoping it did.
func Tries(key string) int64 {
	if n, ok := tries.Load(postgres.LockKey(key)); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// countTries adds one try of each of keys to Tries.
func countTries(keys []int64) {
	for _, k := range keys {
		n, ok := tries.Load(k)
		if !ok {
			n, _ = tries.LoadOrStore(k, new(atomic.Int64))
		}
		n.(*atomic.Int64).Add(1)
	}
}

// groupKey identifies a group: the pool and the retry interval of its
// members.
type groupKey struct {
	db    *sqlx.DB
	retry time.Duration
}

// groups holds the live groups of the process.
var groups = struct {
	mu sync.Mutex
	m  map[groupKey]*group
}{m: map[groupKey]*group{}}

// group holds the locks of its members' jobs on one lock session.
type group struct {
	key    groupKey
	log    *slog.Logger
	kick   chan struct{} // buffer 1: try the wanted locks now
	cancel context.CancelFunc
	done   chan struct{} // closed when loop has returned

	connMu sync.Mutex // held while using conn, and to replace it
	conn   *sql.Conn  // the lock session; nil while none is open

	mu         sync.Mutex
	members    []*member         // in join order
	held       map[int64]*member // keys the session holds, by the member leading
	budgetHeld map[*Budget]int   // leaderships per budget

	statements atomic.Int64 // statements sent on the lock session (tests)
}

// member is one Run in a group.
type member struct {
	cfg      Config
	lockKey  int64
	ctx      context.Context // Run's
	log      *slog.Logger
	acquired chan context.Context // buffer 1: the leaderCtx of a leadership won

	// Guarded by the group's mu.
	wanting bool
	cancel  context.CancelFunc // ends the current leadership's leaderCtx
}

// join adds a member for cfg to the group of db and cfg.RetryInterval,
// starting the group when it has none.
func join(ctx context.Context, db *sqlx.DB, cfg Config) (*group, *member) {
	m := &member{
		cfg:      cfg,
		lockKey:  postgres.LockKey(cfg.Key),
		ctx:      ctx,
		log:      cfg.Logger.With("component", "leader", "leader_key", cfg.Key),
		acquired: make(chan context.Context, 1),
	}
	k := groupKey{db: db, retry: cfg.RetryInterval}
	groups.mu.Lock()
	defer groups.mu.Unlock()
	g := groups.m[k]
	if g == nil {
		gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g = &group{
			key:        k,
			log:        cfg.Logger.With("component", "leader"),
			kick:       make(chan struct{}, 1),
			cancel:     cancel,
			done:       make(chan struct{}),
			held:       map[int64]*member{},
			budgetHeld: map[*Budget]int{},
		}
		groups.m[k] = g
		go g.loop(gctx)
	}
	g.mu.Lock()
	g.members = append(g.members, m)
	g.mu.Unlock()
	return g, m
}

// leave removes m from the group, releasing its lock if it still holds it;
// the last member stops the group and waits for its goroutine.
func (g *group) leave(m *member) {
	groups.mu.Lock()
	g.mu.Lock()
	g.members = slices.DeleteFunc(g.members, func(o *member) bool { return o == m })
	mine := g.dropLocked(m)
	last := len(g.members) == 0
	if last {
		delete(groups.m, g.key)
	}
	g.mu.Unlock()
	groups.mu.Unlock()
	if last {
		// Discarding the session releases whatever it holds.
		g.cancel()
		<-g.done
		return
	}
	if mine {
		g.unlock(m.ctx, m.lockKey)
	}
	g.poke()
}

// want marks m as wanting leadership and has the group try at once.
func (g *group) want(m *member) {
	g.mu.Lock()
	m.wanting = true
	g.mu.Unlock()
	g.poke()
}

func (g *group) poke() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// release ends m's leadership: its leaderCtx is cancelled and its lock
// unlocked (when the session still holds it for m).
func (g *group) release(ctx context.Context, m *member) {
	g.mu.Lock()
	mine := g.dropLocked(m)
	g.mu.Unlock()
	if mine {
		g.unlock(ctx, m.lockKey)
		g.poke() // a budget may have room again
	}
}

// dropLocked forgets m's leadership and reports whether the session held
// m's key for m. g.mu must be held.
func (g *group) dropLocked(m *member) bool {
	m.wanting = false
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	if g.held[m.lockKey] != m {
		return false
	}
	delete(g.held, m.lockKey)
	if b := m.cfg.Budget; b != nil {
		g.budgetHeld[b]--
	}
	return true
}

// unlock releases key on the lock session, if one is open (a new session
// holds nothing). A failure discards the session, which releases every
// lock on it.
func (g *group) unlock(ctx context.Context, key int64) {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	if g.conn == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var ok bool
	g.statements.Add(1)
	if err := g.conn.QueryRowContext(cctx, `SELECT pg_advisory_unlock($1)`, key).Scan(&ok); err != nil {
		g.lostLocked(fmt.Errorf("unlock: %w", err))
	}
}

// loop runs the group's ticks: one at once when a member starts wanting
// leadership, and one every retry interval.
func (g *group) loop(ctx context.Context) {
	defer close(g.done)
	defer func() {
		g.connMu.Lock()
		g.discardLocked()
		g.connMu.Unlock()
	}()
	t := time.NewTimer(g.key.retry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.kick:
		case <-t.C:
		}
		g.tick(ctx)
		t.Reset(g.key.retry)
	}
}

// tick sends the lock session its one statement: it tries the keys wanted
// and not held (which also pings the session), and hands each lock won to
// the member that wants it. Locks won beyond a budget are released with a
// second statement.
func (g *group) tick(ctx context.Context) {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	g.mu.Lock()
	if g.pausedLocked() {
		g.mu.Unlock()
		return
	}
	keys := g.wantedLocked()
	holding := len(g.held) > 0
	g.mu.Unlock()
	if len(keys) == 0 && !holding {
		// Nothing to try and nothing held: no session is needed.
		g.discardLocked()
		return
	}
	if g.conn == nil {
		conn, err := g.open(ctx)
		if err != nil {
			if ctx.Err() == nil {
				g.log.Warn("leader election attempt failed", "error", err)
			}
			return
		}
		g.conn = conn
	}
	won, err := g.tryLocks(ctx, keys)
	if err != nil {
		if ctx.Err() == nil {
			g.lostLocked(err)
		}
		return
	}
	var orphans []int64
	g.mu.Lock()
	for _, k := range won {
		m := g.claimantLocked(k)
		if m == nil {
			orphans = append(orphans, k)
			continue
		}
		m.wanting = false
		leaderCtx, cancel := context.WithCancel(m.ctx)
		m.cancel = cancel
		g.held[k] = m
		if b := m.cfg.Budget; b != nil {
			g.budgetHeld[b]++
		}
		m.acquired <- leaderCtx // buffer 1; m waits for it and holds no other
	}
	g.mu.Unlock()
	if len(orphans) > 0 {
		// Won beyond a budget, or its member stopped wanting it meanwhile.
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		g.statements.Add(1)
		if _, err := g.conn.ExecContext(cctx, `SELECT pg_advisory_unlock(k) FROM unnest($1::text::bigint[]) AS k`, bigintArray(orphans)); err != nil {
			g.lostLocked(fmt.Errorf("unlock: %w", err))
		}
	}
}

// pausedLocked reports whether a member's test hook freezes the group.
func (g *group) pausedLocked() bool {
	for _, m := range g.members {
		if p := m.cfg.pausePings; p != nil && p.Load() {
			return true
		}
	}
	return false
}

// wantedLocked returns the keys to try: those of members that want
// leadership, not held by the session, once each, in join order, leaving
// out the members of a budget that has no room. (A budget with room has all
// its wanted keys tried, since any of them may be the free one; tick
// releases at once what it wins beyond the room.) g.mu must be held.
func (g *group) wantedLocked() []int64 {
	var keys []int64
	for _, m := range g.members {
		if !m.wanting || g.held[m.lockKey] != nil || slices.Contains(keys, m.lockKey) {
			continue
		}
		if b := m.cfg.Budget; b != nil && g.budgetHeld[b] >= b.max {
			continue
		}
		keys = append(keys, m.lockKey)
	}
	return keys
}

// claimantLocked returns the first member that wants key and whose budget
// has room, or nil. g.mu must be held.
func (g *group) claimantLocked(key int64) *member {
	for _, m := range g.members {
		if m.wanting && m.lockKey == key && (m.cfg.Budget == nil || g.budgetHeld[m.cfg.Budget] < m.cfg.Budget.max) {
			return m
		}
	}
	return nil
}

// tryLocks is the tick's statement: it tries keys on the session and
// returns those it won. With no keys it only pings the session.
func (g *group) tryLocks(ctx context.Context, keys []int64) ([]int64, error) {
	qctx, cancel := context.WithTimeout(ctx, max(2*g.key.retry, 5*time.Second))
	defer cancel()
	g.statements.Add(1)
	rows, err := g.conn.QueryContext(qctx, `SELECT k FROM unnest($1::text::bigint[]) AS k WHERE pg_try_advisory_lock(k)`, bigintArray(keys))
	if err != nil {
		return nil, fmt.Errorf("try locks: %w", err)
	}
	defer rows.Close()
	var won []int64
	for rows.Next() {
		var k int64
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("try locks: %w", err)
		}
		won = append(won, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("try locks: %w", err)
	}
	countTries(keys)
	return won, nil
}

// bigintArray returns keys as a PostgreSQL array literal, e.g. {1,-2}: a
// text parameter every driver binds alike.
func bigintArray(keys []int64) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(k, 10))
	}
	b.WriteByte('}')
	return b.String()
}

// lostLocked handles a failed statement on the lock session: every
// leadership on it ends and the session is discarded. g.connMu must be
// held.
func (g *group) lostLocked(err error) {
	g.mu.Lock()
	n := len(g.held)
	for k, m := range g.held {
		if m.cancel != nil {
			m.cancel()
			m.cancel = nil
		}
		delete(g.held, k)
	}
	clear(g.budgetHeld)
	g.mu.Unlock()
	g.log.Warn("leader lock session failed; its leaderships end and its jobs compete again", "leaderships", n, "error", err)
	g.discardLocked()
}

// discardLocked closes the lock session, if open, without returning it to
// the pool, which also ends every lock it holds. g.connMu must be held.
func (g *group) discardLocked() {
	if g.conn != nil {
		discard(g.conn)
		g.conn = nil
	}
}

// open opens and arms a lock session.
func (g *group) open(ctx context.Context) (*sql.Conn, error) {
	conn, err := g.key.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("leader: get connection: %w", err)
	}
	if err := g.arm(ctx, conn); err != nil {
		discard(conn)
		return nil, err
	}
	return conn, nil
}

// arm makes the server end the lock session, and so release its locks, when
// the group stops sending statements (frozen process) or its host stops
// answering (dead host, partition): server-side TCP keepalives and, on
// PostgreSQL 14 and later, idle_session_timeout. Only a failure of the
// keepalive settings (which every supported server has) is returned; an
// older server's refusal of idle_session_timeout is logged.
func (g *group) arm(ctx context.Context, conn *sql.Conn) error {
	g.statements.Add(1)
	if _, err := conn.ExecContext(ctx, `SELECT set_config('tcp_keepalives_idle', '2', false),
		set_config('tcp_keepalives_interval', '1', false), set_config('tcp_keepalives_count', '3', false)`); err != nil {
		return fmt.Errorf("leader: set keepalives on the lock session: %w", err)
	}
	ms := strconv.FormatInt(IdleSessionTimeout(g.key.retry).Milliseconds(), 10) + "ms"
	g.statements.Add(1)
	if _, err := conn.ExecContext(ctx, `SELECT set_config('idle_session_timeout', $1, false)`, ms); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("leader: set idle_session_timeout: %w", err)
		}
		g.log.Warn("could not set idle_session_timeout on the lock session (PostgreSQL 14+ needed); "+
			"a frozen process keeps its locks until TCP keepalives end its session", "error", err)
	}
	return nil
}

// discard closes conn's session instead of returning it to the pool, which
// also ends any lock the session holds.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
