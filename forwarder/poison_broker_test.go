package forwarder

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	wnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	nc "github.com/nats-io/nats.go"

	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// oversized is the payload of the event too large for the brokers: NATS's
// default max_payload is 1 MiB, and the RabbitMQ test lowers
// max_message_size to 1 MiB.
const oversized = 2 << 20

// watchedPublisher wraps a real publisher: it records, in call order, each
// message the broker accepted, and counts the attempts per message UUID.
type watchedPublisher struct {
	message.Publisher
	accepted collector
	tries    attempts
}

func (p *watchedPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		p.tries.add(m.UUID)
		if err := p.Publisher.Publish(topic, m); err != nil {
			return err
		}
		p.accepted.add(deliveryOf(topic, m))
	}
	return nil
}

// checkStoppedBeforeOversized checks the outcome of PoisonStop on the
// poison scenario: Run returned a *PoisonError naming A2 and topic, its
// offset is A1's, A1 reached the broker and A3 was never published.
func checkStoppedBeforeOversized(t *testing.T, f *Forwarder, pub *watchedPublisher, got *collector, s poisonScenario, topic string, runErr error) *PoisonError {
	t.Helper()
	var perr *PoisonError
	if !errors.Is(runErr, ErrPoison) || !errors.As(runErr, &perr) {
		t.Fatalf("Run = %v, want a *PoisonError", runErr)
	}
	if perr.EventID != s.a2.ID || perr.StreamID != s.a2.StreamID || perr.Position != s.a2.Position || perr.Topic != topic || perr.Size <= oversized {
		t.Errorf("PoisonError = %+v, want event %s at %s, topic %s, size over %d", perr, s.a2.ID, s.a2.Position, topic, oversized)
	}
	if off, err := f.Offset(testCtx(t)); err != nil || off != s.a1.Position {
		t.Errorf("Offset = %s, %v; want A1's %s, right before the oversized event", off, err, s.a1.Position)
	}
	if indexOf(pub.accepted.all(), topic, s.a1.ID) < 0 {
		t.Errorf("A1, before the oversized event, was not published")
	}
	if n := pub.tries.get(s.a3.ID); n != 0 {
		t.Errorf("A3, after the oversized event in its stream, was published %d times", n)
	}
	testwait.Until(t, "A1 at the subscriber", func() bool { return indexOf(got.all(), topic, s.a1.ID) >= 0 })
	return perr
}

// checkReferenceParked checks the outcome of PoisonDeadLetter on the poison
// scenario: A1, A3 and B1 reach the subscriber of topic, a reference to A2
// reaches the one of the dead-letter topic, published before A3, and the
// offset passes them all.
func checkReferenceParked(t *testing.T, b *bundle, f *Forwarder, pub *watchedPublisher, got, dead *collector, s poisonScenario, topic, deadTopic string) delivery {
	t.Helper()
	testwait.Until(t, "A1, A3 and B1 at the subscriber, and a reference to A2 on the dead-letter topic", func() bool {
		return got.distinct() == 3 && dead.distinct() == 1 && indexOf(pub.accepted.all(), topic, s.a3.ID) >= 0
	})
	checkDelivered(t, got.all(), map[string][]string{s.a1.StreamID: {s.a1.ID, s.a3.ID}, s.b1.StreamID: {s.b1.ID}})
	ref := dead.all()[0]
	size, _ := strconv.Atoi(ref.Metadata.Get(MetadataPoisonSize))
	if ref.UUID != s.a2.ID || ref.Metadata.Get(MetadataPoisonReference) != "true" || len(ref.Payload) != 0 || size <= oversized {
		t.Errorf("dead letter = UUID %s, %s=%q, %d bytes of payload, %s=%q; want a reference to A2 %s",
			ref.UUID, MetadataPoisonReference, ref.Metadata.Get(MetadataPoisonReference), len(ref.Payload), MetadataPoisonSize, ref.Metadata.Get(MetadataPoisonSize), s.a2.ID)
	}
	msg := message.NewMessage(ref.UUID, ref.Payload)
	msg.Metadata = ref.Metadata
	if rec, err := RecordFromMessage(msg); err != nil || rec.StreamID != s.a2.StreamID || rec.StreamVersion != s.a2.Version || rec.Position != s.a2.Position {
		t.Errorf("RecordFromMessage(reference) = %+v, %v; want A2's stream, version and position", rec, err)
	}
	accepted := pub.accepted.all()
	if i, j := indexOf(accepted, deadTopic, s.a2.ID), indexOf(accepted, topic, s.a3.ID); i < 0 || j < i {
		t.Errorf("A3 published at %d, before the reference to A2 at %d", j, i)
	}
	head := b.waitFeed(t, 4)
	testwait.Until(t, "the offset to pass the parked event", func() bool {
		off, err := f.Offset(testCtx(t))
		return err == nil && off == head
	})
	return ref
}

