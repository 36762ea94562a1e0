package projector_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// The operations of operations.go and deadletters.go run here without the
// runner's help: they are called as another process (the esox command)
// would call them, and the runner, which has the code, notices through its
// checkpoint rows.

func opsCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// readOne returns the status of a projection version's partition, read
// without the runner.
func readOne(t *testing.T, b *bundle, name string, version, partition int) projector.ProjectionStatus {
	t.Helper()
	st, err := projector.ReadProjection(opsCtx(t), b.store, name)
	if err != nil {
		t.Fatalf("ReadProjection(%s): %v", name, err)
	}
	for _, s := range st {
		if s.Version == version && s.Partition == partition {
			return s
		}
	}
	t.Fatalf("ReadProjection(%s) has no version %d partition %d: %+v", name, version, partition, st)
	return projector.ProjectionStatus{}
}

// waitHead waits until the feed shows p.
func (b *bundle) waitHead(t *testing.T, p eventstore.Position) {
	t.Helper()
	testwait.Until(t, "the feed to reach "+p.String(), func() bool {
		head, err := b.store.Head(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return !head.Less(p)
	})
}

// countingBalances is b.balances counting the records its handler applies.
func countingBalances(b *bundle, name, table string, n *atomic.Int64) projector.Projection {
	p := b.balances(name, table)
	inner := p.Handler
	p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		if err := inner.Handle(ctx, tx, recs); err != nil {
			return err
		}
		n.Add(int64(len(recs)))
		return nil
	}, "deposited")
	return p
}

// TestListAndReadProjections: ListProjections and ReadProjection report
// every version and partition from the database, with whether a leader
// runs; an unknown projection, version or partition is refused by name.
func TestListAndReadProjections(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := opsCtx(t)
	if st, err := projector.ListProjections(ctx, b.store); err != nil || len(st) != 0 {
		t.Fatalf("ListProjections before any runner = %+v, %v; want none", st, err)
	}
	var nf *projector.ProjectionNotFoundError
	if _, err := projector.ReadProjection(ctx, b.store, "balances"); !errors.As(err, &nf) || !strings.Contains(err.Error(), "none: no runner has registered") {
		t.Fatalf("ReadProjection without tables = %v", err)
	}
	parts := b.balances("parts", "parts")
	parts.Partitions = 3
	r, err := projector.NewRunner(b.store, fastConfig(t), b.balances("balances", "balances"), parts)
	if err != nil {
		t.Fatal(err)
	}
	rr := start(t, r)
	last := b.appendDeposits(t, 30, 4, 3)
	waitFor(t, r, "balances", last.LastPosition)
	waitFor(t, r, "parts", last.LastPosition)
	testwait.Until(t, "every leader to be seen", func() bool {
		st, err := projector.ListProjections(ctx, b.store)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st {
			if !s.LeaderRunning {
				return false
			}
		}
		return len(st) == 4
	})
	st, err := projector.ListProjections(ctx, b.store)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range st {
		wantName, wantPart := "balances", 0
		if i > 0 {
			wantName, wantPart = "parts", i-1
		}
		if s.Name != wantName || s.Partition != wantPart || s.Version != 1 || !s.Live || s.State != projector.StateRunning ||
			s.Checkpoint != last.LastPosition || s.LagEvents != 0 || s.Leading || s.Head.Less(last.LastPosition) {
			t.Fatalf("status %d = %+v", i, s)
		}
	}
	if s := readOne(t, b, "parts", 1, 2); s.Partitions != 3 {
		t.Fatalf("parts partition 2 = %+v", s)
	}
	if _, err := projector.ReadProjection(ctx, b.store, "balance"); !errors.Is(err, projector.ErrProjectionNotFound) ||
		!strings.Contains(err.Error(), `"balance" not found (known projections: balances, parts)`) {
		t.Fatalf("ReadProjection(balance) = %v", err)
	}
	if _, err := projector.Resume(ctx, b.store, projector.Target{Projection: "parts", Version: 2}); !errors.As(err, &nf) || nf.Version != 2 ||
		!strings.Contains(err.Error(), "has no version 2 (versions: 1 (live))") {
		t.Fatalf("Resume of version 2 = %v", err)
	}
	if _, err := projector.Resume(ctx, b.store, projector.Target{Projection: "parts", Partitions: []int{3}}); !errors.As(err, &nf) ||
		!strings.Contains(err.Error(), "has no partition 3 (its partitions are 0 to 2)") {
		t.Fatalf("Resume of partition 3 = %v", err)
	}
	if _, err := projector.ReadProjection(ctx, b.store, "bad name"); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("ReadProjection(bad name) = %v", err)
	}

	rr.stop(t)
	testwait.Until(t, "the leaders to be gone", func() bool {
		return readOne(t, b, "balances", 1, 0).State == projector.StateNotRunning
	})
}

