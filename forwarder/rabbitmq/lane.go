package rabbitmq

import (
	"context"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// confirmsBuffer is the capacity of a lane's NotifyPublish channel. Its
// dispatcher drains it continuously, so it only smooths bursts.
const confirmsBuffer = 256

// lane is one AMQP channel in confirm mode. Any number of publishes may
// await their confirms on it at once: publish sends a message and returns a
// pending confirm without waiting; the lane's dispatcher goroutine receives
// RabbitMQ's confirms and resolves them.
//
// Delivery tags: RabbitMQ numbers the publishes of a confirm-mode channel
// 1, 2, 3, …; amqp091-go delivers the confirms to NotifyPublish listeners in
// that order, one per tag (a multiple ack is expanded). publish registers
// the next tag's pending confirm before it sends, under pubMu, so a confirm
// never arrives for a tag nobody waits for, and checks the tag amqp091-go
// assigned against it.
//
// Returns (Config.Mandatory): RabbitMQ sends a message's basic.return before
// its basic.ack. The dispatcher receives both, from an unbuffered returns
// channel and the confirms channel; amqp091-go's reader goroutine hands the
// return over before it delivers the ack, so the dispatcher has recorded
// the return when it resolves the ack, and fails that publish with a
// *ReturnedError. Returns are matched to publishes by message-id (the
// Watermill UUID).
type lane struct {
	s  *session
	ch *amqp.Channel

	pubMu sync.Mutex // serializes publishes on ch, so tags follow registration order
	tag   uint64     // last delivery tag sent; guarded by pubMu

	mu       sync.Mutex
	waiting  map[uint64]*pending         // by delivery tag
	returned map[string][]*ReturnedError // by message-id, not yet matched with their confirm
	err      error                       // why the lane died; no publish once set
}

// pending is one publish awaiting its confirm.
type pending struct {
	id   string
	done chan struct{} // closed once err is set
	err  error         // nil: acked
}

// wait waits for the confirm, or ctx.
func (c *pending) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newLane(s *session, ch *amqp.Channel) *lane {
	return &lane{s: s, ch: ch, waiting: make(map[uint64]*pending), returned: make(map[string][]*ReturnedError)}
}

// publish sends msg and returns its pending confirm without waiting for it.
// A send error kills the lane and its session: the connection is broken or
// closing, and a partial write would leave the tags unknown.
func (l *lane) publish(exchange, key string, mandatory bool, msg amqp.Publishing) (*pending, error) {
	c := &pending{id: msg.MessageId, done: make(chan struct{})}
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	tag := l.tag + 1
	l.mu.Lock()
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		return nil, err
	}
	l.waiting[tag] = c
	l.mu.Unlock()

	dc, err := l.ch.PublishWithDeferredConfirm(exchange, key, mandatory, false, msg)
	if err == nil && (dc == nil || dc.DeliveryTag != tag) {
		err = fmt.Errorf("rabbitmq: internal error: expected delivery tag %d, amqp091-go assigned %v", tag, dc)
	}
	if err != nil {
		l.mu.Lock()
		delete(l.waiting, tag)
		l.mu.Unlock()
		err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
		l.die(err)
		return nil, err
	}
	l.tag = tag
	return c, nil
}

// run is the lane's dispatcher: it resolves confirms until the channel
// closes, then fails what is still pending.
func (l *lane) run(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closes <-chan *amqp.Error) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			l.mu.Lock()
			l.returned[r.MessageId] = append(l.returned[r.MessageId], &ReturnedError{ReplyCode: r.ReplyCode, ReplyText: r.ReplyText, Exchange: r.Exchange, RoutingKey: r.RoutingKey})
			l.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				// The channel is shut down. The session's cause, when
				// the publisher closed it, else the close error:
				// amqp091-go sent it, if any, and closed closes before
				// it closed confirms.
				err := l.s.cause()
				if e, ok := <-closes; err == nil && ok && e != nil {
					err = fmt.Errorf("%w: %w", ErrConnectionLost, e)
				} else if err == nil {
					err = ErrConnectionLost
				}
				l.die(err)
				return
			}
			l.resolve(c)
		}
	}
}

// resolve settles the publish c confirms.
func (l *lane) resolve(c amqp.Confirmation) {
	l.mu.Lock()
	w := l.waiting[c.DeliveryTag]
	delete(l.waiting, c.DeliveryTag)
	var ret *ReturnedError
	if w != nil {
		if rs := l.returned[w.id]; len(rs) > 0 {
			ret = rs[0]
			if len(rs) == 1 {
				delete(l.returned, w.id)
			} else {
				l.returned[w.id] = rs[1:]
			}
		}
	}
	l.mu.Unlock()
	if w == nil {
		return // already failed by die
	}
	switch {
	case !c.Ack:
		w.err = ErrNacked
	case ret != nil:
		w.err = ret
	}
	if w.err == nil {
		l.s.p.confirmed.Add(1)
	}
	close(w.done)
}

// die fails every pending publish with err, refuses new ones, and marks the
// session dead so that the next Publish reconnects. Idempotent.
func (l *lane) die(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	waiting := l.waiting
	l.waiting = make(map[uint64]*pending)
	l.mu.Unlock()
	for _, w := range waiting {
		w.err = err
		close(w.done)
	}
	l.s.kill(err)
}

// inFlight returns the number of publishes awaiting their confirm.
func (l *lane) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waiting)
}
