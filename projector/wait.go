package projector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// ErrNotProgressing is matched by every *WaitError: WaitFor returned at once
// because the projection cannot reach the position without an operator (or
// a deployment) acting.
var ErrNotProgressing = errors.New("projector: projection is not progressing")

// ErrStopped is matched by a *WaitError whose State is
// StateStoppedWithError: the projection stopped with an error before
// reaching the position.
var ErrStopped = errors.New("projector: projection stopped with an error")

// WaitError reports why WaitFor returned before the projection reached the
// position, instead of waiting until its context ends. It matches
// ErrNotProgressing, and also ErrStopped (State StateStoppedWithError) or
// ErrNotRegistered (State StateNotRegistered).
type WaitError struct {
	// Projection is the name WaitFor was given.
	Projection string
	// Version is the live version's, 0 when none is registered.
	Version int
	// State is why the projection does not progress:
	// StateNotRegistered (no runner has registered it: Runner.Migrate or
	// Run never ran with it), StateStoppedWithError (its handler kept
	// failing; see LastError and Runner.Resume), StateNotRunning (no
	// process leads it, and this process does not run it), or
	// StateRetired (it has versions, but none is live).
	State State
	// Checkpoint is the live version's checkpoint (the zero Position when
	// none is registered): everything up to it is applied.
	Checkpoint eventstore.Position
	// Position is the position WaitFor was waiting for.
	Position eventstore.Position
	// LastError is the handler error that stopped it, for
	// StateStoppedWithError.
	LastError string
}

func (e *WaitError) Error() string {
	prefix := fmt.Sprintf("projector: wait for projection %q at %s", e.Projection, e.Position)
	switch e.State {
	case StateNotRegistered:
		return prefix + ": it is not registered (run Runner.Migrate or Runner.Run with it first)"
	case StateStoppedWithError:
		return fmt.Sprintf("%s: version %d stopped with an error at checkpoint %s (fix it, then Runner.Resume): %s", prefix, e.Version, e.Checkpoint, e.LastError)
	case StateNotRunning:
		return fmt.Sprintf("%s: version %d is not running (no process leads it) at checkpoint %s", prefix, e.Version, e.Checkpoint)
	case StateRetired:
		return fmt.Sprintf("%s: no version is live (every version is retired) at checkpoint %s", prefix, e.Checkpoint)
	}
	return fmt.Sprintf("%s: version %d is %s at checkpoint %s", prefix, e.Version, e.State, e.Checkpoint)
}

// Is makes errors.Is(err, ErrNotProgressing) true, and errors.Is(err,
// ErrStopped) or errors.Is(err, ErrNotRegistered) by State.
func (e *WaitError) Is(target error) bool {
	switch target {
	case ErrNotProgressing:
		return true
	case ErrStopped:
		return e.State == StateStoppedWithError
	case ErrNotRegistered:
		return e.State == StateNotRegistered
	}
	return false
}

// leaderCheckInterval is how often WaitFor checks, while it waits, that
// some process still leads the projection.
const leaderCheckInterval = time.Second

