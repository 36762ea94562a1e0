package forwarder

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// isHeadPoll reports whether q is postgres.Store.Head's query, the feed
// watcher's poll.
func isHeadPoll(q string) bool {
	return strings.Contains(q, "transaction_id < pg_snapshot_xmin(pg_current_snapshot())") &&
		strings.Contains(q, "ORDER BY transaction_id DESC, position DESC LIMIT 1")
}

// TestIdleLoadIsFlat: a process running 1, 10 or 50 idle consumers
// (projections and forwarders) on one store sends the database one
// statement per poll interval, the store's head poll, whatever their
// number: a window of 20 polls holds nothing else (no feed read, no
// ping, no lock attempt). LeaderRetryInterval is an hour, so the
// leadership's one statement per interval (internal/leader's
// TestOneSessionForAllJobs) and the runner's checkpoint re-read fall
// outside the window; the statements are counted, not timed.
func TestIdleLoadIsFlat(t *testing.T) {
	t.Parallel()
	check := pgtest.Open(t)
	for _, consumers := range []int{1, 10, 50} {
		t.Run(fmt.Sprintf("consumers=%d", consumers), func(t *testing.T) {
			ctx := testCtx(t)
			db, stmts := pgtest.OpenCounting(t)
			db.SetMaxOpenConns(12)
			db.SetMaxIdleConns(12)
			b := setupOn(t, db, pgtest.Schema(t, check))
			if _, err := migrate(ctx, b.store); err != nil {
				t.Fatal(err)
			}
			forwarders := consumers / 2
			projections := consumers - forwarders
			var ps []projector.Projection
			var keys []string
			for i := range projections {
				name := fmt.Sprintf("idle_%d", i)
				ps = append(ps, projector.Projection{Name: name, Handler: projector.Batch(func(context.Context, postgres.Tx, []eventstore.Record) error { return nil })})
				keys = append(keys, "esox:projector:"+b.schema+":"+name+":v1")
			}
			runner, err := projector.NewRunner(b.store, projector.Config{PollInterval: 5 * time.Millisecond, LeaderRetryInterval: time.Hour, Logger: testLogger(t)}, ps...)
			if err != nil {
				t.Fatal(err)
			}
			runCtx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			defer func() {
				cancel()
				wg.Wait()
			}()
			wg.Go(func() {
				if err := runner.Run(runCtx); err != nil {
					t.Error(err)
				}
			})
			for i := range forwarders {
				group := fmt.Sprintf("idle-%d", i)
				f, err := New(b.store, &recordingPublisher{}, Config{ConsumerGroup: group, PollInterval: 5 * time.Millisecond,
					LeaderRetryInterval: time.Hour, DisableMigrate: true, Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, LeaderKey(b.schema, group))
				wg.Go(func() {
					if err := f.Run(runCtx); err != nil {
						t.Error(err)
					}
				})
			}
			testwait.Until(t, "every consumer to lead", func() bool {
				return heldLocks(t, check, keys) == consumers
			})

			// Started consumers read the feed once and then wait: find a
			// window of 20 polls with nothing else in it.
			var last []string
			deadline := time.Now().Add(time.Minute)
			for time.Now().Before(deadline) {
				mark := stmts.Len()
				got, err := stmts.Wait(ctx, mark, 20, isHeadPoll)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) == 20 {
					t.Logf("%d idle consumers: 20 polls, %d statements", consumers, len(got))
					return
				}
				last = got
			}
			t.Fatalf("%d idle consumers: no window of 20 polls without other statements in a minute; the last one had %d:%s",
				consumers, len(last), pgtest.Summary(last))
		})
	}
}

// heldLocks counts the advisory locks of keys that some session holds.
func heldLocks(t *testing.T, db *sqlx.DB, keys []string) int {
	t.Helper()
	n := 0
	for _, key := range keys {
		k := uint64(postgres.LockKey(key))
		var held bool
		if err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND classid = $1 AND objid = $2 AND objsubid = 1)`, int64(k>>32), int64(k&0xffffffff)).Scan(&held); err != nil {
			t.Fatal(err)
		}
		if held {
			n++
		}
	}
	return n
}
