package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// itemAddedV2 is "item_added" at version 2: it gained a unit (version 1
// was {"n"}, read with the unit "piece"). "items_added" {"ns": [...]} is
// split into one item_added per number, "thing_added" was renamed
// "item_added", and "tick" is dropped.
type itemAddedV2 struct {
	N    int    `json:"n"`
	Unit string `json:"unit"`
}

func evolvedRegistry(t *testing.T) *eventstore.Registry {
	t.Helper()
	reg := eventstore.NewRegistry()
	eventstore.MustRegisterVersion[itemAddedV2](reg, "item_added", 2)
	err := errors.Join(
		reg.Upcast("item_added", 1, eventstore.AddField("unit", "piece")),
		reg.Rename("thing_added", 1, "item_added", 1),
		reg.Split("items_added", 1, []eventstore.SchemaRef{{Type: "item_added", Version: 1}}, func(p json.RawMessage) ([]eventstore.VersionedEvent, error) {
			var v struct {
				Ns []int `json:"ns"`
			}
			if err := json.Unmarshal(p, &v); err != nil {
				return nil, err
			}
			out := make([]eventstore.VersionedEvent, len(v.Ns))
			for i, n := range v.Ns {
				out[i] = eventstore.VersionedEvent{Type: "item_added", Version: 1, Payload: json.RawMessage(`{"n":` + strconv.Itoa(n) + `}`)}
			}
			return out, nil
		}),
		reg.Drop("tick", 1),
		reg.Validate(),
	)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// evolvedBundle is a migrated store in a fresh schema with the evolved
// registry.
func evolvedBundle(t *testing.T) *bundle {
	t.Helper()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	store := esoxtest.Store(t, db, evolvedRegistry(t), postgres.Config{Schema: schema, Logger: testLogger(t)})
	return &bundle{db: db, schema: schema, store: store}
}

// insertRaw stores an event as an older (or newer) release wrote it and
// returns its ID; schemaVersion 0 is an INSERT without the column, as
// before schema versions existed.
func (b *bundle) insertRaw(t *testing.T, stream string, version int64, typ string, schemaVersion int, payload string) string {
	t.Helper()
	id := uuid.NewString()
	var err error
	if schemaVersion == 0 {
		_, err = b.db.ExecContext(testCtx(t), `INSERT INTO `+b.store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, payload, metadata)
			VALUES ($1, $2, $3, $4, $5, '{"tenant": "t1"}')`, id, stream, version, typ, payload)
	} else {
		_, err = b.db.ExecContext(testCtx(t), `INSERT INTO `+b.store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata)
			VALUES ($1, $2, $3, $4, $5, $6, '{"tenant": "t1"}')`, id, stream, version, typ, schemaVersion, payload)
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestForwardStoredOrUpcast forwards events stored by older releases two
// ways: as stored (the default: each stored event one message, its stored
// payload, type and schema version) and upcast (Config.PublishUpcast: the
// current version, renamed, split into several messages, dropped ones not
// at all). Inbox consumers of either get the same records.
func TestForwardStoredOrUpcast(t *testing.T) {
	t.Parallel()
	b := evolvedBundle(t)
	ids := []string{
		b.insertRaw(t, "order-1", 1, "item_added", 0, `{"n": 1}`),
		b.insertRaw(t, "order-1", 2, "item_added", 2, `{"n": 2, "unit": "box"}`),
		b.insertRaw(t, "order-1", 3, "items_added", 0, `{"ns": [3, 4]}`),
		b.insertRaw(t, "order-1", 4, "tick", 0, `{}`),
		b.insertRaw(t, "order-1", 5, "thing_added", 0, `{"n": 5}`),
	}
	res, err := b.store.Append(testCtx(t), "order-1", eventstore.Exact(5), []eventstore.Event{{Data: itemAddedV2{N: 6, Unit: "kg"}, Metadata: eventstore.Metadata{Extra: map[string]string{"tenant": "t1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, res.EventIDs[0].String())

	stored, upcast := &recordingPublisher{}, &recordingPublisher{}
	runForwarder(t, newForwarder(t, b, stored, Config{ConsumerGroup: "stored"}))
	runForwarder(t, newForwarder(t, b, upcast, Config{ConsumerGroup: "upcast", PublishUpcast: true}))
	testwait.Until(t, "6 stored messages", func() bool { return stored.len() >= 6 })
	testwait.Until(t, "6 upcast messages", func() bool { return upcast.len() >= 6 })

	// As stored: one message per stored event, exactly as written.
	wantStored := []struct {
		typ, version, payload string
	}{
		{"item_added", "1", `{"n": 1}`},
		{"item_added", "2", `{"n": 2, "unit": "box"}`},
		{"items_added", "1", `{"ns": [3, 4]}`},
		{"tick", "1", `{}`},
		{"thing_added", "1", `{"n": 5}`},
		{"item_added", "2", `{"n": 6, "unit": "kg"}`},
	}
	got := stored.all()
	if len(got) != len(wantStored) {
		t.Fatalf("stored mode published %d messages, want %d", len(got), len(wantStored))
	}
	for i, d := range got {
		w := wantStored[i]
		if d.UUID != ids[i] || d.Metadata.Get(MetadataEventType) != w.typ || d.Metadata.Get(MetadataSchemaVersion) != w.version ||
			!jsonEq(t, d.Payload, w.payload) || d.Metadata.Get(MetadataEventIndex) != "" {
			t.Errorf("stored message %d = %s %s v%s %s, want %s %s v%s %s", i, d.UUID, d.Metadata.Get(MetadataEventType), d.Metadata.Get(MetadataSchemaVersion), d.Payload,
				ids[i], w.typ, w.version, w.payload)
		}
	}

	// Upcast: the current version; the split event as two messages, the
	// dropped one not at all.
	row3, _ := uuid.Parse(ids[2])
	wantUpcast := []struct {
		uuid    string
		version int64
		index   string
		payload string
	}{
		{ids[0], 1, "", `{"n": 1, "unit": "piece"}`},
		{ids[1], 2, "", `{"n": 2, "unit": "box"}`},
		{ids[2], 3, "", `{"n": 3, "unit": "piece"}`},
		{eventstore.SplitEventID(row3, 1).String(), 3, "1", `{"n": 4, "unit": "piece"}`},
		{ids[4], 5, "", `{"n": 5, "unit": "piece"}`},
		{ids[5], 6, "", `{"n": 6, "unit": "kg"}`},
	}
	testwait.Until(t, "the upcast messages", func() bool { return upcast.len() >= len(wantUpcast) })
	got = upcast.all()
	if len(got) != len(wantUpcast) {
		t.Fatalf("upcast mode published %d messages, want %d", len(got), len(wantUpcast))
	}
	for i, d := range got {
		w := wantUpcast[i]
		if d.UUID != w.uuid || d.Version != w.version || d.Metadata.Get(MetadataEventType) != "item_added" || d.Metadata.Get(MetadataSchemaVersion) != "2" ||
			d.Metadata.Get(MetadataEventIndex) != w.index || !jsonEq(t, d.Payload, w.payload) || d.Metadata.Get("tenant") != "t1" {
			t.Errorf("upcast message %d = %s v%d %v %s, want %s v%d index %q %s", i, d.UUID, d.Version, d.Metadata, d.Payload, w.uuid, w.version, w.index, w.payload)
		}
	}
	// Inbox consumers of either stream of messages apply the same records;
	// the stream version guard works with the stored messages (each stored
	// event one message, the dropped one recorded without effect).
	want := []itemAddedV2{{1, "piece"}, {2, "box"}, {3, "piece"}, {4, "piece"}, {5, "piece"}, {6, "kg"}}
	for _, c := range []struct {
		consumer string
		guard    bool
		msgs     []delivery
	}{
		{"from_stored", false, stored.all()},
		{"from_stored_guarded", true, stored.all()},
		{"from_upcast", false, upcast.all()},
	} {
		in, err := projector.NewInbox(b.db, b.store.Registry(), projector.InboxConfig{Schema: b.schema, Consumer: c.consumer, StreamVersionGuard: c.guard, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.Migrate(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		var items []itemAddedV2
		h := projector.On(projector.NewHandlers(b.store.Registry()), func(_ context.Context, _ postgres.Tx, _ eventstore.Record, e itemAddedV2) error {
			items = append(items, e)
			return nil
		})
		handle, err := in.Handler(h)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range append(c.msgs, c.msgs...) { // every message twice: at least once
			msg := message.NewMessage(d.UUID, d.Payload)
			msg.Metadata = d.Metadata
			msg.SetContext(testCtx(t))
			if err := handle(msg); err != nil {
				t.Fatalf("%s: message %s: %v", c.consumer, d.UUID, err)
			}
		}
		if len(items) != len(want) {
			t.Fatalf("%s: applied %v, want %v", c.consumer, items, want)
		}
		for i := range want {
			if items[i] != want[i] {
				t.Fatalf("%s: applied %v, want %v", c.consumer, items, want)
			}
		}
	}
}

func jsonEq(t *testing.T, a []byte, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("invalid JSON %s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// TestForwardTooNewVersion: an event written by a newer release, at a
// schema version this registry does not know, is forwarded as stored in
// the default mode (the forwarder does not read payloads), and is a poison
// event in upcast mode: Run stops before it, or it is dead-lettered as
// stored; it is never published as a guess.
func TestForwardTooNewVersion(t *testing.T) {
	t.Parallel()
	b := evolvedBundle(t)
	first := b.insertRaw(t, "order-1", 1, "item_added", 0, `{"n": 1}`)
	tooNew := b.insertRaw(t, "order-1", 2, "item_added", 3, `{"n": 2, "unit": "box", "origin": "eu"}`)
	res, err := b.store.Append(testCtx(t), "order-1", eventstore.Exact(2), []eventstore.Event{{Data: itemAddedV2{N: 3, Unit: "kg"}}})
	if err != nil {
		t.Fatal(err)
	}
	last := res.EventIDs[0].String()

	stored := &recordingPublisher{}
	runForwarder(t, newForwarder(t, b, stored, Config{ConsumerGroup: "stored"}))
	testwait.Until(t, "3 stored messages", func() bool { return stored.len() >= 3 })
	if d := stored.all()[1]; d.UUID != tooNew || d.Metadata.Get(MetadataSchemaVersion) != "3" {
		t.Fatalf("stored mode: message 2 = %s v%s, want %s as stored at version 3", d.UUID, d.Metadata.Get(MetadataSchemaVersion), tooNew)
	}

	// Upcast mode, PoisonStop: Run stops before the event, with the schema
	// version error.
	strict := &recordingPublisher{}
	f := newForwarder(t, b, strict, Config{ConsumerGroup: "strict", PublishUpcast: true})
	_, done, runErr := runForwarder(t, f)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop on the event it cannot read")
	}
	var pe *PoisonError
	if !errors.Is(*runErr, ErrPoison) || !errors.Is(*runErr, eventstore.ErrUnknownSchemaVersion) || !errors.As(*runErr, &pe) || pe.EventID != tooNew {
		t.Fatalf("Run = %v, want a *PoisonError for %s matching ErrUnknownSchemaVersion", *runErr, tooNew)
	}
	if got := strict.all(); len(got) != 1 || got[0].UUID != first {
		t.Fatalf("strict published %d messages, want only the first (%s)", len(got), first)
	}
	off, err := f.Offset(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !off.Less(pe.Position) {
		t.Fatalf("offset %s, want before the event at %s", off, pe.Position)
	}

	// Upcast mode, PoisonDeadLetter: dead-lettered as stored, and the
	// next event goes on.
	parking := &recordingPublisher{}
	runForwarder(t, newForwarder(t, b, parking, Config{ConsumerGroup: "parking", PublishUpcast: true, OnPoison: PoisonDeadLetter, DeadLetterTopic: "dead"}))
	testwait.Until(t, "3 messages", func() bool { return parking.len() >= 3 })
	got := parking.all()
	if got[0].UUID != first || got[0].Topic != "order" || got[2].UUID != last || got[2].Topic != "order" {
		t.Fatalf("parking published %+v", got)
	}
	if d := got[1]; d.UUID != tooNew || d.Topic != "dead" || d.Metadata.Get(MetadataSchemaVersion) != "3" || !jsonEq(t, d.Payload, `{"n": 2, "unit": "box", "origin": "eu"}`) ||
		!strings.Contains(d.Metadata.Get(MetadataPoisonReason), "unknown schema version") {
		t.Fatalf("dead letter = %s to %s, v%s %s, reason %q; want the event as stored, with the reason", d.UUID, d.Topic, d.Metadata.Get(MetadataSchemaVersion), d.Payload, d.Metadata.Get(MetadataPoisonReason))
	}

	// An inbox consumer of the stored messages refuses the newer version
	// (nacked, so redelivered once the consumer is upgraded).
	in, err := projector.NewInbox(b.db, b.store.Registry(), projector.InboxConfig{Schema: b.schema, Consumer: "c", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Migrate(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	handle, err := in.Handler(projector.On(projector.NewHandlers(b.store.Registry()), func(context.Context, postgres.Tx, eventstore.Record, itemAddedV2) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	d := stored.all()[1]
	msg := message.NewMessage(d.UUID, d.Payload)
	msg.Metadata = d.Metadata
	msg.SetContext(testCtx(t))
	if err := handle(msg); !errors.Is(err, eventstore.ErrUnknownSchemaVersion) {
		t.Fatalf("inbox over a version 3 message: %v, want ErrUnknownSchemaVersion", err)
	}
}
