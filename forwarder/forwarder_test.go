package forwarder

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// consume reads msgs in a goroutine until the channel closes, acking each
// and adding it to c; cleanup waits for the goroutine.
func consume(t *testing.T, topic string, msgs <-chan *message.Message, c *collector, cancel func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m := range msgs {
			c.add(deliveryOf(topic, m))
			m.Ack()
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// deliveryScenario is the delivery test every publisher runs: it appends
// events across several streams, runs a forwarder until about a third has
// arrived, stops it, appends more, runs a fresh forwarder (as after a crash
// or a deploy), and checks that every event arrived at least once and per
// stream first deliveries are in version order.
func deliveryScenario(t *testing.T, b *bundle, pub message.Publisher, got *collector, category string, cfg Config) {
	t.Helper()
	const perStream, m = 60, 5
	streams := streamsOf(category, m)
	want := b.appendSpread(t, streams, perStream/2)

	f1 := newForwarder(t, b, pub, cfg)
	stop, _, _ := runForwarder(t, f1)
	testwait.Until(t, "a third of the events", func() bool { return got.distinct() >= perStream*m/3 })
	if err := stop(); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	t.Logf("first forwarder published %d events before it was stopped", f1.Stats().Published)

	more := b.appendSpread(t, streams, perStream/2)
	for s, ids := range more {
		want[s] = append(want[s], ids...)
	}
	f2 := newForwarder(t, b, pub, cfg)
	runForwarder(t, f2)
	testwait.Until(t, "every event", func() bool { return got.distinct() >= perStream*m })
	checkDelivered(t, got.all(), want)
	if n := got.len(); n > perStream*m {
		t.Logf("%d duplicates (at-least-once)", n-perStream*m)
	}
}

func TestDeliveryGoChannel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// GoChannel delivers each message from its own goroutine: only
	// BlockPublishUntilSubscriberAck keeps the publish order.
	gc := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	t.Cleanup(func() { _ = gc.Close() })
	category := randomCategory("gc")
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := gc.Subscribe(ctx, category)
	if err != nil {
		t.Fatal(err)
	}
	var got collector
	consume(t, category, msgs, &got, cancel)
	deliveryScenario(t, b, gc, &got, category, Config{BatchSize: 7})
}

func TestMetadataFlattening(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := eventstore.WithMetadata(testCtx(t), eventstore.Metadata{
		CorrelationID: "corr-1", CausationID: "cause-1", Actor: "alice", OnBehalfOf: "customer-9", Reason: "ticket 12",
		Extra: map[string]string{"tenant": "acme", MetadataStreamID: "user-value-must-lose"},
	})
	res, err := b.store.Append(ctx, "order-42", eventstore.NoStream, []eventstore.Event{{Data: itemAdded{N: 7}}})
	if err != nil {
		t.Fatal(err)
	}
	pub := &recordingPublisher{}
	runForwarder(t, newForwarder(t, b, pub, Config{}))
	testwait.Until(t, "the event", func() bool { return pub.len() == 1 })
	d := pub.all()[0]

	if d.Topic != "order" {
		t.Errorf("topic = %q, want the category %q", d.Topic, "order")
	}
	if d.UUID != res.EventIDs[0].String() {
		t.Errorf("UUID = %s, want the event ID %s", d.UUID, res.EventIDs[0])
	}
	if string(d.Payload) != `{"n": 7}` && string(d.Payload) != `{"n":7}` {
		t.Errorf("payload = %s", d.Payload)
	}
	want := map[string]string{
		MetadataStreamID: "order-42", MetadataStreamVersion: "1", MetadataEventType: "item_added", MetadataSchemaVersion: "1",
		MetadataPosition:      fmt.Sprint(res.LastPosition.Position),
		MetadataTransactionID: fmt.Sprint(res.LastPosition.TransactionID),
		MetadataCorrelationID: "corr-1", MetadataCausationID: "cause-1", eventstore.MetadataActor: "alice",
		eventstore.MetadataOnBehalfOf: "customer-9", eventstore.MetadataReason: "ticket 12",
		"tenant": "acme",
	}
	for k, v := range want {
		if got := d.Metadata.Get(k); got != v {
			t.Errorf("metadata[%q] = %q, want %q", k, got, v)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, d.Metadata.Get(MetadataRecordedAt)); err != nil {
		t.Errorf("recorded_at: %v", err)
	}
	if len(d.Metadata) != len(want)+1 {
		t.Errorf("metadata has %d keys, want %d: %v", len(d.Metadata), len(want)+1, d.Metadata)
	}

	// RecordFromMessage is the inverse, for consumers.
	msg := message.NewMessage(d.UUID, d.Payload)
	msg.Metadata = d.Metadata
	rec, err := RecordFromMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != res.EventIDs[0] || rec.StreamID != "order-42" || rec.StreamVersion != 1 || rec.Type != "item_added" ||
		rec.Position != res.LastPosition || rec.Metadata.CorrelationID != "corr-1" || rec.Metadata.Extra["tenant"] != "acme" ||
		rec.Metadata.OnBehalfOf != "customer-9" || rec.Metadata.Reason != "ticket 12" {
		t.Errorf("RecordFromMessage = %+v", rec)
	}
	if _, ok := rec.Metadata.Extra[MetadataStreamID]; ok {
		t.Errorf("record fields leaked into user metadata: %v", rec.Metadata.Extra)
	}
	if _, ok := rec.Metadata.Extra[MetadataSchemaVersion]; ok || rec.SchemaVersion != 1 {
		t.Errorf("RecordFromMessage: schema version %d, user metadata %v; want 1, not in the metadata", rec.SchemaVersion, rec.Metadata.Extra)
	}
	delete(msg.Metadata, MetadataPosition)
	if _, err := RecordFromMessage(msg); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("RecordFromMessage without position: %v, want ErrInvalidArgument", err)
	}
}

// TestFiltersAdvanceOffset: events the filters leave out are not published,
// and the offset still moves past them.
func TestFiltersAdvanceOffset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := b.appendSpread(t, []string{"order-1", "invoice-1", "order-2"}, 5)
	pub := &recordingPublisher{}
	f := newForwarder(t, b, pub, Config{Categories: []string{"order"}, BatchSize: 4})
	runForwarder(t, f)
	head := b.waitFeed(t, 15)
	testwait.Until(t, "the offset to reach the head", func() bool {
		off, err := f.Offset(testCtx(t))
		return err == nil && off == head
	})
	delete(want, "invoice-1")
	checkDelivered(t, pub.all(), want)
	if n := pub.len(); n != 10 {
		t.Errorf("published %d, want 10", n)
	}
	if st := f.Stats(); st.Filtered != 5 || st.Published != 10 {
		t.Errorf("Stats = %+v, want Filtered 5, Published 10", st)
	}

	// EventTypes: none match, nothing is published, the offset still moves.
	b2 := setup(t)
	b2.appendSpread(t, []string{"order-1"}, 3)
	pub2 := &recordingPublisher{}
	f2 := newForwarder(t, b2, pub2, Config{EventTypes: []string{"other_type"}})
	runForwarder(t, f2)
	head2 := b2.waitFeed(t, 3)
	testwait.Until(t, "the offset to reach the head", func() bool {
		off, err := f2.Offset(testCtx(t))
		return err == nil && off == head2
	})
	if pub2.len() != 0 {
		t.Errorf("published %d events of a filtered-out type", pub2.len())
	}
}