// natsServerMaxPayload returns the NATS server's max_payload.
func natsServerMaxPayload(t *testing.T) int64 {
	t.Helper()
	conn, err := nc.Connect(natsURL)
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	defer conn.Close()
	return conn.MaxPayload()
}

// TestTooLargeForNATS: a 2 MiB event, over NATS's default max_payload of
// 1 MiB, with no MaxMessageSize configured: the default IsPermanent
// recognises the client's refusal. Under PoisonStop Run stops with a
// *PoisonError naming it, the offset right before it; under
// PoisonDeadLetter a reference to it reaches the dead-letter topic (the
// event is too large for that too) and the later events flow.
func TestTooLargeForNATS(t *testing.T) {
	t.Parallel()
	requireBroker(t, "NATS", "127.0.0.1:4222")
	if mp := natsServerMaxPayload(t); mp >= oversized {
		t.Fatalf("the NATS server's max_payload is %d, not below the test event's %d bytes (the default is 1 MiB)", mp, oversized)
	}

	t.Run("stop", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		category := randomCategory("esoxbig")
		p, got := natsPubSub(t, category)
		pub := &watchedPublisher{Publisher: p}
		s := b.appendPoisonScenario(t, category, 10, oversized)
		f := newForwarder(t, b, pub, Config{})
		_, done, errp := runForwarder(t, f)
		waitRun(t, done, 60*time.Second, "the oversized event is retried forever")
		perr := checkStoppedBeforeOversized(t, f, pub, got, s, category, *errp)
		if !errors.Is(perr, nc.ErrMaxPayload) || !IsMessageTooLarge(perr) {
			t.Errorf("PoisonError.Err = %v, want nats.ErrMaxPayload", perr.Err)
		}
		if n := pub.tries.get(s.a2.ID); n != 1 {
			t.Errorf("the oversized event was attempted %d times, want 1", n)
		}
	})

	t.Run("dead_letter", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		category := randomCategory("esoxbig")
		deadTopic := category + "dead"
		p, got := natsPubSub(t, category)
		_, dead := natsPubSub(t, deadTopic)
		pub := &watchedPublisher{Publisher: p}
		s := b.appendPoisonScenario(t, category, 10, oversized)
		f := newForwarder(t, b, pub, Config{OnPoison: PoisonDeadLetter, DeadLetterTopic: deadTopic})
		runForwarder(t, f)
		ref := checkReferenceParked(t, b, f, pub, got, dead, s, category, deadTopic)
		if reason := ref.Metadata.Get(MetadataPoisonReason); strings.Count(reason, "nats: maximum payload exceeded") != 2 {
			t.Errorf("reason = %q, want the topic's and the dead-letter topic's refusals", reason)
		}
		if st := f.Stats(); st.Poisoned != 1 {
			t.Errorf("Stats = %+v, want Poisoned 1", st)
		}
	})
}

// TestNATSStreamLimitIsPermanent: the JetStream error for a message over a
// stream's max_msg_size is recognised as permanent too; publishing to a
// subject no stream listens on is not (the stream may be created later).
func TestNATSStreamLimitIsPermanent(t *testing.T) {
	t.Parallel()
	requireBroker(t, "NATS", "127.0.0.1:4222")
	subject := randomCategory("esoxlimit")
	conn, err := nc.Connect(natsURL)
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	defer conn.Close()
	js, err := conn.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nc.StreamConfig{Name: subject, Subjects: []string{subject}, MaxMsgSize: 1024}); err != nil {
		t.Fatalf("add stream: %v", err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(subject) })
	pub, err := wnats.NewPublisher(wnats.PublisherConfig{URL: natsURL, JetStream: wnats.JetStreamConfig{TrackMsgId: true}}, brokerLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	err = pub.Publish(subject, message.NewMessage("big", make([]byte, 2048)))
	if err == nil || !IsMessageTooLarge(err) {
		t.Errorf("publishing 2 KiB to a stream with max_msg_size 1 KiB: %v; want an error IsMessageTooLarge recognises", err)
	}
	if err := pub.Publish(subject, message.NewMessage("small", make([]byte, 16))); err != nil {
		t.Errorf("publishing a small message after it: %v", err)
	}
	err = pub.Publish(subject+"nostream", message.NewMessage("lost", make([]byte, 16)))
	if err == nil || IsMessageTooLarge(err) {
		t.Errorf("publishing to a subject without a stream: %v; want a transient error", err)
	}
}

var rabbitEnvValue = regexp.MustCompile(`\{ok,\s*(\d+)\}`)

