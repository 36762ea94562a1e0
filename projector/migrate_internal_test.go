package projector

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"testing"
	"testing/fstest"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/pgtest"
)

// TestInboxMigrationUpgradesAnExistingSchema: a schema migrated before the
// inbox kept stream metadata (migration 001 only, with inbox rows in it)
// upgrades to 002 alone; its old rows still de-duplicate and Status reads
// them.
func TestInboxMigrationUpgradesAnExistingSchema(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx := context.Background()
	first, err := fs.ReadFile(embeddedMigrations, "migrations/001_projector.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	tb := tablesIn(schema)
	data := migrationData{Checkpoints: tb.checkpoints, CheckpointsActiveKey: postgres.QuoteIdentifier(CheckpointsTable + "_active_key"),
		DeadLetters: tb.deadLetters, Inbox: tb.inbox}
	if _, err := postgres.ApplyMigrations(ctx, db, postgres.MigrationParams{Schema: schema, Component: Component,
		Files: fstest.MapFS{"001_projector.up.sql": {Data: first}}, Data: data}); err != nil {
		t.Fatal(err)
	}
	old := uuid.Must(uuid.NewV7())
	if _, err := db.Exec(`INSERT INTO `+tb.inbox+` (consumer, message_uuid) VALUES ('c', $1)`, old.String()); err != nil {
		t.Fatal(err)
	}

	reg := eventstore.NewRegistry()
	eventstore.MustRegister[note](reg, "note")
	in, err := NewInbox(db, reg, InboxConfig{Schema: schema, Consumer: "c", StreamVersionGuard: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	res, err := in.Migrate(ctx)
	if err != nil || len(res.Applied) != 1 || res.Applied[0].Version != 2 {
		t.Fatalf("upgrade: %+v, %v; want 002 applied alone", res, err)
	}
	var applied int
	h, err := in.Handler(Records(func(context.Context, postgres.Tx, eventstore.Record) error { applied++; return nil }))
	if err != nil {
		t.Fatal(err)
	}
	msg := func(id uuid.UUID) *message.Message {
		m := message.NewMessage(id.String(), []byte(`{"n":1}`))
		m.Metadata.Set(MessageEventType, "note")
		m.Metadata.Set(MessageStreamID, "note-1")
		m.Metadata.Set(MessageStreamVersion, "1")
		return m
	}
	if err := h(msg(old)); err != nil || applied != 0 {
		t.Fatalf("redelivery of a message recorded before the upgrade: applied %d times, %v", applied, err)
	}
	if err := h(msg(uuid.Must(uuid.NewV7()))); err != nil || applied != 1 {
		t.Fatalf("new message after the upgrade: applied %d times, %v", applied, err)
	}
	s, err := in.Status(ctx)
	if err != nil || s.Messages != 2 || s.Streams != 1 || s.Last.StreamID != "note-1" {
		t.Fatalf("Status after the upgrade = %+v, %v", s, err)
	}
}
