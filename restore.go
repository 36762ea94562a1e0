package esox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/projector"
)

// RestoredTransactionID is the transaction id ResetAfterRestore gives the
// restored events. The smallest transaction id of a normal transaction is
// 3, so events renumbered to 1 come before every event the new cluster
// appends, and the feed reads them at once.
const RestoredTransactionID = 1

// RestoreBatchSizeDefault is RestoreOpts.BatchSize's default.
const RestoreBatchSizeDefault = 10000

// RestoreOpts tunes ResetAfterRestore. nil means all defaults.
type RestoreOpts struct {
	// DryRun computes the report without changing anything (and takes the
	// same locks, so it refuses while a leader runs just as a real run).
	DryRun bool
	// Progress, when set, is called as the renumbering goes, from
	// ResetAfterRestore's goroutine: with 0 and the number of events to
	// renumber before the first batch, then after each batch. Not called
	// when there is nothing to renumber, nor with DryRun.
	Progress func(done, total int64)
	// BatchSize is how many events one statement renumbers. Defaults to
	// RestoreBatchSizeDefault.
	BatchSize int
}

// RestoreReport is what ResetAfterRestore did (or, with DryRun, would do).
type RestoreReport struct {
	// Restored is true when the events table held events at or past this
	// cluster's next transaction id: a logical restore from another
	// cluster. False: nothing was changed (or needs to be).
	Restored bool
	// NextTransactionID is this cluster's next transaction id.
	NextTransactionID uint64
	// Events counts the events renumbered to RestoredTransactionID.
	Events int64
	// Checkpoints are the projection checkpoints moved, of every version
	// (live, building, retired) and partition.
	Checkpoints []RestoredCheckpoint
	// Offsets are the forwarder consumer groups' offsets moved.
	Offsets []RestoredOffset
	// DeadLetters counts the dead letters whose position was renumbered;
	// Skips the pending skips of an event (projector.Skip).
	DeadLetters, Skips int64
}

// RestoredCheckpoint is a projection checkpoint ResetAfterRestore moved.
type RestoredCheckpoint struct {
	Projection string
	Version    int
	Partition  int
	// Status is the version's: "live", "building" or "retired".
	Status string
	// From is the checkpoint before; To its place in the renumbered feed.
	From, To eventstore.Position
	// Exact is true when To covers exactly the events From did. When it
	// is false, the version's rebuild is requested (RebuildRequested;
	// projector.RequestRebuild), except for a retired version, which no
	// worker applies.
	Exact            bool
	RebuildRequested bool
}

// RestoredOffset is a forwarder consumer group's offset ResetAfterRestore
// moved.
type RestoredOffset struct {
	ConsumerGroup string
	From, To      eventstore.Position
	// Exact is true when To covers exactly the events From did; otherwise
	// To is before the first event the group had not published, and the
	// events after it are published again (consumers de-duplicate on the
	// message UUID, the event ID).
	Exact bool
}

// ErrLeaderRunning is matched by a *LeaderRunningError.
var ErrLeaderRunning = errors.New("esox: a leader is running")

// LeaderRunningError refuses an operation while a projection or forwarder
// leader runs in the schema, in any process. It matches ErrLeaderRunning.
type LeaderRunningError struct {
	// Jobs names the jobs whose leader runs, e.g. `projection "orders"
	// version 1` or `consumer group "ordering"`.
	Jobs []string
}

func (e *LeaderRunningError) Error() string {
	return "esox: refused: a leader is running (" + strings.Join(e.Jobs, ", ") + "): stop every instance of the service first"
}

// Is makes errors.Is(err, ErrLeaderRunning) true.
func (e *LeaderRunningError) Is(target error) bool { return target == ErrLeaderRunning }

