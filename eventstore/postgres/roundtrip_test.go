package postgres_test

import (
	"context"
	"database/sql"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

// countingDialer counts the client's writes to the server: each is one
// request the client then waits on, a round trip.
type countingDialer struct{ writes atomic.Int64 }

type countingConn struct {
	net.Conn
	d *countingDialer
}

func (c countingConn) Write(p []byte) (int, error) {
	c.d.writes.Add(1)
	return c.Conn.Write(p)
}

func (d *countingDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialTimeout(network, address, 0)
}

func (d *countingDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return nil, err
	}
	return countingConn{c, d}, nil
}

// TestRoundTrips proves the performance design: once its statement is
// prepared on the connection, an Append of 1 or 10 events (and 100, through
// the array form) is one round trip; ReadAll and a short ReadStream are one
// each; with hooks, Append is BEGIN, insert, COMMIT.
func TestRoundTrips(t *testing.T) {
	t.Parallel()
	connector, err := pq.NewConnector(pgtest.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	d := &countingDialer{}
	connector.Dialer(d)
	db := sqlx.NewDb(sql.OpenDB(connector), "postgres")
	db.SetMaxOpenConns(1) // one connection: statements prepared once
	t.Cleanup(func() { db.Close() })
	hooked := 0
	hook := func(context.Context, postgres.Tx, []eventstore.Record) error { hooked++; return nil }

	b := setupOn(t, db, postgres.Config{})
	withHooks, err := postgres.New(db, testRegistry(), postgres.Config{Schema: b.schema, AppendHooks: []postgres.AppendHook{hook}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = withHooks.Close() })
	ctx := testCtx(t)

	count := func(what string, want int64, op func() error) {
		t.Helper()
		if err := op(); err != nil { // prepares
			t.Fatalf("%s: %v", what, err)
		}
		before := d.writes.Load()
		if err := op(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := d.writes.Load() - before; got != want {
			t.Errorf("%s: %d round trips, want %d", what, got, want)
		}
	}
	for _, n := range []int{1, 10, 100} {
		count("Append", 1, func() error {
			_, err := b.store.Append(ctx, "order-rt", eventstore.Any, items(n))
			return err
		})
	}
	count("ReadAll", 1, func() error {
		_, err := b.store.ReadAll(ctx, eventstore.Position{}, 10)
		return err
	})
	count("ReadStream", 1, func() error {
		for _, err := range b.store.ReadStream(ctx, "order-rt", 1) {
			if err != nil {
				return err
			}
		}
		return nil
	})
	count("StreamInfo", 1, func() error {
		_, err := b.store.StreamInfo(ctx, "order-rt")
		return err
	})
	count("Append with hooks", 3, func() error {
		_, err := withHooks.Append(ctx, "order-rt", eventstore.Any, items(1))
		return err
	})
	if hooked != 2 {
		t.Fatalf("hook ran %d times", hooked)
	}
}