// TestPublishErrorsNeverSkip: a publisher that fails often still gets every
// event, in order, and a failed event is retried, not skipped.
func TestPublishErrorsNeverSkip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := b.appendSpread(t, streamsOf("order", 3), 10)
	failures := map[string]int{}
	var mu sync.Mutex
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if failures[msg.UUID] < 2 { // every event fails twice, then succeeds
			failures[msg.UUID]++
			return errors.New("broker says no")
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{RetryInterval: time.Millisecond, RetryMaxInterval: 2 * time.Millisecond})
	runForwarder(t, f)
	testwait.Until(t, "every event", func() bool { return pub.distinct() == 30 })
	got := pub.all()
	checkDelivered(t, got, want)
	if len(got) != 30 {
		t.Errorf("%d publishes succeeded, want exactly 30 (one per event: failed ones are retried, never re-sent after success)", len(got))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) != 30 {
		t.Errorf("%d events saw a failure, want all 30", len(failures))
	}
	for id, n := range failures {
		if n != 2 {
			t.Errorf("event %s failed %d times, want 2", id, n)
		}
	}
}

func TestPoisonStop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendSpread(t, []string{"order-1"}, 3)
	bad, err := b.store.Append(testCtx(t), "bad-1", eventstore.Any, []eventstore.Event{{Data: itemAdded{}}})
	if err != nil {
		t.Fatal(err)
	}
	b.appendSpread(t, []string{"order-2"}, 3)

	pub := &recordingPublisher{}
	topicErr := errors.New("no topic for category bad")
	f := newForwarder(t, b, pub, Config{Topic: func(rec eventstore.Record) (string, error) {
		if eventstore.Category(rec.StreamID) == "bad" {
			return "", topicErr
		}
		return TopicByCategory(rec)
	}})
	_, done, errp := runForwarder(t, f)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop on the poison event")
	}
	runErr := *errp
	var perr *PoisonError
	if !errors.Is(runErr, ErrPoison) || !errors.As(runErr, &perr) || !errors.Is(runErr, topicErr) {
		t.Fatalf("Run = %v, want a *PoisonError wrapping the topic error", runErr)
	}
	if perr.EventID != bad.EventIDs[0].String() || perr.StreamID != "bad-1" {
		t.Errorf("PoisonError = %+v", perr)
	}
	if pub.len() != 3 {
		t.Errorf("published %d, want the 3 events before the poison one", pub.len())
	}
	off, err := f.Offset(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	b.waitFeed(t, 7)
	recs, err := b.store.ReadAll(testCtx(t), eventstore.Position{}, 10)
	if err != nil || len(recs) != 7 || recs[3].Position != bad.LastPosition {
		t.Fatalf("ReadAll: %d records, %v; want 7 with the poison event 4th", len(recs), err)
	}
	if off != recs[2].Position {
		t.Errorf("offset = %s, want %s, the event just before the poison one at %s", off, recs[2].Position, bad.LastPosition)
	}
}

func TestPoisonDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := b.appendSpread(t, []string{"order-1"}, 2)
	bad, err := b.store.Append(testCtx(t), "bad-1", eventstore.Any, []eventstore.Event{{Data: itemAdded{}}})
	if err != nil {
		t.Fatal(err)
	}
	more := b.appendSpread(t, []string{"order-1"}, 2)
	want["order-1"] = append(want["order-1"], more["order-1"]...)

	pub := &recordingPublisher{}
	f := newForwarder(t, b, pub, Config{OnPoison: PoisonDeadLetter, DeadLetterTopic: "dead", Topic: func(rec eventstore.Record) (string, error) {
		if eventstore.Category(rec.StreamID) == "bad" {
			return "", errors.New("unroutable")
		}
		return TopicByCategory(rec)
	}})
	runForwarder(t, f)
	testwait.Until(t, "every event", func() bool { return pub.len() == 5 && f.Stats().Published == 4 })
	var dead []delivery
	var ok []delivery
	for _, d := range pub.all() {
		if d.Topic == "dead" {
			dead = append(dead, d)
		} else {
			ok = append(ok, d)
		}
	}
	if len(dead) != 1 || dead[0].UUID != bad.EventIDs[0].String() || !strings.Contains(dead[0].Metadata.Get(MetadataPoisonReason), "unroutable") {
		t.Errorf("dead letters = %+v", dead)
	}
	checkDelivered(t, ok, want)
	if st := f.Stats(); st.Poisoned != 1 || st.Published != 4 {
		t.Errorf("Stats = %+v", st)
	}
}