// ResetAfterRestore makes store's schema usable again after a logical
// restore (pg_dump/pg_restore, or a copy) into another PostgreSQL cluster.
// The feed is ordered by (transaction_id, position), and transaction ids
// restart in a new cluster: without it, events appended after the restore
// would sort before the restored ones and behind every checkpoint, so
// projections and forwarders would silently stop (see docs/operations.md).
// A physical backup (pg_basebackup, point-in-time recovery) keeps the
// transaction ids and needs none of this.
//
// In one transaction, it:
//
//  1. refuses (a *LeaderRunningError, matching ErrLeaderRunning) while a
//     leader of any projection version, partition or consumer group of
//     the schema runs in any process, and holds their leader locks until
//     it commits, so none starts meanwhile; appends to the events table
//     wait for it too;
//  2. finds out whether there was a restore: an event whose transaction
//     id is at or past this cluster's next one. If none, it changes
//     nothing (so running it twice is safe). If so, every event not yet
//     renumbered counts as restored, also those whose old ids are below
//     the next one (the old and new ranges may straddle);
//  3. moves every projection checkpoint (every version: live, building
//     and retired; every partition), every consumer group's offset and
//     every pending skip and dead letter's position to the same place in
//     the renumbered feed, (RestoredTransactionID, position). That is
//     exact when the events a reader had passed form a prefix by
//     position, as they do when the readers had caught up at dump time.
//     Otherwise a projection version is rebuilt (its rebuild is
//     requested, performed by its leader when the service starts: exactly
//     once cannot be kept by guessing) and a consumer group goes back to
//     before the first event it had not published;
//  4. renumbers the restored events to RestoredTransactionID, in batches
//     of opts.BatchSize in feed order, calling opts.Progress, which keeps
//     their order by position (and each stream's order).
//
// Since it is one transaction, a run that fails or is interrupted changes
// nothing and can be run again. The inbox's recorded positions are left
// alone: they are positions in the publishing store's feed, which may be
// another database, and nothing compares them with this feed.
//
// Keep every instance of the service stopped from the restore until it
// has run: an event appended in between cannot be told from a restored
// one. ctx bounds the transaction. Database errors are wrapped. Safe for
// concurrent use (concurrent runs on one schema queue).
func ResetAfterRestore(ctx context.Context, store *postgres.Store, opts *RestoreOpts) (RestoreReport, error) {
	var o RestoreOpts
	if opts != nil {
		o = *opts
	}
	if o.BatchSize == 0 {
		o.BatchSize = RestoreBatchSizeDefault
	}
	if o.BatchSize < 0 {
		return RestoreReport{}, fmt.Errorf("esox: reset after restore: %w", &eventstore.InvalidArgumentError{Field: "BatchSize", Reason: "must not be negative"})
	}
	r := &restorer{store: store, opts: o, schema: store.Schema(), events: store.QualifiedEventsTable()}
	q := postgres.QuoteIdentifier(r.schema) + "."
	r.checkpoints = q + postgres.QuoteIdentifier(projector.CheckpointsTable)
	r.deadLetters = q + postgres.QuoteIdentifier(projector.DeadLettersTable)
	r.offsets = q + postgres.QuoteIdentifier(forwarder.OffsetsTable)
	rep, err := r.run(ctx)
	if err != nil {
		return rep, fmt.Errorf("esox: reset after restore: %w", err)
	}
	return rep, nil
}

type restorer struct {
	store                                     *postgres.Store
	opts                                      RestoreOpts
	schema                                    string
	events, checkpoints, deadLetters, offsets string
	tx                                        *sqlx.Tx
	hasCheckpoints, hasOffsets                bool
}

