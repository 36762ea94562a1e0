package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// Rebuild resets the live version of projection in place and makes the
// runner replay the feed into it: in one transaction it sets the
// checkpoint of every partition back to the start of the feed (marking it
// rebuilding), runs the projection's Reset and clears its dead letters.
// The workers, in this or another process, notice at their next batch (the
// checkpoint compare-and-set fails) or, when idle, within
// Config.LeaderRetryInterval (at once in this process), and replay; Status
// reports StateRebuilding until each partition has caught up. The
// partition count stays: to change it, deploy a new Version (see
// Projection.Partitions).
//
// Readers see the model empty, then filling. To rebuild without that, deploy
// a new Version instead (blue/green, see Projection.Version). A stopped
// projection restarts with the rebuild.
//
// It needs the runner to hold the live version (for its Reset); Run need not
// be running. Without the runner (the esox command), RequestRebuild asks
// the version's leader to do the same. ctx bounds the transaction. Errors match
// eventstore.ErrInvalidArgument for an unknown projection, a live version
// this runner does not have, or a missing Reset; others wrap the database's
// or Reset's.
func (r *Runner) Rebuild(ctx context.Context, projection string) error {
	ws := r.workersNamed(projection)
	if len(ws) == 0 {
		return r.unknown(projection)
	}
	tx, err := r.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("projector: rebuild %q: %w", projection, err)
	}
	defer func() { _ = tx.Rollback() }()
	// Every partition of the live version back to the start.
	var version int
	err = tx.QueryRowContext(ctx, `WITH reset AS (
		UPDATE `+r.t.checkpoints+` SET transaction_id = '0', position = 0, rebuilding = true,
			stopped = false, last_error = NULL, error_at = NULL, error_event_id = NULL, updated_at = now(),
			rebuild_requested = false, retry_requested = false, request_error = NULL,
			skip_event_id = NULL, skip_transaction_id = NULL, skip_position = NULL
		WHERE projection = $1 AND status = 'active' RETURNING version)
		SELECT version FROM reset LIMIT 1`, projection).Scan(&version)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("projector: rebuild %q: %w", projection, &eventstore.InvalidArgumentError{Field: "projection", Reason: "no live version is registered (run Migrate or Run first)"})
	}
	if err != nil {
		return fmt.Errorf("projector: rebuild %q: %w", projection, err)
	}
	var w *worker
	for _, c := range ws {
		if c.version == version && c.partition == 0 {
			w = c
		}
	}
	if w == nil {
		return fmt.Errorf("projector: rebuild %q: %w", projection, &eventstore.InvalidArgumentError{Field: "projection", Reason: fmt.Sprintf("the live version is %d, which this runner does not have", version)})
	}
	if w.p.Reset == nil {
		return fmt.Errorf("projector: rebuild %q: %w", projection, &eventstore.InvalidArgumentError{Field: "Reset", Reason: "the projection has no Reset func"})
	}
	if err := w.p.Reset(ctx, postgres.NewTx(tx)); err != nil {
		return fmt.Errorf("projector: rebuild %q: reset: %w", projection, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM `+r.t.deadLetters+` WHERE projection = $1 AND version = $2`, projection, version); err != nil {
		return fmt.Errorf("projector: rebuild %q: clear dead letters: %w", projection, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projector: rebuild %q: commit: %w", projection, err)
	}
	r.log.InfoContext(ctx, "projection reset for rebuild", "projection", projection, "version", version)
	for _, w := range ws {
		w.signalReload()
	}
	return nil
}

// Resume restarts the versions (partitions) of projection that stopped
// with an error (StateStoppedWithError), in this and other processes,
// after the cause is fixed: it clears their stopped flag and each worker
// retries its failed batch, at once in this process and within
// Config.LeaderRetryInterval in others. A process restart retries too. ctx bounds the
// update. Errors match eventstore.ErrInvalidArgument for an unknown
// projection, or wrap the database's.
func (r *Runner) Resume(ctx context.Context, projection string) error {
	ws := r.workersNamed(projection)
	if len(ws) == 0 {
		return r.unknown(projection)
	}
	if _, err := r.db.ExecContext(ctx, `UPDATE `+r.t.checkpoints+` SET stopped = false, updated_at = now()
		WHERE projection = $1 AND stopped`, projection); err != nil {
		return fmt.Errorf("projector: resume %q: %w", projection, err)
	}
	for _, w := range ws {
		w.signalReload()
	}
	return nil
}

// SetCheckpoint moves the live version's checkpoint of projection (of
// every partition) to pos without touching its tables: the runner goes on
// from the record after pos.
// It is an operator's tool, to skip or replay deliberately; the package
// function SetCheckpoint does the same without the runner (for any
// version and partition, refusing positions after the feed's head), and
// esox.ResetAfterRestore moves every checkpoint after a dump and restore.
// A leader running meanwhile, in any process, notices through its
// compare-and-set. ctx bounds the update. Errors match
// eventstore.ErrInvalidArgument for an unknown projection, or wrap the
// database's.
func (r *Runner) SetCheckpoint(ctx context.Context, projection string, pos eventstore.Position) error {
	ws := r.workersNamed(projection)
	if len(ws) == 0 {
		return r.unknown(projection)
	}
	if pos.Position < 0 {
		return fmt.Errorf("projector: set checkpoint: %w", &eventstore.InvalidArgumentError{Field: "pos", Reason: "position must not be negative"})
	}
	res, err := r.db.ExecContext(ctx, `UPDATE `+r.t.checkpoints+` SET transaction_id = $2::xid8, position = $3, updated_at = now()
		WHERE projection = $1 AND status = 'active'`, projection, strconv.FormatUint(pos.TransactionID, 10), pos.Position)
	if err != nil {
		return fmt.Errorf("projector: set checkpoint of %q: %w", projection, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("projector: set checkpoint of %q: %w", projection, &eventstore.InvalidArgumentError{Field: "projection", Reason: "no live version is registered (run Migrate or Run first)"})
	}
	r.log.WarnContext(ctx, "projection checkpoint set by hand", "projection", projection, "position", pos.String())
	for _, w := range ws {
		w.signalReload()
	}
	return nil
}