// TestWakeUpWithoutPolling: an append through the same Store wakes the
// forwarder at once, without waiting for a poll (PollInterval is an hour
// here), which is what keeps commit-to-publish latency low. A fresh append
// only becomes visible to the feed once no older transaction is open on the
// server (other tests' included), so a wake-up may find nothing yet: each
// round appends again (another wake-up) until the events arrive; with an
// hour-long poll only wake-ups can deliver them.
func TestWakeUpWithoutPolling(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pub := &recordingPublisher{}
	f := newForwarder(t, b, pub, Config{PollInterval: time.Hour})
	runForwarder(t, f)
	// Let it reach its first idle wait.
	testwait.Until(t, "the offset row", func() bool {
		var n int
		return b.db.Get(&n, `SELECT count(*) FROM `+f.offsets) == nil && n == 1
	})
	appended := 0
	for round := 0; round < 20 && pub.len() < 3; round++ {
		b.appendSpread(t, []string{"order-1"}, 1)
		appended++
		deadline := time.Now().Add(500 * time.Millisecond)
		for pub.len() < appended && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
	}
	if pub.len() < 3 {
		t.Fatalf("%d of %d appends published with an hour-long poll: the store's wake-up does not reach the forwarder", pub.len(), appended)
	}
}

// TestIdlePollCommitsNothing: an idle forwarder polls without writing or
// locking anything: over 300 polls of the feed's head its pool sends no
// other statement, and the offsets row keeps its xmin (no UPDATE) and has
// no xmax (no FOR UPDATE).
func TestIdlePollCommitsNothing(t *testing.T) {
	t.Parallel()
	// The forwarder's pool counts its statements: the signal that idle
	// polls happened is the feed watcher's head polls themselves.
	check := pgtest.Open(t)
	db, stmts := pgtest.OpenCounting(t)
	db.SetMaxOpenConns(20)
	b := setupOn(t, db, pgtest.Schema(t, check))
	b.appendSpread(t, []string{"order-1"}, 2)
	pub := &recordingPublisher{}
	// An hour between leadership retries: the lock session sends nothing
	// while the test watches.
	f := newForwarder(t, b, pub, Config{PollInterval: time.Millisecond, LeaderRetryInterval: time.Hour})
	runForwarder(t, f)
	testwait.Until(t, "the backlog", func() bool { return pub.len() == 2 })
	head := b.waitFeed(t, 2)
	testwait.Until(t, "the offset to reach the head", func() bool {
		off, err := f.Offset(testCtx(t))
		return err == nil && off == head
	})
	rowVersion := func() (xmin, xmax string) {
		if err := check.QueryRow(`SELECT xmin::text, xmax::text FROM `+f.offsets+` WHERE consumer_group = $1`, f.cfg.ConsumerGroup).Scan(&xmin, &xmax); err != nil {
			t.Fatal(err)
		}
		return
	}
	xmin0, xmax0 := rowVersion()
	got, err := stmts.Wait(testCtx(t), stmts.Len(), 300, isHeadPoll)
	if err != nil {
		t.Fatalf("waiting for 300 idle polls of the feed's head: %v", err)
	}
	var other []string
	for _, q := range got {
		if !isHeadPoll(q) {
			other = append(other, q)
		}
	}
	if len(other) > 0 {
		t.Fatalf("over 300 idle polls the forwarder sent %d other statements:%s", len(other), pgtest.Summary(other))
	}
	if xmin, xmax := rowVersion(); xmin != xmin0 || xmax != "0" {
		t.Fatalf("idle polling touched the offsets row: xmin %s -> %s, xmax %s -> %s", xmin0, xmin, xmax0, xmax)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pub := &recordingPublisher{}
	for _, tc := range []struct {
		field string
		cfg   Config
	}{
		{"BatchSize", Config{BatchSize: -1}},
		{"BatchSize", Config{BatchSize: eventstore.MaxReadAllLimit + 1}},
		{"PollInterval", Config{PollInterval: -time.Second}},
		{"RetryMaxInterval", Config{RetryInterval: time.Second, RetryMaxInterval: time.Millisecond}},
		{"DeadLetterTopic", Config{OnPoison: PoisonDeadLetter}},
		{"DeadLetterTopic", Config{DeadLetterTopic: "dead"}},
		{"OnPoison", Config{OnPoison: 7}},
		{"ConsumerGroup", Config{ConsumerGroup: strings.Repeat("g", 256)}},
		{"MaxMessageSize", Config{MaxMessageSize: -1}},
	} {
		_, err := New(b.store, pub, tc.cfg)
		var iae *eventstore.InvalidArgumentError
		if !errors.As(err, &iae) || iae.Field != tc.field {
			t.Errorf("New(%+v) = %v, want an InvalidArgumentError on %s", tc.cfg, err, tc.field)
		}
	}
	if _, err := New(nil, pub, Config{}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("New(nil store) = %v", err)
	}
	if _, err := New(b.store, nil, Config{}); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("New(nil publisher) = %v", err)
	}
	f, err := New(b.store, pub, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg.ConsumerGroup != ConsumerGroupDefault || f.cfg.BatchSize != BatchSizeDefault || f.cfg.PollInterval != PollIntervalDefault {
		t.Errorf("defaults not applied: %+v", f.cfg)
	}
}

// TestGroupsAndSingleLeader: forwarders of different consumer groups each
// get every event from the one events table; of two forwarders in the same
// group only one publishes.
func TestGroupsAndSingleLeader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := b.appendSpread(t, streamsOf("order", 2), 10)
	pubA, pubB1, pubB2 := &recordingPublisher{}, &recordingPublisher{}, &recordingPublisher{}
	fa := newForwarder(t, b, pubA, Config{ConsumerGroup: "a"})
	fb1 := newForwarder(t, b, pubB1, Config{ConsumerGroup: "b"})
	fb2 := newForwarder(t, b, pubB2, Config{ConsumerGroup: "b"})
	runForwarder(t, fa)
	runForwarder(t, fb1)
	runForwarder(t, fb2)
	testwait.Until(t, "both groups", func() bool { return pubA.distinct() == 20 && pubB1.distinct()+pubB2.distinct() >= 20 })
	more := b.appendSpread(t, streamsOf("order", 2), 5)
	for s, ids := range more {
		want[s] = append(want[s], ids...)
	}
	testwait.Until(t, "both groups", func() bool { return pubA.distinct() == 30 && pubB1.distinct()+pubB2.distinct() >= 30 })
	checkDelivered(t, pubA.all(), want)
	checkDelivered(t, append(pubB1.all(), pubB2.all()...), want)
	if pubB1.len() > 0 && pubB2.len() > 0 {
		t.Errorf("two forwarders of group b both published (%d and %d)", pubB1.len(), pubB2.len())
	}
	if n := pubB1.len() + pubB2.len(); n != 30 {
		t.Errorf("group b published %d messages for 30 events", n)
	}
}

