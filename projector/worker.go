package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// worker runs one partition of one projection version while its process
// leads it.
type worker struct {
	r          *Runner
	p          Projection
	version    int
	partition  int // 0 .. partitions-1
	partitions int
	types      []string // nil: every type
	leaderKey  string
	log        *slog.Logger
	reload     chan struct{} // buffer 1: re-read the checkpoint row now
	tel        *workerTelemetry

	mu       sync.Mutex
	active   bool       // this process leads the partition
	seen     checkpoint // the row as this leadership last knew it (see Runner.watchCheckpoints)
	stopped  error      // the handler failure that stopped it in this process (while it leads)
	dbErr    error      // the last database error, while the worker retries after it
	dbErrors int        // consecutive database errors
}

func newWorker(r *Runner, p Projection, partition int) *worker {
	v := p.version()
	n := p.partitions()
	log := r.log.With("projection", p.Name, "version", v)
	if n > 1 {
		log = log.With("partition", partition, "partitions", n)
	}
	return &worker{
		r:          r,
		p:          p,
		version:    v,
		partition:  partition,
		partitions: n,
		types:      p.Handler.EventTypes(),
		leaderKey:  leaderKey(r.t.schema, p.Name, v, partition, n),
		log:        log,
		reload:     make(chan struct{}, 1),
	}
}

// leaderKey is the leader-election key of a partition of a projection
// version (see LeaderKey).
func leaderKey(schema, name string, version, partition, partitions int) string {
	return LeaderKey(schema, name, version, partition, partitions)
}

// owns reports whether the worker's partition applies streamID's records.
func (w *worker) owns(streamID string) bool {
	return w.partitions == 1 || PartitionOf(streamID, w.partitions) == w.partition
}

// checkpoint is a projection version's row.
type checkpoint struct {
	pos        eventstore.Position
	status     string
	rebuilding bool
	stopped    bool
	lastError  sql.NullString
	errorAt    sql.NullTime
	updatedAt  time.Time
	// Requests the leading worker performs (see requests.go).
	rebuildRequested bool
	retryRequested   bool
	requestError     sql.NullString
	// skipID is the event the partition passes over (uuid.Nil: none), at
	// skipPos.
	skipID  uuid.UUID
	skipPos eventstore.Position
	// errorEvent is the event the handler failed on when it stopped.
	errorEvent uuid.NullUUID
}

const checkpointColumns = `transaction_id::text AS transaction_id_text, position, status, rebuilding, stopped, last_error, error_at, updated_at,
	rebuild_requested, retry_requested, request_error, skip_event_id, coalesce(skip_transaction_id, '0')::text, coalesce(skip_position, 0), error_event_id`

func scanCheckpoint(row interface{ Scan(...any) error }) (checkpoint, error) {
	var c checkpoint
	var txid, skipTxid string
	var skipID uuid.NullUUID
	if err := row.Scan(&txid, &c.pos.Position, &c.status, &c.rebuilding, &c.stopped, &c.lastError, &c.errorAt, &c.updatedAt,
		&c.rebuildRequested, &c.retryRequested, &c.requestError, &skipID, &skipTxid, &c.skipPos.Position, &c.errorEvent); err != nil {
		return c, err
	}
	c.skipID = skipID.UUID
	var err error
	if c.pos.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
		return c, fmt.Errorf("parse transaction id %q: %w", txid, err)
	}
	if c.skipPos.TransactionID, err = strconv.ParseUint(skipTxid, 10, 64); err != nil {
		return c, fmt.Errorf("parse transaction id %q: %w", skipTxid, err)
	}
	return c, nil
}

func (w *worker) load(ctx context.Context) (checkpoint, error) {
	c, err := scanCheckpoint(w.r.db.QueryRowContext(ctx, `SELECT `+checkpointColumns+` FROM `+w.r.t.checkpoints+`
		WHERE projection = $1 AND version = $2 AND partition = $3`, w.p.Name, w.version, w.partition))
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("checkpoint of projection %q version %d partition %d is missing (was the checkpoints table changed by hand?)", w.p.Name, w.version, w.partition)
	}
	if err != nil {
		return c, fmt.Errorf("load checkpoint: %w", err)
	}
	return c, nil
}

