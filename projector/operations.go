package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// This file holds the operations on projections that need none of the
// application's code: what the esox command and an admin endpoint call,
// from any process, while the application runs. They read and write the
// checkpoint rows. What needs the projection's code (a rebuild's Reset, a
// retry's Handler) is recorded as a request that the leading worker of the
// version performs (requests.go); the rest is fenced by the workers'
// compare-and-set on their checkpoint: a leader that applies a batch while
// an operation moves its checkpoint fails the compare-and-set, re-reads
// the row and goes on from the new position.

// Target selects the projection version, and optionally the partitions of
// it, an operation acts on.
type Target struct {
	// Projection is the projection's name. Required.
	Projection string
	// Version is the projection version; 0 means the live one.
	Version int
	// Partitions limits the operation to these partitions of the version
	// (see Projection.Partitions); empty means every partition.
	Partitions []int
}

// ErrProjectionNotFound is matched by a *ProjectionNotFoundError.
var ErrProjectionNotFound = errors.New("projector: projection not found")

// ProjectionNotFoundError reports a projection, version or partition that
// has no checkpoint in the schema: no runner has registered it. It matches
// ErrProjectionNotFound.
type ProjectionNotFoundError struct {
	// Projection is the name asked for.
	Projection string
	// Version is the version asked for; 0 when the projection itself has
	// no checkpoint.
	Version int
	// Partition is the partition asked for when Partitions is not zero:
	// the version has Partitions partitions, and not this one.
	Partition, Partitions int
	// Known lists the schema's projections (when the projection is
	// unknown) or the projection's versions, in order.
	Known []string
}

func (e *ProjectionNotFoundError) Error() string {
	switch {
	case e.Partitions > 0:
		return fmt.Sprintf("projector: projection %q version %d has no partition %d (its partitions are 0 to %d)", e.Projection, e.Version, e.Partition, e.Partitions-1)
	case e.Version > 0:
		return fmt.Sprintf("projector: projection %q has no version %d (versions: %s)", e.Projection, e.Version, strings.Join(e.Known, ", "))
	}
	known := "none: no runner has registered a projection in this schema"
	if len(e.Known) > 0 {
		known = strings.Join(e.Known, ", ")
	}
	return fmt.Sprintf("projector: projection %q not found (known projections: %s)", e.Projection, known)
}

// Is makes errors.Is(err, ErrProjectionNotFound) true.
func (e *ProjectionNotFoundError) Is(target error) bool { return target == ErrProjectionNotFound }

// LeaderKey returns the leader-election key of a partition of a projection
// version in schema, as its leader holds it (hashed with postgres.LockKey)
// on its lock session: "esox:projector:<schema>:<name>:v<version>",
// followed by ":p<partition>" when the version has more than one
// partition. postgres.LockHeld with it tells whether a leader runs.
func LeaderKey(schema, projection string, version, partition, partitions int) string {
	k := "esox:projector:" + schema + ":" + projection + ":v" + strconv.Itoa(version)
	if partitions > 1 {
		k += ":p" + strconv.Itoa(partition)
	}
	return k
}

// row is one checkpoint row with its key.
type row struct {
	projection            string
	version               int
	partition, partitions int
	checkpoint
}

func (r row) leaderKey(schema string) string {
	return LeaderKey(schema, r.projection, r.version, r.partition, r.partitions)
}

const rowColumns = `projection, version, partition, partitions, ` + checkpointColumns

