package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"testing"
	"testing/fstest"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// OrderPlacedV2 is "order_placed" at schema version 2: the amount became
// cents and gained a currency. Version 1 is OrderPlaced.
type OrderPlacedV2 struct {
	OrderID  string `json:"order_id"`
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

// evolvedRegistry is the next release's registry: order_placed at version
// 2, with the upcaster from version 1 (whole units, no currency).
func evolvedRegistry(t testing.TB) *eventstore.Registry {
	t.Helper()
	reg := eventstore.NewRegistry()
	eventstore.MustRegisterVersion[OrderPlacedV2](reg, "order_placed", 2)
	eventstore.MustRegister[ItemAdded](reg, "item_added")
	if err := eventstore.UpcastAs(reg, "order_placed", 1, func(old OrderPlaced) (OrderPlacedV2, error) {
		return OrderPlacedV2{OrderID: old.OrderID, Cents: int64(old.Amount) * 100, Currency: "EUR"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Validate(); err != nil {
		t.Fatal(err)
	}
	return reg
}

// TestLegacyRowsReadAsVersion1 stores events exactly as a release before
// schema versions wrote them (the tables of migrations 001 and 002, the
// old INSERT without schema_version), then migrates: migration 003 adds
// the column without rewriting the table, the old rows read as version 1
// and are upcast, and new appends record the registered version.
func TestLegacyRowsReadAsVersion1(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	ctx := testCtx(t)
	schema := pgtest.Schema(t, db)
	applyOldMigrations(t, db, schema)
	events := postgres.QuoteIdentifier(schema) + `."events"`

	// The old release's INSERT: no schema_version column exists yet.
	legacy := []struct {
		stream  string
		version int
		typ     string
		payload string
	}{
		{"order-1", 1, "order_placed", `{"order_id": "1", "amount": 12}`},
		{"order-1", 2, "item_added", `{"sku": "a", "n": 1}`},
		{"order-2", 1, "order_placed", `{"order_id": "2", "amount": 3}`},
	}
	for _, l := range legacy {
		if _, err := db.ExecContext(ctx, `INSERT INTO `+events+` (event_id, stream_id, stream_version, event_type, payload, metadata)
			VALUES ($1, $2, $3, $4, $5, '{"actor": "old"}')`, uuid.NewString(), l.stream, l.version, l.typ, l.payload); err != nil {
			t.Fatal(err)
		}
	}
	var fileBefore string
	if err := db.GetContext(ctx, &fileBefore, `SELECT pg_relation_filenode($1::regclass)::text`, events); err != nil {
		t.Fatal(err)
	}

	s, err := postgres.New(db, evolvedRegistry(t), postgres.Config{Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	res, err := s.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Applied) != 2 || res.Applied[0].Version != 3 || res.Applied[1].Version != 4 {
		t.Fatalf("Migrate applied %+v, want migrations 3 and 4", res.Applied)
	}
	var fileAfter string
	if err := db.GetContext(ctx, &fileAfter, `SELECT pg_relation_filenode($1::regclass)::text`, events); err != nil {
		t.Fatal(err)
	}
	if fileAfter != fileBefore {
		t.Errorf("migrations 003 and 004 rewrote the events table (relfilenode %s, was %s)", fileAfter, fileBefore)
	}

	var got []eventstore.Record
	for rec, err := range s.ReadStream(ctx, "order-1", 0) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rec)
	}
	if len(got) != 2 {
		t.Fatalf("ReadStream: %d records, want 2", len(got))
	}
	if want := (OrderPlacedV2{OrderID: "1", Cents: 1200, Currency: "EUR"}); got[0].Data != want || got[0].SchemaVersion != 2 || got[0].StoredSchemaVersion != 1 || got[0].Metadata.Actor != "old" {
		t.Errorf("legacy order_placed read as %+v, want %+v at version 2, stored at version 1", got[0], want)
	}
	if got[1].Data != (ItemAdded{SKU: "a", N: 1}) || got[1].SchemaVersion != 1 {
		t.Errorf("legacy item_added read as %+v", got[1])
	}

	// A new append records the registered version; the old rows keep 1.
	if _, err := s.Append(ctx, "order-3", eventstore.NoStream, []eventstore.Event{{Data: OrderPlacedV2{OrderID: "3", Cents: 5, Currency: "CHF"}}}); err != nil {
		t.Fatal(err)
	}
	var versions []struct {
		Stream  string `db:"stream_id"`
		Version int    `db:"schema_version"`
	}
	if err := db.SelectContext(ctx, &versions, `SELECT stream_id, schema_version FROM `+events+` WHERE event_type = 'order_placed' ORDER BY stream_id`); err != nil {
		t.Fatal(err)
	}
	if len(versions) != 3 || versions[0].Version != 1 || versions[1].Version != 1 || versions[2].Version != 2 {
		t.Fatalf("schema_version column: %+v, want 1, 1 (legacy) and 2 (new)", versions)
	}

	// The feed reads the same.
	recs := drainFeedOf(t, s, 4)
	cents := map[string]int64{}
	for _, r := range recs {
		if p, ok := r.Data.(OrderPlacedV2); ok {
			cents[p.OrderID] = p.Cents
		}
	}
	if cents["1"] != 1200 || cents["2"] != 300 || cents["3"] != 5 {
		t.Errorf("ReadAll: order_placed cents %v, want 1: 1200, 2: 300, 3: 5", cents)
	}
}

// applyOldMigrations creates the store's tables as a release before schema
// versions did: migrations 001 and 002 only, recorded as the store's.
func applyOldMigrations(t *testing.T, db *sqlx.DB, schema string) {
	t.Helper()
	old := fstest.MapFS{}
	for _, name := range []string{"001_events.up.sql", "002_snapshots.up.sql"} {
		b, err := fs.ReadFile(os.DirFS("migrations"), name)
		if err != nil {
			t.Fatal(err)
		}
		old[name] = &fstest.MapFile{Data: b}
	}
	q := postgres.QuoteIdentifier
	if _, err := postgres.ApplyMigrations(testCtx(t), db, postgres.MigrationParams{
		Schema: schema, Component: postgres.Component, Files: old,
		Data: map[string]string{
			"Schema": q(schema), "Events": q(schema) + `."events"`, "Snapshots": q(schema) + `."snapshots"`,
			"EventsPKey": q("events_pkey"), "EventsEventIDKey": q("events_event_id_key"),
			"EventsStreamVersionKey": q("events_stream_version_key"), "EventsStreamVersionCheck": q("events_stream_version_check"),
		},
	}); err != nil {
		t.Fatal(err)
	}
}

// drainFeedOf reads the feed from the start until it holds at least want
// records.
func drainFeedOf(t *testing.T, s *postgres.Store, want int) []eventstore.Record {
	t.Helper()
	var out []eventstore.Record
	testwait.Until(t, "the feed", func() bool {
		out = out[:0]
		var p eventstore.Position
		for {
			recs, err := s.ReadAll(testCtx(t), p, 100)
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			if len(recs) == 0 {
				return len(out) >= want
			}
			out = append(out, recs...)
			p = recs[len(recs)-1].Position
		}
	})
	return out
}

// TestTooNewRowsRefused: a row written by a newer release (schema_version
// above the registered one) is refused on every read path with a typed
// error, never decoded as a guess.
func TestTooNewRowsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, postgres.Config{})
	ctx := testCtx(t)
	id := uuid.New()
	if _, err := b.db.ExecContext(ctx, `INSERT INTO `+b.store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, schema_version, payload)
		VALUES ($1, 'order-9', 1, 'order_placed', 7, '{"order_id": "9", "amount": {"value": 1}}')`, id); err != nil {
		t.Fatal(err)
	}
	var se *eventstore.SchemaVersionError
	for _, err := range b.store.ReadStream(ctx, "order-9", 0) {
		if !errors.As(err, &se) || !se.TooNew() || se.Version != 7 || se.Latest != 1 {
			t.Fatalf("ReadStream: %v, want a too-new *SchemaVersionError", err)
		}
	}
	if se == nil {
		t.Fatal("ReadStream yielded nothing")
	}
	if _, err := b.store.LookupEvents(ctx, []uuid.UUID{id}); !errors.Is(err, eventstore.ErrUnknownSchemaVersion) {
		t.Errorf("LookupEvents: %v, want ErrUnknownSchemaVersion", err)
	}
	testwait.Until(t, "the row in the feed", func() bool {
		raws, err := b.store.ReadFeed(ctx, eventstore.Position{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(raws) == 1 && raws[0].SchemaVersion == 7
	})
	if _, err := b.store.ReadAll(ctx, eventstore.Position{}, 10); !errors.Is(err, eventstore.ErrUnknownSchemaVersion) {
		t.Errorf("ReadAll: %v, want ErrUnknownSchemaVersion", err)
	}
}

// TestAppendRecordsSchemaVersion: an append stores the registered version
// of each event's type, in the VALUES form and the array form (more than
// 64 events), and hands hooks records that carry it.
func TestAppendRecordsSchemaVersion(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	var hooked []eventstore.Record
	s := esoxtest.Store(t, db, evolvedRegistry(t), postgres.Config{Schema: schema, AppendHooks: []postgres.AppendHook{
		func(_ context.Context, _ postgres.Tx, recs []eventstore.Record) error {
			hooked = append(hooked, recs...)
			return nil
		},
	}})
	ctx := testCtx(t)
	for _, n := range []int{2, 70} {
		evs := make([]eventstore.Event, n)
		for i := range evs {
			evs[i] = eventstore.Event{Data: ItemAdded{SKU: "s", N: i}}
			if i%2 == 0 {
				evs[i] = eventstore.Event{Data: OrderPlacedV2{OrderID: "o", Cents: int64(i)}}
			}
		}
		stream := "batch-" + uuid.NewString()
		if _, err := s.Append(ctx, stream, eventstore.NoStream, evs); err != nil {
			t.Fatal(err)
		}
		var rows []struct {
			Type    string `db:"event_type"`
			Version int    `db:"schema_version"`
		}
		if err := db.SelectContext(ctx, &rows, `SELECT event_type, schema_version FROM `+s.QualifiedEventsTable()+` WHERE stream_id = $1 ORDER BY stream_version`, stream); err != nil {
			t.Fatal(err)
		}
		for i, r := range rows {
			want := 1
			if r.Type == "order_placed" {
				want = 2
			}
			if r.Version != want {
				t.Fatalf("%d events: row %d (%s) has schema_version %d, want %d", n, i, r.Type, r.Version, want)
			}
		}
	}
	for _, r := range hooked {
		if want := map[string]int{"order_placed": 2, "item_added": 1}[r.Type]; r.SchemaVersion != want || r.StoredSchemaVersion != want || r.StoredType != r.Type {
			t.Fatalf("hook record %+v: want schema version %d", r, want)
		}
	}
	if len(hooked) != 72 {
		t.Fatalf("hooks saw %d records, want 72", len(hooked))
	}
}

// TestWriteAsHookRecords: with Registry.WriteAs, an append stores the older
// version, and append hooks (inline projections) get the record as it
// reads: the current type, version and payload, the stored version beside.
func TestWriteAsHookRecords(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	reg := evolvedRegistry(t)
	if err := reg.WriteAs("order_placed", eventstore.SchemaRef{Type: "order_placed", Version: 1}, func(p json.RawMessage) (json.RawMessage, error) {
		var v OrderPlacedV2
		if err := json.Unmarshal(p, &v); err != nil {
			return nil, err
		}
		return json.Marshal(OrderPlaced{OrderID: v.OrderID, Amount: int(v.Cents / 100)})
	}); err != nil {
		t.Fatal(err)
	}
	var hooked []eventstore.Record
	s := esoxtest.Store(t, db, reg, postgres.Config{AppendHooks: []postgres.AppendHook{
		func(_ context.Context, _ postgres.Tx, recs []eventstore.Record) error {
			hooked = append(hooked, recs...)
			return nil
		},
	}})
	ctx := testCtx(t)
	v := OrderPlacedV2{OrderID: "1", Cents: 1200, Currency: "EUR"}
	if _, err := s.Append(ctx, "order-1", eventstore.NoStream, []eventstore.Event{{Data: v}}); err != nil {
		t.Fatal(err)
	}
	var stored struct {
		Version int    `db:"schema_version"`
		Payload string `db:"payload"`
	}
	if err := db.GetContext(ctx, &stored, `SELECT schema_version, payload::text AS payload FROM `+s.QualifiedEventsTable()+` WHERE stream_id = 'order-1'`); err != nil {
		t.Fatal(err)
	}
	if stored.Version != 1 || stored.Payload != `{"amount": 12, "order_id": "1"}` {
		t.Fatalf("stored %+v, want version 1's shape", stored)
	}
	if len(hooked) != 1 || hooked[0].Type != "order_placed" || hooked[0].SchemaVersion != 2 || hooked[0].StoredSchemaVersion != 1 || hooked[0].Data != v {
		t.Fatalf("hook records %+v, want the event as it reads, version 2, stored as 1", hooked)
	}
	var p OrderPlacedV2
	if err := json.Unmarshal(hooked[0].Payload, &p); err != nil || p != v {
		t.Fatalf("hook record payload %s, want version 2's", hooked[0].Payload)
	}
}