func (w *worker) setActive(v bool) {
	w.mu.Lock()
	w.active = v
	w.mu.Unlock()
}

func (w *worker) state() (active bool, stopped error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active, w.stopped
}

// retrying returns how many database errors in a row the worker has met and
// the last one, while it retries after it (0, nil otherwise).
func (w *worker) retrying() (n int, last error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dbErrors, w.dbErr
}

// transientOK records that a database round trip worked again.
func (w *worker) transientOK(n *int) {
	*n = 0
	w.mu.Lock()
	w.dbErr, w.dbErrors = nil, 0
	w.mu.Unlock()
}

// see records c as the row this leadership last knew.
func (w *worker) see(c checkpoint) {
	w.mu.Lock()
	w.seen = c
	w.mu.Unlock()
}

// stale reports whether this process leads the partition and row differs
// from what its worker last knew of it (position, status, flags).
func (w *worker) stale(row checkpoint) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.seen
	return w.active && (row.pos != s.pos || row.status != s.status || row.rebuilding != s.rebuilding || row.stopped != s.stopped ||
		row.rebuildRequested != s.rebuildRequested || row.retryRequested != s.retryRequested || row.skipID != s.skipID)
}

// signalReload asks the worker to re-read its checkpoint row; it never
// blocks.
func (w *worker) signalReload() {
	select {
	case w.reload <- struct{}{}:
	default:
	}
}

// errFenced: the checkpoint moved under the worker (another worker, a
// Rebuild, SetCheckpoint, a version switch) or a request is pending on it
// (RequestRebuild, RetryDeadLetters); re-read it.
var errFenced = errors.New("checkpoint moved")

