package forwarder

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	nc "github.com/nats-io/nats.go"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/testwait"
)

// appended is one event a test appended.
type appended struct {
	ID       string
	StreamID string
	Version  int64
	Position eventstore.Position
}

// appendOne appends data to stream in its own append.
func (b *bundle) appendOne(t *testing.T, stream string, data any) appended {
	t.Helper()
	res, err := b.store.Append(testCtx(t), stream, eventstore.Any, []eventstore.Event{{Data: data}})
	if err != nil {
		t.Fatalf("append %s: %v", stream, err)
	}
	return appended{ID: res.EventIDs[0].String(), StreamID: stream, Version: res.LastVersion, Position: res.LastPosition}
}

// record reads the event a back from the store.
func (b *bundle) record(t *testing.T, a appended) eventstore.Record {
	t.Helper()
	for rec, err := range b.store.ReadStream(testCtx(t), a.StreamID, a.Version) {
		if err != nil {
			t.Fatalf("ReadStream %s: %v", a.StreamID, err)
		}
		return rec
	}
	t.Fatalf("ReadStream %s from %d: nothing", a.StreamID, a.Version)
	return eventstore.Record{}
}

// poisonScenario appends, in this order: A1, A2 (the large one), A3 to
// stream A, then B1 to stream B; all are blobs, A2 of big bytes, the others
// of small.
type poisonScenario struct {
	a1, a2, a3, b1 appended
}

func (b *bundle) appendPoisonScenario(t *testing.T, category string, small, big int) poisonScenario {
	t.Helper()
	a, bs := eventstore.StreamID(category, "a"), eventstore.StreamID(category, "b")
	var s poisonScenario
	s.a1 = b.appendOne(t, a, blob{S: strings.Repeat("1", small)})
	s.a2 = b.appendOne(t, a, blob{S: strings.Repeat("2", big)})
	s.a3 = b.appendOne(t, a, blob{S: strings.Repeat("3", small)})
	s.b1 = b.appendOne(t, bs, blob{S: strings.Repeat("4", small)})
	return s
}

// waitRun waits for a Run started by runForwarder to return, and fails t if
// it has not within timeout.
func waitRun(t *testing.T, done <-chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("Run did not stop within %s: %s", timeout, what)
	}
}

// attempts counts publish attempts per message UUID; safe for concurrent use.
type attempts struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *attempts) add(uuid string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int{}
	}
	a.n[uuid]++
	return a.n[uuid]
}

func (a *attempts) get(uuid string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[uuid]
}

// published lists got as topic/UUID pairs, without payloads.
func published(got []delivery) string {
	var b strings.Builder
	for _, d := range got {
		fmt.Fprintf(&b, " %s/%s", d.Topic, d.UUID)
	}
	return b.String()
}

// indexOf returns the index of the first delivery of uuid to topic in got,
// or -1.
func indexOf(got []delivery, topic, uuid string) int {
	for i, d := range got {
		if d.Topic == topic && d.UUID == uuid {
			return i
		}
	}
	return -1
}

