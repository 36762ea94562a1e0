package rabbitmq

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// closeHandshakeTimeout bounds the connection.close handshake when a
// session ends.
const closeHandshakeTimeout = 2 * time.Second

// session is one AMQP connection and its confirm-mode lanes. It lives until
// the connection or any of its lanes dies (or the publisher closes it);
// then it is dead for good and the publisher dials a new one. Its
// goroutines (one dispatcher per lane, one watcher) end once its connection
// is closed; the publisher waits for them.
type session struct {
	p     *Publisher
	conn  *amqp.Connection
	lanes []*lane

	dead     chan struct{} // closed by kill
	killOnce sync.Once
	err      error // why it died; set before dead is closed

	declMu   sync.RWMutex
	declared map[string]bool // exchanges declared on this connection
}

// dial connects and opens cfg.Channels lanes in confirm mode. ctx bounds the
// TCP connect; the publisher's close aborts it too. The session's goroutines
// are not started: the caller starts them (start) or closes it.
func (p *Publisher) dial(ctx context.Context) (*session, error) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // Close aborts a dial in progress
		select {
		case <-p.closing:
			cancel()
		case <-stop:
		}
	}()

	acfg := p.cfg.AMQP
	if acfg.Dial == nil {
		timeout := p.cfg.DialTimeout
		acfg.Dial = func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			conn, err := d.DialContext(dctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the AMQP handshake; amqp091-go clears it once
			// the connection is open, and heartbeats take over.
			if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
				_ = conn.Close()
				return nil, err
			}
			return conn, nil
		}
	}
	if acfg.Properties == nil {
		acfg.Properties = amqp.NewConnectionProperties()
	}
	if _, ok := acfg.Properties["connection_name"]; !ok {
		props := make(amqp.Table, len(acfg.Properties)+1)
		for k, v := range acfg.Properties {
			props[k] = v
		}
		props.SetClientConnectionName(p.cfg.ConnectionName)
		acfg.Properties = props
	}
	conn, err := amqp.DialConfig(p.cfg.URL, acfg)
	if err != nil {
		if ctx.Err() == nil && dctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	s := &session{p: p, conn: conn, dead: make(chan struct{}), declared: make(map[string]bool)}
	for range p.cfg.Channels {
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("open a channel in confirm mode: %w", err)
		}
		s.lanes = append(s.lanes, newLane(s, ch))
	}
	return s, nil
}

// start registers the session's listeners and starts its goroutines. Call
// it before any publish on the session, with p.mu held and p not closed (so
// that Close, which waits for p.goroutines, sees them).
func (s *session) start() {
	p := s.p
	closes := s.conn.NotifyClose(make(chan *amqp.Error, 1))
	for _, l := range s.lanes {
		confirms := l.ch.NotifyPublish(make(chan amqp.Confirmation, confirmsBuffer))
		chCloses := l.ch.NotifyClose(make(chan *amqp.Error, 1))
		var returns chan amqp.Return
		if p.cfg.Mandatory {
			// Unbuffered on purpose: see lane.
			returns = l.ch.NotifyReturn(make(chan amqp.Return))
		}
		p.goroutines.Add(1)
		go func() {
			defer p.goroutines.Done()
			l.run(confirms, returns, chCloses)
		}()
	}
	p.goroutines.Add(1)
	go func() {
		defer p.goroutines.Done()
		s.watch(closes)
	}()
}

// watch waits for the connection to close or the session to be killed,
// then closes the connection, which ends the lanes' dispatchers.
func (s *session) watch(closes <-chan *amqp.Error) {
	select {
	case e, ok := <-closes:
		err := ErrConnectionLost
		if ok && e != nil {
			err = fmt.Errorf("%w: %w", ErrConnectionLost, e)
		}
		s.kill(err)
	case <-s.dead:
	}
	_ = s.conn.CloseDeadline(time.Now().Add(closeHandshakeTimeout))
	if cause := s.cause(); cause != errPublisherClosing {
		s.p.log.Warn("connection lost; the next publish reconnects", "error", cause.Error())
	}
}

// kill marks the session dead with err (the first cause wins).
func (s *session) kill(err error) {
	s.killOnce.Do(func() {
		s.err = err
		close(s.dead)
	})
}

// alive reports whether the session may take publishes.
func (s *session) alive() bool {
	select {
	case <-s.dead:
		return false
	default:
		return true
	}
}

// cause returns why the session died, or nil while it is alive.
func (s *session) cause() error {
	select {
	case <-s.dead:
		return s.err
	default:
		return nil
	}
}

// declare declares exchange (durable, not auto-deleted, of
// Config.ExchangeType) once per session, on a channel of its own: a
// declaration RabbitMQ refuses (the exchange exists with another type)
// closes only that channel.
func (s *session) declare(exchange string) error {
	s.declMu.RLock()
	done := s.declared[exchange]
	s.declMu.RUnlock()
	if done {
		return nil
	}
	s.declMu.Lock()
	defer s.declMu.Unlock()
	if s.declared[exchange] {
		return nil
	}
	ch, err := s.conn.Channel()
	if err != nil {
		err = fmt.Errorf("%w: open a channel: %w", ErrConnectionLost, err)
		s.kill(err)
		return err
	}
	err = ch.ExchangeDeclare(exchange, s.p.cfg.ExchangeType, true, false, false, false, nil)
	_ = ch.Close()
	if err != nil {
		return fmt.Errorf("declare exchange %q: %w", exchange, err)
	}
	s.declared[exchange] = true
	return nil
}