// lowerRabbitMaxMessageSize sets RabbitMQ's max_message_size to limit at
// runtime and restores the previous value at cleanup. RabbitMQ reads it
// when a channel opens, so only publishers created afterwards see it.
func lowerRabbitMaxMessageSize(t *testing.T, limit int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "eval", "application:get_env(rabbit, max_message_size).").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl eval get_env: %v\n%s", err, out)
	}
	restore := "application:unset_env(rabbit, max_message_size)."
	if m := rabbitEnvValue.FindSubmatch(out); m != nil {
		restore = fmt.Sprintf("application:set_env(rabbit, max_message_size, %s).", m[1])
	} else if strings.TrimSpace(string(out)) != "undefined" {
		t.Fatalf("rabbitmqctl eval get_env: unexpected %q", out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("rabbitmqctl", "eval", restore).CombinedOutput(); err != nil {
			t.Errorf("restoring RabbitMQ's max_message_size (%s): %v\n%s", restore, err, out)
		}
	})
	rabbitmqctl(t, "eval", fmt.Sprintf("application:set_env(rabbit, max_message_size, %d).", limit))
}

// TestTooLargeForRabbitMQ: with RabbitMQ's max_message_size lowered to
// 1 MiB and MaxMessageSize set to the same, a 2 MiB event never reaches the
// broker. Under PoisonStop Run stops with a *PoisonError naming it, the
// offset right before it; under PoisonDeadLetter a reference to it reaches
// the dead-letter queue and the later events flow. An event just under the
// limit is delivered: MessageSize counts at least what RabbitMQ counts (the
// body). The test first checks the broker does refuse the 2 MiB message,
// and that watermill-amqp's error for it is one the default IsPermanent must
// not trust (it is the same for a lost connection).
//
// It holds the RabbitMQ broker lock shared: other tests may publish
// meanwhile, all far below 1 MiB; TestRabbitMQOutage, which stops the
// broker, holds it exclusively.
func TestTooLargeForRabbitMQ(t *testing.T) {
	t.Parallel()
	requireBroker(t, "RabbitMQ", "127.0.0.1:5672")
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		pgtest.SkipOrFailBroker(t, "rabbitmqctl (to lower max_message_size)", err)
	}
	pgtest.LockBroker(t, "rabbitmq", false)
	const limit = 1 << 20
	lowerRabbitMaxMessageSize(t, limit)

	t.Run("broker_refuses", func(t *testing.T) {
		category := randomCategory("esoxbig")
		pub, _ := rabbitPubSub(t, category)
		err := pub.Publish(category, message.NewMessage("big", make([]byte, oversized)))
		if err == nil {
			t.Fatalf("RabbitMQ accepted a %d-byte message: max_message_size %d is not in effect", oversized, limit)
		}
		if IsMessageTooLarge(err) {
			t.Errorf("IsMessageTooLarge(%v) = true; watermill-amqp returns the same error for a lost connection", err)
		}
	})

	t.Run("stop", func(t *testing.T) {
		b := setup(t)
		category := randomCategory("esoxbig")
		p, got := rabbitPubSub(t, category)
		pub := &watchedPublisher{Publisher: p}
		s := b.appendPoisonScenario(t, category, 10, oversized)
		f := newForwarder(t, b, pub, Config{MaxMessageSize: limit})
		_, done, errp := runForwarder(t, f)
		waitRun(t, done, 60*time.Second, "the oversized event is retried forever")
		perr := checkStoppedBeforeOversized(t, f, pub, got, s, category, *errp)
		var tooLarge *MessageTooLargeError
		if !errors.As(perr, &tooLarge) || tooLarge.Limit != limit || tooLarge.Size != perr.Size {
			t.Errorf("PoisonError.Err = %v, want a *MessageTooLargeError with limit %d", perr.Err, limit)
		}
		if n := pub.tries.get(s.a2.ID); n != 0 {
			t.Errorf("the oversized event reached the publisher %d times, want 0", n)
		}
	})

	t.Run("dead_letter", func(t *testing.T) {
		b := setup(t)
		category := randomCategory("esoxbig")
		deadTopic := category + "dead"
		p, got := rabbitPubSub(t, category)
		_, dead := rabbitPubSub(t, deadTopic)
		pub := &watchedPublisher{Publisher: p}
		s := b.appendPoisonScenario(t, category, limit-4096, oversized)
		if n := MessageSize(NewMessage(b.record(t, s.a1))); n > limit || n < limit-8192 {
			t.Fatalf("A1's message is %d bytes, want just under %d", n, limit)
		}
		f := newForwarder(t, b, pub, Config{OnPoison: PoisonDeadLetter, DeadLetterTopic: deadTopic, MaxMessageSize: limit})
		runForwarder(t, f)
		ref := checkReferenceParked(t, b, f, pub, got, dead, s, category, deadTopic)
		if reason := ref.Metadata.Get(MetadataPoisonReason); !strings.Contains(reason, fmt.Sprintf("larger than MaxMessageSize %d", limit)) {
			t.Errorf("reason = %q, want the MaxMessageSize refusal", reason)
		}
		if n := pub.tries.get(s.a2.ID); n != 1 {
			t.Errorf("A2 reached the publisher %d times, want once (its reference)", n)
		}
	})
}
