package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// State is what a projection version is doing, as reported by Status.
type State string

// The states of a projection version.
const (
	// StateRunning: live and close to the head of the feed.
	StateRunning State = "running"
	// StateCatchingUp: live and at least one batch behind.
	StateCatchingUp State = "catching_up"
	// StateRebuilding: replaying from the start after Rebuild, or a newer
	// version filling beside the live one (blue/green).
	StateRebuilding State = "rebuilding"
	// StateStoppedWithError: its handler kept failing; see LastError.
	StateStoppedWithError State = "stopped_with_error"
	// StateRetired: replaced by a newer live version; no longer applied.
	StateRetired State = "retired"
	// StateNotRunning: no process currently works on it (none holds its
	// leader lock).
	StateNotRunning State = "not_running"
	// StateNotRegistered: it has no checkpoint yet: neither Runner.Migrate
	// nor Runner.Run has run with it.
	StateNotRegistered State = "not_registered"
	// StateRebuildRequested: RequestRebuild asked for a rebuild, which the
	// version's leader has not performed yet (see LeaderRunning).
	StateRebuildRequested State = "rebuild_requested"
)

// ProjectionStatus reports one projection version, or one partition of it
// (see Projection.Partitions).
type ProjectionStatus struct {
	Name    string
	Version int
	// Partition is the partition reported, 0 .. Partitions-1; Partitions
	// is the version's partition count (1 for a projection that is not
	// partitioned).
	Partition, Partitions int
	// Live is true for the version readers see (Activate ran for it, or it
	// is the only version).
	Live bool
	// State is what it is doing now.
	State State
	// Checkpoint is the feed position of the last record applied (the zero
	// Position before the first); for a partition, the last record it
	// read, whether its stream belongs to the partition or not.
	Checkpoint eventstore.Position
	// Head is the last position of the feed visible to readers.
	Head eventstore.Position
	// LagEvents approximates the records not yet applied: the difference
	// of the head's and the checkpoint's positions, 0 when caught up. It
	// can be off by the positions of rolled-back appends and of
	// transactions that commit out of position order.
	LagEvents int64
	// Lag is the age of the oldest record not yet applied (by the
	// database's clock), 0 when caught up.
	Lag time.Duration
	// LastError is the handler error that stopped it, if StateStoppedWithError.
	LastError string
	// ErrorAt is when LastError was recorded.
	ErrorAt time.Time
	// DeadLetters counts its (the partition's) parked events.
	DeadLetters int64
	// DatabaseError is the last database error this process's worker met,
	// while it leads the projection and retries after it (empty otherwise):
	// a projection stuck on a database problem shows here, not only in the
	// logs. DatabaseErrors counts those errors in a row.
	DatabaseError  string
	DatabaseErrors int
	// Leading is true when this process is the one working on it (on the
	// partition).
	Leading bool
	// LeaderRunning is true when some process, this one or another, leads
	// it (holds its leader lock, keyed by LeaderKey).
	LeaderRunning bool
	// Rebuilding is true while it replays the feed after a rebuild, until
	// it has caught up.
	Rebuilding bool
	// RebuildRequested and RetryRequested are true while a request of
	// RequestRebuild or RetryDeadLetters waits for the leader to perform
	// it; RequestError says why the leader could not perform the last
	// one (a Reset missing or failing).
	RebuildRequested, RetryRequested bool
	RequestError                     string
	// SkipEvent is the event Skip asked it to pass over, until its
	// checkpoint has (uuid.Nil: none).
	SkipEvent uuid.UUID
	// ErrorEvent is the event its handler failed on when it stopped, when
	// the handler named it (Records and Handlers do): Skip without an
	// event ID passes over this one.
	ErrorEvent uuid.UUID
	// UpdatedAt is when its checkpoint row last changed.
	UpdatedAt time.Time
}