// readRows returns the checkpoint rows of projection (of every projection
// when it is empty) in name, version and partition order; with forUpdate,
// locked (q must then be a transaction). A schema without the checkpoints
// table has none.
func readRows(ctx context.Context, q sqlx.QueryerContext, t tables, projection string, forUpdate bool) ([]row, error) {
	lock := ""
	if forUpdate {
		lock = " FOR UPDATE"
	}
	rs, err := q.QueryContext(ctx, `SELECT `+rowColumns+` FROM `+t.checkpoints+`
		WHERE $1 = '' OR projection = $1 ORDER BY projection, version, partition`+lock, projection)
	if postgres.IsUndefinedTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		r.checkpoint, err = scanCheckpoint(scanFunc(func(dest ...any) error {
			return rs.Scan(append([]any{&r.projection, &r.version, &r.partition, &r.partitions}, dest...)...)
		}))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// notFound returns the *ProjectionNotFoundError of an unknown projection,
// listing the known ones.
func notFound(ctx context.Context, q sqlx.QueryerContext, t tables, projection string) error {
	e := &ProjectionNotFoundError{Projection: projection}
	err := sqlx.SelectContext(ctx, q, &e.Known, `SELECT DISTINCT projection FROM `+t.checkpoints+` ORDER BY projection`)
	if err != nil && !postgres.IsUndefinedTable(err) {
		return fmt.Errorf("projector: list projections: %w", err)
	}
	return e
}

// selectTarget returns the rows of rows (a projection's, in version and
// partition order) that target selects.
func selectTarget(rows []row, target Target) ([]row, error) {
	version := target.Version
	if version < 0 {
		return nil, &eventstore.InvalidArgumentError{Field: "Version", Reason: fmt.Sprintf("must not be negative (0: the live version), got %d", version)}
	}
	if version == 0 {
		i := slices.IndexFunc(rows, func(r row) bool { return r.status == statusActive })
		if i < 0 {
			return nil, &eventstore.InvalidArgumentError{Field: "Version", Reason: fmt.Sprintf("projection %q has no live version (%s): name the version", target.Projection, versionList(rows))}
		}
		version = rows[i].version
	}
	var sel []row
	for _, r := range rows {
		if r.version == version {
			sel = append(sel, r)
		}
	}
	if len(sel) == 0 {
		return nil, &ProjectionNotFoundError{Projection: target.Projection, Version: version, Known: strings.Split(versionList(rows), ", ")}
	}
	if len(target.Partitions) == 0 {
		return sel, nil
	}
	var out []row
	for _, p := range target.Partitions {
		if p < 0 || p >= sel[0].partitions {
			return nil, &ProjectionNotFoundError{Projection: target.Projection, Version: version, Partition: p, Partitions: sel[0].partitions}
		}
		if !slices.ContainsFunc(out, func(r row) bool { return r.partition == p }) {
			out = append(out, sel[slices.IndexFunc(sel, func(r row) bool { return r.partition == p })])
		}
	}
	slices.SortFunc(out, func(a, b row) int { return a.partition - b.partition })
	return out, nil
}

// versionList describes a projection's versions: "1 (retired), 2 (live)".
func versionList(rows []row) string {
	var out []string
	for _, r := range rows {
		if r.partition != 0 {
			continue
		}
		s := strconv.Itoa(r.version)
		switch r.status {
		case statusActive:
			s += " (live)"
		default:
			s += " (" + r.status + ")"
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// target reads, in tx and locked, the rows target selects, refusing an
// unknown projection, version or partition.
func lockTarget(ctx context.Context, tx *sqlx.Tx, t tables, target Target) ([]row, error) {
	if err := postgres.ValidateIdentifier(target.Projection); err != nil {
		return nil, fmt.Errorf("projection name: %w", err)
	}
	rows, err := readRows(ctx, tx, t, target.Projection, true)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, notFound(ctx, tx, t, target.Projection)
	}
	return selectTarget(rows, target)
}

// ListProjections returns the status of every partition of every
// projection version registered in store's schema, in name, version and
// partition order; none when the projector's tables do not exist. It reads
// the checkpoints, dead letters, the feed's head, each partition's lag and
// pg_locks (whether a leader runs: LeaderRunning), and writes nothing, so
// the application's role may call it. Leading, DatabaseError and
// DatabaseErrors, which only a runner's own process knows, are zero, and
// StateCatchingUp is judged against BatchSizeDefault. ctx bounds the
// reads; database errors are wrapped. Safe for concurrent use.
func ListProjections(ctx context.Context, store *postgres.Store) ([]ProjectionStatus, error) {
	return readStatus(ctx, store, "")
}

// ReadProjection returns the status of every partition of every version of
// projection (see ListProjections). A projection without a checkpoint
// returns a *ProjectionNotFoundError (ErrProjectionNotFound) listing the
// known ones. ctx bounds the reads. Safe for concurrent use.
func ReadProjection(ctx context.Context, store *postgres.Store, projection string) ([]ProjectionStatus, error) {
	if err := postgres.ValidateIdentifier(projection); err != nil {
		return nil, fmt.Errorf("projector: read projection: name: %w", err)
	}
	st, err := readStatus(ctx, store, projection)
	if err != nil {
		return nil, err
	}
	if len(st) == 0 {
		return nil, notFound(ctx, store.DB(), tablesIn(store.Schema()), projection)
	}
	return st, nil
}

func readStatus(ctx context.Context, store *postgres.Store, projection string) ([]ProjectionStatus, error) {
	t := tablesIn(store.Schema())
	rows, err := readRows(ctx, store.DB(), t, projection, false)
	if err != nil {
		return nil, fmt.Errorf("projector: read status: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	head, err := store.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("projector: read status: %w", err)
	}
	out := make([]ProjectionStatus, 0, len(rows))
	for _, r := range rows {
		s := ProjectionStatus{Name: r.projection, Version: r.version, Partition: r.partition, Partitions: r.partitions, Head: head}
		held, err := postgres.LockHeld(ctx, store.DB(), r.leaderKey(t.schema))
		if err != nil {
			return nil, fmt.Errorf("projector: read status: %w", err)
		}
		if err := fillStatus(ctx, store, t, &s, r.checkpoint, held, nil, BatchSizeDefault); err != nil {
			return nil, fmt.Errorf("projector: status of %q version %d partition %d: %w", r.projection, r.version, r.partition, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// RequestRebuild asks the processes running projection version
// target.Version (0: the live one) to rebuild it: the leading worker of
// the version, in whichever process, runs its Reset, sets every partition
// back to the start of the feed and clears its dead letters, in one
// transaction, and the version replays (StateRebuilding until each
// partition has caught up). Until then its Status is
// StateRebuildRequested; a leader sees the request within
// Config.LeaderRetryInterval (at once when it applies a batch: the
// request fences it). A version no process runs is rebuilt when one
// starts. Should the leader be unable to (no Reset func, Reset failing)
// it clears the request and its Status says why (RequestError).
//
// It needs none of the projection's code: it is Runner.Rebuild for a
// caller without the runner, such as the esox command. It returns the
// version it asked to rebuild. A rebuild resets every partition of a
// version, so target.Partitions must be empty. Errors: a
// *ProjectionNotFoundError (ErrProjectionNotFound) for an unknown
// projection or version, eventstore.ErrInvalidArgument for partitions, a
// retired version or none live; database errors wrapped. ctx bounds the
// transaction. Safe for concurrent use.
func RequestRebuild(ctx context.Context, store *postgres.Store, target Target) (int, error) {
	fail := func(err error) (int, error) {
		return 0, fmt.Errorf("projector: request a rebuild of %q: %w", target.Projection, err)
	}
	if len(target.Partitions) > 0 {
		return fail(&eventstore.InvalidArgumentError{Field: "Partitions", Reason: "a rebuild resets every partition of the version (its Reset empties all of its tables): name no partition"})
	}
	t := tablesIn(store.Schema())
	tx, err := store.DB().BeginTxx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := lockTarget(ctx, tx, t, target)
	if err != nil {
		return fail(err)
	}
	if rows[0].status == statusRetired {
		return fail(&eventstore.InvalidArgumentError{Field: "Version", Reason: fmt.Sprintf("version %d is retired: rebuild the live version, or deploy a new one", rows[0].version)})
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+t.checkpoints+` SET rebuild_requested = true, request_error = NULL, updated_at = now()
		WHERE projection = $1 AND version = $2`, target.Projection, rows[0].version); err != nil {
		return fail(err)
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return rows[0].version, nil
}

// Resume restarts the partitions of projection version target.Version (0:
// the live one) that stopped with an error, after the cause is fixed: it
// clears their stopped flag, and each one's leader, in whichever process,
// retries its failed batch within Config.LeaderRetryInterval. It returns
// the partitions it resumed (none when none had stopped). It is
// Runner.Resume for a caller without the runner, for one version.
// Errors: a *ProjectionNotFoundError for an unknown projection, version
// or partition; database errors wrapped. ctx bounds the transaction. Safe
// for concurrent use.
func Resume(ctx context.Context, store *postgres.Store, target Target) ([]int, error) {
	fail := func(err error) ([]int, error) {
		return nil, fmt.Errorf("projector: resume %q: %w", target.Projection, err)
	}
	t := tablesIn(store.Schema())
	tx, err := store.DB().BeginTxx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := lockTarget(ctx, tx, t, target)
	if err != nil {
		return fail(err)
	}
	var resumed []int
	for _, r := range rows {
		if !r.stopped {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+t.checkpoints+` SET stopped = false, updated_at = now()
			WHERE projection = $1 AND version = $2 AND partition = $3`, r.projection, r.version, r.partition); err != nil {
			return fail(err)
		}
		resumed = append(resumed, r.partition)
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return resumed, nil
}

// CheckpointChange is a checkpoint SetCheckpoint moved.
type CheckpointChange struct {
	Projection string
	Version    int
	Partition  int
	// From is the checkpoint before, To after.
	From, To eventstore.Position
}

// SetCheckpointOpts tunes SetCheckpoint. nil means all defaults.
type SetCheckpointOpts struct {
	// OnlyForward refuses a position before a selected partition's
	// checkpoint: the move can skip events, never apply them again.
	OnlyForward bool
}

// SetCheckpoint moves the checkpoint of the selected partitions of
// projection version target.Version (0: the live one) to pos without
// touching the projection's tables, and returns the moves: each
// partition's leader goes on from the record after pos. An earlier
// position applies the events after it again (their effect doubles unless
// the handler is idempotent); a later one skips events, whose effect is
// lost. It is an operator's tool, e.g. to skip a stretch of the feed
// deliberately; for one event, use Skip.
//
// It is safe while the projection runs: a leader applying a batch when
// the checkpoint moves fails its compare-and-set, re-reads the row and
// goes on from pos, and an idle one re-reads it within
// Config.LeaderRetryInterval; the batch in flight, if any, commits before
// the move (the move waits for its row lock) and nothing of it is lost to
// a later batch.
//
// Refused, changing nothing: an unknown projection, version or partition
// (a *ProjectionNotFoundError), a retired version, a negative position, a
// position after the feed's head (e.g. one from before a logical restore,
// whose transaction ids are ahead of the new cluster's: the projection
// would skip every event until the feed caught up), and, with
// opts.OnlyForward, a position before a partition's checkpoint; those
// match eventstore.ErrInvalidArgument. ctx bounds the reads and the
// transaction. Safe for concurrent use.
func SetCheckpoint(ctx context.Context, store *postgres.Store, target Target, pos eventstore.Position, opts *SetCheckpointOpts) ([]CheckpointChange, error) {
	fail := func(err error) ([]CheckpointChange, error) {
		return nil, fmt.Errorf("projector: set the checkpoint of %q: %w", target.Projection, err)
	}
	var o SetCheckpointOpts
	if opts != nil {
		o = *opts
	}
	if pos.Position < 0 {
		return fail(&eventstore.InvalidArgumentError{Field: "position", Reason: fmt.Sprintf("must not be negative, got %d", pos.Position)})
	}
	head, err := store.Head(ctx)
	if err != nil {
		return fail(err)
	}
	if head.Less(pos) {
		return fail(&eventstore.InvalidArgumentError{Field: "position",
			Reason: fmt.Sprintf("%s is after the feed's head %s: the projection would skip every event until the feed reaches it (after a logical restore, transaction ids restart: take positions from the restored feed)", pos, head)})
	}
	t := tablesIn(store.Schema())
	tx, err := store.DB().BeginTxx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := lockTarget(ctx, tx, t, target)
	if err != nil {
		return fail(err)
	}
	if rows[0].status == statusRetired {
		return fail(&eventstore.InvalidArgumentError{Field: "Version", Reason: fmt.Sprintf("version %d is retired: no worker applies it any more", rows[0].version)})
	}
	var out []CheckpointChange
	for _, r := range rows {
		if o.OnlyForward && pos.Less(r.pos) {
			return fail(&eventstore.InvalidArgumentError{Field: "position",
				Reason: fmt.Sprintf("%s is before the checkpoint %s of partition %d: skipping moves forward only (set the checkpoint to apply events again)", pos, r.pos, r.partition)})
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+t.checkpoints+` SET transaction_id = $4::xid8, position = $5, updated_at = now()
			WHERE projection = $1 AND version = $2 AND partition = $3`,
			r.projection, r.version, r.partition, strconv.FormatUint(pos.TransactionID, 10), pos.Position); err != nil {
			return fail(err)
		}
		out = append(out, CheckpointChange{Projection: r.projection, Version: r.version, Partition: r.partition, From: r.pos, To: pos})
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return out, nil
}

// SkippedEvent is an event Skip asked a partition to pass over.
type SkippedEvent struct {
	Projection string
	Version    int
	// Partition is the partition whose stream the event is on.
	Partition int
	// Event is the event, as stored.
	Event eventstore.RawRecord
}

// Skip asks the leader of projection version target.Version (0: the live
// one) to pass over one event without applying it: eventID, or, when it is
// uuid.Nil, the event each selected partition stopped on (its handler
// named the event: see ProjectionStatus.ErrorEvent). The leader applies
// the feed as usual up to the event and moves its checkpoint past it,
// applying what comes before and after it; a partition stopped with an
// error resumes. The request is recorded on the checkpoint row of the
// event's partition, fences its batches, and is done once the checkpoint
// passes the event (ProjectionStatus.SkipEvent until then). It returns
// the events it asked to skip.
//
// Refused, changing nothing (eventstore.ErrInvalidArgument unless said):
// an unknown projection, version or partition (*ProjectionNotFoundError),
// a retired version, an event ID that is not stored, an event the
// partition's checkpoint has passed already, another event's skip still
// pending on the partition, and, without eventID, a selected partition
// that is not stopped on a named event. ctx bounds the reads and the
// transaction. Safe for concurrent use.
func Skip(ctx context.Context, store *postgres.Store, target Target, eventID uuid.UUID) ([]SkippedEvent, error) {
	fail := func(err error) ([]SkippedEvent, error) {
		return nil, fmt.Errorf("projector: skip an event of %q: %w", target.Projection, err)
	}
	t := tablesIn(store.Schema())
	tx, err := store.DB().BeginTxx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := lockTarget(ctx, tx, t, target)
	if err != nil {
		return fail(err)
	}
	if rows[0].status == statusRetired {
		return fail(&eventstore.InvalidArgumentError{Field: "Version", Reason: fmt.Sprintf("version %d is retired: no worker applies it any more", rows[0].version)})
	}
	// Which event for which partition.
	var ids []uuid.UUID
	if eventID != uuid.Nil {
		ids = []uuid.UUID{eventID}
	} else {
		for _, r := range rows {
			if !r.stopped || !r.errorEvent.Valid {
				reason := fmt.Sprintf("partition %d is not stopped: name the event to skip", r.partition)
				if r.stopped {
					reason = fmt.Sprintf("partition %d stopped without naming the event it failed on (a handler that is not Records or Handlers): name the event to skip", r.partition)
				}
				if len(rows) == 1 && r.partitions == 1 {
					reason = strings.Replace(reason, fmt.Sprintf("partition %d", r.partition), "the projection", 1)
				}
				return fail(&eventstore.InvalidArgumentError{Field: "event", Reason: reason})
			}
			ids = append(ids, r.errorEvent.UUID)
		}
	}
	raws, err := store.LookupRawEvents(ctx, ids)
	if err != nil {
		return fail(err)
	}
	var out []SkippedEvent
	for _, id := range ids {
		i := slices.IndexFunc(raws, func(rr eventstore.RawRecord) bool { return rr.ID == id })
		if i < 0 {
			return fail(&eventstore.InvalidArgumentError{Field: "event", Reason: fmt.Sprintf("no event %s is stored", id)})
		}
		rr := raws[i]
		part := PartitionOf(rr.StreamID, rows[0].partitions)
		j := slices.IndexFunc(rows, func(r row) bool { return r.partition == part })
		if j < 0 {
			return fail(&eventstore.InvalidArgumentError{Field: "event", Reason: fmt.Sprintf("event %s (stream %q) belongs to partition %d, which is not selected", id, rr.StreamID, part)})
		}
		r := rows[j]
		switch {
		case rr.Position.Compare(r.pos) <= 0:
			return fail(&eventstore.InvalidArgumentError{Field: "event", Reason: fmt.Sprintf("event %s at %s is not after the checkpoint %s of partition %d: it was applied or passed already", id, rr.Position, r.pos, part)})
		case r.skipID != uuid.Nil && r.skipID != id:
			return fail(&eventstore.InvalidArgumentError{Field: "event", Reason: fmt.Sprintf("partition %d has a skip of event %s pending: wait until its checkpoint passes it", part, r.skipID)})
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+t.checkpoints+` SET skip_event_id = $4, skip_transaction_id = $5::xid8, skip_position = $6,
			stopped = false, updated_at = now() WHERE projection = $1 AND version = $2 AND partition = $3`,
			r.projection, r.version, r.partition, id, strconv.FormatUint(rr.Position.TransactionID, 10), rr.Position.Position); err != nil {
			return fail(err)
		}
		out = append(out, SkippedEvent{Projection: r.projection, Version: r.version, Partition: r.partition, Event: rr})
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return out, nil
}
