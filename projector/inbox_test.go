package projector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/projector"
)

// newInbox returns a migrated Inbox in b's schema; cfg.Schema and
// cfg.Logger are set here.
func newInbox(t testing.TB, b *bundle, cfg projector.InboxConfig) *projector.Inbox {
	t.Helper()
	cfg.Schema, cfg.Logger = b.schema, testLogger(t)
	in, err := projector.NewInbox(b.db, b.reg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return in
}

// eventMessage builds the message a forwarder publishes for an event.
func eventMessage(t testing.TB, id uuid.UUID, typ string, data any, stream string, version int64, pos eventstore.Position) *message.Message {
	t.Helper()
	payload, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage(id.String(), payload)
	msg.Metadata.Set(projector.MessageEventType, typ)
	msg.Metadata.Set(projector.MessageStreamID, stream)
	msg.Metadata.Set(projector.MessageStreamVersion, strconv.FormatInt(version, 10))
	msg.Metadata.Set(projector.MessagePosition, strconv.FormatInt(pos.Position, 10))
	msg.Metadata.Set(projector.MessageTransactionID, strconv.FormatUint(pos.TransactionID, 10))
	msg.Metadata.Set(projector.MessageRecordedAt, time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC).Format(time.RFC3339Nano))
	msg.Metadata.Set(eventstore.MetadataCorrelationID, "corr-"+id.String()[:8])
	msg.Metadata.Set(eventstore.MetadataCausationID, "cause-1")
	msg.Metadata.Set("tenant", "t1")
	return msg
}

func TestInboxAppliesEachMessageOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	b := &bundle{db: db, schema: pgtest.Schema(t, db), reg: newRegistry()}
	ctx := context.Background()
	in := newInbox(t, b, projector.InboxConfig{Consumer: "balances"})
	tbl := b.q("inbox_balances")
	if _, err := db.Exec(`CREATE TABLE ` + tbl + ` (account text PRIMARY KEY, total bigint NOT NULL, n bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []eventstore.Record
	h := projector.On(projector.NewHandlers(b.reg), func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e Deposited) error {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		_, err := tx.ExecContext(ctx, `INSERT INTO `+tbl+` (account, total, n) VALUES ($1, $2, 1)
			ON CONFLICT (account) DO UPDATE SET total = `+tbl+`.total + excluded.total, n = `+tbl+`.n + 1`, e.Account, e.Amount)
		return err
	})
	handler, err := in.Handler(h)
	if err != nil {
		t.Fatal(err)
	}

	logger := watermill.NewSlogLogger(testLogger(t))
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, logger)
	defer pubsub.Close()
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	router.AddConsumerHandler("inbox", "events", pubsub, handler)
	routerCtx, stopRouter := context.WithCancel(ctx)
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	defer func() {
		stopRouter()
		if err := <-routerDone; err != nil {
			t.Errorf("router: %v", err)
		}
	}()
	select {
	case <-router.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("router did not start")
	}

	// 20 deposits and one unhandled note, each delivered twice or three
	// times through the router (gochannel hands a subscriber one message at
	// a time, so these duplicates are sequential; see
	// TestInboxConcurrentDuplicatesApplyOnce for truly concurrent ones).
	type ev struct {
		id   uuid.UUID
		typ  string
		data any
	}
	var evs []ev
	for i := range 20 {
		evs = append(evs, ev{uuid.Must(uuid.NewV7()), "deposited", Deposited{Account: fmt.Sprintf("a%d", i%3), Amount: int64(i + 1)}})
	}
	evs = append(evs, ev{uuid.Must(uuid.NewV7()), "noted", Noted{Text: "hi"}})
	for round := range 2 {
		var wg sync.WaitGroup
		for i, e := range evs {
			wg.Go(func() {
				msg := eventMessage(t, e.id, e.typ, e.data, "account-x", int64(i+1), eventstore.Position{TransactionID: 1000 + uint64(i), Position: int64(i + 1)})
				if err := pubsub.Publish("events", msg); err != nil {
					t.Errorf("publish round %d: %v", round, err)
				}
			})
			if round == 1 && i%2 == 0 {
				wg.Go(func() {
					msg := eventMessage(t, e.id, e.typ, e.data, "account-x", int64(i+1), eventstore.Position{TransactionID: 1000 + uint64(i), Position: int64(i + 1)})
					if err := pubsub.Publish("events", msg); err != nil {
						t.Errorf("publish duplicate: %v", err)
					}
				})
			}
		}
		wg.Wait()
	}

	want := map[string]balance{}
	for _, e := range evs[:20] {
		d := e.data.(Deposited)
		w := want[d.Account]
		w.Account, w.Total, w.N = d.Account, w.Total+d.Amount, w.N+1
		want[d.Account] = w
	}
	equalBalances(t, "inbox model", b.model(t, "inbox_balances"), want)
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM `+b.q(projector.InboxTable)+` WHERE consumer = 'balances'`); err != nil || n != 20 {
		t.Fatalf("inbox rows = %d (%v), want 20", n, err)
	}

	// The record handed to the handler carries the forwarder's fields.
	mu.Lock()
	r := seen[0]
	mu.Unlock()
	if r.Type != "deposited" || r.StreamID != "account-x" || r.StreamVersion < 1 || r.Position.TransactionID < 1000 ||
		r.Metadata.CausationID != "cause-1" || r.Metadata.CorrelationID == "" || r.Metadata.Extra["tenant"] != "t1" ||
		!r.RecordedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)) || r.ID == uuid.Nil {
		t.Fatalf("record from message = %+v", r)
	}
}