// Status reports every projection version of the runner, one entry per
// partition, in name, version and partition order, from the database (so
// it is right whichever process does the work) and this process's own
// view. Each entry costs a few index lookups. ctx bounds the queries;
// errors wrap the database's.
func (r *Runner) Status(ctx context.Context) ([]ProjectionStatus, error) {
	head, err := r.store.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("projector: status: %w", err)
	}
	out := make([]ProjectionStatus, 0, len(r.workers))
	for _, w := range r.workers {
		s, err := r.status(ctx, w, head)
		if err != nil {
			return nil, fmt.Errorf("projector: status of %q version %d partition %d: %w", w.p.Name, w.version, w.partition, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func (r *Runner) status(ctx context.Context, w *worker, head eventstore.Position) (ProjectionStatus, error) {
	s := ProjectionStatus{Name: w.p.Name, Version: w.version, Partition: w.partition, Partitions: w.partitions, Head: head}
	c, err := scanCheckpoint(r.db.QueryRowContext(ctx, `SELECT `+checkpointColumns+` FROM `+r.t.checkpoints+`
		WHERE projection = $1 AND version = $2 AND partition = $3`, w.p.Name, w.version, w.partition))
	if errors.Is(err, sql.ErrNoRows) || postgres.IsUndefinedTable(err) {
		s.State = StateNotRegistered
		return s, nil // Run (or Migrate) has not run
	}
	if err != nil {
		return s, err
	}
	leading, stopped := w.state()
	s.Leading = leading
	if !leading {
		// Only the leader's memory is current; the row speaks otherwise.
		stopped = nil
	} else if n, dbErr := w.retrying(); dbErr != nil {
		s.DatabaseError, s.DatabaseErrors = dbErr.Error(), n
	}
	held := leading
	if !held {
		if held, err = postgres.LockHeld(ctx, r.db, w.leaderKey); err != nil {
			return s, err
		}
	}
	return s, fillStatus(ctx, r.store, r.t, &s, c, held, stopped, r.cfg.BatchSize)
}

// fillStatus completes s from c, its checkpoint row: the lag behind
// s.Head, the dead letters and the state, given whether a leader holds
// its lock (held) and the handler error that stopped it in this process
// (stopped, when this process leads it).
func fillStatus(ctx context.Context, store *postgres.Store, t tables, s *ProjectionStatus, c checkpoint, held bool, stopped error, batchSize int) error {
	s.Checkpoint, s.Live, s.UpdatedAt = c.pos, c.status == statusActive, c.updatedAt
	s.LastError, s.ErrorAt = c.lastError.String, c.errorAt.Time
	s.LeaderRunning, s.Rebuilding = held, c.rebuilding
	s.RebuildRequested, s.RetryRequested, s.RequestError = c.rebuildRequested, c.retryRequested, c.requestError.String
	s.SkipEvent, s.ErrorEvent = c.skipID, c.errorEvent.UUID
	if s.Head.Compare(c.pos) > 0 {
		s.LagEvents = max(s.Head.Position-c.pos.Position, 1)
		var secs sql.NullFloat64
		if err := store.DB().QueryRowContext(ctx, `SELECT extract(epoch FROM now() - recorded_at)::float8 FROM `+store.QualifiedEventsTable()+`
			WHERE (transaction_id, position) > ($1::xid8, $2::bigint) ORDER BY transaction_id, position LIMIT 1`,
			strconv.FormatUint(c.pos.TransactionID, 10), c.pos.Position).Scan(&secs); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		s.Lag = time.Duration(max(secs.Float64, 0) * float64(time.Second))
	}
	if err := store.DB().QueryRowContext(ctx, `SELECT count(*) FROM `+t.deadLetters+` WHERE projection = $1 AND version = $2 AND partition = $3`,
		s.Name, s.Version, s.Partition).Scan(&s.DeadLetters); err != nil {
		return err
	}
	if stopped != nil && s.LastError == "" {
		s.LastError = stopped.Error()
	}
	switch {
	case c.status == statusRetired:
		s.State = StateRetired
	case c.rebuildRequested:
		s.State = StateRebuildRequested
	case c.stopped || stopped != nil:
		s.State = StateStoppedWithError
	case !held:
		s.State = StateNotRunning
	case c.rebuilding || c.status == statusBuilding:
		s.State = StateRebuilding
	case s.LagEvents >= int64(batchSize):
		s.State = StateCatchingUp
	default:
		s.State = StateRunning
	}
	return nil
}
