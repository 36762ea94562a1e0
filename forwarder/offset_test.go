package forwarder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/testwait"
)

// TestSetOffsetRefusedWhileRunning: SetOffset returns ErrForwarderRunning,
// changing nothing, while an instance of the group leads (this Forwarder or
// another one of the same group); once every instance is stopped it moves
// the offset back, and a restart publishes the events after it again.
func TestSetOffsetRefusedWhileRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendSpread(t, []string{"order-1"}, 5)
	head := b.waitFeed(t, 5)
	recs, err := b.store.ReadAll(testCtx(t), eventstore.Position{}, 10)
	if err != nil || len(recs) != 5 {
		t.Fatalf("ReadAll: %d records, %v", len(recs), err)
	}
	pub := &recordingPublisher{}
	f := newForwarder(t, b, pub, Config{})
	stop, _, _ := runForwarder(t, f)
	testwait.Until(t, "the offset to reach the head", func() bool {
		off, err := f.Offset(testCtx(t))
		return err == nil && off == head
	})

	if err := f.SetOffset(testCtx(t), recs[1].Position); !errors.Is(err, ErrForwarderRunning) {
		t.Fatalf("SetOffset while running = %v, want ErrForwarderRunning", err)
	}
	other := newForwarder(t, b, &recordingPublisher{}, Config{}) // another instance of the group, not running
	if err := other.SetOffset(testCtx(t), recs[1].Position); !errors.Is(err, ErrForwarderRunning) {
		t.Fatalf("SetOffset from another instance while one runs = %v, want ErrForwarderRunning", err)
	}
	if off, err := f.Offset(testCtx(t)); err != nil || off != head {
		t.Fatalf("Offset after refused SetOffset = %s, %v; want it unchanged at %s", off, err, head)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := f.SetOffset(testCtx(t), recs[1].Position); err != nil {
		t.Fatalf("SetOffset after stop: %v", err)
	}
	if off, err := f.Offset(testCtx(t)); err != nil || off != recs[1].Position {
		t.Fatalf("Offset = %s, %v; want %s", off, err, recs[1].Position)
	}
	runForwarder(t, f)
	testwait.Until(t, "the replay of the 3 events after the offset", func() bool { return pub.len() == 8 })
	for i, d := range pub.all()[5:] {
		if d.UUID != recs[2+i].ID.String() {
			t.Errorf("replayed publish %d is %s, want %s", i, d.UUID, recs[2+i].ID)
		}
	}
	testwait.Until(t, "the offset to reach the head again", func() bool {
		off, err := f.Offset(testCtx(t))
		return err == nil && off == head
	})
}

// TestThroughNeverBeyondTarget: the batch wait returns the batch's own last
// position, never the leadership-wide done prefix when that lies beyond it
// (as after an offset moved back), and when the leadership ends with an
// event at or before the target unpublished, it records nothing past it.
func TestThroughNeverBeyondTarget(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &pipeline{ctx: ctx, changed: make(chan struct{})}
	pos := func(n int64) eventstore.Position {
		return eventstore.Position{TransactionID: uint64(1000 + n), Position: n}
	}

	p.done(p.track(pos(100)))
	if got := p.through(pos(50)); got != pos(50) {
		t.Errorf("through(P50) with nothing pending = %s, want P50 (not the earlier batch's P100)", got)
	}

	e60 := p.track(pos(60))
	returned := make(chan eventstore.Position, 1)
	go func() { returned <- p.through(pos(60)) }()
	select {
	case got := <-returned:
		t.Fatalf("through(P60) returned %s before P60 was done", got)
	case <-time.After(50 * time.Millisecond):
	}
	p.done(e60)
	if got := <-returned; got != pos(60) {
		t.Errorf("through(P60) = %s, want P60", got)
	}

	p.track(pos(40)) // replayed, never published
	cancel()
	if got := p.through(pos(50)); got != (eventstore.Position{}) {
		t.Errorf("through(P50) after the leadership ended with P40 unpublished = %s, want the zero Position", got)
	}
}

