package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esox-go/esox/eventstore"
)

// errPublisherClosing fails the publishes Close could not wait for.
var errPublisherClosing = fmt.Errorf("%w: %w", ErrConnectionLost, ErrClosed)

// Publisher publishes Watermill messages to RabbitMQ with pipelined
// publisher confirms: Publish returns nil only once RabbitMQ has confirmed
// every message of the call (for a persistent message routed to a durable
// queue: once it is written to disk), while any number of other Publish
// calls have their messages in flight on the same channel. It implements
// Watermill's message.Publisher.
//
// A Publisher is safe for concurrent use. It owns one AMQP connection, made
// by the first Publish and made again by the first Publish after it is
// lost; Close ends it.
type Publisher struct {
	cfg     Config
	log     *slog.Logger
	closing chan struct{} // closed by Close

	mu       sync.Mutex
	closed   bool
	sess     *session // the current session; nil before the first dial
	dialing  *dialing // the dial in progress, if any
	failures int      // consecutive failed dials
	retryAt  time.Time

	inflight   sync.WaitGroup // Publish calls in progress
	goroutines sync.WaitGroup // the sessions' goroutines
	closeDone  chan struct{}  // closed when Close has finished
	next       atomic.Uint64  // round robin over lanes

	connects, confirmed, failed atomic.Int64
}

// dialing is a connection attempt other Publish calls may wait for.
type dialing struct {
	done chan struct{}
	s    *session
	err  error
}

// NewPublisher returns a Publisher for cfg. It does no I/O: the connection
// is made by the first Publish. It returns an error matching
// eventstore.ErrInvalidArgument, naming the field, for an invalid cfg.
func NewPublisher(cfg Config) (*Publisher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Publisher{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "rabbitmq"),
		closing:   make(chan struct{}),
		closeDone: make(chan struct{}),
	}, nil
}

// Publish publishes msgs, in order, to the exchange Config.Exchange names for
// topic (declared first, once per connection, unless
// Config.DisableExchangeDeclare), with routing key Config.RoutingKey(topic),
// and waits for RabbitMQ's confirm of each. It returns nil once every message
// is confirmed; on error, some of msgs may have reached RabbitMQ, so
// publishing them all again may duplicate but never lose one
// (at-least-once). The messages of one call share one channel, so RabbitMQ
// receives them in order.
//
// Each message is persistent (delivery mode 2), its payload is the body, its
// metadata the headers, and its UUID both the message-id property and the
// UUIDHeader header: watermill-amqp's Subscriber with its DefaultMarshaler
// reads it back unchanged.
//
// Order across calls: Publish returns only after the confirm, so a caller
// that publishes a stream's next message only after the previous Publish
// returned nil (as forwarder.Forwarder does) has them reach RabbitMQ in
// order, whatever runs concurrently.
//
// The first message's context (message.Message.Context) bounds connecting
// and waiting before a reconnection attempt; each message's context bounds
// the wait for its confirm. When the connection is lost, the publishes
// awaiting a confirm fail with ErrConnectionLost, and the next Publish
// reconnects: at once after a lost connection, then with backoff from
// Config.ReconnectInterval to Config.ReconnectMaxInterval between failed
// attempts (a Publish that finds an attempt failing returns its error rather
// than waiting for the next one).
//
// Errors are *PublishError; match the cause with errors.Is against
// ErrClosed (after Close), ErrNacked, ErrUnroutable (Config.Mandatory),
// ErrConnectionLost, eventstore.ErrInvalidArgument (an empty topic, a name
// longer than 255 bytes, a metadata key longer than 255 bytes), or context
// errors, or inspect an *amqp091.Error (RabbitMQ refused a declaration or
// closed the connection) with errors.As. The forwarder retries every error;
// ErrClosed and eventstore.ErrInvalidArgument never go away by retrying.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if !p.enter() {
		return &PublishError{Topic: topic, Err: ErrClosed}
	}
	defer p.inflight.Done()
	exchange, key := p.cfg.Exchange(topic), p.cfg.RoutingKey(topic)
	fail := func(uuid string, err error) error {
		p.failed.Add(1)
		return &PublishError{MessageUUID: uuid, Topic: topic, Exchange: exchange, RoutingKey: key, Err: err}
	}
	switch {
	case topic == "":
		return fail("", &eventstore.InvalidArgumentError{Field: "topic", Reason: "must not be empty"})
	case len(exchange) > maxShortString:
		return fail("", &eventstore.InvalidArgumentError{Field: "exchange", Reason: fmt.Sprintf("longer than %d bytes", maxShortString)})
	case len(key) > maxShortString:
		return fail("", &eventstore.InvalidArgumentError{Field: "routing key", Reason: fmt.Sprintf("longer than %d bytes", maxShortString)})
	case len(msgs) == 0:
		return nil
	}
	pubs := make([]amqp.Publishing, len(msgs))
	for i, m := range msgs {
		var err error
		if pubs[i], err = publishing(m); err != nil {
			return fail(m.UUID, err)
		}
	}
	if err := msgs[0].Context().Err(); err != nil {
		return fail("", err)
	}
	s, err := p.session(msgs[0].Context())
	if err != nil {
		return fail("", err)
	}
	if exchange != "" && !p.cfg.DisableExchangeDeclare {
		if err := s.declare(exchange); err != nil {
			return fail("", err)
		}
	}
	l := s.lanes[(p.next.Add(1)-1)%uint64(len(s.lanes))]
	confirms := make([]*pending, len(msgs))
	for i := range msgs {
		if confirms[i], err = l.publish(exchange, key, p.cfg.Mandatory, pubs[i]); err != nil {
			return fail(msgs[i].UUID, err)
		}
	}
	for i, c := range confirms {
		if err := c.wait(msgs[i].Context()); err != nil {
			return fail(msgs[i].UUID, err)
		}
	}
	return nil
}

