package rabbitmq_test

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/forwarder"
	"github.com/esox-go/esox/forwarder/rabbitmq"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
)

// BenchmarkForwardToRabbitMQ forwards a backlog from the events table to
// RabbitMQ with publisher confirms through forwarder.Forwarder, once with
// this package's publisher and once with watermill-amqp v3.0.2's
// (ConfirmDelivery, a pool of one channel per concurrent publish), into a
// durable queue bound to the topic's durable fanout exchange. events/s is
// measured from the first confirmed publish to the b.N-th.
//
// Config.PublishConcurrency is ESOX_BENCH_CONCURRENCY, by default the
// forwarder's default (forwarder.PublishConcurrencyDefault); the batch size
// is 500, as in the forwarder package's BenchmarkThroughput. Verify with
//
//	go test -run '^$' -bench ForwardToRabbitMQ -benchtime 20000x ./forwarder/rabbitmq/
func BenchmarkForwardToRabbitMQ(b *testing.B) {
	for _, bc := range []struct {
		name string
		pub  func(b *testing.B) message.Publisher
	}{
		{"esox-channels=1", func(b *testing.B) message.Publisher {
			return newPublisher(b, rabbitmq.Config{Channels: 1, Logger: slog.New(slog.DiscardHandler)})
		}},
		{"esox-channels=4", func(b *testing.B) message.Publisher {
			return newPublisher(b, rabbitmq.Config{Channels: 4, Logger: slog.New(slog.DiscardHandler)})
		}},
		{"watermill-amqp", func(b *testing.B) message.Publisher {
			cfg := wamqp.NewDurablePubSubConfig(amqpURL, nil)
			cfg.Publish.ConfirmDelivery = true
			cfg.Publish.ChannelPoolSize = benchConcurrency()
			pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = pub.Close() })
			return pub
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			requireRabbit(b, false)
			topic := uniqueName("esoxrmq_bench")
			declareQueue(b, topic, topic, nil)
			forwardBacklog(b, bc.pub(b), topic)
		})
	}
}

// BenchmarkForwardCeiling is the forwarder's ceiling for a publisher whose
// Publish takes a fixed time and no CPU (it sleeps), like a confirm from an
// idle broker: what PublishConcurrency and the batch structure allow
// whatever the publisher. Same setup as BenchmarkForwardToRabbitMQ.
func BenchmarkForwardCeiling(b *testing.B) {
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond} {
		b.Run("latency="+d.String(), func(b *testing.B) { forwardBacklog(b, sleepingPub{d}, "ceiling") })
	}
}

// sleepingPub's Publish sleeps d and returns nil.
type sleepingPub struct{ d time.Duration }

func (p sleepingPub) Publish(string, ...*message.Message) error {
	time.Sleep(p.d)
	return nil
}

func (p sleepingPub) Close() error { return nil }

// benchConcurrency is ESOX_BENCH_CONCURRENCY, default
// forwarder.PublishConcurrencyDefault.
func benchConcurrency() int {
	if n, err := strconv.Atoi(os.Getenv("ESOX_BENCH_CONCURRENCY")); err == nil && n > 0 {
		return n
	}
	return forwarder.PublishConcurrencyDefault
}

// forwardBacklog seeds max(b.N, 2000) events over 100 streams and times
// forwarding b.N of them to pub.
func forwardBacklog(b *testing.B, pub message.Publisher, topic string) {
	db := pgtest.Open(b)
	db.SetMaxOpenConns(20)
	schema := pgtest.Schema(b, db)
	store := esoxtest.Store(b, db, eventstore.NewRegistry(), postgres.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	n := max(b.N, 2000)
	if _, err := db.Exec(`INSERT INTO `+store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, payload)
SELECT gen_random_uuid(), 'bench-' || (g % 100), g / 100 + 1, 'item_added', '{"n": 1}'::jsonb FROM generate_series(0, $1::bigint - 1) g`, n); err != nil {
		b.Fatal(err)
	}
	cp := &countingPub{inner: pub, target: int64(b.N), done: make(chan struct{})}
	f, err := forwarder.New(store, cp, forwarder.Config{
		BatchSize:          500,
		PublishConcurrency: benchConcurrency(),
		Topic:              func(eventstore.Record) (string, error) { return topic, nil },
		Logger:             slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	b.ResetTimer()
	go func() { errc <- f.Run(runCtx) }()
	select {
	case <-cp.done:
	case err := <-errc:
		b.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Minute):
		b.Fatal("timed out")
	}
	b.StopTimer()
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if b.N > 1 {
		elapsed := time.Duration(cp.last.Load() - cp.first.Load())
		b.ReportMetric(float64(b.N-1)/elapsed.Seconds(), "events/s")
	}
}

// countingPub counts confirmed publishes and closes done at the target-th.
type countingPub struct {
	inner       message.Publisher
	n, target   int64
	mu          sync.Mutex
	done        chan struct{}
	first, last atomic.Int64 // unix nanos
}

func (p *countingPub) Publish(topic string, msgs ...*message.Message) error {
	if err := p.inner.Publish(topic, msgs...); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	p.first.CompareAndSwap(0, now)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(len(msgs))
	if p.n >= p.target && p.last.Load() == 0 {
		p.last.Store(now)
		close(p.done)
	}
	return nil
}

func (p *countingPub) Close() error { return nil }
