package forwarder

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/testwait"
)

// feedSees reports whether the global feed after `after` contains id, as a
// projection polling ReadAll would see it.
func (b *bundle) feedSees(t *testing.T, after eventstore.Position, id uuid.UUID) bool {
	t.Helper()
	for {
		recs, err := b.store.ReadAll(testCtx(t), after, 1000)
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		if len(recs) == 0 {
			return false
		}
		for _, r := range recs {
			if r.ID == id {
				return true
			}
		}
		after = recs[len(recs)-1].Position
	}
}

// TestSlowPublishDoesNotHoldBackFeed is the xid trap (docs/forwarding.md) and point 4 of
// the issue: while the broker takes 100 ms per publish, a reader of the
// global feed on the same database (a projection polling ReadAll) sees a
// fresh append within its normal latency, because the forwarder holds no
// transaction id while a publish is in flight.
//
// How we know the test would fail with an xid-holding design:
// TestXidHoldingDesignHoldsBackFeed runs the very same forwarder switched to
// watermill-sql's default design (one transaction per batch whose offsets
// SELECT ... FOR UPDATE takes a transaction id) and shows the fresh append
// staying invisible for as long as a publish is in flight.
func TestSlowPublishDoesNotHoldBackFeed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const backlog = 60 // 6 s of publishing at 100 ms each
	b.appendSpread(t, []string{"order-1"}, backlog)
	inPublish := make(chan struct{}, backlog*2)
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		inPublish <- struct{}{}
		select {
		case <-time.After(100 * time.Millisecond):
			return nil
		case <-msg.Context().Done():
			return msg.Context().Err()
		}
	}}
	f := newForwarder(t, b, pub, Config{BatchSize: 100})
	runForwarder(t, f)
	<-inPublish
	<-inPublish // in the middle of the first batch

	head, err := b.store.Head(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		res, err := b.store.Append(testCtx(t), "reader-1", eventstore.Any, []eventstore.Event{{Data: itemAdded{N: i}}})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		testwait.UntilWithin(t, 2*time.Second, "the feed reader to see a fresh append while a slow publish is in flight", func() bool {
			return b.feedSees(t, head, res.EventIDs[0])
		})
		t.Logf("fresh append %d visible to the feed after %s, %d of %d backlog events published", i+1, time.Since(start), pub.len(), backlog)
	}
	if n := pub.len(); n >= backlog {
		t.Fatalf("the backlog was fully published (%d) before the reader's checks ended: the test proved nothing", n)
	}
}

// TestXidHoldingDesignHoldsBackFeed is the control of
// TestSlowPublishDoesNotHoldBackFeed: the forwarder switched to
// watermill-sql's default design (a real transaction per batch and FOR
// UPDATE on the offsets row, xidHoldingForTest) holds a transaction id while
// it publishes, and a reader of the global feed does not see a fresh append
// until the publish in flight returns and the batch commits.
func TestXidHoldingDesignHoldsBackFeed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendSpread(t, []string{"order-1"}, 5)
	blocked := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int64
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		if calls.Add(1) == 2 {
			close(blocked)
			select {
			case <-release:
			case <-msg.Context().Done():
				return msg.Context().Err()
			}
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{BatchSize: 100})
	f.xidHoldingForTest = true
	runForwarder(t, f)
	<-blocked

	head, err := b.store.Head(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.store.Append(testCtx(t), "reader-1", eventstore.Any, []eventstore.Event{{Data: itemAdded{}}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if b.feedSees(t, head, res.EventIDs[0]) {
			t.Fatal("the feed saw the fresh append while the xid-holding batch was open: the control does not reproduce the trap")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	testwait.Until(t, "the fresh append after the batch committed", func() bool {
		return b.feedSees(t, head, res.EventIDs[0])
	})
}
