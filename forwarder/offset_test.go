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
	waitFor(t, 10*time.Second, "the offset to reach the head", func() bool {
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
	waitFor(t, 10*time.Second, "the replay of the 3 events after the offset", func() bool { return pub.len() == 8 })
	for i, d := range pub.all()[5:] {
		if d.UUID != recs[2+i].ID.String() {
			t.Errorf("replayed publish %d is %s, want %s", i, d.UUID, recs[2+i].ID)
		}
	}
	waitFor(t, 10*time.Second, "the offset to reach the head again", func() bool {
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
	waitFor(t, 10*time.Second, "B1..B3 to be published", func() bool { return pub.len() == 3 })
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
	waitFor(t, 10*time.Second, "A1 after the restart", func() bool {
		for _, d := range again.all() {
			if d.UUID == a1 {
				return true
			}
		}
		return false
	})
	waitFor(t, 10*time.Second, "the offset to reach the head", func() bool {
		off, err := f2.Offset(testCtx(t))
		return err == nil && off == head
	})
}

// TestReservedMetadataKeyIsNotMalformed: a user metadata key named like the
// forwarder's internal malformed-row flag does not make a valid event look
// malformed; the key is dropped from the message.
func TestReservedMetadataKeyIsNotMalformed(t *testing.T) {
	t.Parallel()
	md := eventstore.Metadata{Extra: map[string]string{malformedKey: "user value", "tenant": "acme"}}
	if msg := NewMessage(eventstore.Record{StreamID: "order-1", Metadata: md}); msg.Metadata[malformedKey] != "" || msg.Metadata["tenant"] != "acme" {
		t.Errorf("NewMessage metadata = %v, want %q dropped and tenant kept", msg.Metadata, malformedKey)
	}

	b := setup(t)
	res, err := b.store.Append(testCtx(t), "order-1", eventstore.NoStream, []eventstore.Event{{Data: itemAdded{N: 1}, Metadata: md}})
	if err != nil {
		t.Fatal(err)
	}
	pub := &recordingPublisher{}
	_, done, errp := runForwarder(t, newForwarder(t, b, pub, Config{}))
	waitFor(t, 10*time.Second, "the event to be published", func() bool {
		select {
		case <-done:
			t.Fatalf("Run stopped: %v", *errp)
		default:
		}
		return pub.len() == 1
	})
	d := pub.all()[0]
	if d.UUID != res.EventIDs[0].String() {
		t.Errorf("published %s, want %s", d.UUID, res.EventIDs[0])
	}
	if _, ok := d.Metadata[malformedKey]; ok || d.Metadata["tenant"] != "acme" {
		t.Errorf("published metadata = %v", d.Metadata)
	}
}

// TestStoppingReportsFailedOffsetWrite: when the leadership has ended, a
// failed final offset write is logged at Warn (those events will be
// published again); a poll cancelled by the stop is not.
func TestStoppingReportsFailedOffsetWrite(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var buf bytes.Buffer
	b := &pollBackoff{ctx: ctx, log: slog.New(slog.NewTextHandler(&buf, nil)), fatalCh: make(chan error, 1)}

	b.HandleError(nil, false, fmt.Errorf("could not query message: %w", context.Canceled))
	if buf.Len() != 0 {
		t.Errorf("a poll cancelled by the stop was logged: %s", buf.String())
	}
	b.HandleError(nil, false, fmt.Errorf("could not get args for acking the message: %w", &offsetWriteError{err: errors.New("connection reset")}))
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "connection reset") {
		t.Errorf("failed final offset write logged %q, want a Warn with the error", out)
	}
}