func (r *restorer) run(ctx context.Context) (RestoreReport, error) {
	var rep RestoreReport
	tx, err := r.store.DB().BeginTxx(ctx, nil)
	if err != nil {
		return rep, err
	}
	defer func() { _ = tx.Rollback() }()
	r.tx = tx
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, postgres.LockKey("esox:restore:"+r.schema)); err != nil {
		return rep, fmt.Errorf("lock the schema: %w", err)
	}
	for _, t := range []struct {
		name string
		has  *bool
	}{{r.checkpoints, &r.hasCheckpoints}, {r.offsets, &r.hasOffsets}} {
		if err := tx.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.name).Scan(t.has); err != nil {
			return rep, err
		}
	}
	if err := r.lockLeaders(ctx); err != nil {
		return rep, err
	}
	// Appends wait until the renumbering commits (reads go on).
	if _, err := tx.ExecContext(ctx, `LOCK TABLE `+r.events+` IN EXCLUSIVE MODE`); err != nil {
		return rep, fmt.Errorf("lock the events table: %w", err)
	}
	var next string
	if err := tx.QueryRowContext(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text`).Scan(&next); err != nil {
		return rep, fmt.Errorf("read the next transaction id: %w", err)
	}
	if rep.NextTransactionID, err = strconv.ParseUint(next, 10, 64); err != nil {
		return rep, fmt.Errorf("parse transaction id %q: %w", next, err)
	}
	var ahead bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+r.events+` WHERE transaction_id >= $1::xid8)`, next).Scan(&ahead); err != nil {
		return rep, fmt.Errorf("look for restored events: %w", err)
	}
	if !ahead {
		return rep, nil // no restore, or reset already: nothing to do
	}
	rep.Restored = true
	var total int64
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+r.events+` WHERE transaction_id <> $1::xid8`, strconv.Itoa(RestoredTransactionID)).Scan(&total); err != nil {
		return rep, fmt.Errorf("count restored events: %w", err)
	}
	if err := r.moveCheckpoints(ctx, &rep); err != nil {
		return rep, err
	}
	if err := r.moveOffsets(ctx, &rep); err != nil {
		return rep, err
	}
	if r.opts.DryRun {
		rep.Events = total
		return rep, nil // rolled back
	}
	if rep.Events, err = r.renumber(ctx, total); err != nil {
		return rep, err
	}
	if err := tx.Commit(); err != nil {
		return rep, fmt.Errorf("commit: %w", err)
	}
	return rep, nil
}

// lockLeaders takes the leader lock of every projection version partition
// and consumer group of the schema for the transaction, refusing when a
// leader holds one.
func (r *restorer) lockLeaders(ctx context.Context) error {
	var keys, jobs []string
	if r.hasCheckpoints {
		rows, err := r.tx.QueryContext(ctx, `SELECT projection, version, partition, partitions FROM `+r.checkpoints+` ORDER BY 1, 2, 3`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var name string
			var version, partition, partitions int
			if err := rows.Scan(&name, &version, &partition, &partitions); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, strconv.FormatInt(postgres.LockKey(projector.LeaderKey(r.schema, name, version, partition, partitions)), 10))
			job := fmt.Sprintf("projection %q version %d", name, version)
			if partitions > 1 {
				job += fmt.Sprintf(" partition %d", partition)
			}
			jobs = append(jobs, job)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	if r.hasOffsets {
		var groups []string
		if err := r.tx.SelectContext(ctx, &groups, `SELECT consumer_group FROM `+r.offsets+` ORDER BY 1`); err != nil {
			return err
		}
		for _, g := range groups {
			keys = append(keys, strconv.FormatInt(postgres.LockKey(forwarder.LeaderKey(r.schema, g)), 10))
			jobs = append(jobs, fmt.Sprintf("consumer group %q", g))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	var busy []int64
	if err := r.tx.SelectContext(ctx, &busy, `SELECT ord - 1 FROM unnest($1::text::bigint[]) WITH ORDINALITY AS k(key, ord)
		WHERE NOT pg_try_advisory_xact_lock(key) ORDER BY ord`, "{"+strings.Join(keys, ",")+"}"); err != nil {
		return fmt.Errorf("take the leader locks: %w", err)
	}
	if len(busy) == 0 {
		return nil
	}
	e := &LeaderRunningError{}
	for _, i := range busy {
		e.Jobs = append(e.Jobs, jobs[i])
	}
	return e
}

// moved returns the position in the renumbered feed equivalent to c, and
// whether it is exact: the events at or before c in the old feed order are
// exactly those at or before the returned position by position.
func (r *restorer) moved(ctx context.Context, c eventstore.Position) (eventstore.Position, bool, error) {
	var maxPassed, minPending sql.NullInt64
	txid := strconv.FormatUint(c.TransactionID, 10)
	if err := r.tx.QueryRowContext(ctx, `SELECT max(position) FROM `+r.events+` WHERE (transaction_id, position) <= ($1::xid8, $2::bigint)`, txid, c.Position).Scan(&maxPassed); err != nil {
		return eventstore.Position{}, false, err
	}
	if err := r.tx.QueryRowContext(ctx, `SELECT min(position) FROM `+r.events+` WHERE (transaction_id, position) > ($1::xid8, $2::bigint)`, txid, c.Position).Scan(&minPending); err != nil {
		return eventstore.Position{}, false, err
	}
	switch {
	case !maxPassed.Valid:
		return eventstore.Position{}, true, nil
	case !minPending.Valid || minPending.Int64 > maxPassed.Int64:
		return eventstore.Position{TransactionID: RestoredTransactionID, Position: maxPassed.Int64}, true, nil
	}
	return eventstore.Position{TransactionID: RestoredTransactionID, Position: minPending.Int64 - 1}, false, nil
}

// restored reports whether p is a position of the restored feed: neither
// the start nor already renumbered.
func restored(p eventstore.Position) bool {
	return !p.IsZero() && p.TransactionID != RestoredTransactionID
}

func (r *restorer) moveCheckpoints(ctx context.Context, rep *RestoreReport) error {
	if !r.hasCheckpoints {
		return nil
	}
	type row struct {
		name               string
		version, partition int
		status             string
		pos                eventstore.Position
	}
	rows, err := r.tx.QueryContext(ctx, `SELECT projection, version, partition, status, transaction_id::text AS txid, position
		FROM `+r.checkpoints+` ORDER BY projection, version, partition FOR UPDATE`)
	if err != nil {
		return fmt.Errorf("read the checkpoints: %w", err)
	}
	var cps []row
	for rows.Next() {
		var c row
		var txid string
		if err := rows.Scan(&c.name, &c.version, &c.partition, &c.status, &txid, &c.pos.Position); err != nil {
			rows.Close()
			return fmt.Errorf("read the checkpoints: %w", err)
		}
		if c.pos.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			rows.Close()
			return fmt.Errorf("parse transaction id %q: %w", txid, err)
		}
		cps = append(cps, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the checkpoints: %w", err)
	}
	rebuild := map[string]bool{} // "name@version" of the versions to rebuild
	for _, c := range cps {
		if !restored(c.pos) {
			continue
		}
		to, exact, err := r.moved(ctx, c.pos)
		if err != nil {
			return fmt.Errorf("move the checkpoint of %q version %d: %w", c.name, c.version, err)
		}
		status := map[string]string{"active": "live"}[c.status]
		if status == "" {
			status = c.status
		}
		rc := RestoredCheckpoint{Projection: c.name, Version: c.version, Partition: c.partition, Status: status, From: c.pos, To: to, Exact: exact}
		if !exact && c.status != "retired" {
			rebuild[c.name+"@"+strconv.Itoa(c.version)] = true
		}
		if _, err := r.tx.ExecContext(ctx, `UPDATE `+r.checkpoints+` SET transaction_id = $4::xid8, position = $5, updated_at = now()
			WHERE projection = $1 AND version = $2 AND partition = $3`,
			c.name, c.version, c.partition, strconv.FormatUint(to.TransactionID, 10), to.Position); err != nil {
			return fmt.Errorf("move the checkpoint of %q version %d: %w", c.name, c.version, err)
		}
		rep.Checkpoints = append(rep.Checkpoints, rc)
	}
	for i, c := range rep.Checkpoints {
		if !rebuild[c.Projection+"@"+strconv.Itoa(c.Version)] {
			continue
		}
		rep.Checkpoints[i].RebuildRequested = true
		if _, err := r.tx.ExecContext(ctx, `UPDATE `+r.checkpoints+` SET rebuild_requested = true, request_error = NULL, updated_at = now()
			WHERE projection = $1 AND version = $2`, c.Projection, c.Version); err != nil {
			return fmt.Errorf("request the rebuild of %q version %d: %w", c.Projection, c.Version, err)
		}
	}
	one := strconv.Itoa(RestoredTransactionID)
	// A pending skip names an event: its new place is exact.
	res, err := r.tx.ExecContext(ctx, `UPDATE `+r.checkpoints+` SET skip_transaction_id = $1::xid8 WHERE skip_transaction_id <> $1::xid8`, one)
	if err != nil {
		return fmt.Errorf("move the pending skips: %w", err)
	}
	rep.Skips, _ = res.RowsAffected()
	if res, err = r.tx.ExecContext(ctx, `UPDATE `+r.deadLetters+` SET transaction_id = $1::xid8 WHERE transaction_id <> $1::xid8`, one); err != nil {
		return fmt.Errorf("move the dead letters: %w", err)
	}
	rep.DeadLetters, _ = res.RowsAffected()
	return nil
}

func (r *restorer) moveOffsets(ctx context.Context, rep *RestoreReport) error {
	if !r.hasOffsets {
		return nil
	}
	rows, err := r.tx.QueryContext(ctx, `SELECT consumer_group, transaction_id::text AS txid, position FROM `+r.offsets+` ORDER BY 1 FOR UPDATE`)
	if err != nil {
		return fmt.Errorf("read the offsets: %w", err)
	}
	var offs []RestoredOffset
	for rows.Next() {
		var o RestoredOffset
		var txid string
		if err := rows.Scan(&o.ConsumerGroup, &txid, &o.From.Position); err != nil {
			rows.Close()
			return fmt.Errorf("read the offsets: %w", err)
		}
		if o.From.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			rows.Close()
			return fmt.Errorf("parse transaction id %q: %w", txid, err)
		}
		offs = append(offs, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the offsets: %w", err)
	}
	for _, o := range offs {
		if !restored(o.From) {
			continue
		}
		var err error
		if o.To, o.Exact, err = r.moved(ctx, o.From); err != nil {
			return fmt.Errorf("move the offset of %q: %w", o.ConsumerGroup, err)
		}
		if _, err := r.tx.ExecContext(ctx, `UPDATE `+r.offsets+` SET transaction_id = $2::text::xid8, position = $3, updated_at = now()
			WHERE consumer_group = $1`, o.ConsumerGroup, strconv.FormatUint(o.To.TransactionID, 10), o.To.Position); err != nil {
			return fmt.Errorf("move the offset of %q: %w", o.ConsumerGroup, err)
		}
		rep.Offsets = append(rep.Offsets, o)
	}
	return nil
}

// renumber gives every restored event RestoredTransactionID, batch after
// batch in feed order. Each batch is a range of the primary key after the
// last one, so no batch scans what an earlier one renumbered.
func (r *restorer) renumber(ctx context.Context, total int64) (int64, error) {
	one := strconv.Itoa(RestoredTransactionID)
	progress := func(done int64) {
		if r.opts.Progress != nil {
			r.opts.Progress(done, total)
		}
	}
	progress(0)
	// Renumbered events sort first: start after the last of them.
	afterTx, afterPos := one, strconv.FormatInt(1<<63-1, 10)
	var done int64
	for {
		var upTx sql.NullString
		var upPos sql.NullInt64
		err := r.tx.QueryRowContext(ctx, `SELECT transaction_id::text AS txid, position FROM `+r.events+`
			WHERE (transaction_id, position) > ($1::xid8, $2::bigint) ORDER BY transaction_id, position OFFSET $3 LIMIT 1`,
			afterTx, afterPos, r.opts.BatchSize-1).Scan(&upTx, &upPos)
		last := errors.Is(err, sql.ErrNoRows)
		if err != nil && !last {
			return done, fmt.Errorf("renumber restored events: %w", err)
		}
		var res sql.Result
		if last {
			res, err = r.tx.ExecContext(ctx, `UPDATE `+r.events+` SET transaction_id = $3::xid8
				WHERE (transaction_id, position) > ($1::xid8, $2::bigint)`, afterTx, afterPos, one)
		} else {
			res, err = r.tx.ExecContext(ctx, `UPDATE `+r.events+` SET transaction_id = $5::xid8
				WHERE (transaction_id, position) > ($1::xid8, $2::bigint) AND (transaction_id, position) <= ($3::xid8, $4::bigint)`,
				afterTx, afterPos, upTx.String, upPos.Int64, one)
		}
		if err != nil {
			return done, fmt.Errorf("renumber restored events: %w", err)
		}
		n, _ := res.RowsAffected()
		done += n
		progress(done)
		if last {
			return done, nil
		}
		afterTx, afterPos = upTx.String, strconv.FormatInt(upPos.Int64, 10)
	}
}
