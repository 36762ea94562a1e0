package rabbitmq_test

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/forwarder/rabbitmq"
	"github.com/esox-go/esox/internal/testwait"
)

func TestNewPublisherRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   rabbitmq.Config
		field string
	}{
		{"no URL", rabbitmq.Config{}, "URL"},
		{"not AMQP", rabbitmq.Config{URL: "http://guest:secret@host/"}, "URL"},
		{"unparsable", rabbitmq.Config{URL: "amqp://guest:secret@host:notaport/"}, "URL"},
		{"too many channels", rabbitmq.Config{URL: amqpURL, Channels: rabbitmq.MaxChannels + 1}, "Channels"},
		{"negative channels", rabbitmq.Config{URL: amqpURL, Channels: -1}, "Channels"},
		{"negative dial timeout", rabbitmq.Config{URL: amqpURL, DialTimeout: -time.Second}, "DialTimeout"},
		{"negative reconnect", rabbitmq.Config{URL: amqpURL, ReconnectInterval: -time.Second}, "ReconnectInterval"},
		{"max below interval", rabbitmq.Config{URL: amqpURL, ReconnectInterval: time.Minute, ReconnectMaxInterval: time.Second}, "ReconnectMaxInterval"},
		{"negative close timeout", rabbitmq.Config{URL: amqpURL, CloseTimeout: -time.Second}, "CloseTimeout"},
		{"long exchange type", rabbitmq.Config{URL: amqpURL, ExchangeType: strings.Repeat("x", 256)}, "ExchangeType"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := rabbitmq.NewPublisher(tc.cfg)
			var iae *eventstore.InvalidArgumentError
			if !errors.Is(err, eventstore.ErrInvalidArgument) || !errors.As(err, &iae) || iae.Field != tc.field {
				t.Fatalf("NewPublisher = %v, %v; want an invalid %s", p, err, tc.field)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// TestPublishWithoutBroker: NewPublisher does no I/O, and a Publish that
// cannot connect returns an error (not hanging, no password in it), which
// the forwarder retries.
func TestPublishWithoutBroker(t *testing.T) {
	t.Parallel()
	p := newPublisher(t, rabbitmq.Config{URL: "amqp://guest:secret@127.0.0.1:1/", ReconnectInterval: time.Millisecond, ReconnectMaxInterval: time.Millisecond})
	for range 2 {
		err := p.Publish("esoxrmq_nobroker", newMsg("s-1", 1))
		var perr *rabbitmq.PublishError
		if err == nil || !errors.As(err, &perr) || strings.Contains(err.Error(), "secret") {
			t.Fatalf("Publish without a broker = %v; want a *PublishError without the password", err)
		}
	}
	if st := p.Stats(); st.Connects != 0 || st.Failed != 2 {
		t.Fatalf("Stats = %+v; want 0 connects, 2 failures", st)
	}
}

func TestPublishRefusesBadInput(t *testing.T) {
	t.Parallel()
	p := newPublisher(t, rabbitmq.Config{URL: "amqp://guest:guest@127.0.0.1:1/"}) // never dialed
	long := strings.Repeat("k", 256)
	bad := newMsg("s-1", 1)
	bad.Metadata.Set(long, "v")
	for name, call := range map[string]func() error{
		"empty topic":       func() error { return p.Publish("", newMsg("s-1", 1)) },
		"long exchange":     func() error { return p.Publish(long, newMsg("s-1", 1)) },
		"long metadata key": func() error { return p.Publish("t", bad) },
		"long UUID":         func() error { return p.Publish("t", message.NewMessage(long, nil)) },
	} {
		if err := call(); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("%s: Publish = %v; want ErrInvalidArgument", name, err)
		}
	}
	if st := p.Stats(); st.Connects != 0 {
		t.Fatalf("bad input made a connection: %+v", st)
	}
}

// TestWatermillSubscriberReadsMessages: what the publisher sends,
// watermill-amqp's Subscriber (durable pub/sub config, default marshaler)
// reads back unchanged, each stream in order.
func TestWatermillSubscriberReadsMessages(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	topic := uniqueName("esoxrmq_compat")
	t.Cleanup(func() { deleteTopology(t, topic, topic+"_probe") })
	cfg := wamqp.NewDurablePubSubConfig(amqpURL, wamqp.GenerateQueueNameTopicNameWithSuffix("probe"))
	sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
	if err != nil {
		t.Fatalf("watermill-amqp subscriber: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = sub.Close() })
	received, err := sub.Subscribe(ctx, topic) // declares the exchange, the queue and the binding
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}

	p := newPublisher(t, rabbitmq.Config{})
	const streams, versions = 5, 10
	sent := make(map[string]*message.Message)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for s := range streams {
		stream := "order-" + strconv.Itoa(s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := 1; v <= versions; v++ {
				m := newMsg(stream, v)
				m.Metadata.Set("correlation_id", "c-"+stream)
				mu.Lock()
				sent[m.UUID] = m
				mu.Unlock()
				if err := p.Publish(topic, m); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}

	last := map[string]int{}
	timeout := time.After(30 * time.Second)
	for range streams * versions {
		var m *message.Message
		select {
		case m = <-received:
			m.Ack()
		case <-timeout:
			t.Fatalf("got %d of %d messages after 30 s", len(last), streams*versions)
		}
		want, ok := sent[m.UUID]
		if !ok {
			t.Fatalf("received unknown UUID %q", m.UUID)
		}
		if string(m.Payload) != string(want.Payload) || !maps.Equal(m.Metadata, want.Metadata) {
			t.Fatalf("message %s read back as payload %s metadata %v; sent %s %v", m.UUID, m.Payload, m.Metadata, want.Payload, want.Metadata)
		}
		stream := m.Metadata.Get("stream_id")
		v, _ := strconv.Atoi(m.Metadata.Get("stream_version"))
		if v != last[stream]+1 {
			t.Fatalf("stream %s: version %d after %d", stream, v, last[stream])
		}
		last[stream] = v
	}
}

// TestConfirmsArePipelined: with one channel, 16 concurrent Publish calls
// all have their message sent and await their confirms at once (a publisher
// that holds the channel until the confirm, as watermill-amqp's does, would
// never have more than one in flight), and each returns nil once its confirm
// arrives.
func TestConfirmsArePipelined(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	topic := uniqueName("esoxrmq_pipe")
	declareQueue(t, topic, topic, nil)
	d := &pausingDialer{}
	p := newPublisher(t, rabbitmq.Config{Channels: 1, AMQP: amqp.Config{Dial: d.dial}})
	if err := p.Publish(topic, newMsg("warmup", 1)); err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	d.pause() // RabbitMQ's confirms are held back from now on
	const n = 16
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- p.Publish(topic, newMsg("s-"+strconv.Itoa(i), 1)) }()
	}
	testwait.Until(t, "16 publishes in flight on one channel", func() bool { return p.Stats().InFlight == n })
	d.resume()
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	if st := p.Stats(); st.Confirmed != n+1 || st.InFlight != 0 || st.Connects != 1 {
		t.Fatalf("Stats = %+v; want %d confirmed, none in flight, 1 connect", st, n+1)
	}
	got := drainQueue(t, topic, 30*time.Second, func(d []amqp.Delivery) bool { return len(d) == n+1 })
	if len(got) != n+1 {
		t.Fatalf("queue holds %d messages, want %d", len(got), n+1)
	}
}

// TestConnectionLossFailsInFlightThenReconnects: publishes awaiting their
// confirm when the connection breaks fail with ErrConnectionLost (the
// forwarder publishes them again); the next Publish reconnects.
func TestConnectionLossFailsInFlightThenReconnects(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	topic := uniqueName("esoxrmq_cut")
	declareQueue(t, topic, topic, nil)
	d := &pausingDialer{}
	p := newPublisher(t, rabbitmq.Config{Channels: 2, AMQP: amqp.Config{Dial: d.dial}})
	if err := p.Publish(topic, newMsg("warmup", 1)); err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	d.pause()
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- p.Publish(topic, newMsg("s-"+strconv.Itoa(i), 1)) }()
	}
	testwait.Until(t, "4 publishes in flight", func() bool { return p.Stats().InFlight == n })
	d.cut()
	d.resume()
	for range n {
		err := <-errs
		var perr *rabbitmq.PublishError
		if !errors.Is(err, rabbitmq.ErrConnectionLost) || !errors.As(err, &perr) || perr.MessageUUID == "" {
			t.Fatalf("in-flight Publish after the connection broke = %v; want a *PublishError matching ErrConnectionLost", err)
		}
	}
	// The first Publish after the loss may still find the dead session
	// being torn down; the forwarder retries, so does the test.
	testwait.Until(t, "a Publish after the loss to succeed", func() bool {
		return p.Publish(topic, newMsg("after", 1)) == nil
	})
	if st := p.Stats(); st.Connects != 2 {
		t.Fatalf("Stats = %+v; want 2 connects", st)
	}
}

// TestNackFails: a queue with overflow reject-publish that is full makes
// RabbitMQ nack; Publish fails with ErrNacked.
func TestNackFails(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	topic := uniqueName("esoxrmq_nack")
	declareQueue(t, topic, topic, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	p := newPublisher(t, rabbitmq.Config{})
	if err := p.Publish(topic, newMsg("s-1", 1)); err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	err := p.Publish(topic, newMsg("s-1", 2))
	if !errors.Is(err, rabbitmq.ErrNacked) {
		t.Fatalf("Publish to a full reject-publish queue = %v; want ErrNacked", err)
	}
	// The channel stays usable.
	if err := withAdmin(t, func(ch *amqp.Channel) error { _, err := ch.QueuePurge(topic, false); return err }); err != nil {
		t.Fatalf("purge: %v", err)
	}
	if err := p.Publish(topic, newMsg("s-1", 2)); err != nil {
		t.Fatalf("Publish after the purge: %v", err)
	}
}

// TestMandatory: with Mandatory, a message no queue is bound for fails with
// ErrUnroutable, also when routable and unroutable publishes share the
// channel concurrently; without it, RabbitMQ acks and drops it.
func TestMandatory(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	routed := uniqueName("esoxrmq_routed")
	declareQueue(t, routed, routed, nil)
	unrouted := uniqueName("esoxrmq_unrouted")
	t.Cleanup(func() { deleteTopology(t, unrouted) })

	lax := newPublisher(t, rabbitmq.Config{})
	if err := lax.Publish(unrouted, newMsg("s-0", 1)); err != nil {
		t.Fatalf("Publish without Mandatory to an exchange without queue = %v; want nil (RabbitMQ drops it)", err)
	}

	p := newPublisher(t, rabbitmq.Config{Mandatory: true, Channels: 1})
	const n = 40
	type result struct {
		topic string
		err   error
	}
	results := make(chan result, n)
	for i := range n {
		topic := routed
		if i%2 == 1 {
			topic = unrouted
		}
		go func() { results <- result{topic, p.Publish(topic, newMsg("s-"+strconv.Itoa(i), 1))} }()
	}
	for range n {
		r := <-results
		var ret *rabbitmq.ReturnedError
		switch {
		case r.topic == routed && r.err != nil:
			t.Errorf("routable Publish = %v; want nil", r.err)
		case r.topic == unrouted && (!errors.Is(r.err, rabbitmq.ErrUnroutable) || !errors.As(r.err, &ret) || ret.ReplyCode != 312):
			t.Errorf("unroutable Publish = %v; want a *ReturnedError 312 matching ErrUnroutable", r.err)
		}
	}
	got := drainQueue(t, routed, 30*time.Second, func(d []amqp.Delivery) bool { return len(d) == n/2 })
	if len(got) != n/2 {
		t.Fatalf("routed queue holds %d, want %d", len(got), n/2)
	}
}

// TestCloseWaitsForInFlight: Close lets a publish awaiting its confirm
// finish; Publish after Close fails with ErrClosed; Close twice is fine.
func TestCloseWaitsForInFlight(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	topic := uniqueName("esoxrmq_close")
	declareQueue(t, topic, topic, nil)
	d := &pausingDialer{}
	p := newPublisher(t, rabbitmq.Config{AMQP: amqp.Config{Dial: d.dial}})
	if err := p.Publish(topic, newMsg("warmup", 1)); err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	d.pause()
	published := make(chan error, 1)
	go func() { published <- p.Publish(topic, newMsg("s-1", 1)) }()
	testwait.Until(t, "the publish in flight", func() bool { return p.Stats().InFlight == 1 })
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	testwait.Until(t, "Publish to refuse after Close", func() bool {
		return errors.Is(p.Publish(topic), rabbitmq.ErrClosed)
	})
	d.resume()
	if err := <-published; err != nil {
		t.Fatalf("the publish in flight during Close = %v; want nil (confirmed)", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Publish(topic, newMsg("s-1", 2)); !errors.Is(err, rabbitmq.ErrClosed) {
		t.Fatalf("Publish after Close = %v; want ErrClosed", err)
	}
}

// TestCloseFailsUnconfirmedAfterTimeout: a publish still unconfirmed after
// CloseTimeout fails with ErrConnectionLost and ErrClosed, and Close
// returns.
func TestCloseFailsUnconfirmedAfterTimeout(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	topic := uniqueName("esoxrmq_closeto")
	declareQueue(t, topic, topic, nil)
	d := &pausingDialer{}
	t.Cleanup(d.resume)
	p := newPublisher(t, rabbitmq.Config{AMQP: amqp.Config{Dial: d.dial}, CloseTimeout: 10 * time.Millisecond})
	if err := p.Publish(topic, newMsg("warmup", 1)); err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	d.pause() // never resumed before Close returns: the confirm never arrives
	published := make(chan error, 1)
	go func() { published <- p.Publish(topic, newMsg("s-1", 1)) }()
	testwait.Until(t, "the publish in flight", func() bool { return p.Stats().InFlight == 1 })
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err := <-published
	if !errors.Is(err, rabbitmq.ErrConnectionLost) || !errors.Is(err, rabbitmq.ErrClosed) {
		t.Fatalf("unconfirmed Publish at Close = %v; want ErrConnectionLost and ErrClosed", err)
	}
}

// TestPublishContext: a message whose context ends while it awaits its
// confirm returns the context's error.
func TestPublishContext(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	topic := uniqueName("esoxrmq_ctx")
	declareQueue(t, topic, topic, nil)
	d := &pausingDialer{}
	t.Cleanup(d.resume)
	p := newPublisher(t, rabbitmq.Config{AMQP: amqp.Config{Dial: d.dial}})
	if err := p.Publish(topic, newMsg("warmup", 1)); err != nil {
		t.Fatalf("first Publish: %v", err)
	}
	d.pause()
	ctx, cancel := context.WithCancel(context.Background())
	m := newMsg("s-1", 1)
	m.SetContext(ctx)
	published := make(chan error, 1)
	go func() { published <- p.Publish(topic, m) }()
	testwait.Until(t, "the publish in flight", func() bool { return p.Stats().InFlight == 1 })
	cancel()
	if err := <-published; !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled context = %v; want context.Canceled", err)
	}
	cancelled := newMsg("s-1", 2)
	cancelled.SetContext(ctx)
	if err := p.Publish(topic, cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a done context = %v; want context.Canceled", err)
	}
	d.resume()
}

// TestSeveralMessagesPerCall: one call's messages arrive in order.
func TestSeveralMessagesPerCall(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	topic := uniqueName("esoxrmq_multi")
	declareQueue(t, topic, topic, nil)
	p := newPublisher(t, rabbitmq.Config{Channels: 3})
	var msgs []*message.Message
	for v := 1; v <= 20; v++ {
		msgs = append(msgs, newMsg("s-1", v))
	}
	if err := p.Publish(topic, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := drainQueue(t, topic, 30*time.Second, func(d []amqp.Delivery) bool { return len(d) == len(msgs) })
	for i, d := range got {
		if d.MessageId != msgs[i].UUID || d.Headers[rabbitmq.UUIDHeader] != msgs[i].UUID || d.DeliveryMode != amqp.Persistent {
			t.Fatalf("delivery %d: message-id %s, uuid header %v, mode %d; want %s persistent", i, d.MessageId, d.Headers[rabbitmq.UUIDHeader], d.DeliveryMode, msgs[i].UUID)
		}
	}
}

// TestDefaultExchange: an empty exchange name publishes through RabbitMQ's
// default exchange to the queue the routing key names, declaring nothing.
func TestDefaultExchange(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	queue := uniqueName("esoxrmq_direct")
	t.Cleanup(func() { deleteTopology(t, "", queue) })
	if err := withAdmin(t, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(queue, true, false, false, false, nil)
		return err
	}); err != nil {
		t.Fatalf("declare queue: %v", err)
	}
	p := newPublisher(t, rabbitmq.Config{
		Exchange:   func(string) string { return "" },
		RoutingKey: func(topic string) string { return topic },
		Mandatory:  true,
	})
	if err := p.Publish(queue, newMsg("s-1", 1)); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	drainQueue(t, queue, 30*time.Second, func(d []amqp.Delivery) bool { return len(d) == 1 })
}

// TestExchangeTypeConflict: an exchange that exists with another type makes
// Publish fail with RabbitMQ's 406, and the publisher goes on working for
// other topics.
func TestExchangeTypeConflict(t *testing.T) {
	t.Parallel()
	requireRabbit(t, false)
	direct := uniqueName("esoxrmq_direct_ex")
	t.Cleanup(func() { deleteTopology(t, direct) })
	if err := withAdmin(t, func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(direct, "direct", true, false, false, false, nil)
	}); err != nil {
		t.Fatalf("declare: %v", err)
	}
	ok := uniqueName("esoxrmq_ok")
	declareQueue(t, ok, ok, nil)
	p := newPublisher(t, rabbitmq.Config{})
	err := p.Publish(direct, newMsg("s-1", 1))
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp.PreconditionFailed {
		t.Fatalf("Publish to an exchange of another type = %v; want a 406 *amqp091.Error", err)
	}
	if err := p.Publish(ok, newMsg("s-1", 1)); err != nil {
		t.Fatalf("Publish to another topic: %v", err)
	}
	if st := p.Stats(); st.Connects != 1 {
		t.Fatalf("a refused declaration cost the connection: %+v", st)
	}
}
