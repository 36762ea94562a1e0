package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// This file is the worker's side of the operations an operator makes
// without the application's code (operations.go): a rebuild or a retry of
// dead letters needs the projection's Reset and Handler, which only the
// processes running the projection have. The operation records a request
// on the checkpoint row; the leading worker of the version (partition), in
// whichever process, sees it when it re-reads the row (at once when a batch
// of its is fenced by the request, within Config.LeaderRetryInterval when
// it is idle or stopped) and performs it in one transaction.

// performRequests performs the requests recorded on c, the worker's
// checkpoint row. It returns only database errors (to retry after): a
// request that cannot be performed (no Reset, Reset failing) is cleared
// with its error recorded in the row's request_error, and a dead letter
// whose retry fails stays parked with its new error.
func (w *worker) performRequests(ctx context.Context, c checkpoint) error {
	if c.rebuildRequested {
		if err := w.performRebuild(ctx); err != nil {
			return fmt.Errorf("perform the requested rebuild: %w", err)
		}
		return nil // a rebuild clears the dead letters, and so their retries
	}
	if c.retryRequested {
		if err := w.performRetries(ctx); err != nil {
			return fmt.Errorf("perform the requested retries: %w", err)
		}
	}
	return nil
}

// performRebuild performs a requested rebuild of the worker's version: in
// one transaction that locks every partition's checkpoint row, it runs
// Reset, sets every partition back to the start of the feed (rebuilding,
// no longer stopped), clears the version's dead letters and the request.
// A sibling partition's worker may have done it already: then it does
// nothing.
func (w *worker) performRebuild(ctx context.Context) error {
	tx, err := w.r.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := w.setIdleTimeout(ctx, tx); err != nil {
		return err
	}
	rows, err := tx.QueryContext(ctx, `SELECT status, rebuild_requested FROM `+w.r.t.checkpoints+`
		WHERE projection = $1 AND version = $2 ORDER BY partition FOR UPDATE`, w.p.Name, w.version)
	if err != nil {
		return err
	}
	requested, status := false, ""
	for rows.Next() {
		var r bool
		if err := rows.Scan(&status, &r); err != nil {
			rows.Close()
			return err
		}
		requested = requested || r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if !requested {
		return tx.Commit() // done by a sibling partition's worker
	}
	var failure error
	switch {
	case status == statusRetired:
		failure = errors.New("the version is retired: a newer version went live")
	case w.p.Reset == nil:
		failure = errors.New("the projection has no Reset func")
	default:
		if _, err := tx.ExecContext(ctx, `SAVEPOINT esox_reset`); err != nil {
			return err
		}
		if err := w.p.Reset(ctx, postgres.NewTx(tx)); err != nil {
			if postgres.IsTransient(err) || ctx.Err() != nil {
				return err
			}
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT esox_reset`); rerr != nil {
				return rerr
			}
			failure = fmt.Errorf("reset: %w", err)
		}
	}
	if failure != nil {
		if _, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET rebuild_requested = false, request_error = $3, updated_at = now()
			WHERE projection = $1 AND version = $2`, w.p.Name, w.version, "rebuild: "+failure.Error()); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		w.log.ErrorContext(ctx, "requested rebuild not performed", "error", failure)
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET transaction_id = '0', position = 0, rebuilding = true,
		rebuild_requested = false, retry_requested = false, request_error = NULL, skip_event_id = NULL, skip_transaction_id = NULL, skip_position = NULL,
		stopped = false, last_error = NULL, error_at = NULL, error_event_id = NULL, updated_at = now()
		WHERE projection = $1 AND version = $2`, w.p.Name, w.version); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM `+w.r.t.deadLetters+` WHERE projection = $1 AND version = $2`, w.p.Name, w.version); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.log.InfoContext(ctx, "projection reset for a requested rebuild")
	for _, o := range w.r.workers {
		if o != w && o.p.Name == w.p.Name && o.version == w.version {
			o.signalReload()
		}
	}
	w.r.notifyAdvanced()
	return nil
}

// performRetries re-applies, through the handler, the partition's dead
// letters an operator asked to retry, in feed order, in one transaction
// that locks the checkpoint row: each under a savepoint, removed from the
// dead-letter table when it applies, kept with its new error (and one more
// failed retry) when it fails. An event the handler no longer handles
// applies as nothing. Then it clears the request.
func (w *worker) performRetries(ctx context.Context) error {
	tx, err := w.r.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := w.setIdleTimeout(ctx, tx); err != nil {
		return err
	}
	var requested bool
	if err := tx.QueryRowContext(ctx, `SELECT retry_requested FROM `+w.r.t.checkpoints+`
		WHERE projection = $1 AND version = $2 AND partition = $3 FOR UPDATE`, w.p.Name, w.version, w.partition).Scan(&requested); err != nil {
		return err
	}
	if !requested {
		return tx.Commit()
	}
	var ids []uuid.UUID
	if err := tx.SelectContext(ctx, &ids, `SELECT event_id FROM `+w.r.t.deadLetters+`
		WHERE projection = $1 AND version = $2 AND partition = $3 AND retry_requested_at IS NOT NULL
		ORDER BY transaction_id, position FOR UPDATE`, w.p.Name, w.version, w.partition); err != nil {
		return err
	}
	byID := make(map[uuid.UUID]eventstore.RawRecord, len(ids))
	for chunk := range slices.Chunk(ids, eventstore.MaxReadAllLimit) {
		raws, err := w.r.store.LookupRawEvents(ctx, chunk)
		if err != nil {
			return err
		}
		for _, rr := range raws {
			byID[rr.ID] = rr
		}
	}
	reg := w.r.store.Registry()
	var applied, failed int
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT esox_retry`); err != nil {
			return err
		}
		var herr error
		if rr, ok := byID[id]; !ok {
			herr = fmt.Errorf("event %s is not in the events table", id)
		} else {
			var recs []eventstore.Record
			if recs, herr = decode(reg, w.types, rr, nil); herr == nil && len(recs) > 0 {
				herr = w.p.Handler.Handle(ctx, postgres.NewTx(tx), recs)
			}
		}
		if herr == nil {
			if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT esox_retry`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+w.r.t.deadLetters+` WHERE projection = $1 AND version = $2 AND event_id = $3`,
				w.p.Name, w.version, id); err != nil {
				return err
			}
			applied++
			w.log.InfoContext(ctx, "dead letter retried and applied", "event_id", id.String())
			continue
		}
		if postgres.IsTransient(herr) || ctx.Err() != nil {
			return herr
		}
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT esox_retry`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.deadLetters+` SET error = $4, retry_requested_at = NULL, retries = retries + 1, retried_at = now()
			WHERE projection = $1 AND version = $2 AND event_id = $3`, w.p.Name, w.version, id, herr.Error()); err != nil {
			return err
		}
		failed++
		w.log.WarnContext(ctx, "dead letter retried and failed again; it stays parked", "event_id", id.String(), "error", herr)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+w.r.t.checkpoints+` SET retry_requested = false, updated_at = now()
		WHERE projection = $1 AND version = $2 AND partition = $3`, w.p.Name, w.version, w.partition); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.log.InfoContext(ctx, "requested dead-letter retries performed", "applied", applied, "failed", failed)
	w.r.notifyAdvanced()
	return nil
}

// setIdleTimeout bounds the idle time of tx, as a batch's is (see
// Config.IdleInTransactionTimeout): a frozen process's transaction does
// not hold the checkpoint rows locked for long.
func (w *worker) setIdleTimeout(ctx context.Context, tx *sqlx.Tx) error {
	_, err := tx.ExecContext(ctx, `SELECT set_config('idle_in_transaction_session_timeout', $1, true)`,
		strconv.FormatInt(w.r.cfg.IdleInTransactionTimeout.Milliseconds(), 10)+"ms")
	return err
}

// skips reports whether rr is the event an operator asked the worker's
// partition to pass over (see Skip), and logs it.
func (w *worker) skips(ctx context.Context, cp checkpoint, rr eventstore.RawRecord) bool {
	if cp.skipID == uuid.Nil || rr.ID != cp.skipID {
		return false
	}
	w.log.WarnContext(ctx, "event skipped at an operator's request", "event_id", rr.ID.String(), "stream_id", rr.StreamID,
		"event_type", rr.Type, "position", rr.Position.String())
	return true
}
