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

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// reloadInterval is how often an idle worker re-reads its checkpoint row, to
// notice a Rebuild, Resume or SetCheckpoint made by another process.
const reloadInterval = time.Second

// worker runs one projection version while its process leads it.
type worker struct {
	r         *Runner
	p         Projection
	version   int
	types     []string // nil: every type
	leaderKey string
	log       *slog.Logger
	reload    chan struct{} // buffer 1: re-read the checkpoint row now
	tel       *workerTelemetry

	mu       sync.Mutex
	active   bool  // this process leads the projection
	stopped  error // the handler failure that stopped it in this process (while it leads)
	dbErr    error // the last database error, while the worker retries after it
	dbErrors int   // consecutive database errors
}

func newWorker(r *Runner, p Projection) *worker {
	v := p.version()
	return &worker{
		r:         r,
		p:         p,
		version:   v,
		types:     p.Handler.EventTypes(),
		leaderKey: leaderKey(r.t.schema, p.Name, v),
		log:       r.log.With("projection", p.Name, "version", v),
		reload:    make(chan struct{}, 1),
	}
}

// leaderKey is the leader-election key of a projection version:
// "esox:projector:<schema>:<name>:v<version>".
func leaderKey(schema, name string, version int) string {
	return "esox:projector:" + schema + ":" + name + ":v" + strconv.Itoa(version)
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
}

const checkpointColumns = `transaction_id::text AS transaction_id_text, position, status, rebuilding, stopped, last_error, error_at, updated_at`

func scanCheckpoint(row interface{ Scan(...any) error }) (checkpoint, error) {
	var c checkpoint
	var txid string
	if err := row.Scan(&txid, &c.pos.Position, &c.status, &c.rebuilding, &c.stopped, &c.lastError, &c.errorAt, &c.updatedAt); err != nil {
		return c, err
	}
	var err error
	if c.pos.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
		return c, fmt.Errorf("parse transaction id %q: %w", txid, err)
	}
	return c, nil
}

func (w *worker) load(ctx context.Context) (checkpoint, error) {
	c, err := scanCheckpoint(w.r.db.QueryRowContext(ctx, `SELECT `+checkpointColumns+` FROM `+w.r.t.checkpoints+`
		WHERE projection = $1 AND version = $2`, w.p.Name, w.version))
	if errors.Is(err, sql.ErrNoRows) {
		return c, fmt.Errorf("checkpoint of projection %q version %d is missing (was the checkpoints table changed by hand?)", w.p.Name, w.version)
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

// signalReload asks the worker to re-read its checkpoint row; it never
// blocks.
func (w *worker) signalReload() {
	select {
	case w.reload <- struct{}{}:
	default:
	}
}

// errFenced: the checkpoint moved under the worker (another worker, a
// Rebuild, a version switch); re-read it.
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
		w.mu.Unlock()
	}()
	wake, unsubscribe := w.r.store.Subscribe()
	defer unsubscribe()
	w.log.InfoContext(ctx, "projection worker started")

	var (
		cp        checkpoint
		loaded    bool
		lastLoad  time.Time
		failures  int // consecutive handler failures of the current batch
		transient int // consecutive database errors
	)
	cfg := w.r.cfg
	for ctx.Err() == nil {
		if !loaded {
			c, err := w.load(ctx)
			if err != nil {
				w.backoffTransient(ctx, &transient, err)
				continue
			}
			cp, loaded, lastLoad = c, true, time.Now()
			w.tel.loaded(c)
			w.mu.Lock()
			if w.stopped != nil && !c.stopped {
				w.log.InfoContext(ctx, "projection resumed")
				w.stopped, failures = nil, 0
			}
			w.mu.Unlock()
		}
		if _, stopped := w.state(); stopped != nil || cp.status == statusRetired {
			if !w.idle(ctx, nil, reloadInterval) {
				break
			}
			loaded = false
			continue
		}

		raws, err := w.r.store.ReadFeed(ctx, cp.pos, cfg.BatchSize)
		if err != nil {
			w.backoffTransient(ctx, &transient, err)
			continue
		}
		w.tel.read(cp.pos, raws, cfg.BatchSize)
		caughtUp := len(raws) < cfg.BatchSize
		if len(raws) == 0 && cp.status != statusBuilding && !cp.rebuilding {
			w.transientOK(&transient)
			if !w.idle(ctx, wake, cfg.PollInterval) {
				break
			}
			if time.Since(lastLoad) >= reloadInterval {
				loaded = false
			}
			continue
		}

		park := w.p.DeadLetter && failures > cfg.MaxRetries
		next, err := w.applyTraced(ctx, cp, raws, caughtUp, park)
		var he *handlerError
		switch {
		case err == nil:
			if next.status != cp.status {
				w.log.InfoContext(ctx, "projection version is now live", "position", next.pos.String())
			}
			if cp.rebuilding && !next.rebuilding {
				w.log.InfoContext(ctx, "projection rebuild caught up", "position", next.pos.String())
			}
			cp, failures = next, 0
			w.transientOK(&transient)
			w.r.notifyAdvanced()
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
			if !w.idle(ctx, wake, cfg.PollInterval) {
				break
			}
		}
	}
	w.log.InfoContext(ctx, "projection worker stopped")
	return nil
}

