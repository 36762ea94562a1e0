// Package leader elects one active worker per job across processes with a
// PostgreSQL session advisory lock (guarantee 7 in docs/guarantees.md: one active worker per
// job, another takes over within seconds when it dies).
//
// The lock is taken with pg_try_advisory_lock on a connection dedicated to the
// leader. It is a session lock, not a transaction lock: holding it keeps no
// transaction open, takes no transaction id and so never holds back
// pg_snapshot_xmin for the readers of the global feed (the xid trap, docs/forwarding.md).
// PostgreSQL releases it when the session ends, so a killed process loses
// leadership as soon as the server notices its socket closed.
//
// A process that freezes, or whose host dies or is cut off, closes no socket.
// So that the server still ends its session (and the lock) in bounded time,
// the lock session sets, right after taking the lock, idle_session_timeout to
// max(3*RetryInterval, 5 s) (PostgreSQL 14 and later; older servers log a
// warning and rely on keepalives alone) and server-side TCP keepalives of
// 2 s idle, 1 s interval, 3 probes (about 5 s to detect a dead peer; they do
// not apply to Unix-socket connections). A healthy leader pings its session
// every RetryInterval, so it never idles that long; a frozen one does, and
// the server terminates its session about idle_session_timeout after its
// last ping. With the default RetryInterval a standby therefore takes over
// within about 6 s of a freeze (5 s + one retry).
//
// Leadership is advisory: between the moment a leader's session dies and the
// moment its work notices (at most one ping interval plus the ping timeout,
// or, for a frozen process, whenever it thaws), two workers may run. Jobs that
// write must therefore fence their writes too (the projector does, with a
// compare-and-set on its checkpoint).
package leader

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/jmoiron/sqlx"
)

// RetryIntervalDefault is the default Config.RetryInterval.
const RetryIntervalDefault = time.Second

// Config configures Run. The zero value is not valid: Key is required.
type Config struct {
	// Key names the job, e.g. "esox:projector:<schema>:<name>". It is hashed
	// into the int64 advisory-lock key with postgres.LockKey, so every
	// process running the same job must use the same Key. Required.
	Key string
	// RetryInterval is how often a standby retries the lock and how often
	// the leader pings its lock connection. Defaults to RetryIntervalDefault.
	RetryInterval time.Duration
	// Logger receives state changes and errors. Defaults to slog.Default().
	Logger *slog.Logger

	// pausePings, when set and true, makes the leader skip its pings (tests
	// simulate a frozen process with it).
	pausePings *atomic.Bool
}

// IdleSessionTimeout returns the idle_session_timeout Run sets on the lock
// session for retry (a RetryInterval; 0 means RetryIntervalDefault):
// max(3*retry, 5 s). The server ends a leader's session, and so releases its
// lock, this long after the leader's last ping.
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
	return nil
}

// Run competes for leadership of cfg.Key and, whenever it wins, runs work. It
// blocks until ctx is done and returns nil then; it returns an error only for
// an invalid cfg.
//
// Run takes a dedicated connection from db (so db must allow one more open
// connection than the work needs) and tries pg_try_advisory_lock every
// cfg.RetryInterval while another session holds it. Once held, it calls
// work(leaderCtx). leaderCtx is cancelled when ctx is done or when the lock
// connection fails its periodic ping (the lock may be lost); work must then
// return promptly, and Run goes back to standby. When work returns a non-nil
// error, Run logs it, releases the lock, waits cfg.RetryInterval and competes
// again, so another process may take over. When work returns nil before
// leaderCtx is done, Run releases the lock and competes again as well.
//
// The lock connection is never returned to db's pool: on release Run unlocks
// and discards it, so no pooled session can keep a stale lock. Cleanup runs
// with context.WithoutCancel(ctx) and a timeout.
//
// Run is safe to call concurrently, also with the same key: calls in one
// process exclude each other like calls in different processes.
func Run(ctx context.Context, db *sqlx.DB, cfg Config, work func(ctx context.Context) error) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	e := &elector{db: db, cfg: cfg, key: postgres.LockKey(cfg.Key), log: cfg.Logger.With("component", "leader", "leader_key", cfg.Key)}
	for {
		held, err := e.runOnce(ctx, work)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if held {
				e.log.Error("leader work failed; released leadership", "error", err)
			} else {
				e.log.Warn("leader election attempt failed", "error", err)
			}
		}
		if held && err == nil {
			// work returned without an error while ctx is still live:
			// compete again right away.
			continue
		}
		if !sleep(ctx, cfg.RetryInterval) {
			return nil
		}
	}
}