// TestRequestRebuildPerformedByTheLeader: RequestRebuild records a request
// that the runner performs with its Reset, in any process: requested while
// no runner runs, Status says so until a runner starts and rebuilds;
// requested while one runs, the running leader notices and replays. A
// projection without Reset clears the request with the reason.
func TestRequestRebuildPerformedByTheLeader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := opsCtx(t)
	var applied atomic.Int64
	noReset := b.balances("noreset", "noreset")
	noReset.Reset = nil
	newRunner := func() *projector.Runner {
		r, err := projector.NewRunner(b.store, fastConfig(t), countingBalances(b, "balances", "balances", &applied), noReset)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newRunner()
	rr := start(t, r)
	last := b.appendDeposits(t, 20, 3, 4)
	waitFor(t, r, "balances", last.LastPosition)
	rr.stop(t)
	// A row only Reset removes: the rebuild must run it.
	if _, err := b.db.Exec(`INSERT INTO ` + b.q("balances") + ` (account, total, n) VALUES ('stale', 1, 1)`); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		target projector.Target
		want   string
	}{
		{projector.Target{Projection: "balances", Partitions: []int{0}}, "name no partition"},
		{projector.Target{Projection: "balance"}, `"balance" not found`},
		{projector.Target{Projection: "balances", Version: 2}, "has no version 2"},
	} {
		if _, err := projector.RequestRebuild(ctx, b.store, tc.target); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("RequestRebuild(%+v) = %v, want %q", tc.target, err, tc.want)
		}
	}
	if v, err := projector.RequestRebuild(ctx, b.store, projector.Target{Projection: "balances"}); err != nil || v != 1 {
		t.Fatalf("RequestRebuild = %d, %v", v, err)
	}
	if s := readOne(t, b, "balances", 1, 0); s.State != projector.StateRebuildRequested || !s.RebuildRequested || s.LeaderRunning {
		t.Fatalf("status with the request pending and no runner = %+v", s)
	}

	before := applied.Load()
	r = newRunner()
	rr = start(t, r)
	testwait.Until(t, "the rebuild to be performed and caught up", func() bool {
		s := readOne(t, b, "balances", 1, 0)
		return !s.RebuildRequested && !s.Rebuilding && s.Checkpoint == last.LastPosition
	})
	equalBalances(t, "after the requested rebuild", b.model(t, "balances"), b.foldAll(t))
	if n := applied.Load() - before; n != 20 {
		t.Fatalf("the rebuild applied %d records, want the 20 of the feed", n)
	}

	// Requested while the runner leads: it notices and replays.
	before = applied.Load()
	if _, err := projector.RequestRebuild(ctx, b.store, projector.Target{Projection: "balances", Version: 1}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the running leader to rebuild", func() bool {
		s := readOne(t, b, "balances", 1, 0)
		return !s.RebuildRequested && !s.Rebuilding && applied.Load()-before == 20
	})
	equalBalances(t, "after the second rebuild", b.model(t, "balances"), b.foldAll(t))

	// Without Reset: the leader refuses and says why.
	if _, err := projector.RequestRebuild(ctx, b.store, projector.Target{Projection: "noreset"}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the leader to refuse the rebuild", func() bool {
		s := readOne(t, b, "noreset", 1, 0)
		return !s.RebuildRequested && strings.Contains(s.RequestError, "no Reset func")
	})
	if s := readOne(t, b, "noreset", 1, 0); s.State != projector.StateRunning || s.Checkpoint != last.LastPosition {
		t.Fatalf("noreset after the refused rebuild = %+v", s)
	}
	rr.stop(t)
}

