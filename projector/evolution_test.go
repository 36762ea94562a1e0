package projector_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
	"github.com/esox-go/esox/projector"
)

// evolvedRegistry reads the history of the tests' events as a later
// release: "deposited" was {"acct", "euros"} (version 1), then {"account",
// "euros"} (version 2), and is Deposited {"account", "amount"} in cents
// (version 3, or current when given); "deposited_many" {"account",
// "euros": [...]} is split into one Deposited per amount; "remark" was
// renamed "noted"; "audited" is dropped.
func evolvedRegistry(t testing.TB, current int) *eventstore.Registry {
	t.Helper()
	reg := eventstore.NewRegistry()
	eventstore.MustRegisterVersion[Deposited](reg, "deposited", current)
	eventstore.MustRegister[Noted](reg, "noted")
	type depositedV2 struct {
		Account string `json:"account"`
		Euros   int64  `json:"euros"`
	}
	err := errors.Join(
		reg.Upcast("deposited", 1, eventstore.RenameField("acct", "account")),
		eventstore.UpcastAs(reg, "deposited", 2, func(old depositedV2) (Deposited, error) {
			return Deposited{Account: old.Account, Amount: 100 * old.Euros}, nil
		}),
		reg.Split("deposited_many", 1, []eventstore.SchemaRef{{Type: "deposited", Version: 3}}, func(p json.RawMessage) ([]eventstore.VersionedEvent, error) {
			var m struct {
				Account string  `json:"account"`
				Euros   []int64 `json:"euros"`
			}
			if err := json.Unmarshal(p, &m); err != nil {
				return nil, err
			}
			var out []eventstore.VersionedEvent
			for _, e := range m.Euros {
				b, _ := json.Marshal(Deposited{Account: m.Account, Amount: 100 * e})
				out = append(out, eventstore.VersionedEvent{Type: "deposited", Version: 3, Payload: b})
			}
			return out, nil
		}),
		reg.Rename("remark", 1, "noted", 1),
		reg.Drop("audited", 1),
	)
	for v := 3; v < current; v++ { // later versions that changed nothing we read
		err = errors.Join(err, reg.Upcast("deposited", v, func(p json.RawMessage) (json.RawMessage, error) { return p, nil }))
	}
	if err == nil {
		err = reg.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// insertRaw stores an event as an older (or newer) release wrote it:
// schemaVersion 0 is an INSERT without the column, as before schema
// versions existed.
func (b *bundle) insertRaw(t testing.TB, stream string, version int64, typ string, schemaVersion int, payload string) {
	t.Helper()
	var err error
	if schemaVersion == 0 {
		_, err = b.db.Exec(`INSERT INTO `+b.store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, payload)
			VALUES ($1, $2, $3, $4, $5)`, uuid.NewString(), stream, version, typ, payload)
	} else {
		_, err = b.db.Exec(`INSERT INTO `+b.store.QualifiedEventsTable()+` (event_id, stream_id, stream_version, event_type, schema_version, payload)
			VALUES ($1, $2, $3, $4, $5, $6)`, uuid.NewString(), stream, version, typ, schemaVersion, payload)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// notes returns a projection counting noted events per text.
func (b *bundle) notes(name, table string) projector.Projection {
	tbl := b.q(table)
	hs := projector.On(projector.NewHandlers(b.reg), func(ctx context.Context, tx postgres.Tx, _ eventstore.Record, e Noted) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO `+tbl+` (text, n) VALUES ($1, 1) ON CONFLICT (text) DO UPDATE SET n = `+tbl+`.n + 1`, e.Text)
		return err
	})
	return projector.Projection{Name: name, Handler: hs,
		Setup: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+tbl+` (text text PRIMARY KEY, n bigint NOT NULL)`)
			return err
		},
		Reset: func(ctx context.Context, tx postgres.Tx) error {
			_, err := tx.ExecContext(ctx, `TRUNCATE `+tbl)
			return err
		},
	}
}

func (b *bundle) noteCounts(t testing.TB, table string) map[string]int64 {
	t.Helper()
	var rows []struct {
		Text string `db:"text"`
		N    int64  `db:"n"`
	}
	if err := b.db.Select(&rows, `SELECT text, n FROM `+b.q(table)); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Text] = r.N
	}
	return out
}