type elector struct {
	db  *sqlx.DB
	cfg Config
	key int64
	log *slog.Logger
}

// runOnce takes a connection, tries the lock, and when held runs work until it
// returns or the connection fails. held reports whether the lock was taken.
func (e *elector) runOnce(ctx context.Context, work func(ctx context.Context) error) (held bool, err error) {
	conn, err := e.db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("leader: get connection: %w", err)
	}
	var ok bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, e.key).Scan(&ok); err != nil {
		discard(conn)
		return false, fmt.Errorf("leader: try lock: %w", err)
	}
	if !ok {
		// Not held by this session: the connection can go back to the pool.
		_ = conn.Close()
		return false, nil
	}
	defer e.release(ctx, conn)
	if err := e.armSession(ctx, conn); err != nil {
		return true, err
	}
	e.log.Info("leadership acquired")

	leaderCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	pingDone := make(chan struct{})
	go func() {
		defer close(pingDone)
		e.pingLoop(leaderCtx, conn, cancel)
	}()
	err = work(leaderCtx)
	cancel()
	<-pingDone
	e.log.Info("leadership released")
	return true, err
}

// armSession makes the server end the lock session, and so release the lock,
// when the leader stops pinging (frozen process) or its host stops answering
// (dead host, partition): server-side TCP keepalives and, on PostgreSQL 14
// and later, idle_session_timeout. Only a failure of the keepalive settings
// (which every supported server has) is returned; an older server's refusal
// of idle_session_timeout is logged.
func (e *elector) armSession(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, `SELECT set_config('tcp_keepalives_idle', '2', false),
		set_config('tcp_keepalives_interval', '1', false), set_config('tcp_keepalives_count', '3', false)`); err != nil {
		return fmt.Errorf("leader: set keepalives on the lock session: %w", err)
	}
	ms := strconv.FormatInt(IdleSessionTimeout(e.cfg.RetryInterval).Milliseconds(), 10) + "ms"
	if _, err := conn.ExecContext(ctx, `SELECT set_config('idle_session_timeout', $1, false)`, ms); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("leader: set idle_session_timeout: %w", err)
		}
		e.log.Warn("could not set idle_session_timeout on the lock session (PostgreSQL 14+ needed); "+
			"a frozen leader keeps the lock until TCP keepalives end its session", "error", err)
	}
	return nil
}

// pingLoop pings the lock connection every RetryInterval and calls lost when a
// ping fails: the session, and with it the lock, may be gone.
func (e *elector) pingLoop(ctx context.Context, conn *sql.Conn, lost context.CancelFunc) {
	t := time.NewTicker(e.cfg.RetryInterval)
	defer t.Stop()
	timeout := max(2*e.cfg.RetryInterval, 5*time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p := e.cfg.pausePings; p != nil && p.Load() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		var one int
		err := conn.QueryRowContext(pctx, `SELECT 1`).Scan(&one)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("leader lock connection failed; stepping down", "error", err)
			lost()
			return
		}
	}
}

// release unlocks (best effort) and discards the lock connection.
func (e *elector) release(ctx context.Context, conn *sql.Conn) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := conn.ExecContext(cctx, `SELECT pg_advisory_unlock($1)`, e.key); err != nil {
		e.log.Debug("leader unlock failed; the session is discarded anyway", "error", err)
	}
	discard(conn)
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