// TestIsMessageTooLarge: the default classification recognises the errors
// the NATS client returns for a message too large for the server or the
// stream, and forwarder's own, anywhere in the chain; and none of the errors
// an outage, a timeout, a missing stream or a RabbitMQ refusal produce (the
// last is ambiguous in watermill-amqp: "delivery not confirmed", the same as
// a nack or a connection lost while waiting for the confirm).
func TestIsMessageTooLarge(t *testing.T) {
	t.Parallel()
	jsTooLarge := &nc.APIError{Code: 400, ErrorCode: 10054, Description: "message size exceeds maximum allowed"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nats.ErrMaxPayload", nc.ErrMaxPayload, true},
		{"watermill-nats wrapping nats.ErrMaxPayload", fmt.Errorf("sending message failed: %w", nc.ErrMaxPayload), true},
		{"JetStream stream max_msg_size", fmt.Errorf("sending message failed: %w", jsTooLarge), true},
		{"joined", errors.Join(errors.New("other"), nc.ErrMaxPayload), true},
		{"MessageTooLargeError", &MessageTooLargeError{Size: 2, Limit: 1}, true},
		{"wrapping ErrMessageTooLarge", fmt.Errorf("my broker: %w", ErrMessageTooLarge), true},

		{"nil", nil, false},
		{"nats connection closed", fmt.Errorf("sending message failed: %w", nc.ErrConnectionClosed), false},
		{"nats timeout", nc.ErrTimeout, false},
		{"nats no stream response", nc.ErrNoStreamResponse, false},
		{"nats no responders", nc.ErrNoResponders, false},
		{"nats reconnect buffer exceeded", nc.ErrReconnectBufExceeded, false},
		{"nats stream not found", nc.ErrStreamNotFound, false},
		{"context deadline", context.DeadlineExceeded, false},
		{"context canceled", context.Canceled, false},
		{"amqp closed", amqp091.ErrClosed, false},
		{"amqp connection forced", &amqp091.Error{Code: amqp091.ConnectionForced, Reason: "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'", Server: true}, false},
		{"watermill-amqp delivery not confirmed", errors.New("delivery not confirmed for message [0193]"), false},
		{"watermill-amqp not connected", errors.New("not connected to AMQP"), false},
		{"the NATS text inside another error's message", errors.New("upstream said: nats: maximum payload exceeded"), false},
	} {
		if got := IsMessageTooLarge(tc.err); got != tc.want {
			t.Errorf("IsMessageTooLarge(%s: %v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestPermanentRefusalStops: an event the publisher refuses permanently
// (nats.ErrMaxPayload, wrapped as watermill-nats does) is attempted once;
// under PoisonStop Run stops with a *PoisonError naming the event, its topic
// and the refusal, with the offset right before it, and the later events of
// its stream are not published.
func TestPermanentRefusalStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.appendPoisonScenario(t, "order", 10, 100)
	var tries attempts
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		tries.add(msg.UUID)
		if msg.UUID == s.a2.ID {
			return fmt.Errorf("sending message failed: %w", nc.ErrMaxPayload)
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{RetryInterval: time.Millisecond, RetryMaxInterval: 2 * time.Millisecond})
	_, done, errp := runForwarder(t, f)
	waitRun(t, done, 30*time.Second, "a permanently refused publish is retried forever")

	var perr *PoisonError
	if !errors.Is(*errp, ErrPoison) || !errors.As(*errp, &perr) || !errors.Is(*errp, nc.ErrMaxPayload) {
		t.Fatalf("Run = %v, want a *PoisonError wrapping nats.ErrMaxPayload", *errp)
	}
	want := MessageSize(NewMessage(b.record(t, s.a2)))
	if perr.EventID != s.a2.ID || perr.StreamID != s.a2.StreamID || perr.Position != s.a2.Position || perr.Topic != "order" || perr.Size != want || perr.Type != "blob" {
		t.Errorf("PoisonError = %+v, want event %s of %s at %s, topic order, size %d", perr, s.a2.ID, s.a2.StreamID, s.a2.Position, want)
	}
	if msg := perr.Error(); !strings.Contains(msg, s.a2.ID) || !strings.Contains(msg, `"order"`) || !strings.Contains(msg, "maximum payload exceeded") || !strings.Contains(msg, strconv.Itoa(want)) {
		t.Errorf("PoisonError message %q does not name the event, topic, size and refusal", msg)
	}
	if n := tries.get(s.a2.ID); n != 1 {
		t.Errorf("the refused event was attempted %d times, want 1 (a permanent refusal is not retried)", n)
	}
	// Run has returned: every publish is over.
	if tries.get(s.a3.ID) != 0 {
		t.Errorf("A3, after the poison event A2 in its stream, was published")
	}
	if indexOf(pub.all(), "order", s.a1.ID) < 0 {
		t.Errorf("A1, before the poison event, was not published")
	}
	if off, err := f.Offset(testCtx(t)); err != nil || off != s.a1.Position {
		t.Errorf("Offset = %s, %v; want A1's %s, right before the poison event", off, err, s.a1.Position)
	}
	if st := f.Stats(); st.Poisoned != 1 {
		t.Errorf("Stats = %+v, want Poisoned 1", st)
	}
}

// TestTransientRefusalsNeverPoison: the errors a broker outage produces
// (connection closed, timeout, a confirm lost with the channel) are retried
// until they succeed, even under PoisonDeadLetter with MaxMessageSize set:
// nothing reaches the dead-letter topic and nothing counts as poison.
func TestTransientRefusalsNeverPoison(t *testing.T) {
	t.Parallel()
	b := setup(t)
	want := b.appendSpread(t, streamsOf("order", 3), 4)
	outage := []error{
		fmt.Errorf("sending message failed: %w", nc.ErrConnectionClosed),
		nc.ErrTimeout,
		errors.New("delivery not confirmed for message [x]"),
		amqp091.ErrClosed,
	}
	var tries attempts
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		if n := tries.add(msg.UUID); n <= len(outage) {
			return outage[n-1]
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{
		OnPoison: PoisonDeadLetter, DeadLetterTopic: "dead", MaxMessageSize: 1 << 20,
		RetryInterval: time.Millisecond, RetryMaxInterval: 2 * time.Millisecond,
	})
	runForwarder(t, f)
	// The publisher records an event before Publish returns, and Stats
	// counts it after: wait for both.
	testwait.Until(t, "every event", func() bool { return pub.distinct() == 12 && f.Stats().Published == 12 })
	got := pub.all()
	checkDelivered(t, got, want)
	for _, d := range got {
		if d.Topic != "order" {
			t.Errorf("event %s published to %q: a transient error was taken for a permanent one", d.UUID, d.Topic)
		}
	}
	for _, ids := range want {
		for _, id := range ids {
			if n := tries.get(id); n != len(outage)+1 {
				t.Errorf("event %s attempted %d times, want %d", id, n, len(outage)+1)
			}
		}
	}
	if st := f.Stats(); st.Poisoned != 0 || st.Published != 12 {
		t.Errorf("Stats = %+v, want Poisoned 0, Published 12", st)
	}
}

// TestPermanentRefusalDeadLetter: under PoisonDeadLetter an event its topic
// refuses permanently goes, whole, to the dead-letter topic with the reason,
// before the later events of its stream; forwarding goes on.
func TestPermanentRefusalDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.appendPoisonScenario(t, "order", 10, 100)
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		if topic == "order" && msg.UUID == s.a2.ID {
			return fmt.Errorf("sending message failed: %w", nc.ErrMaxPayload)
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{OnPoison: PoisonDeadLetter, DeadLetterTopic: "dead"})
	runForwarder(t, f)
	testwait.Until(t, "every event", func() bool { return pub.distinct() == 4 && f.Stats().Published == 3 })
	got := pub.all()
	i := indexOf(got, "dead", s.a2.ID)
	if i < 0 {
		t.Fatalf("A2 %s not on the dead-letter topic; published:%s", s.a2.ID, published(got))
	}
	dl := got[i]
	if reason := dl.Metadata.Get(MetadataPoisonReason); !strings.Contains(reason, `"order"`) || !strings.Contains(reason, "maximum payload exceeded") {
		t.Errorf("dead letter reason = %q, want the topic and the refusal", reason)
	}
	if dl.Metadata.Get(MetadataPoisonReference) != "" || string(dl.Payload) != string(b.record(t, s.a2).Payload) {
		t.Errorf("dead letter is not the whole event: %s=%q, payload %q", MetadataPoisonReference, dl.Metadata.Get(MetadataPoisonReference), dl.Payload)
	}
	if j := indexOf(got, "order", s.a3.ID); j < i {
		t.Errorf("A3 published at %d, before the dead letter of A2 at %d", j, i)
	}
	for _, a := range []appended{s.a1, s.b1} {
		if indexOf(got, "order", a.ID) < 0 {
			t.Errorf("event %s not published", a.ID)
		}
	}
	if st := f.Stats(); st.Poisoned != 1 || st.Published != 3 {
		t.Errorf("Stats = %+v, want Poisoned 1, Published 3", st)
	}
}

// TestMaxMessageSizeReference: with Config.MaxMessageSize, an event over the
// limit never reaches the publisher; under PoisonDeadLetter, as the dead
// letter is over the limit too, a reference message goes to the dead-letter
// topic (no payload; the event's identity, size and reason), before the
// stream's later events. A message exactly at the limit is published.
func TestMaxMessageSizeReference(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.appendPoisonScenario(t, "order", 2048, 8192) // the reference (a few hundred bytes) fits under the limit
	limit := 0
	for _, a := range []appended{s.a1, s.a3, s.b1} {
		limit = max(limit, MessageSize(NewMessage(b.record(t, a))))
	}
	big := MessageSize(NewMessage(b.record(t, s.a2)))
	var tries attempts
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		tries.add(msg.UUID)
		if n := MessageSize(msg); n > limit {
			t.Errorf("a message of %d bytes, over MaxMessageSize %d, reached the publisher (topic %s)", n, limit, topic)
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{OnPoison: PoisonDeadLetter, DeadLetterTopic: "dead", MaxMessageSize: limit})
	runForwarder(t, f)
	testwait.Until(t, "every event", func() bool { return pub.distinct() == 4 && f.Stats().Published == 3 })
	got := pub.all()
	i := indexOf(got, "dead", s.a2.ID)
	if i < 0 {
		t.Fatalf("no reference to A2 %s on the dead-letter topic; published:%s", s.a2.ID, published(got))
	}
	ref := got[i]
	dlSize, _ := strconv.Atoi(ref.Metadata.Get(MetadataPoisonSize))
	if ref.Metadata.Get(MetadataPoisonReference) != "true" || len(ref.Payload) != 0 || dlSize <= big {
		t.Errorf("reference: metadata %v, %d bytes of payload; want %s=true, no payload, %s over the event's %d bytes", ref.Metadata, len(ref.Payload), MetadataPoisonReference, MetadataPoisonSize, big)
	}
	if reason := ref.Metadata.Get(MetadataPoisonReason); !strings.Contains(reason, fmt.Sprintf("message of %d bytes is larger than MaxMessageSize %d", big, limit)) ||
		!strings.Contains(reason, `dead-letter topic "dead" refused`) {
		t.Errorf("reference reason = %q", reason)
	}
	msg := message.NewMessage(ref.UUID, ref.Payload)
	msg.Metadata = ref.Metadata
	rec, err := RecordFromMessage(msg)
	if err != nil || rec.ID.String() != s.a2.ID || rec.StreamID != s.a2.StreamID || rec.StreamVersion != s.a2.Version || rec.Position != s.a2.Position || rec.Type != "blob" {
		t.Errorf("RecordFromMessage(reference) = %+v, %v; want A2's identity", rec, err)
	}
	if j := indexOf(got, "order", s.a3.ID); j < i {
		t.Errorf("A3 published at %d, before the reference to A2 at %d", j, i)
	}
	if n := tries.get(s.a2.ID); n != 1 {
		t.Errorf("A2 reached the publisher %d times, want once (its reference)", n)
	}
	if st := f.Stats(); st.Poisoned != 1 || st.Published != 3 {
		t.Errorf("Stats = %+v, want Poisoned 1, Published 3", st)
	}
	head := b.waitFeed(t, 4)
	testwait.Until(t, "the offset to pass the reference", func() bool {
		off, err := f.Offset(testCtx(t))
		return err == nil && off == head
	})
}

// TestDeadLetterRefusedStops: when the dead-letter topic refuses the event
// and the reference to it too, nothing is dropped: Run stops with a
// *PoisonError naming the event and wrapping every refusal, the offset right
// before it.
func TestDeadLetterRefusedStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.appendPoisonScenario(t, "order", 10, 100)
	var deadTries attempts
	pub := &recordingPublisher{before: func(topic string, msg *message.Message) error {
		if topic == "dead" {
			deadTries.add(msg.UUID)
			return fmt.Errorf("my broker refuses: %w", ErrMessageTooLarge)
		}
		if msg.UUID == s.a2.ID {
			return fmt.Errorf("sending message failed: %w", nc.ErrMaxPayload)
		}
		return nil
	}}
	f := newForwarder(t, b, pub, Config{OnPoison: PoisonDeadLetter, DeadLetterTopic: "dead"})
	_, done, errp := runForwarder(t, f)
	waitRun(t, done, 30*time.Second, "the dead-letter topic refused the event and its reference")
	var perr *PoisonError
	if !errors.As(*errp, &perr) || !errors.Is(*errp, ErrPoison) || !errors.Is(*errp, nc.ErrMaxPayload) || !errors.Is(*errp, ErrMessageTooLarge) {
		t.Fatalf("Run = %v, want a *PoisonError wrapping the topic's and the dead-letter topic's refusals", *errp)
	}
	if perr.EventID != s.a2.ID || perr.Topic != "order" || !strings.Contains(perr.Error(), "a reference to it") {
		t.Errorf("PoisonError = %v", perr)
	}
	if n := deadTries.get(s.a2.ID); n != 2 {
		t.Errorf("the dead-letter topic saw %d attempts for A2, want 2 (the event, then its reference)", n)
	}
	if indexOf(pub.all(), "order", s.a3.ID) >= 0 {
		t.Errorf("A3 was published after its stream's poison event")
	}
	if off, err := f.Offset(testCtx(t)); err != nil || off != s.a1.Position {
		t.Errorf("Offset = %s, %v; want A1's %s", off, err, s.a1.Position)
	}
}