// handlerError is a failure of the projection's own code (handler, decoding
// a handled event, Activate), as opposed to a database error.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// work is the leader's job: apply the feed until ctx ends.
func (w *worker) work(ctx context.Context) error {
	w.setActive(true)
	defer func() {
		// A process that no longer leads has no say on the projection's
		// state: forget what this leadership saw (Status reads the row).
		w.mu.Lock()
		w.active, w.stopped, w.dbErr, w.dbErrors = false, nil, nil, 0
		w.seen = checkpoint{}
		w.mu.Unlock()
	}()
	// The store's one feed watcher polls the head for every consumer of
	// the process; appends through the store wake at once.
	wake, unsubscribe := w.r.store.Watch(ctx, w.r.cfg.PollInterval)
	defer unsubscribe()
	w.log.InfoContext(ctx, "projection worker started")

	var (
		cp        checkpoint
		loaded    bool
		failures  int        // consecutive handler failures of the current batch
		transient int        // consecutive database errors
		ahead     *readAhead // the read of the batch after the one being applied
	)
	defer func() {
		if ahead != nil {
			<-ahead.done
		}
	}()
	cfg := w.r.cfg
	for ctx.Err() == nil {
		if !loaded {
			c, err := w.load(ctx)
			if err != nil {
				w.backoffTransient(ctx, &transient, err)
				continue
			}
			if c.rebuildRequested || c.retryRequested {
				// An operator's request: perform it, then re-read the row.
				if err := w.performRequests(ctx, c); err != nil {
					w.backoffTransient(ctx, &transient, err)
				}
				continue
			}
			cp, loaded = c, true
			w.see(c)
			w.tel.loaded(c)
			w.mu.Lock()
			if w.stopped != nil && !c.stopped {
				w.log.InfoContext(ctx, "projection resumed")
				w.stopped, failures = nil, 0
			}
			w.mu.Unlock()
		}
		if _, stopped := w.state(); stopped != nil || cp.status == statusRetired {
			// Nothing to do until the row changes: Resume, Rebuild or a
			// restart (the runner's checkpoint watcher signals a reload).
			if w.idle(ctx, nil) {
				loaded = false
			}
			continue
		}

		var raws []eventstore.RawRecord
		var err error
		if ahead != nil {
			<-ahead.done
			if ahead.after == cp.pos {
				raws, err = ahead.raws, ahead.err
			} else {
				ahead.raws = nil // read after another checkpoint: not this batch
			}
		}
		if ahead == nil || ahead.after != cp.pos {
			raws, err = w.r.store.ReadFeed(ctx, cp.pos, cfg.BatchSize)
		}
		ahead = nil
		if err != nil {
			w.backoffTransient(ctx, &transient, err)
			continue
		}
		w.tel.read(cp.pos, raws, cfg.BatchSize)
		caughtUp := len(raws) < cfg.BatchSize
		if !caughtUp {
			// Catching up: read the next batch while this one is applied.
			ahead = w.readAhead(ctx, raws[len(raws)-1].Position)
		}
		if len(raws) == 0 && cp.status != statusBuilding && !cp.rebuilding {
			w.transientOK(&transient)
			if w.idle(ctx, wake) {
				loaded = false
			}
			continue
		}

		park := w.p.DeadLetter && failures > cfg.MaxRetries
		next, err := w.applyTraced(ctx, cp, raws, caughtUp, park)
		if err == nil {
			if cp.rebuilding && !next.rebuilding {
				w.log.InfoContext(ctx, "projection rebuild caught up", "position", next.pos.String())
			}
			cp = next
			if len(raws) > 0 {
				failures = 0
			}
			w.see(cp)
			w.transientOK(&transient)
			w.r.notifyAdvanced()
			if caughtUp && cp.status == statusBuilding {
				// This partition has applied what the feed holds: switch
				// the version live if every partition has caught up with
				// the live version.
				var status string
				if status, err = w.activate(ctx, cp); err == nil && status != cp.status {
					if status == statusActive {
						w.log.InfoContext(ctx, "projection version is now live", "position", cp.pos.String())
					}
					cp.status = status
					w.see(cp)
					w.r.notifyAdvanced()
				}
			}
		}
		var he *handlerError
		switch {
		case err == nil:
		case ctx.Err() != nil:
			// Stopping: the batch rolled back whole.
		case errors.Is(err, errFenced):
			w.log.DebugContext(ctx, "checkpoint moved; re-reading it")
			loaded = false
		case errors.As(err, &he) && !postgres.IsTransient(err):
			failures++
			if failures <= cfg.MaxRetries || (w.p.DeadLetter && failures == cfg.MaxRetries+1) {
				w.log.WarnContext(ctx, "projection handler failed; retrying", "attempt", failures, "error", he.err)
				w.sleep(ctx, backoff(cfg, failures))
				continue
			}
			if !w.stop(ctx, cp, he.err) {
				// The checkpoint moved under this worker: the failed
				// batch may not be its to apply any more.
				failures, loaded = 0, false
			}
		default:
			loaded = false // a failed COMMIT may have committed: re-read
			w.backoffTransient(ctx, &transient, err)
		}
		if len(raws) == 0 && ctx.Err() == nil {
			// An empty batch only tried to finish a rebuild or a
			// version switch; wait for news before trying again.
			if w.idle(ctx, wake) {
				loaded = false
			}
		}
	}
	w.log.InfoContext(ctx, "projection worker stopped")
	return nil
}

// readAhead is a read of the feed, started while the worker applies the
// batch before it; the worker waits for it (done) before it uses or drops
// it, and before work returns.
type readAhead struct {
	after eventstore.Position
	done  chan struct{} // closed when raws and err are set
	raws  []eventstore.RawRecord
	err   error
}