// enter counts a Publish in; false after Close.
func (p *Publisher) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.inflight.Add(1)
	return true
}

// publishing encodes msg the way watermill-amqp's DefaultMarshaler does,
// plus the message-id property.
func publishing(msg *message.Message) (amqp.Publishing, error) {
	if len(msg.UUID) > maxShortString {
		return amqp.Publishing{}, &eventstore.InvalidArgumentError{Field: "message UUID", Reason: fmt.Sprintf("longer than %d bytes", maxShortString)}
	}
	headers := make(amqp.Table, len(msg.Metadata)+1)
	for k, v := range msg.Metadata {
		if len(k) > maxShortString {
			return amqp.Publishing{}, &eventstore.InvalidArgumentError{Field: "metadata key", Reason: fmt.Sprintf("longer than %d bytes", maxShortString)}
		}
		headers[k] = v
	}
	headers[UUIDHeader] = msg.UUID
	return amqp.Publishing{
		Headers:      headers,
		DeliveryMode: amqp.Persistent,
		MessageId:    msg.UUID,
		Body:         msg.Payload,
	}, nil
}

// session returns a live session, dialing one if needed. Concurrent callers
// share one dial; a caller that waited for a dial that failed gets its
// error, unless it failed only because the dialer's own context ended.
func (p *Publisher) session(ctx context.Context) (*session, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if s := p.sess; s != nil && s.alive() {
			p.mu.Unlock()
			return s, nil
		}
		if d := p.dialing; d != nil {
			p.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if d.err == nil {
				return d.s, nil
			}
			if !errors.Is(d.err, context.Canceled) && !errors.Is(d.err, context.DeadlineExceeded) {
				return nil, d.err
			}
			continue
		}
		d := &dialing{done: make(chan struct{})}
		p.dialing = d
		wait := time.Until(p.retryAt)
		p.mu.Unlock()

		d.s, d.err = p.dialAfter(ctx, wait)
		p.mu.Lock()
		p.dialing = nil
		switch {
		case d.err == nil && p.closed:
			_ = d.s.conn.Close()
			d.s, d.err = nil, ErrClosed
		case d.err == nil:
			d.s.start()
			p.sess = d.s
			p.failures = 0
			p.retryAt = time.Time{}
			p.connects.Add(1)
		case ctx.Err() == nil && !errors.Is(d.err, ErrClosed):
			p.failures++
			backoff := p.cfg.ReconnectInterval << min(p.failures-1, 30)
			if backoff <= 0 || backoff > p.cfg.ReconnectMaxInterval {
				backoff = p.cfg.ReconnectMaxInterval
			}
			p.retryAt = time.Now().Add(backoff)
			level := slog.LevelDebug
			if p.failures == 1 || p.failures%10 == 0 {
				level = slog.LevelWarn
			}
			p.log.Log(ctx, level, "cannot connect to RabbitMQ", "error", d.err.Error(), "failures", p.failures, "retry_in", backoff)
		}
		p.mu.Unlock()
		close(d.done)
		if d.err == nil {
			p.log.Info("connected to RabbitMQ", "channels", len(d.s.lanes))
		}
		return d.s, d.err
	}
}

// dialAfter waits wait (the backoff after failed dials), then dials.
func (p *Publisher) dialAfter(ctx context.Context, wait time.Duration) (*session, error) {
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.closing:
			return nil, ErrClosed
		case <-t.C:
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return p.dial(ctx)
}

// Close stops the publisher: Publish returns ErrClosed from now on; the
// publishes in flight get up to Config.CloseTimeout to be confirmed, then
// the connection is closed, which fails those still waiting (their error
// matches ErrConnectionLost and ErrClosed). Close returns once the
// connection is closed, every goroutine the publisher started has ended,
// and every Publish call in progress has returned. It is safe to call more
// than once and concurrently; later calls wait for the first and return
// nil. It always returns nil.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.closeDone
		return nil
	}
	p.closed = true
	close(p.closing)
	p.mu.Unlock()

	idle := make(chan struct{})
	go func() {
		p.inflight.Wait()
		close(idle)
	}()
	t := time.NewTimer(p.cfg.CloseTimeout)
	select {
	case <-idle:
	case <-t.C:
		p.log.Warn("closing with publishes still awaiting their confirm; they fail", "close_timeout", p.cfg.CloseTimeout)
	}
	t.Stop()
	p.mu.Lock()
	s := p.sess
	p.mu.Unlock()
	if s != nil {
		s.kill(errPublisherClosing)
	}
	p.goroutines.Wait()
	<-idle // the connection is closed: what was in flight has failed
	close(p.closeDone)
	return nil
}

// Stats counts what a Publisher did since NewPublisher.
type Stats struct {
	// Connects counts connections made (1 plus the reconnections).
	Connects int64
	// Confirmed counts messages RabbitMQ confirmed (acked, not returned).
	Confirmed int64
	// Failed counts Publish calls that returned an error.
	Failed int64
	// InFlight is the number of messages awaiting their confirm now.
	InFlight int
}

// Stats returns the publisher's counters. Safe for concurrent use.
func (p *Publisher) Stats() Stats {
	st := Stats{Connects: p.connects.Load(), Confirmed: p.confirmed.Load(), Failed: p.failed.Load()}
	p.mu.Lock()
	s := p.sess
	p.mu.Unlock()
	if s != nil {
		for _, l := range s.lanes {
			st.InFlight += l.inFlight()
		}
	}
	return st
}

var _ message.Publisher = (*Publisher)(nil)