// WaitFor returns nil once the live version of projection has applied the
// record at pos (the checkpoint of each of its partitions is at or past
// pos), for read-your-writes: append, then WaitFor(ctx, name,
// result.LastPosition), then query the read model. It checks the
// checkpoint rows (one index range scan) at once, whenever this process
// applies a batch, and every Config.PollInterval otherwise, so it works
// whichever process runs the projection.
//
// It does not wait for what cannot come: short of pos, it returns a
// *WaitError (matching ErrNotProgressing) naming the state and the
// checkpoint. It returns one at once when the projection stopped with an
// error (ErrStopped; one stopped partition is enough) or has no live
// version, and within Config.LeaderRetryInterval (1 s by default) when it
// is not registered (ErrNotRegistered) or no process leads the live
// version (or one of its partitions: no session holds its leader lock),
// and this runner is not running it: that grace lets a Run started in a
// goroutine just before WaitFor, or another process starting, register and
// take the projection without a false alarm. While this runner's Run runs,
// WaitFor waits for it to register and lead, also through a leadership
// change. Whether some process leads is checked again every second while
// it waits, so a waiting-only process (one that runs no runner) gets
// StateNotRunning when the leader stops and no other process takes over
// within the grace.
//
// It returns ctx's error (wrapped) when ctx ends first, an error matching
// eventstore.ErrInvalidArgument for a projection the runner does not have,
// and database errors wrapped. Safe for concurrent use.
func (r *Runner) WaitFor(ctx context.Context, projection string, pos eventstore.Position) error {
	ws := r.workersNamed(projection)
	if len(ws) == 0 {
		return r.unknown(projection)
	}
	fail := func(err error) error {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("projector: wait for %q at %s: %w", projection, pos, err)
	}
	t := time.NewTimer(r.cfg.PollInterval)
	defer t.Stop()
	grace := r.cfg.LeaderRetryInterval
	var (
		leaderChecked time.Time // when the live version's leader lock was last looked up
		unled         bool      // nobody held it then
		doubt         time.Time // since when the projection has looked not registered or not led
	)
	for {
		advanced := r.advancedCh()
		live, registered, err := r.liveCheckpoint(ctx, projection)
		if err != nil {
			return fail(err)
		}
		running := r.running.Load()
		// suspect is a state a starting process passes through (Run just
		// called in a goroutine, another process taking leadership): it
		// is refused only once it has lasted grace.
		var suspect *WaitError
		switch {
		case live == nil && running:
			// This runner's Run is registering it.
		case live == nil && !registered:
			suspect = &WaitError{Projection: projection, State: StateNotRegistered, Position: pos}
		case live == nil:
			return &WaitError{Projection: projection, State: StateRetired, Position: pos}
		case live.pos.Compare(pos) >= 0:
			return nil
		case live.stopped:
			return &WaitError{Projection: projection, Version: live.version, State: StateStoppedWithError, Checkpoint: live.pos, Position: pos, LastError: live.lastError.String}
		case running && r.hasVersion(projection, live.version):
			// This process runs it, or stands by for it.
		default:
			if leaderChecked.IsZero() || time.Since(leaderChecked) >= leaderCheckInterval || (unled && time.Since(doubt) >= grace) {
				held := true
				for part := 0; part < live.partitions && held; part++ {
					if held, err = postgres.LockHeld(ctx, r.db, leaderKey(r.t.schema, projection, live.version, part, live.partitions)); err != nil {
						return fail(err)
					}
				}
				leaderChecked, unled = time.Now(), !held
			}
			if unled {
				suspect = &WaitError{Projection: projection, Version: live.version, State: StateNotRunning, Checkpoint: live.pos, Position: pos}
			}
		}
		switch {
		case suspect == nil:
			doubt = time.Time{}
		case doubt.IsZero():
			doubt = time.Now()
		case time.Since(doubt) >= grace:
			return suspect
		}
		t.Reset(r.cfg.PollInterval)
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-advanced:
		case <-t.C:
		}
	}
}

// liveRow is the live version's checkpoint, over its partitions: the
// smallest of their positions (everything up to it is applied by every
// partition), stopped when one of them is (with its error).
type liveRow struct {
	checkpoint
	version    int
	partitions int
}

// scanFunc adapts a func to scanCheckpoint's row.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// liveCheckpoint returns the live version's checkpoint of projection (nil
// when there is none) and whether the projection has any row.
func (r *Runner) liveCheckpoint(ctx context.Context, projection string) (*liveRow, bool, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT version, partitions, `+checkpointColumns+` FROM `+r.t.checkpoints+`
		WHERE projection = $1 ORDER BY status = 'active' DESC, partition`, projection)
	if postgres.IsUndefinedTable(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	var live *liveRow
	registered := false
	for rows.Next() {
		var version, partitions int
		c, err := scanCheckpoint(scanFunc(func(dest ...any) error {
			return rows.Scan(append([]any{&version, &partitions}, dest...)...)
		}))
		if err != nil {
			return nil, false, err
		}
		registered = true
		if c.status != statusActive {
			break // the active rows come first
		}
		switch {
		case live == nil:
			live = &liveRow{checkpoint: c, version: version, partitions: partitions}
		case live.stopped:
		case c.stopped:
			live.checkpoint = c
		case c.pos.Compare(live.pos) < 0:
			live.pos = c.pos
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	return live, registered, nil
}

// hasVersion reports whether the runner runs version of projection.
func (r *Runner) hasVersion(projection string, version int) bool {
	for _, w := range r.workersNamed(projection) {
		if w.version == version {
			return true
		}
	}
	return false
}
