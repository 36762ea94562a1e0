package rabbitmq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esox-go/esox/forwarder/rabbitmq"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
)

const amqpURL = "amqp://guest:guest@127.0.0.1:5672/"

// TestMain fails a green run that leaves goroutines behind.
func TestMain(m *testing.M) { os.Exit(leaktest.Run(m)) }

// requireRabbit skips (or, with ESOX_REQUIRE_BROKERS=1, fails) t when
// RabbitMQ does not listen on loopback, and takes the shared RabbitMQ lock
// (exclusive for tests that stop the broker).
func requireRabbit(t testing.TB, exclusive bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:5672", 2*time.Second)
	if err != nil {
		pgtest.SkipOrFailBroker(t, "RabbitMQ", err)
		return
	}
	_ = conn.Close()
	pgtest.LockBroker(t, "rabbitmq", exclusive)
}

// uniqueName returns prefix plus a random suffix, for exchanges and queues
// no other test run uses.
func uniqueName(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// testLogger logs to t.Log at Info and up.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newPublisher returns a publisher to the local RabbitMQ (cfg.URL and
// cfg.Logger filled in when empty), closed at cleanup.
func newPublisher(t testing.TB, cfg rabbitmq.Config) *rabbitmq.Publisher {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = amqpURL
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	p, err := rabbitmq.NewPublisher(cfg)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// withAdmin runs fn on a channel of a fresh connection of its own.
func withAdmin(t testing.TB, fn func(ch *amqp.Channel) error) error {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return fn(ch)
}

// declareQueue declares a durable fanout exchange and a durable queue
// (with args) bound to it, both deleted at cleanup.
func declareQueue(t testing.TB, exchange, queue string, args amqp.Table) {
	t.Helper()
	t.Cleanup(func() { deleteTopology(t, exchange, queue) })
	err := withAdmin(t, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(exchange, "fanout", true, false, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
			return err
		}
		return ch.QueueBind(queue, "", exchange, false, nil)
	})
	if err != nil {
		t.Fatalf("declare %s → %s: %v", exchange, queue, err)
	}
}

// deleteTopology deletes queues and an exchange, logging failures.
func deleteTopology(t testing.TB, exchange string, queues ...string) {
	err := withAdmin(t, func(ch *amqp.Channel) error {
		for _, q := range queues {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				return err
			}
		}
		if exchange != "" {
			return ch.ExchangeDelete(exchange, false, false)
		}
		return nil
	})
	if err != nil {
		t.Logf("cleanup: delete %s %v: %v", exchange, queues, err)
	}
}

// newMsg returns the message of version v of stream, with metadata as the
// forwarder sets it (a subset).
func newMsg(stream string, v int) *message.Message {
	m := message.NewMessage(uuidFor(stream, v), []byte(`{"stream":"`+stream+`","v":`+strconv.Itoa(v)+`}`))
	m.Metadata.Set("stream_id", stream)
	m.Metadata.Set("stream_version", strconv.Itoa(v))
	return m
}

// uuidFor is a deterministic UUID-shaped ID per (stream, version), so a
// retried publish reuses its message's UUID, as the forwarder does.
var uuidMu sync.Mutex
var uuids = map[string]string{}

func uuidFor(stream string, v int) string {
	uuidMu.Lock()
	defer uuidMu.Unlock()
	k := stream + "/" + strconv.Itoa(v)
	if id, ok := uuids[k]; ok {
		return id
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	id := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	uuids[k] = id
	return id
}

// drainQueue consumes queue from a connection of its own until want
// returns true for the deliveries so far, and returns them; it fails t
// after timeout.
func drainQueue(t testing.TB, queue string, timeout time.Duration, want func([]amqp.Delivery) bool) []amqp.Delivery {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	var got []amqp.Delivery
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for !want(got) {
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatalf("consumer of %s closed after %d deliveries", queue, len(got))
			}
			got = append(got, d)
		case <-timer.C:
			t.Fatalf("%d deliveries from %s after %s, not what the test waits for", len(got), queue, timeout)
		}
	}
	return got
}

// pausingDialer dials TCP and hands amqp091-go connections whose incoming
// data can be held back: while paused, bytes read from the socket are
// returned to amqp091-go only on resume (or at the read deadline), so
// RabbitMQ's confirms stay unseen and publishes stay in flight. It can also
// cut the latest connection, as a network failure would.
type pausingDialer struct {
	mu     sync.Mutex
	paused chan struct{} // non-nil while paused; closed by resume
	last   *pausingConn
}

func (d *pausingDialer) dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	pc := &pausingConn{Conn: c, d: d, closed: make(chan struct{})}
	d.mu.Lock()
	d.last = pc
	d.mu.Unlock()
	return pc, nil
}

func (d *pausingDialer) pause() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.paused == nil {
		d.paused = make(chan struct{})
	}
}

func (d *pausingDialer) resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.paused != nil {
		close(d.paused)
		d.paused = nil
	}
}

// cut closes the latest connection's socket under amqp091-go's feet.
func (d *pausingDialer) cut() {
	d.mu.Lock()
	c := d.last
	d.mu.Unlock()
	_ = c.Close()
}

type pausingConn struct {
	net.Conn
	d         *pausingDialer
	closeOnce sync.Once
	closed    chan struct{}

	mu           sync.Mutex
	readDeadline time.Time
}

func (c *pausingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	for {
		c.d.mu.Lock()
		paused := c.d.paused
		c.d.mu.Unlock()
		if paused == nil {
			return n, err
		}
		c.mu.Lock()
		deadline := c.readDeadline
		c.mu.Unlock()
		if !deadline.IsZero() && time.Now().After(deadline) {
			return 0, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(5 * time.Millisecond) // a deadline may be set meanwhile
		select {
		case <-paused:
		case <-c.closed:
			t.Stop()
			return 0, net.ErrClosed
		case <-t.C:
		}
		t.Stop()
	}
}

func (c *pausingConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *pausingConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *pausingConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// rabbitmqctl runs rabbitmqctl with args, failing t on error.
func rabbitmqctl(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
	}
}