// TestProjectionAcrossSchemaVersions builds, then rebuilds, read models
// from events stored by three releases (raw SQL for the older ones):
// upcast, renamed, split and dropped events are applied as the current
// types, each exactly once.
func TestProjectionAcrossSchemaVersions(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	b := setupOn(t, db, pgtest.Schema(t, db), evolvedRegistry(t, 3), nil)
	b.insertRaw(t, "account-a1", 1, "deposited", 0, `{"acct": "a1", "euros": 5}`)
	b.insertRaw(t, "account-a1", 2, "audited", 0, `{"by": "bob"}`)
	b.insertRaw(t, "account-a1", 3, "deposited", 2, `{"account": "a1", "euros": 7}`)
	b.insertRaw(t, "account-a2", 1, "deposited_many", 0, `{"account": "a2", "euros": [1, 2, 3]}`)
	b.insertRaw(t, "notes-1", 1, "remark", 0, `{"text": "hello"}`)
	if _, err := b.store.Append(context.Background(), "account-a1", eventstore.Exact(3), []eventstore.Event{{Data: Deposited{Account: "a1", Amount: 50}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.Append(context.Background(), "notes-1", eventstore.Exact(1), []eventstore.Event{{Data: Noted{Text: "hello"}}}); err != nil {
		t.Fatal(err)
	}
	r, err := projector.NewRunner(b.store, fastConfig(t), b.balances("balances", "balances"), b.notes("notes", "notes"))
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	want := map[string]balance{
		"a1": {Account: "a1", Total: 500 + 700 + 50, N: 3},
		"a2": {Account: "a2", Total: 100 + 200 + 300, N: 3},
	}
	check := func(what string) {
		t.Helper()
		last := b.lastEvent(t)
		waitFor(t, r, "balances", last)
		waitFor(t, r, "notes", last)
		equalBalances(t, what, b.model(t, "balances"), want)
		if got := b.noteCounts(t, "notes"); len(got) != 1 || got["hello"] != 2 {
			t.Fatalf("%s: notes %v, want hello: 2 (one renamed, one current)", what, got)
		}
	}
	check("built")
	if err := r.Rebuild(context.Background(), "balances"); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the rebuild to finish", func() bool { return statusOf(t, r, "balances", 1).State == projector.StateRunning })
	check("rebuilt")
}

// TestProjectionStopsOnTooNewVersion runs a rolling deploy: an event
// written by a newer release (a schema version this runner's registry does
// not know) stops the projections that handle its type, with a status that
// says why, parked or not; the others go on; nothing is applied from a
// guess. Once the newer release's runner takes over, the projection goes on
// from where it stopped, applying every event exactly once.
func TestProjectionStopsOnTooNewVersion(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	b := setupOn(t, db, schema, evolvedRegistry(t, 3), nil)
	ctx := context.Background()
	if _, err := b.store.Append(ctx, "account-a1", eventstore.NoStream, []eventstore.Event{{Data: Deposited{Account: "a1", Amount: 10}}}); err != nil {
		t.Fatal(err)
	}
	// Written by release 4, where a deposit gained a field.
	b.insertRaw(t, "account-a1", 2, "deposited", 4, `{"account": "a1", "amount": 20, "channel": "web"}`)
	for i := range 3 {
		if _, err := b.store.Append(ctx, "notes-"+strconv.Itoa(i), eventstore.NoStream, []eventstore.Event{{Data: Noted{Text: "n"}}}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fastConfig(t)
	cfg.MaxRetries = 1
	strict, parking := b.balances("strict", "strict"), b.balances("parking", "parking")
	parking.DeadLetter = true
	r, err := projector.NewRunner(b.store, cfg, strict, parking, b.notes("notes", "notes"))
	if err != nil {
		t.Fatal(err)
	}
	run := start(t, r)
	last := b.lastEvent(t)
	waitFor(t, r, "notes", last)
	if got := b.noteCounts(t, "notes"); got["n"] != 3 {
		t.Fatalf("notes = %v, want n: 3 (the projection that does not handle the type goes on)", got)
	}
	for _, name := range []string{"strict", "parking"} {
		testwait.Until(t, name+" to stop", func() bool { return statusOf(t, r, name, 1).State == projector.StateStoppedWithError })
		s := statusOf(t, r, name, 1)
		if !strings.Contains(s.LastError, "unknown schema version") || !strings.Contains(s.LastError, "version 4") || s.DeadLetters != 0 {
			t.Fatalf("%s: status %+v, want stopped on the schema version, nothing parked", name, s)
		}
		// The batch holding the event rolled back: what was applied is
		// at most the event before it, nothing of it.
		if m := b.model(t, name); len(m) > 1 || m["a1"].Total > 10 {
			t.Fatalf("%s while stopped: %v, want at most the first deposit", name, m)
		}
		err := r.WaitFor(ctx, name, last)
		if !errors.Is(err, projector.ErrStopped) {
			t.Fatalf("WaitFor(%s) = %v, want ErrStopped", name, err)
		}
	}

	// The newer release takes over (the old runner stops first, as in a
	// rolling deploy) and applies the rest.
	run.stop(t)
	nb := setupOn(t, db, schema, evolvedRegistry(t, 4), nil)
	nr, err := projector.NewRunner(nb.store, cfg, nb.balances("strict", "strict"), nb.balances("parking", "parking"), nb.notes("notes", "notes"))
	if err != nil {
		t.Fatal(err)
	}
	start(t, nr)
	for _, name := range []string{"strict", "parking"} {
		// The row says stopped until the new leader's first batch
		// commits: wait for that, not with WaitFor, which reports it.
		testwait.Until(t, name+" to go on", func() bool {
			s := statusOf(t, nr, name, 1)
			return s.State == projector.StateRunning && s.Checkpoint.Compare(last) >= 0
		})
		equalBalances(t, name+" after the deploy", nb.model(t, name), map[string]balance{"a1": {Account: "a1", Total: 30, N: 2}})
	}
}

// TestInboxUpcastsMessages: an inbox consumer reads messages of older
// schema versions (the forwarder's default publishes events as stored,
// with their version in the metadata), renamed and split ones, and refuses
// a version newer than its registry knows.
func TestInboxUpcastsMessages(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	b := &bundle{db: db, schema: pgtest.Schema(t, db), reg: evolvedRegistry(t, 3)}
	in := newInbox(t, b, projector.InboxConfig{Consumer: "evolving"})
	var got []eventstore.Record
	h := projector.NewHandlers(b.reg)
	projector.On(h, func(_ context.Context, _ postgres.Tx, r eventstore.Record, e Deposited) error {
		got = append(got, r)
		return nil
	})
	projector.On(h, func(_ context.Context, _ postgres.Tx, r eventstore.Record, e Noted) error {
		got = append(got, r)
		return nil
	})
	handle, err := in.Handler(h)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(typ string, version int, payload any, v int64) *message.Message {
		m := eventMessage(t, uuid.New(), typ, payload, "account-a1", v, eventstore.Position{TransactionID: 1, Position: v})
		if version != 0 {
			m.Metadata.Set(projector.MessageSchemaVersion, strconv.Itoa(version))
		}
		return m
	}
	for _, m := range []*message.Message{
		msg("deposited", 0, map[string]any{"acct": "a1", "euros": 1}, 1), // no schema_version: version 1
		msg("deposited", 2, map[string]any{"account": "a1", "euros": 2}, 2),
		msg("deposited", 3, Deposited{Account: "a1", Amount: 300}, 3),
		msg("remark", 1, map[string]any{"text": "hi"}, 4),
		msg("audited", 1, map[string]any{}, 5),
		msg("deposited_many", 1, map[string]any{"account": "a1", "euros": []int{4, 5}}, 6),
	} {
		if err := handle(m); err != nil {
			t.Fatalf("message %s: %v", m.Metadata.Get(projector.MessageEventType), err)
		}
	}
	want := []any{Deposited{"a1", 100}, Deposited{"a1", 200}, Deposited{"a1", 300}, Noted{"hi"}, Deposited{"a1", 400}, Deposited{"a1", 500}}
	if len(got) != len(want) {
		t.Fatalf("handled %d records, want %d: %+v", len(got), len(want), got)
	}
	for i, r := range got {
		if r.Data != want[i] {
			t.Errorf("record %d: %+v, want %+v", i, r.Data, want[i])
		}
	}
	if got[3].Type != "noted" || got[3].StoredType != "remark" || got[4].Index != 0 || got[5].Index != 1 || got[4].ID == got[5].ID || got[4].StreamVersion != 6 || got[5].StreamVersion != 6 {
		t.Errorf("renamed and split records: %+v", got[3:])
	}
	if s := in.Stats(); s.Applied != 5 || s.Ignored != 1 {
		t.Errorf("stats %+v, want 5 applied (the split one once) and 1 ignored (dropped)", s)
	}

	// A newer release's event: refused (nacked), not applied, not recorded.
	n := len(got)
	err = handle(msg("deposited", 4, map[string]any{"account": "a1", "amount": 1, "channel": "web"}, 7))
	if !errors.Is(err, eventstore.ErrUnknownSchemaVersion) || len(got) != n {
		t.Fatalf("a version 4 message: %v, %d records applied; want ErrUnknownSchemaVersion and none", err, len(got)-n)
	}
	if err := handle(msg("deposited", -1, map[string]any{}, 8)); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Fatalf("a malformed schema_version: %v, want ErrInvalidArgument", err)
	}

	// RecordFromMessage wants exactly one record.
	if _, err := projector.RecordFromMessage(b.reg, msg("deposited_many", 1, map[string]any{"account": "a1", "euros": []int{1, 2}}, 9)); !errors.Is(err, eventstore.ErrInvalidArgument) {
		t.Errorf("RecordFromMessage of a split event: %v, want ErrInvalidArgument", err)
	}
	rec, err := projector.RecordFromMessage(b.reg, msg("deposited", 1, map[string]any{"acct": "a9", "euros": 9}, 10))
	if err != nil || rec.Data != (Deposited{"a9", 900}) || rec.SchemaVersion != 3 || rec.StoredSchemaVersion != 1 || rec.Metadata.Extra["tenant"] != "t1" {
		t.Errorf("RecordFromMessage of a version 1 message: %+v, %v", rec, err)
	}
}
