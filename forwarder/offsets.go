package forwarder

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/google/uuid"
)

// offsetWriteTimeout bounds the offset write of a batch, which runs even
// after the leadership's context is cancelled.
const offsetWriteTimeout = 10 * time.Second

// startOffset creates the group's offset row at (0, 0) if it is missing and
// returns the stored offset.
func (f *Forwarder) startOffset(ctx context.Context) (eventstore.Position, error) {
	if _, err := f.db.ExecContext(ctx, `INSERT INTO `+f.offsets+` (consumer_group) VALUES ($1) ON CONFLICT (consumer_group) DO NOTHING`, f.cfg.ConsumerGroup); err != nil {
		return eventstore.Position{}, fmt.Errorf("create offset row: %w", err)
	}
	return f.Offset(ctx)
}

// batchTx is the transaction a batch holds under xidHoldingForTest, nil
// otherwise.
type batchTx = *sql.Tx

// holdXid opens, under xidHoldingForTest only, watermill-sql's default
// design: a transaction per batch that locks the offsets row FOR UPDATE and
// so holds a transaction id until the batch's offset is written. It returns
// nil otherwise.
func (f *Forwarder) holdXid(ctx context.Context) (batchTx, error) {
	if !f.xidHoldingForTest {
		return nil, nil
	}
	tx, err := f.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM `+f.offsets+` WHERE consumer_group = $1 FOR UPDATE`, f.cfg.ConsumerGroup); err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	return tx, nil
}

// recordOffset moves the group's offset forward to pos (a no-op for the
// zero Position or a pos not after the stored offset) in one autocommit
// statement, or in tx when the batch holds one. It is detached from ctx's
// cancellation (bounded by offsetWriteTimeout): when Run is stopped, the
// events the broker already confirmed are recorded, so a restart does not
// publish them again. A failure is logged at Warn: those events will be
// published again by the next leader.
func (f *Forwarder) recordOffset(ctx context.Context, tx batchTx, pos eventstore.Position) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), offsetWriteTimeout)
	defer cancel()
	err := f.writeOffset(wctx, tx, pos)
	if tx != nil {
		if err == nil {
			err = tx.Commit()
		} else {
			_ = tx.Rollback()
		}
	}
	if err != nil {
		f.log.WarnContext(ctx, "recording the offset of published events failed; the next batch records it, or the next leader publishes them again",
			"position", pos.String(), "error", err.Error())
	}
}

func (f *Forwarder) writeOffset(ctx context.Context, tx batchTx, pos eventstore.Position) error {
	if pos.IsZero() {
		return nil
	}
	exec := f.db.ExecContext
	if tx != nil {
		exec = tx.ExecContext
	}
	// The write commits without waiting for its WAL flush
	// (synchronous_commit off for this transaction only): an offset lost
	// in a server crash only means the next leader publishes those events
	// again, which at-least-once allows, and the forwarder does not wait
	// for a disk flush per batch.
	_, err := exec(ctx, `WITH async AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE `+f.offsets+` SET transaction_id = $1::text::xid8, position = $2, updated_at = now()
FROM async
WHERE consumer_group = $3 AND (transaction_id, position) < ($1::text::xid8, $2::bigint)`,
		strconv.FormatUint(pos.TransactionID, 10), pos.Position, f.cfg.ConsumerGroup)
	if err != nil {
		return fmt.Errorf("write offset: %w", err)
	}
	return nil
}

// MalformedRowError reports an events-table row the forwarder cannot turn
// into a message (its metadata is not a JSON object). The forwarder never
// skips such a row: Run stops with this error. It matches ErrPoison.
type MalformedRowError struct {
	Position eventstore.Position
	EventID  uuid.UUID
	Err      error
}

func (e *MalformedRowError) Error() string {
	return fmt.Sprintf("forwarder: malformed event row at position %s (event %s): %v", e.Position, e.EventID, e.Err)
}

// Unwrap returns the parse error.
func (e *MalformedRowError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrPoison) true.
func (e *MalformedRowError) Is(target error) bool { return target == ErrPoison }
