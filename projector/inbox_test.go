package projector_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	if _, err := projector.Migrate(ctx, db, b.schema); err != nil {
		t.Fatal(err)
	}
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
	handler, err := projector.NewInboxHandler(db, b.reg, h, projector.InboxConfig{Schema: b.schema, Consumer: "balances", Logger: testLogger(t)})
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
	ctx := context.Background()
	if _, err := projector.Migrate(ctx, db, b.schema); err != nil {
		t.Fatal(err)
	}
	tbl := b.q("inbox_effects")
	if _, err := db.Exec(`CREATE TABLE ` + tbl + ` (event_id uuid NOT NULL, amount bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	h := projector.On(projector.NewHandlers(b.reg), func(ctx context.Context, tx postgres.Tx, r eventstore.Record, e Deposited) error {
		// No unique key here: only the inbox stops a duplicate.
		_, err := tx.ExecContext(ctx, `INSERT INTO `+tbl+` (event_id, amount) VALUES ($1, $2)`, r.ID, e.Amount)
		return err
	})
	handler, err := projector.NewInboxHandler(db, b.reg, h, projector.InboxConfig{Schema: b.schema, Consumer: "effects", Logger: testLogger(t)})
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