// TestShutdownRecordsPublished: stopping a forwarder in the middle of a
// batch records the events already published, so the next one starts after
// them, and never records one that was not published.
func TestShutdownRecordsPublished(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendSpread(t, []string{"order-1"}, 20)
	release := make(chan struct{})
	var n atomic.Int64
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		if n.Add(1) == 6 { // block the 6th publish until shutdown
			select {
			case <-msg.Context().Done():
				return msg.Context().Err()
			case <-release:
			}
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{BatchSize: 100})
	stop, _, _ := runForwarder(t, f)
	testwait.Until(t, "5 publishes", func() bool { return pub.len() == 5 && n.Load() == 6 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	close(release)
	off, err := f.Offset(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := b.store.ReadAll(testCtx(t), eventstore.Position{}, 20)
	if err != nil {
		t.Fatal(err)
	}
	if off != recs[4].Position {
		t.Errorf("offset after shutdown = %s, want the 5th event's %s", off, recs[4].Position)
	}
}

// TestSetOffset: moving the offset replays from (or skips to) a position,
// the operation a restore or a replay needs.
func TestSetOffset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := migrate(testCtx(t), b.store); err != nil {
		t.Fatal(err)
	}
	b.appendSpread(t, []string{"order-1"}, 6)
	b.waitFeed(t, 6)
	recs, err := b.store.ReadAll(testCtx(t), eventstore.Position{}, 10)
	if err != nil || len(recs) != 6 {
		t.Fatalf("ReadAll: %d records, %v", len(recs), err)
	}
	pub := &recordingPublisher{}
	f := newForwarder(t, b, pub, Config{})
	if err := f.SetOffset(testCtx(t), recs[3].Position); err != nil {
		t.Fatal(err)
	}
	if off, err := f.Offset(testCtx(t)); err != nil || off != recs[3].Position {
		t.Fatalf("Offset = %s, %v; want %s", off, err, recs[3].Position)
	}
	stop, _, _ := runForwarder(t, f)
	testwait.Until(t, "the events after the offset", func() bool { return pub.len() == 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := pub.all()
	if got[0].UUID != recs[4].ID.String() || got[1].UUID != recs[5].ID.String() {
		t.Errorf("published %v, want the 5th and 6th events", got)
	}

	// Replay everything from the start.
	if err := f.SetOffset(testCtx(t), eventstore.Position{}); err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f)
	testwait.Until(t, "the replay", func() bool { return pub.len() == 8 })
}

// TestConcurrentPublishKeepsStreamOrder: with several publishes in flight
// (different streams) and a publisher of uneven speed, each stream's events
// still arrive in version order, exactly once, and publishes really overlap.
// With PublishConcurrency 1 the whole feed order is kept.
func TestConcurrentPublishKeepsStreamOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := b.appendSpread(t, streamsOf("order", 8), 15)
	var inFlight, maxInFlight atomic.Int64
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		v, _ := strconv.Atoi(msg.Metadata.Get(MetadataStreamVersion))
		time.Sleep(time.Duration(v%4) * time.Millisecond)
		return nil
	}}
	runForwarder(t, newForwarder(t, b, pub, Config{PublishConcurrency: 8, BatchSize: 50}))
	testwait.Until(t, "every event", func() bool { return pub.distinct() == 120 })
	checkDelivered(t, pub.all(), want)
	if pub.len() != 120 {
		t.Errorf("%d publishes for 120 events", pub.len())
	}
	if maxInFlight.Load() < 2 {
		t.Errorf("at most %d publish in flight: no concurrency", maxInFlight.Load())
	}

	b2 := setup(t)
	b2.appendSpread(t, streamsOf("order", 4), 5)
	head := b2.waitFeed(t, 20)
	recs, err := b2.store.ReadAll(testCtx(t), eventstore.Position{}, 100)
	if err != nil || len(recs) != 20 || recs[19].Position != head {
		t.Fatalf("ReadAll: %d, %v", len(recs), err)
	}
	seq := &recordingPublisher{}
	runForwarder(t, newForwarder(t, b2, seq, Config{PublishConcurrency: 1}))
	testwait.Until(t, "every event", func() bool { return seq.len() == 20 })
	for i, d := range seq.all() {
		if d.UUID != recs[i].ID.String() {
			t.Fatalf("PublishConcurrency 1: publish %d is %s, want feed order %s", i, d.UUID, recs[i].ID)
		}
	}
}

// TestMalformedRowStops: a row whose metadata is not a JSON object cannot
// become a message; Run stops with a *MalformedRowError (ErrPoison) instead
// of skipping it.
func TestMalformedRowStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.appendSpread(t, []string{"order-1"}, 2)
	if _, err := b.db.Exec(`INSERT INTO ` + b.store.QualifiedEventsTable() + ` (event_id, stream_id, stream_version, event_type, payload, metadata)
VALUES (gen_random_uuid(), 'order-2', 1, 'item_added', '{}', '[1, 2]')`); err != nil {
		t.Fatal(err)
	}
	pub := &recordingPublisher{}
	_, done, errp := runForwarder(t, newForwarder(t, b, pub, Config{}))
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop on the malformed row")
	}
	var mre *MalformedRowError
	if !errors.Is(*errp, ErrPoison) || !errors.As(*errp, &mre) {
		t.Fatalf("Run = %v, want a *MalformedRowError", *errp)
	}
	if pub.len() != 2 {
		t.Errorf("published %d, want the 2 events before the malformed row", pub.len())
	}
}
