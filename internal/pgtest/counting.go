package pgtest

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Statements records every statement a pool opened by OpenCounting sends
// to the server, in order: the SQL of each query, exec and execution of a
// prepared statement, and "BEGIN", "COMMIT", "ROLLBACK" and "PING" for
// those. Tests count what a process asks of the database with it: it sees
// the statements themselves, not timing. Safe for concurrent use.
type Statements struct {
	mu      sync.Mutex
	log     []string
	changed chan struct{} // closed and replaced on each statement
}

func (s *Statements) add(q string) {
	s.mu.Lock()
	s.log = append(s.log, q)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Len returns how many statements were recorded so far: a mark for Since.
func (s *Statements) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.log)
}

// Since returns the statements recorded after mark (a Len).
func (s *Statements) Since(mark int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log[mark:]...)
}

// Wait waits until at least n statements recorded after mark satisfy
// match, and returns every statement recorded after mark up to the one
// that made n. It returns ctx's error when ctx ends first.
func (s *Statements) Wait(ctx context.Context, mark, n int, match func(q string) bool) ([]string, error) {
	for {
		s.mu.Lock()
		seen := 0
		for i, q := range s.log[mark:] {
			if match(q) {
				seen++
				if seen == n {
					out := append([]string(nil), s.log[mark:mark+i+1]...)
					s.mu.Unlock()
					return out, nil
				}
			}
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%d of %d matching statements after mark: %w", seen, n, ctx.Err())
		case <-changed:
		}
	}
}

// Summary counts statements by their first line, most frequent first, for
// failure messages.
func Summary(qs []string) string {
	counts := map[string]int{}
	var order []string
	for _, q := range qs {
		k, _, _ := strings.Cut(strings.TrimSpace(q), "\n")
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	var b strings.Builder
	for _, k := range order {
		fmt.Fprintf(&b, "\n  %4d× %s", counts[k], k)
	}
	return b.String()
}

// OpenCounting returns a pool to the test database over lib/pq whose every
// statement is recorded in the returned Statements; the pool is closed at
// cleanup.
func OpenCounting(t testing.TB) (*sqlx.DB, *Statements) {
	t.Helper()
	c, err := pq.NewConnector(DatabaseURL())
	if err != nil {
		t.Fatalf("pgtest: connector: %v", err)
	}
	s := &Statements{changed: make(chan struct{})}
	db := sqlx.NewDb(sql.OpenDB(countingConnector{inner: c, s: s}), "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		t.Fatalf("pgtest: the test database does not answer: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, s
}

type countingConnector struct {
	inner driver.Connector
	s     *Statements
}

func (c countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{inner: cn, s: c.s}, nil
}

func (c countingConnector) Driver() driver.Driver { return c.inner.Driver() }

// countingConn wraps a lib/pq connection and implements the interfaces it
// does, recording each statement.
type countingConn struct {
	inner driver.Conn
	s     *Statements
}

var (
	_ driver.ConnBeginTx        = (*countingConn)(nil)
	_ driver.ConnPrepareContext = (*countingConn)(nil)
	_ driver.ExecerContext      = (*countingConn)(nil)
	_ driver.QueryerContext     = (*countingConn)(nil)
	_ driver.NamedValueChecker  = (*countingConn)(nil)
	_ driver.Pinger             = (*countingConn)(nil)
	_ driver.SessionResetter    = (*countingConn)(nil)
	_ driver.Validator          = (*countingConn)(nil)
)

func (c *countingConn) Prepare(q string) (driver.Stmt, error) {
	st, err := c.inner.Prepare(q)
	if err != nil {
		return nil, err
	}
	return &countingStmt{inner: st, q: q, s: c.s}, nil
}

func (c *countingConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	st, err := c.inner.(driver.ConnPrepareContext).PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	return &countingStmt{inner: st, q: q, s: c.s}, nil
}

func (c *countingConn) Close() error { return c.inner.Close() }

func (c *countingConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.s.add("BEGIN")
	tx, err := c.inner.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return countingTx{inner: tx, s: c.s}, nil
}

func (c *countingConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	res, err := c.inner.(driver.ExecerContext).ExecContext(ctx, q, args)
	if !errors.Is(err, driver.ErrSkip) {
		c.s.add(q)
	}
	return res, err
}

func (c *countingConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	rows, err := c.inner.(driver.QueryerContext).QueryContext(ctx, q, args)
	if !errors.Is(err, driver.ErrSkip) {
		c.s.add(q)
	}
	return rows, err
}

func (c *countingConn) CheckNamedValue(nv *driver.NamedValue) error {
	return c.inner.(driver.NamedValueChecker).CheckNamedValue(nv)
}

func (c *countingConn) Ping(ctx context.Context) error {
	c.s.add("PING")
	return c.inner.(driver.Pinger).Ping(ctx)
}

func (c *countingConn) ResetSession(ctx context.Context) error {
	return c.inner.(driver.SessionResetter).ResetSession(ctx)
}

func (c *countingConn) IsValid() bool { return c.inner.(driver.Validator).IsValid() }

type countingTx struct {
	inner driver.Tx
	s     *Statements
}

func (t countingTx) Commit() error {
	t.s.add("COMMIT")
	return t.inner.Commit()
}

func (t countingTx) Rollback() error {
	t.s.add("ROLLBACK")
	return t.inner.Rollback()
}

type countingStmt struct {
	inner driver.Stmt
	q     string
	s     *Statements
}

var (
	_ driver.StmtExecContext  = (*countingStmt)(nil)
	_ driver.StmtQueryContext = (*countingStmt)(nil)
)

func (st *countingStmt) Close() error  { return st.inner.Close() }
func (st *countingStmt) NumInput() int { return st.inner.NumInput() }

func (st *countingStmt) Exec(args []driver.Value) (driver.Result, error) {
	st.s.add(st.q)
	return st.inner.Exec(args) //lint:ignore SA1019 the driver.Stmt interface requires it
}

func (st *countingStmt) Query(args []driver.Value) (driver.Rows, error) {
	st.s.add(st.q)
	return st.inner.Query(args) //lint:ignore SA1019 the driver.Stmt interface requires it
}

func (st *countingStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	st.s.add(st.q)
	return st.inner.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (st *countingStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	st.s.add(st.q)
	return st.inner.(driver.StmtQueryContext).QueryContext(ctx, args)
}