// TestOffsetStaysBeforeBlockedEvent is the central invariant with publishes
// in flight for several streams: A1 is appended before B1..B3; A1's publish
// blocks until Run stops while B1..B3 (another worker) are published. The
// offset must stay before A1, and a restart must publish A1.
func TestOffsetStaysBeforeBlockedEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const workers = 4
	streamA := "acct-a"
	streamB := ""
	for i := 0; streamB == ""; i++ {
		if s := fmt.Sprintf("acct-b%d", i); shard(s, workers) != shard(streamA, workers) {
			streamB = s
		}
	}
	var ids []string
	for _, s := range []string{streamA, streamB, streamB, streamB} {
		res, err := b.store.Append(testCtx(t), s, eventstore.Any, []eventstore.Event{{Data: itemAdded{}}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.EventIDs[0].String())
	}
	head := b.waitFeed(t, 4)
	a1 := ids[0]

	blocked := make(chan struct{}, 1)
	pub := &recordingPublisher{before: func(_ string, msg *message.Message) error {
		if msg.UUID == a1 {
			select {
			case blocked <- struct{}{}:
			default:
			}
			<-msg.Context().Done()
			return msg.Context().Err()
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{PublishConcurrency: workers})
	stop, _, _ := runForwarder(t, f)
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("A1's publish never started")
	}
	testwait.Until(t, "B1..B3 to be published", func() bool { return pub.len() == 3 })
	for i, d := range pub.all() {
		if d.UUID != ids[1+i] {
			t.Fatalf("publish %d is %s, want B%d %s", i, d.UUID, i+1, ids[1+i])
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if off, err := f.Offset(testCtx(t)); err != nil || off != (eventstore.Position{}) {
		t.Fatalf("Offset after stop = %s, %v; want the zero Position (A1, the first event, was never published)", off, err)
	}

	again := &recordingPublisher{}
	f2 := newForwarder(t, b, again, Config{PublishConcurrency: workers})
	runForwarder(t, f2)
	testwait.Until(t, "A1 after the restart", func() bool {
		for _, d := range again.all() {
			if d.UUID == a1 {
				return true
			}
		}
		return false
	})
	testwait.Until(t, "the offset to reach the head", func() bool {
		off, err := f2.Offset(testCtx(t))
		return err == nil && off == head
	})
}

// TestStoppingReportsFailedOffsetWrite: the offset write that ends a batch
// runs even when the leadership has ended, and a failure is logged at Warn
// (those events will be published again); success logs nothing.
func TestStoppingReportsFailedOffsetWrite(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var buf bytes.Buffer
	f := newForwarder(t, b, &recordingPublisher{}, Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if _, err := f.Migrate(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.startOffset(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	pos := eventstore.Position{TransactionID: 1, Position: 1}
	f.recordOffset(stopped, nil, pos)
	if off, err := f.Offset(testCtx(t)); err != nil || off != pos {
		t.Fatalf("offset after a write with a cancelled context = %s, %v; want %s", off, err, pos)
	}
	if buf.Len() != 0 {
		t.Errorf("a successful offset write logged: %s", buf.String())
	}

	f.offsets = `"no_such_schema"."no_such_table"`
	f.recordOffset(stopped, nil, eventstore.Position{TransactionID: 2, Position: 2})
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "no_such_table") {
		t.Errorf("failed offset write logged %q, want a Warn with the error", out)
	}
}

// TestStopMidBatchRecordsOnlyHandled: when the leadership ends in the middle
// of a batch, the events of the batch not yet handed to the pipeline are
// not recorded as done. Here the first event of the batch is filtered out
// (done at once) and Run is cancelled right after it: the offset may move
// over it, but not over the two events after it, which a restart publishes.
func TestStopMidBatchRecordsOnlyHandled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendSpread(t, []string{"skip-1", "order-1", "order-2"}, 1)
	head := b.waitFeed(t, 3)
	recs, err := b.store.ReadAll(testCtx(t), eventstore.Position{}, 10)
	if err != nil || len(recs) != 3 || recs[2].Position != head {
		t.Fatalf("ReadAll: %d records, %v", len(recs), err)
	}
	cfg := Config{Categories: []string{"order"}}
	f := newForwarder(t, b, &recordingPublisher{}, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.afterHandleForTest = cancel // after the filtered-out first event
	if err := f.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if off, err := f.Offset(testCtx(t)); err != nil || recs[0].Position.Less(off) {
		t.Fatalf("Offset after a stop in the middle of the batch = %s, %v; want at most %s, the one event handled", off, err, recs[0].Position)
	}

	pub := &recordingPublisher{}
	runForwarder(t, newForwarder(t, b, pub, cfg))
	testwait.Until(t, "the two events after the stop", func() bool { return pub.distinct() == 2 })
}

// TestReadsOneBatchAhead: while an event of a batch is still being
// published, the forwarder reads the next batch and publishes its events
// (of other streams); the offset stays before the blocked event until it
// is published, and then moves past both batches.
func TestReadsOneBatchAhead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendSpread(t, streamsOf("order", 10), 1) // 10 events, one per stream
	head := b.waitFeed(t, 10)
	recs, err := b.store.ReadAll(testCtx(t), eventstore.Position{}, 10)
	if err != nil || len(recs) != 10 {
		t.Fatalf("ReadAll: %d records, %v", len(recs), err)
	}
	blocked := recs[4].ID.String() // the last event of the first batch of 5
	release := make(chan struct{})
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		if msg.UUID == blocked {
			select {
			case <-release:
			case <-msg.Context().Done():
				return msg.Context().Err()
			}
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{BatchSize: 5})
	runForwarder(t, f)
	// Every event but the blocked one reaches the publisher: the second
	// batch was read and published while the first was not done.
	testwait.Until(t, "the second batch to be published while the first is blocked", func() bool { return pub.len() == 9 })
	if off, err := f.Offset(testCtx(t)); err != nil || !off.Less(recs[4].Position) {
		t.Fatalf("offset while event 5 is blocked = %s, %v; want before %s", off, err, recs[4].Position)
	}
	close(release)
	testwait.Until(t, "the offset to reach the head", func() bool {
		off, err := f.Offset(testCtx(t))
		return err == nil && off == head
	})
}