// apply decodes one batch, then applies it in one transaction: the
// checkpoint compare-and-set first (it locks the row, so a concurrent worker
// or Rebuild waits or fails; only a set_config of the transaction's idle
// timeout precedes it), then the handler, then, for a building version that has caught up, the
// switch to live. With park, it applies the handled records one at a time
// under savepoints and parks those that fail in the dead-letter table.
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
			if !wantsRaw(w.types, reg, rr) {
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
	res, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET transaction_id = $3::xid8, position = $4,
		rebuilding = rebuilding AND NOT $7, stopped = false, last_error = NULL, error_at = NULL, updated_at = now()
		WHERE projection = $1 AND version = $2 AND transaction_id = $5::xid8 AND position = $6 AND status <> 'retired'`,
		w.p.Name, w.version, strconv.FormatUint(next.pos.TransactionID, 10), next.pos.Position,
		strconv.FormatUint(cp.pos.TransactionID, 10), cp.pos.Position, caughtUp)
	if err != nil {
		return cp, fmt.Errorf("advance checkpoint: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return cp, fmt.Errorf("advance checkpoint: %w", err)
	} else if n == 0 {
		return cp, errFenced
	}
	next.rebuilding = cp.rebuilding && !caughtUp
	next.stopped, next.lastError, next.errorAt = false, sql.NullString{}, sql.NullTime{}

	if park {
		if err := w.applyParking(ctx, postgres.NewTx(tx), raws); err != nil {
			return cp, err
		}
	} else if len(recs) > 0 {
		if err := w.p.Handler.Handle(ctx, postgres.NewTx(tx), recs); err != nil {
			return cp, &handlerError{err}
		}
	}

	if caughtUp && cp.status == statusBuilding {
		switched, err := w.activate(ctx, postgres.NewTx(tx), next.pos)
		if err != nil {
			return cp, err
		}
		if switched {
			next.status = statusActive
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
func (w *worker) applyParking(ctx context.Context, tx postgres.Tx, raws []eventstore.RawRecord) error {
	reg := w.r.store.Registry()
	for _, rr := range raws {
		if !wantsRaw(w.types, reg, rr) {
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
			(projection, version, event_id, transaction_id, position, stream_id, event_type, error)
			VALUES ($1, $2, $3, $4::xid8, $5, $6, $7, $8)
			ON CONFLICT (projection, version, event_id) DO UPDATE SET error = excluded.error, recorded_at = now()`,
			w.p.Name, w.version, rr.ID, strconv.FormatUint(rr.Position.TransactionID, 10), rr.Position.Position, rr.StreamID, rr.Type, err.Error()); err != nil {
			return fmt.Errorf("park event: %w", err)
		}
		w.tel.parked(ctx)
		w.log.WarnContext(ctx, "event parked in the dead-letter table", "event_id", rr.ID.String(), "stream_id", rr.StreamID,
			"event_type", rr.Type, "position", rr.Position.String(), "error", err)
	}
	return nil
}

// activate switches this (building, caught-up) version live in tx, unless
// the live version is still ahead of pos (it may have applied events that
// became visible after this batch was read: switching then would move
// readers back in time). It locks the live version's row first, so that
// version cannot advance during the check. Lower versions are retired and
// Activate runs. It reports whether it switched.
func (w *worker) activate(ctx context.Context, tx postgres.Tx, pos eventstore.Position) (bool, error) {
	var txid string
	var live eventstore.Position
	err := tx.QueryRowContext(ctx, `SELECT transaction_id::text AS transaction_id_text, position FROM `+w.r.t.checkpoints+`
		WHERE projection = $1 AND status = 'active' AND version <> $2 FOR UPDATE`, w.p.Name, w.version).Scan(&txid, &live.Position)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return false, fmt.Errorf("lock live version: %w", err)
	default:
		if live.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			return false, fmt.Errorf("parse transaction id %q: %w", txid, err)
		}
		if live.Compare(pos) > 0 {
			return false, nil // not caught up with the live version yet
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET status = 'retired', updated_at = now()
		WHERE projection = $1 AND version < $2 AND status <> 'retired'`, w.p.Name, w.version); err != nil {
		return false, fmt.Errorf("retire older versions: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET status = 'active', activated_at = now(), updated_at = now()
		WHERE projection = $1 AND version = $2`, w.p.Name, w.version); err != nil {
		return false, fmt.Errorf("activate version: %w", err)
	}
	if w.p.Activate != nil {
		if err := w.p.Activate(ctx, tx); err != nil {
			return false, &handlerError{fmt.Errorf("activate: %w", err)}
		}
	}
	return true, nil
}

// stop records a final handler failure at checkpoint cp: the projection
// stops in this process until Resume, Rebuild or a restart, and its row says
// why. The update is fenced like a batch's: when the row's checkpoint is no
// longer cp (a newer leader or a Rebuild moved it), it changes nothing and
// stop reports false, so a deposed leader cannot mark the new leader's
// projection stopped.
func (w *worker) stop(ctx context.Context, cp checkpoint, err error) bool {
	res, dberr := w.r.db.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET stopped = true, last_error = $3, error_at = now(), updated_at = now()
		WHERE projection = $1 AND version = $2 AND transaction_id = $4::xid8 AND position = $5`,
		w.p.Name, w.version, err.Error(), strconv.FormatUint(cp.pos.TransactionID, 10), cp.pos.Position)
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
	w.mu.Unlock()
	w.log.ErrorContext(ctx, "projection stopped: its handler keeps failing; fix it, then Resume or restart (other projections go on)", "error", err)
	if dberr != nil {
		w.log.WarnContext(ctx, "could not record the projection's error", "error", dberr)
	}
	return true
}

// idle waits for a wake-up, a reload request, d, or ctx; it reports whether
// ctx is still live. wake may be nil.
func (w *worker) idle(ctx context.Context, wake <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-w.reload:
	case <-t.C:
	}
	return true
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
