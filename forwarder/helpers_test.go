package forwarder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/leaktest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// TestMain runs the re-exec'd child of TestTakeoverAfterKill when asked to,
// and otherwise fails a green run that leaves goroutines behind.
func TestMain(m *testing.M) {
	if os.Getenv(childEnvSchema) != "" {
		os.Exit(runChild())
	}
	os.Exit(leaktest.Run(m))
}

// itemAdded is the test event type.
type itemAdded struct {
	N int `json:"n"`
}

// blob is a test event type of any size.
type blob struct {
	S string `json:"s"`
}

func testRegistry() *eventstore.Registry {
	r := eventstore.NewRegistry()
	eventstore.MustRegister[itemAdded](r, "item_added")
	eventstore.MustRegister[blob](r, "blob")
	return r
}

type bundle struct {
	db     *sqlx.DB
	schema string
	store  *postgres.Store
}

// setup returns a migrated store in a fresh schema.
func setup(t *testing.T) *bundle {
	t.Helper()
	db := pgtest.Open(t)
	db.SetMaxOpenConns(20)
	schema := pgtest.Schema(t, db)
	return setupOn(t, db, schema)
}

func setupOn(t *testing.T, db *sqlx.DB, schema string) *bundle {
	t.Helper()
	store := esoxtest.Store(t, db, testRegistry(), postgres.Config{Schema: schema, Logger: testLogger(t)})
	return &bundle{db: db, schema: schema, store: store}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testLogger logs to t.Log at Info and up.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a log after the test ended
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// appendSpread appends perStream events to each of the streams, one event
// per append, interleaving the streams, and returns the event IDs per
// stream in version order.
func (b *bundle) appendSpread(t *testing.T, streams []string, perStream int) map[string][]string {
	t.Helper()
	ids := make(map[string][]string, len(streams))
	for v := 0; v < perStream; v++ {
		for _, s := range streams {
			res, err := b.store.Append(testCtx(t), s, eventstore.Any, []eventstore.Event{{Data: itemAdded{N: v}}})
			if err != nil {
				t.Fatalf("append %s: %v", s, err)
			}
			ids[s] = append(ids[s], res.EventIDs[0].String())
		}
	}
	return ids
}

func streamsOf(category string, m int) []string {
	out := make([]string, m)
	for i := range out {
		out[i] = eventstore.StreamID(category, strconv.Itoa(i))
	}
	return out
}

// randomCategory returns a category unique to this test run, so broker
// topics (queues, subjects) never collide across runs.
func randomCategory(prefix string) string {
	return prefix + strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + uuid.NewString()[:6]
}

// delivery is one message a broker (or a test publisher) received.
type delivery struct {
	Topic    string
	UUID     string
	StreamID string
	Version  int64
	Metadata message.Metadata
	Payload  []byte
}

func deliveryOf(topic string, msg *message.Message) delivery {
	v, _ := strconv.ParseInt(msg.Metadata.Get(MetadataStreamVersion), 10, 64)
	return delivery{Topic: topic, UUID: msg.UUID, StreamID: msg.Metadata.Get(MetadataStreamID), Version: v, Metadata: msg.Metadata, Payload: append([]byte(nil), msg.Payload...)}
}

// collector accumulates deliveries; safe for concurrent use.
type collector struct {
	mu  sync.Mutex
	got []delivery
}

func (c *collector) add(d delivery) {
	c.mu.Lock()
	c.got = append(c.got, d)
	c.mu.Unlock()
}

func (c *collector) all() []delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]delivery(nil), c.got...)
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// distinct returns how many different UUIDs arrived.
func (c *collector) distinct() int {
	seen := map[string]bool{}
	for _, d := range c.all() {
		seen[d.UUID] = true
	}
	return len(seen)
}

// recordingPublisher is a message.Publisher that records what it is given.
// before, when set, runs first and may fail the publish or delay it.
type recordingPublisher struct {
	collector
	before func(topic string, msg *message.Message) error
}

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if p.before != nil {
			if err := p.before(topic, m); err != nil {
				return err
			}
		}
		p.add(deliveryOf(topic, m))
	}
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// checkDelivered fails t unless every ID in want arrived at least once and,
// per stream, the first deliveries came in version order.
func checkDelivered(t *testing.T, got []delivery, want map[string][]string) {
	t.Helper()
	first := map[string][]string{} // stream -> UUIDs in order of first delivery
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d.UUID] {
			continue
		}
		seen[d.UUID] = true
		first[d.StreamID] = append(first[d.StreamID], d.UUID)
	}
	for stream, ids := range want {
		for _, id := range ids {
			if !seen[id] {
				t.Errorf("stream %s: event %s never delivered", stream, id)
			}
		}
		if len(first[stream]) != len(ids) {
			t.Errorf("stream %s: %d distinct deliveries, want %d", stream, len(first[stream]), len(ids))
			continue
		}
		for i := range ids {
			if first[stream][i] != ids[i] {
				t.Errorf("stream %s: first deliveries out of version order at %d: got %s, want %s", stream, i+1, first[stream][i], ids[i])
				break
			}
		}
	}
}

// runForwarder runs f in a goroutine; stop cancels it, waits for Run to
// return and returns its error; done is closed when Run returns, with its
// error then in *runErr. Cleanup stops it too.
func runForwarder(t *testing.T, f *Forwarder) (stop func() error, done <-chan struct{}, runErr *error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	var err error
	go func() {
		defer close(finished)
		err = f.Run(ctx)
	}()
	stop = func() error {
		cancel()
		select {
		case <-finished:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("Run did not return within 30s of cancel")
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil && !errors.Is(err, ErrPoison) {
			t.Errorf("forwarder Run: %v", err)
		}
	})
	return stop, finished, &err
}

func newForwarder(t *testing.T, b *bundle, pub message.Publisher, cfg Config) *Forwarder {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	f, err := New(b.store, pub, cfg)
	if err != nil {
		t.Fatalf("forwarder.New: %v", err)
	}
	return f
}

// waitFeed waits until the global feed shows n events and returns its
// head. Appends commit before they become visible to the feed only once no
// older transaction (of any test on the server) is still open.
func (b *bundle) waitFeed(t *testing.T, n int) eventstore.Position {
	t.Helper()
	var head eventstore.Position
	testwait.Until(t, fmt.Sprintf("%d events visible in the feed", n), func() bool {
		count := 0
		var after eventstore.Position
		for {
			recs, err := b.store.ReadAll(testCtx(t), after, 1000)
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			if len(recs) == 0 {
				break
			}
			count += len(recs)
			after = recs[len(recs)-1].Position
		}
		head = after
		return count == n
	})
	return head
}

// migrate applies the forwarder's migrations for store.
func migrate(ctx context.Context, store *postgres.Store) (postgres.MigrateResult, error) {
	f, err := New(store, &recordingPublisher{}, Config{})
	if err != nil {
		return postgres.MigrateResult{}, err
	}
	return f.Migrate(ctx)
}