// readAhead starts reading the batch after the position after, in a
// goroutine that ends with the read (ctx bounds it). A read of the feed
// after a position is right whenever it is made (the feed is gap-free: it
// returns a prefix of what follows), so the batch can be used as soon as
// the checkpoint is at after; when the batch before fails or the
// checkpoint moves elsewhere, it is dropped.
func (w *worker) readAhead(ctx context.Context, after eventstore.Position) *readAhead {
	ra := &readAhead{after: after, done: make(chan struct{})}
	go func() {
		defer close(ra.done)
		ra.raws, ra.err = w.r.store.ReadFeed(ctx, after, w.r.cfg.BatchSize)
	}()
	return ra
}

// apply decodes the records of one batch that belong to the worker's
// partition, then applies them in one transaction: the checkpoint
// compare-and-set first (it locks the row, so a concurrent worker or
// Rebuild waits or fails; only a set_config of the transaction's idle
// timeout precedes it), which moves the checkpoint over the whole batch,
// then the handler. With park, it applies the handled records one at a
// time under savepoints and parks those that fail in the dead-letter
// table.
func (w *worker) apply(ctx context.Context, cp checkpoint, raws []eventstore.RawRecord, caughtUp, park bool) (checkpoint, error) {
	// Decode before the transaction begins, so it is not held open (with a
	// transaction id that holds back every feed reader, and the checkpoint
	// row locked) while JSON is decoded. Parking decodes each record under
	// its savepoint instead: a record that fails to decode is parked.
	// Personal data is decrypted for the whole batch first, its keys
	// fetched in one call (docs/compliance.md); a record that does not
	// decrypt fails in decode, below or under its savepoint.
	if err := w.r.store.Registry().Decrypt(ctx, raws); err != nil {
		return cp, err
	}
	var recs []eventstore.Record
	if !park {
		recs = make([]eventstore.Record, 0, len(raws))
		reg := w.r.store.Registry()
		for _, rr := range raws {
			if !w.owns(rr.StreamID) || !wantsRaw(w.types, reg, rr) || w.skips(ctx, cp, rr) {
				continue
			}
			var err error
			if recs, err = decode(reg, w.types, rr, recs); err != nil {
				return cp, &handlerError{err}
			}
		}
	}

	tx, err := w.r.db.BeginTxx(ctx, nil)
	if err != nil {
		return cp, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	// Not a data statement (it takes no transaction id and no lock): should
	// this process freeze mid-batch, the server rolls the batch back after
	// IdleInTransactionTimeout, releasing its transaction id and the row
	// lock of the compare-and-set below.
	if _, err := tx.ExecContext(ctx, `SELECT set_config('idle_in_transaction_session_timeout', $1, true)`,
		strconv.FormatInt(w.r.cfg.IdleInTransactionTimeout.Milliseconds(), 10)+"ms"); err != nil {
		return cp, fmt.Errorf("set idle_in_transaction_session_timeout: %w", err)
	}

	next := cp
	if len(raws) > 0 {
		next.pos = raws[len(raws)-1].Position
	}
	// The compare-and-set also fails while an operator's rebuild or retry
	// is pending, or when the event to skip is not the one this worker
	// knows (see requests.go): the worker re-reads the row. Once the
	// checkpoint passes the event to skip, the request is done.
	var skip any
	if cp.skipID != uuid.Nil {
		skip = cp.skipID.String()
	}
	res, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET transaction_id = $3::xid8, position = $4,
		rebuilding = rebuilding AND NOT $7, stopped = false, last_error = NULL, error_at = NULL, error_event_id = NULL, updated_at = now(),
		skip_event_id = CASE WHEN ($3::xid8, $4::bigint) >= (skip_transaction_id, skip_position) THEN NULL ELSE skip_event_id END,
		skip_transaction_id = CASE WHEN ($3::xid8, $4::bigint) >= (skip_transaction_id, skip_position) THEN NULL ELSE skip_transaction_id END,
		skip_position = CASE WHEN ($3::xid8, $4::bigint) >= (skip_transaction_id, skip_position) THEN NULL ELSE skip_position END
		WHERE projection = $1 AND version = $2 AND partition = $8 AND transaction_id = $5::xid8 AND position = $6 AND status <> 'retired'
			AND NOT rebuild_requested AND NOT retry_requested AND skip_event_id IS NOT DISTINCT FROM $9::uuid`,
		w.p.Name, w.version, strconv.FormatUint(next.pos.TransactionID, 10), next.pos.Position,
		strconv.FormatUint(cp.pos.TransactionID, 10), cp.pos.Position, caughtUp, w.partition, skip)
	if err != nil {
		return cp, fmt.Errorf("advance checkpoint: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return cp, fmt.Errorf("advance checkpoint: %w", err)
	} else if n == 0 {
		return cp, errFenced
	}
	next.rebuilding = cp.rebuilding && !caughtUp
	next.stopped, next.lastError, next.errorAt, next.errorEvent = false, sql.NullString{}, sql.NullTime{}, uuid.NullUUID{}
	if next.skipID != uuid.Nil && next.pos.Compare(next.skipPos) >= 0 {
		next.skipID, next.skipPos = uuid.Nil, eventstore.Position{}
	}

	if park {
		if err := w.applyParking(ctx, postgres.NewTx(tx), cp, raws); err != nil {
			return cp, err
		}
	} else if len(recs) > 0 {
		if err := w.p.Handler.Handle(ctx, postgres.NewTx(tx), recs); err != nil {
			return cp, &handlerError{err}
		}
	}

	if err := tx.Commit(); err != nil {
		return cp, fmt.Errorf("commit: %w", err)
	}
	return next, nil
}

// applyParking applies the handled records one by one, each under a
// savepoint; a record whose decoding or handler fails is rolled back to its
// savepoint and parked with its error.
func (w *worker) applyParking(ctx context.Context, tx postgres.Tx, cp checkpoint, raws []eventstore.RawRecord) error {
	reg := w.r.store.Registry()
	for _, rr := range raws {
		if !w.owns(rr.StreamID) || !wantsRaw(w.types, reg, rr) || w.skips(ctx, cp, rr) {
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT esox_record`); err != nil {
			return fmt.Errorf("savepoint: %w", err)
		}
		recs, err := decode(reg, w.types, rr, nil)
		if errors.Is(err, eventstore.ErrUnknownSchemaVersion) {
			// Not a poison event: one this code cannot read yet (or
			// lacks an upcaster for). Parking it would lose it once the
			// code that reads it is deployed; stop instead.
			return &handlerError{err}
		}
		if err == nil && len(recs) > 0 {
			err = w.p.Handler.Handle(ctx, tx, recs)
		}
		if err == nil {
			if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT esox_record`); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
			continue
		}
		if postgres.IsTransient(err) || ctx.Err() != nil {
			return err
		}
		if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT esox_record`); rerr != nil {
			return fmt.Errorf("rollback to savepoint: %w", rerr)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+w.r.t.deadLetters+`
			(projection, version, event_id, transaction_id, position, stream_id, event_type, error, partition)
			VALUES ($1, $2, $3, $4::xid8, $5, $6, $7, $8, $9)
			ON CONFLICT (projection, version, event_id) DO UPDATE SET error = excluded.error, recorded_at = now()`,
			w.p.Name, w.version, rr.ID, strconv.FormatUint(rr.Position.TransactionID, 10), rr.Position.Position, rr.StreamID, rr.Type, err.Error(), w.partition); err != nil {
			return fmt.Errorf("park event: %w", err)
		}
		w.tel.parked(ctx)
		w.log.WarnContext(ctx, "event parked in the dead-letter table", "event_id", rr.ID.String(), "stream_id", rr.StreamID,
			"event_type", rr.Type, "position", rr.Position.String(), "error", err)
	}
	return nil
}