// TestInboxConcurrentDuplicatesApplyOnce calls the inbox handler itself from
// several goroutines at once with copies of one message (as redelivery to
// several consumers of a queue can): the effect is applied exactly once.
func TestInboxConcurrentDuplicatesApplyOnce(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	b := &bundle{db: db, schema: pgtest.Schema(t, db), reg: newRegistry()}
	in := newInbox(t, b, projector.InboxConfig{Consumer: "effects"})
	tbl := b.q("inbox_effects")
	if _, err := db.Exec(`CREATE TABLE ` + tbl + ` (event_id uuid NOT NULL, amount bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	h := projector.On(projector.NewHandlers(b.reg), func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e Deposited) error {
		// No unique key here: only the inbox stops a duplicate.
		_, err := tx.ExecContext(ctx, `INSERT INTO `+tbl+` (event_id, amount) VALUES ($1, $2)`, r.ID, e.Amount)
		return err
	})
	handler, err := in.Handler(h)
	if err != nil {
		t.Fatal(err)
	}
	const messages, copies = 10, 6
	for i := range messages {
		id := uuid.Must(uuid.NewV7())
		pos := eventstore.Position{TransactionID: 1000 + uint64(i), Position: int64(i + 1)}
		startLine := make(chan struct{})
		var wg sync.WaitGroup
		for range copies {
			msg := eventMessage(t, id, "deposited", Deposited{Account: "a", Amount: int64(i + 1)}, "account-a", int64(i+1), pos)
			wg.Go(func() {
				<-startLine
				if err := handler(msg); err != nil {
					t.Errorf("message %d: %v", i, err)
				}
			})
		}
		close(startLine)
		wg.Wait()
	}
	var rows []struct {
		EventID string `db:"event_id"`
		N       int    `db:"n"`
	}
	if err := db.Select(&rows, `SELECT event_id::text AS event_id, count(*) AS n FROM `+tbl+` GROUP BY 1`); err != nil {
		t.Fatal(err)
	}
	if len(rows) != messages {
		t.Fatalf("%d messages had an effect, want %d", len(rows), messages)
	}
	for _, r := range rows {
		if r.N != 1 {
			t.Fatalf("message %s applied %d times, want once", r.EventID, r.N)
		}
	}
}

func TestRecordFromMessageRefusesBadInput(t *testing.T) {
	t.Parallel()
	reg := newRegistry()
	id := uuid.Must(uuid.NewV7())
	good := func() *message.Message {
		return eventMessage(t, id, "deposited", Deposited{Account: "a", Amount: 1}, "account-a", 1, eventstore.Position{TransactionID: 5, Position: 7})
	}
	rec, err := projector.RecordFromMessage(reg, good())
	if err != nil || rec.Data.(Deposited).Account != "a" || rec.Position != (eventstore.Position{TransactionID: 5, Position: 7}) || rec.ID != id {
		t.Fatalf("good message: %+v, %v", rec, err)
	}
	cases := map[string]func(m *message.Message){
		"no type":      func(m *message.Message) { delete(m.Metadata, projector.MessageEventType) },
		"bad version":  func(m *message.Message) { m.Metadata.Set(projector.MessageStreamVersion, "x") },
		"bad position": func(m *message.Message) { m.Metadata.Set(projector.MessagePosition, "1.5") },
		"bad txid":     func(m *message.Message) { m.Metadata.Set(projector.MessageTransactionID, "-1") },
		"bad time":     func(m *message.Message) { m.Metadata.Set(projector.MessageRecordedAt, "yesterday") },
		"bad uuid":     func(m *message.Message) { m.UUID = "not-a-uuid" },
	}
	for name, mutate := range cases {
		m := good()
		mutate(m)
		if _, err := projector.RecordFromMessage(reg, m); !errors.Is(err, eventstore.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	m := good()
	m.Metadata.Set(projector.MessageEventType, "unregistered")
	if _, err := projector.RecordFromMessage(reg, m); !errors.Is(err, eventstore.ErrUnknownEventType) {
		t.Errorf("unregistered type: %v", err)
	}
	m = good()
	m.Payload = []byte(`{"amount": "not a number"}`)
	if _, err := projector.RecordFromMessage(reg, m); !errors.Is(err, eventstore.ErrMalformedPayload) {
		t.Errorf("bad payload: %v", err)
	}
}

// inboxModel is a read model of deposits that records the order in which
// the inbox applied them.
type inboxModel struct {
	b   *bundle
	tbl string
}

func newInboxModel(t testing.TB, b *bundle, table string) *inboxModel {
	t.Helper()
	m := &inboxModel{b: b, tbl: b.q(table)}
	if _, err := b.db.Exec(`CREATE TABLE ` + m.tbl + ` (seq bigserial PRIMARY KEY, event_id uuid NOT NULL, stream_id text NOT NULL, version bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *inboxModel) handler() projector.Handler {
	return projector.On(projector.NewHandlers(m.b.reg), func(ctx context.Context, tx postgres.Tx, r eventstore.Record, _ Deposited) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+m.tbl+` (event_id, stream_id, version) VALUES ($1, $2, $3)`, r.ID, r.StreamID, r.StreamVersion)
		return err
	})
}