// TestSetCheckpointFencesARunningLeader: SetCheckpoint, called while the
// leader applies a batch, waits for that batch and wins: the leader's next
// compare-and-set fails and it goes on from the position set (the events
// after it applied again), not from its own; an idle leader notices a
// moved checkpoint too. Positions after the head, negative ones and
// backward moves under OnlyForward are refused.
func TestSetCheckpointFencesARunningLeader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := opsCtx(t)
	var applied atomic.Int64
	inBatch, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	p := countingBalances(b, "balances", "balances", &applied)
	inner := p.Handler
	p.Handler = projector.Batch(func(ctx context.Context, tx postgres.Tx, recs []eventstore.Record) error {
		if held.CompareAndSwap(false, true) {
			close(inBatch)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return inner.Handle(ctx, tx, recs)
	}, "deposited")
	first := b.appendDeposits(t, 3, 1, 3) // one batch of three
	b.waitHead(t, first.LastPosition)
	r, err := projector.NewRunner(b.store, fastConfig(t), p)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	<-inBatch
	// The first of the three events' position: the two after it will be
	// applied twice.
	raws, err := b.store.ReadFeed(ctx, eventstore.Position{}, 3)
	if err != nil || len(raws) != 3 {
		t.Fatalf("read feed: %d, %v", len(raws), err)
	}
	to := raws[0].Position
	done := make(chan error, 1)
	go func() {
		_, err := projector.SetCheckpoint(ctx, b.store, projector.Target{Projection: "balances"}, to, nil)
		done <- err
	}()
	// It waits for the batch's row lock (a signal, not a sleep: the batch
	// holds it until it commits, which it cannot do before release).
	testwait.Until(t, "SetCheckpoint to wait for the batch's row lock", func() bool {
		var waiting bool
		if err := b.db.Get(&waiting, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
			AND query LIKE '%' || $1 || '%projector_checkpoints%FOR UPDATE%')`, b.schema); err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := readOne(t, b, "balances", 1, 0); s.Checkpoint != to {
		t.Fatalf("checkpoint after SetCheckpoint = %s, want %s", s.Checkpoint, to)
	}
	last := b.appendDeposits(t, 2, 1, 2)
	waitFor(t, r, "balances", last.LastPosition)
	if n := applied.Load(); n != 3+2+2 {
		t.Fatalf("%d records applied, want 7: the batch, the 2 after the position set again, and the 2 new", n)
	}
	want := b.foldAll(t)
	got := b.model(t, "balances")
	if w := want["a0"]; got["a0"].N != w.N+2 {
		t.Fatalf("a0 applied %d times, want %d (+2 replayed)", got["a0"].N, w.N+2)
	}

	// An idle leader notices a checkpoint set back to the start.
	before := applied.Load()
	if ch, err := projector.SetCheckpoint(ctx, b.store, projector.Target{Projection: "balances"}, eventstore.Position{}, nil); err != nil ||
		len(ch) != 1 || ch[0].From != last.LastPosition || !ch[0].To.IsZero() {
		t.Fatalf("SetCheckpoint(0/0) = %+v, %v", ch, err)
	}
	testwait.Until(t, "the idle leader to replay from the start", func() bool { return applied.Load()-before == 5 })

	// Refusals change nothing.
	head, err := b.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, "balances", head)
	ahead := eventstore.Position{TransactionID: head.TransactionID + 1000, Position: 1}
	for _, tc := range []struct {
		pos  eventstore.Position
		opts *projector.SetCheckpointOpts
		want string
	}{
		{ahead, nil, "after the feed's head"},
		{eventstore.Position{Position: -1}, nil, "must not be negative"},
		{to, &projector.SetCheckpointOpts{OnlyForward: true}, "moves forward only"},
	} {
		if _, err := projector.SetCheckpoint(ctx, b.store, projector.Target{Projection: "balances"}, tc.pos, tc.opts); !errors.Is(err, eventstore.ErrInvalidArgument) ||
			!strings.Contains(err.Error(), tc.want) {
			t.Fatalf("SetCheckpoint(%s) = %v, want %q", tc.pos, err, tc.want)
		}
	}
	if s := readOne(t, b, "balances", 1, 0); s.Checkpoint != head {
		t.Fatalf("checkpoint after refusals = %s, want %s", s.Checkpoint, head)
	}
}

// TestSkipAndResumeWithoutTheRunner: a projection stopped on an event names
// it (ErrorEvent); Skip without an event ID asks its leader to pass over
// that one event, applying the rest of its batch and what follows; Resume
// restarts a stopped projection from another process. Skip refuses what it
// cannot do.
func TestSkipAndResumeWithoutTheRunner(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := opsCtx(t)
	var fixed atomic.Bool
	strict := b.balances("strict", "strict")
	inner := strict.Handler
	strict.Handler = projector.Records(func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
		if d := r.Data.(Deposited); d.Account == "poison" && !fixed.Load() {
			return errors.New("the poison account cannot be applied")
		}
		return inner.Handle(ctx, tx, []eventstore.Record{r})
	}, "deposited")
	cfg := fastConfig(t)
	cfg.DisableRetries = true
	r, err := projector.NewRunner(b.store, cfg, strict)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := projector.Skip(ctx, b.store, projector.Target{Projection: "strict"}, uuid.Nil); !errors.Is(err, eventstore.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "the projection is not stopped: name the event") {
		t.Fatalf("Skip of a running projection = %v", err)
	}
	// One batch: deposits, the poison, more deposits.
	b.appendDeposits(t, 4, 2, 2)
	bad, err := b.store.Append(ctx, "account-poison", eventstore.Any, []eventstore.Event{{Data: Deposited{Account: "poison", Amount: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	last := b.appendDeposits(t, 4, 2, 2)
	b.waitHead(t, last.LastPosition)
	start(t, r)
	testwait.Until(t, "strict to stop on the poison", func() bool {
		return readOne(t, b, "strict", 1, 0).State == projector.StateStoppedWithError
	})
	s := readOne(t, b, "strict", 1, 0)
	if s.ErrorEvent != bad.EventIDs[0] || !s.Checkpoint.IsZero() {
		t.Fatalf("stopped status = %+v, want it to name event %s at the start", s, bad.EventIDs[0])
	}
	if _, err := projector.Skip(ctx, b.store, projector.Target{Projection: "strict"}, uuid.Must(uuid.NewV7())); !errors.Is(err, eventstore.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "is stored") {
		t.Fatalf("Skip of an unknown event = %v", err)
	}
	sk, err := projector.Skip(ctx, b.store, projector.Target{Projection: "strict"}, uuid.Nil)
	if err != nil || len(sk) != 1 || sk[0].Event.ID != bad.EventIDs[0] || sk[0].Event.Position != bad.LastPosition {
		t.Fatalf("Skip = %+v, %v", sk, err)
	}
	waitFor(t, r, "strict", last.LastPosition)
	want := b.foldAll(t)
	delete(want, "poison")
	equalBalances(t, "strict after the skip", b.model(t, "strict"), want)
	if s := readOne(t, b, "strict", 1, 0); s.SkipEvent != uuid.Nil || s.ErrorEvent != uuid.Nil || s.State != projector.StateRunning {
		t.Fatalf("status after the skip = %+v", s)
	}
	if _, err := projector.Skip(ctx, b.store, projector.Target{Projection: "strict"}, bad.EventIDs[0]); !errors.Is(err, eventstore.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "applied or passed already") {
		t.Fatalf("Skip of a passed event = %v", err)
	}

	// Resume from another process: stop it again, fix, resume.
	bad2, err := b.store.Append(ctx, "account-poison", eventstore.Any, []eventstore.Event{{Data: Deposited{Account: "poison", Amount: 7}}})
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "strict to stop again", func() bool {
		s := readOne(t, b, "strict", 1, 0)
		return s.State == projector.StateStoppedWithError && s.ErrorEvent == bad2.EventIDs[0]
	})
	fixed.Store(true)
	if parts, err := projector.Resume(ctx, b.store, projector.Target{Projection: "strict"}); err != nil || len(parts) != 1 || parts[0] != 0 {
		t.Fatalf("Resume = %v, %v", parts, err)
	}
	waitFor(t, r, "strict", bad2.LastPosition)
	if got := b.model(t, "strict")["poison"]; got.Total != 7 || got.N != 1 {
		t.Fatalf("poison after resume = %+v, want only the second poison event", got)
	}
	if parts, err := projector.Resume(ctx, b.store, projector.Target{Projection: "strict"}); err != nil || len(parts) != 0 {
		t.Fatalf("Resume of a running projection = %v, %v; want nothing resumed", parts, err)
	}
}

// TestDeadLetterOperations: ListDeadLetters shows parked events with their
// event; RetryDeadLetters asks the leader, which re-applies them through
// the handler: one that fails again stays parked with its new error and a
// count, one that applies leaves the table with its effect in the model;
// DiscardDeadLetters deletes. Unknown projections and events are refused.
func TestDeadLetterOperations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := opsCtx(t)
	var attempts atomic.Int64
	var fixed atomic.Bool
	parking := b.balances("parking", "parking")
	inner := parking.Handler
	parking.Handler = projector.Records(func(ctx context.Context, tx postgres.Tx, r eventstore.Record) error {
		if d := r.Data.(Deposited); strings.HasPrefix(d.Account, "poison") && !fixed.Load() {
			return fmt.Errorf("cannot apply poison, attempt %d", attempts.Add(1))
		}
		return inner.Handle(ctx, tx, []eventstore.Record{r})
	}, "deposited")
	parking.DeadLetter = true
	cfg := fastConfig(t)
	cfg.DisableRetries = true
	r, err := projector.NewRunner(b.store, cfg, parking)
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	b.appendDeposits(t, 4, 2, 2)
	p1, err := b.store.Append(ctx, "account-poison1", eventstore.Any, []eventstore.Event{{Data: Deposited{Account: "poison1", Amount: 5}}})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := b.store.Append(ctx, "account-poison2", eventstore.Any, []eventstore.Event{{Data: Deposited{Account: "poison2", Amount: 6}}})
	if err != nil {
		t.Fatal(err)
	}
	last := b.appendDeposits(t, 4, 2, 2)
	waitFor(t, r, "parking", last.LastPosition)

	dls, err := projector.ListDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking", WithEvents: true})
	if err != nil || len(dls) != 2 || dls[0].EventID != p1.EventIDs[0] || dls[1].EventID != p2.EventIDs[0] {
		t.Fatalf("ListDeadLetters = %+v, %v", dls, err)
	}
	if d := dls[0]; d.Position != p1.LastPosition || d.StreamID != "account-poison1" || d.EventType != "deposited" || d.Version != 1 ||
		!strings.Contains(d.Error, "cannot apply poison") || d.Event == nil || !strings.Contains(string(d.Event.Payload), "poison1") ||
		d.ParkedAt.IsZero() || !d.RetryRequestedAt.IsZero() || d.Retries != 0 {
		t.Fatalf("dead letter = %+v", d)
	}
	if all, err := projector.ListDeadLetters(ctx, b.store, projector.DeadLetterFilter{Limit: 1}); err != nil || len(all) != 1 {
		t.Fatalf("ListDeadLetters(limit 1) = %+v, %v", all, err)
	}
	if _, err := projector.ListDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parkin"}); !errors.Is(err, projector.ErrProjectionNotFound) {
		t.Fatalf("ListDeadLetters(parkin) = %v", err)
	}
	unknown := uuid.Must(uuid.NewV7())
	var dnf *projector.DeadLetterNotFoundError
	if _, err := projector.RetryDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking", EventIDs: []uuid.UUID{p1.EventIDs[0], unknown}}); !errors.As(err, &dnf) ||
		len(dnf.EventIDs) != 1 || dnf.EventIDs[0] != unknown {
		t.Fatalf("RetryDeadLetters with an unknown event = %v", err)
	}
	if _, err := projector.RetryDeadLetters(ctx, b.store, projector.DeadLetterFilter{}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("RetryDeadLetters without a projection = %v", err)
	}
	if d, _ := projector.ListDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking", EventIDs: []uuid.UUID{p1.EventIDs[0]}}); len(d) != 1 || !d[0].RetryRequestedAt.IsZero() {
		t.Fatalf("a refused retry marked the dead letter: %+v", d)
	}

	// Still broken: the retry fails and the dead letter stays, with its
	// new error.
	before := attempts.Load()
	marked, err := projector.RetryDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking", EventIDs: []uuid.UUID{p1.EventIDs[0]}})
	if err != nil || len(marked) != 1 || marked[0].RetryRequestedAt.IsZero() {
		t.Fatalf("RetryDeadLetters = %+v, %v", marked, err)
	}
	var d projector.DeadLetter
	testwait.Until(t, "the failed retry", func() bool {
		ds, err := projector.ListDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking", Version: 1, EventIDs: []uuid.UUID{p1.EventIDs[0]}})
		if err != nil {
			t.Fatal(err)
		}
		d = ds[0]
		return d.Retries == 1
	})
	if !d.RetryRequestedAt.IsZero() || d.RetriedAt.IsZero() || attempts.Load() != before+1 || d.Error == dls[0].Error || !strings.Contains(d.Error, "cannot apply poison") {
		t.Fatalf("after the failed retry = %+v (attempts %d, before %d)", d, attempts.Load(), before)
	}
	if s := readOne(t, b, "parking", 1, 0); s.RetryRequested || s.DeadLetters != 2 || s.State != projector.StateRunning {
		t.Fatalf("status after the failed retry = %+v", s)
	}

	// Fixed: the retry applies it, and it leaves the table.
	fixed.Store(true)
	if _, err := projector.RetryDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking", EventIDs: []uuid.UUID{p1.EventIDs[0]}}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the retried event to apply", func() bool { return readOne(t, b, "parking", 1, 0).DeadLetters == 1 })
	if got := b.model(t, "parking")["poison1"]; got.Total != 5 || got.N != 1 {
		t.Fatalf("poison1 in the model = %+v, want applied once", got)
	}

	// Discard the other.
	gone, err := projector.DiscardDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking"})
	if err != nil || len(gone) != 1 || gone[0].EventID != p2.EventIDs[0] {
		t.Fatalf("DiscardDeadLetters = %+v, %v", gone, err)
	}
	if ds, err := projector.ListDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking"}); err != nil || len(ds) != 0 {
		t.Fatalf("dead letters after discard = %+v, %v", ds, err)
	}
	if got := b.model(t, "parking")["poison2"]; got.N != 0 {
		t.Fatalf("a discarded event was applied: %+v", got)
	}
	if ds, err := projector.DiscardDeadLetters(ctx, b.store, projector.DeadLetterFilter{Projection: "parking"}); err != nil || len(ds) != 0 {
		t.Fatalf("DiscardDeadLetters with none = %+v, %v", ds, err)
	}
}