// activate tries, in a transaction of its own, to switch the worker's
// building version live, after a batch that caught its partition up with
// the feed committed at cp. It locks the checkpoint rows of every version
// of the projection that is not retired, in (version, partition) order (so
// concurrent attempts queue instead of deadlocking, and no live partition
// advances during the check), and switches only when every partition of
// this version has reached the most advanced partition of the live
// version: the live version may have applied events that became visible
// after this version's batches were read, and switching then would move
// readers back in time. Switching retires the lower versions, marks every
// partition of this version active and runs Activate, all in that
// transaction. It returns the version's status afterwards: statusActive
// (switched, by this call or a sibling partition's), statusBuilding (not
// yet) or statusRetired (a higher version went live meanwhile).
func (w *worker) activate(ctx context.Context, cp checkpoint) (string, error) {
	tx, err := w.r.db.BeginTxx(ctx, nil)
	if err != nil {
		return cp.status, fmt.Errorf("activate: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT set_config('idle_in_transaction_session_timeout', $1, true)`,
		strconv.FormatInt(w.r.cfg.IdleInTransactionTimeout.Milliseconds(), 10)+"ms"); err != nil {
		return cp.status, fmt.Errorf("set idle_in_transaction_session_timeout: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT version, status, transaction_id::text AS transaction_id_text, position FROM `+w.r.t.checkpoints+`
		WHERE projection = $1 AND status <> 'retired' ORDER BY version, partition FOR UPDATE`, w.p.Name)
	if err != nil {
		return cp.status, fmt.Errorf("activate: lock versions: %w", err)
	}
	var (
		mine             int
		status           = statusRetired
		mineMin, liveMax eventstore.Position
	)
	for rows.Next() {
		var version int
		var st, txid string
		var pos eventstore.Position
		if err := rows.Scan(&version, &st, &txid, &pos.Position); err != nil {
			rows.Close()
			return cp.status, fmt.Errorf("activate: lock versions: %w", err)
		}
		if pos.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			rows.Close()
			return cp.status, fmt.Errorf("activate: parse transaction id %q: %w", txid, err)
		}
		switch {
		case version == w.version:
			if mine == 0 || pos.Compare(mineMin) < 0 {
				mineMin = pos
			}
			mine++
			status = st
		case st == statusActive && pos.Compare(liveMax) > 0:
			liveMax = pos
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return cp.status, fmt.Errorf("activate: lock versions: %w", err)
	}
	switch {
	case status != statusBuilding:
		return status, nil // switched by a sibling partition, or retired
	case mine != w.partitions:
		return cp.status, fmt.Errorf("activate: projection %q version %d has %d checkpoint rows, want %d (was the checkpoints table changed by hand?)", w.p.Name, w.version, mine, w.partitions)
	case liveMax.Compare(mineMin) > 0:
		return statusBuilding, nil // not caught up with the live version yet
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET status = 'retired', updated_at = now()
		WHERE projection = $1 AND version < $2 AND status <> 'retired'`, w.p.Name, w.version); err != nil {
		return cp.status, fmt.Errorf("retire older versions: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET status = 'active', activated_at = now(), updated_at = now()
		WHERE projection = $1 AND version = $2`, w.p.Name, w.version); err != nil {
		return cp.status, fmt.Errorf("activate version: %w", err)
	}
	if w.p.Activate != nil {
		if err := w.p.Activate(ctx, postgres.NewTx(tx)); err != nil {
			return cp.status, &handlerError{fmt.Errorf("activate: %w", err)}
		}
	}
	if err := tx.Commit(); err != nil {
		return cp.status, fmt.Errorf("activate: commit: %w", err)
	}
	return statusActive, nil
}

// stop records a final handler failure at checkpoint cp: the projection
// stops in this process until Resume, Rebuild or a restart, and its row says
// why. The update is fenced like a batch's: when the row's checkpoint is no
// longer cp (a newer leader or a Rebuild moved it), it changes nothing and
// stop reports false, so a deposed leader cannot mark the new leader's
// projection stopped.
func (w *worker) stop(ctx context.Context, cp checkpoint, err error) bool {
	var event any
	if id := failedEvent(err); id != uuid.Nil {
		event = id.String()
	}
	var skip any
	if cp.skipID != uuid.Nil {
		skip = cp.skipID.String()
	}
	// Fenced by a skip this worker does not know of too: Skip resumes the
	// partition, which a stop must not undo.
	res, dberr := w.r.db.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET stopped = true, last_error = $3, error_at = now(), error_event_id = $7::uuid, updated_at = now()
		WHERE projection = $1 AND version = $2 AND partition = $6 AND transaction_id = $4::xid8 AND position = $5
			AND skip_event_id IS NOT DISTINCT FROM $8::uuid`,
		w.p.Name, w.version, err.Error(), strconv.FormatUint(cp.pos.TransactionID, 10), cp.pos.Position, w.partition, event, skip)
	var n int64
	if dberr == nil {
		n, dberr = res.RowsAffected()
	}
	if dberr == nil && n == 0 {
		w.log.DebugContext(ctx, "handler failed but the checkpoint moved; re-reading it instead of stopping", "error", err)
		return false
	}
	w.mu.Lock()
	w.stopped = err
	// The row says stopped now (or, if recording it failed, the runner's
	// checkpoint watcher finds it does not and has the worker retry).
	w.seen = cp
	w.seen.stopped = true
	w.mu.Unlock()
	w.log.ErrorContext(ctx, "projection stopped: its handler keeps failing; fix it, then Resume or restart (other projections go on)", "error", err)
	if dberr != nil {
		w.log.WarnContext(ctx, "could not record the projection's error", "error", dberr)
	}
	return true
}

// idle waits, sending the database nothing, for a wake-up (wake: an append
// through the store, or its watcher saw the feed's head move; may be nil),
// a reload request, or the end of ctx. It reports whether a reload was
// requested.
func (w *worker) idle(ctx context.Context, wake <-chan struct{}) bool {
	select {
	case <-ctx.Done():
	case <-wake:
	case <-w.reload:
		return true
	}
	return false
}

func (w *worker) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// warnEvery is how often, in consecutive database errors, the retry loop
// logs at Warn (the others at Debug): the first and every warnEvery-th.
const warnEvery = 10

func (w *worker) backoffTransient(ctx context.Context, n *int, err error) {
	if ctx.Err() != nil {
		return
	}
	*n++
	w.mu.Lock()
	w.dbErr, w.dbErrors = err, *n
	w.mu.Unlock()
	level := slog.LevelDebug
	if *n == 1 || *n%warnEvery == 0 {
		level = slog.LevelWarn
	}
	w.log.Log(ctx, level, "database error; retrying", "attempt", *n, "error", err)
	w.sleep(ctx, backoff(w.r.cfg, *n))
}

// backoff returns the delay before retry attempt n (1-based).
func backoff(cfg Config, n int) time.Duration {
	d := cfg.RetryBackoff
	for i := 1; i < n && d < cfg.MaxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, cfg.MaxRetryBackoff)
}

// decode appends to dst the records rr reads as (upcast and decoded with
// reg) whose types the projection handles; an error names the record.
func decode(reg *eventstore.Registry, types []string, rr eventstore.RawRecord, dst []eventstore.Record) ([]eventstore.Record, error) {
	n := len(dst)
	dst, err := rr.AppendDecoded(dst, reg)
	if err != nil {
		rec, _ := rr.Record()
		return dst[:n], recordError(rec, err)
	}
	if types != nil {
		// A split or renamed event may read as types the projection does
		// not handle: keep those it does.
		kept := dst[:n]
		for _, r := range dst[n:] {
			if wants(types, r.Type) {
				kept = append(kept, r)
			}
		}
		dst = kept
	}
	return dst, nil
}