// versions returns the stream versions applied to stream, in the order
// they were applied.
func (m *inboxModel) versions(t testing.TB, stream string) []int64 {
	t.Helper()
	var vs []int64
	if err := m.b.db.Select(&vs, `SELECT version FROM `+m.tbl+` WHERE stream_id = $1 ORDER BY seq`, stream); err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestInboxStatusWaitForAndPrune: the inbox reports its consumer (messages
// held, the last one's stream, version and position, this process's
// counters), WaitFor returns once a message is recorded, in this process
// and from another Inbox of the consumer (another process), and Prune
// deletes records older than its age, in batches.
func TestInboxStatusWaitForAndPrune(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	b := &bundle{db: db, schema: pgtest.Schema(t, db), reg: newRegistry()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// This process's Inbox never polls: its WaitFor wakes when it records
	// a message. The other one, another process's, polls.
	in := newInbox(t, b, projector.InboxConfig{Consumer: "model", PollInterval: time.Hour})
	other := newInbox(t, b, projector.InboxConfig{Consumer: "model", PollInterval: time.Millisecond})
	m := newInboxModel(t, b, "inbox_model")
	handler, err := in.Handler(m.handler())
	if err != nil {
		t.Fatal(err)
	}
	if s, err := in.Status(ctx); err != nil || s.Messages != 0 || s.Last.MessageUUID != "" || !s.Oldest.IsZero() {
		t.Fatalf("Status of an empty inbox = %+v, %v", s, err)
	}

	ids := make([]uuid.UUID, 5)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
	}
	// Both Inboxes wait for the last message before it is delivered.
	waited := make(chan error, 2)
	for _, w := range []*projector.Inbox{in, other} {
		go func() { waited <- w.WaitFor(ctx, ids[4]) }()
	}
	for i, id := range ids {
		msg := eventMessage(t, id, "deposited", Deposited{Account: "a", Amount: 1}, "account-a", int64(i+1), eventstore.Position{TransactionID: 900, Position: int64(10 + i)})
		if err := handler(msg); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := <-waited; err != nil {
			t.Fatalf("WaitFor: %v", err)
		}
	}
	if n := len(m.versions(t, "account-a")); n != 5 {
		t.Fatalf("WaitFor returned with %d messages applied, want 5", n)
	}
	// A duplicate, and a type the handler does not take.
	if err := handler(eventMessage(t, ids[0], "deposited", Deposited{Account: "a", Amount: 1}, "account-a", 1, eventstore.Position{TransactionID: 900, Position: 10})); err != nil {
		t.Fatal(err)
	}
	if err := handler(eventMessage(t, uuid.Must(uuid.NewV7()), "noted", Noted{Text: "x"}, "account-a", 6, eventstore.Position{TransactionID: 900, Position: 15})); err != nil {
		t.Fatal(err)
	}
	s, err := in.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := projector.InboxMessage{MessageUUID: ids[4].String(), EventType: "deposited", StreamID: "account-a", StreamVersion: 5,
		Position: eventstore.Position{TransactionID: 900, Position: 14}, RecordedAt: s.Last.RecordedAt}
	if s.Consumer != "model" || s.Messages != 5 || s.Last != want || s.Last.RecordedAt.IsZero() || s.Oldest.After(s.Last.RecordedAt) ||
		s.Stats != (projector.InboxStats{Applied: 5, Duplicates: 1, Ignored: 1}) {
		t.Fatalf("Status = %+v, want 5 messages, the last %+v, 5 applied, 1 duplicate, 1 ignored", s, want)
	}
	if o, err := other.Status(ctx); err != nil || o.Messages != 5 || o.Last != s.Last || o.Stats != (projector.InboxStats{}) {
		t.Fatalf("Status from another Inbox = %+v, %v; want the database's view and its own zero counters", o, err)
	}

	// WaitFor ends with its context for a message never delivered.
	short, stop := context.WithCancel(ctx)
	stop()
	if err := in.WaitFor(short, uuid.Must(uuid.NewV7())); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor with a cancelled ctx = %v", err)
	}

	// Prune: 3 of the records are two hours old, plus 10,001 more (more
	// than one batch); another consumer's old records stay.
	if _, err := db.Exec(`UPDATE `+b.q(projector.InboxTable)+` SET processed_at = now() - interval '2 hours' WHERE message_uuid = ANY($1::text[])`,
		"{"+ids[0].String()+","+ids[1].String()+","+ids[2].String()+"}"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO ` + b.q(projector.InboxTable) + ` (consumer, message_uuid, processed_at)
		SELECT c, gen_random_uuid()::text, now() - interval '3 hours' FROM generate_series(1, 10001), (VALUES ('model'), ('someone_else')) AS cs(c)`); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Prune(ctx, 0); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("Prune(0) = %v, want ErrInvalidArgument", err)
	}
	n, err := in.Prune(ctx, time.Hour)
	if err != nil || n != 10004 {
		t.Fatalf("Prune = %d, %v; want 10004 deleted", n, err)
	}
	s, err = in.Status(ctx)
	if err != nil || s.Messages != 2 || s.Last.MessageUUID != ids[4].String() {
		t.Fatalf("Status after Prune = %+v, %v; want the 2 recent messages", s, err)
	}
	var others int
	if err := db.Get(&others, `SELECT count(*) FROM `+b.q(projector.InboxTable)+` WHERE consumer = 'someone_else'`); err != nil || others != 10001 {
		t.Fatalf("another consumer's records: %d (%v), want 10001 kept", others, err)
	}
	// A pruned message is no longer known: a redelivery applies again
	// (the stream version guard, off here, would catch it).
	if err := handler(eventMessage(t, ids[0], "deposited", Deposited{Account: "a", Amount: 1}, "account-a", 1, eventstore.Position{TransactionID: 900, Position: 10})); err != nil {
		t.Fatal(err)
	}
	if n := len(m.versions(t, "account-a")); n != 6 {
		t.Fatalf("%d messages applied after a redelivery of a pruned one, want 6", n)
	}
}

// TestInboxStreamVersionGuard: with StreamVersionGuard, a delivery past
// the next version of its stream is refused (nacked, nothing written), one
// at or below the last version is a duplicate (acked, not applied) even
// after Prune, messages of types the handler does not take advance their
// stream, and messages without stream metadata are refused.
func TestInboxStreamVersionGuard(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	b := &bundle{db: db, schema: pgtest.Schema(t, db), reg: newRegistry()}
	ctx := context.Background()
	in := newInbox(t, b, projector.InboxConfig{Consumer: "guarded", StreamVersionGuard: true})
	m := newInboxModel(t, b, "guarded_model")
	handler, err := in.Handler(m.handler())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int64]uuid.UUID{}
	msg := func(stream string, v int64, typ string) *message.Message {
		key := v
		if stream != "s" {
			key = -v
		}
		if _, ok := ids[key]; !ok {
			ids[key] = uuid.Must(uuid.NewV7())
		}
		var data any = Deposited{Account: "a", Amount: v}
		if typ == "noted" {
			data = Noted{Text: "n"}
		}
		return eventMessage(t, ids[key], typ, data, stream, v, eventstore.Position{TransactionID: 500, Position: v})
	}
	refused := func(m *message.Message, last int64) {
		t.Helper()
		var oe *projector.OutOfOrderError
		err := handler(m)
		if !errors.Is(err, projector.ErrOutOfOrder) || !errors.As(err, &oe) || oe.LastVersion != last || oe.Consumer != "guarded" || oe.MessageUUID != m.UUID {
			t.Fatalf("message %s v%s = %v, want an OutOfOrderError after version %d", m.Metadata.Get(projector.MessageStreamID), m.Metadata.Get(projector.MessageStreamVersion), err, last)
		}
	}
	ok := func(m *message.Message) {
		t.Helper()
		if err := handler(m); err != nil {
			t.Fatalf("message v%s: %v", m.Metadata.Get(projector.MessageStreamVersion), err)
		}
	}
	refused(msg("s", 2, "deposited"), 0) // a stream starts at version 1
	ok(msg("s", 1, "deposited"))
	refused(msg("s", 3, "deposited"), 1) // gap: version 2 is missing
	ok(msg("s", 2, "deposited"))
	ok(msg("s", 3, "deposited"))
	dup := msg("s", 2, "deposited")
	dup.UUID = uuid.Must(uuid.NewV7()).String() // an unknown UUID at an applied version
	ok(dup)
	ok(msg("s", 4, "noted")) // not applied, but advances the stream
	ok(msg("s", 5, "deposited"))
	ok(msg("t", 1, "deposited"))
	if got := m.versions(t, "s"); !slices.Equal(got, []int64{1, 2, 3, 5}) {
		t.Fatalf("applied versions of s = %v, want [1 2 3 5]", got)
	}
	var inboxRows int
	if err := db.Get(&inboxRows, `SELECT count(*) FROM `+b.q(projector.InboxTable)+` WHERE consumer = 'guarded'`); err != nil || inboxRows != 6 {
		t.Fatalf("inbox rows = %d (%v), want 6 (refused and duplicate messages write nothing)", inboxRows, err)
	}
	s, err := in.Status(ctx)
	if err != nil || s.Streams != 2 || s.Stats != (projector.InboxStats{Applied: 6, Duplicates: 1, OutOfOrder: 2}) {
		t.Fatalf("Status = %+v, %v", s, err)
	}
	// After Prune, a redelivery of version 1 is still a duplicate.
	if _, err := db.Exec(`UPDATE ` + b.q(projector.InboxTable) + ` SET processed_at = now() - interval '1 day'`); err != nil {
		t.Fatal(err)
	}
	if n, err := in.Prune(ctx, time.Hour); err != nil || n != 6 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	ok(msg("s", 1, "deposited"))
	if got := m.versions(t, "s"); !slices.Equal(got, []int64{1, 2, 3, 5}) {
		t.Fatalf("applied versions of s after a redelivery past Prune = %v, want [1 2 3 5]", got)
	}
	// Without stream metadata the guard cannot work.
	bare := msg("s", 6, "deposited")
	delete(bare.Metadata, projector.MessageStreamVersion)
	if err := handler(bare); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("message without stream_version = %v, want ErrInvalidArgument", err)
	}
}

// TestInboxStreamVersionGuardUnderConcurrentRedelivery: the versions of
// one stream, delivered concurrently in every order and redelivered after
// each refusal (as a broker redelivers a nacked message), are applied once
// each, in version order.
func TestInboxStreamVersionGuardUnderConcurrentRedelivery(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	b := &bundle{db: db, schema: pgtest.Schema(t, db), reg: newRegistry()}
	in := newInbox(t, b, projector.InboxConfig{Consumer: "concurrent", StreamVersionGuard: true})
	m := newInboxModel(t, b, "concurrent_model")
	handler, err := in.Handler(m.handler())
	if err != nil {
		t.Fatal(err)
	}
	const versions, copies = 20, 2
	var wg sync.WaitGroup
	for v := int64(1); v <= versions; v++ {
		id := uuid.Must(uuid.NewV7())
		for range copies {
			wg.Go(func() {
				for {
					err := handler(eventMessage(t, id, "deposited", Deposited{Account: "a", Amount: v}, "s", v, eventstore.Position{TransactionID: 700, Position: v}))
					if err == nil {
						return
					}
					if !errors.Is(err, projector.ErrOutOfOrder) {
						t.Errorf("version %d: %v", v, err)
						return
					}
					time.Sleep(time.Millisecond) // the broker's redelivery delay
				}
			})
		}
	}
	wg.Wait()
	want := make([]int64, versions)
	for i := range want {
		want[i] = int64(i + 1)
	}
	if got := m.versions(t, "s"); !slices.Equal(got, want) {
		t.Fatalf("applied versions = %v, want each once in order", got)
	}
	if st := in.Stats(); st.Applied != versions || st.Duplicates != versions*(copies-1) {
		t.Fatalf("Stats = %+v, want %d applied and %d duplicates", st, versions, versions*(copies-1))
	}
}
