package projector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/esoxtest"
	"github.com/esox-go/esox/internal/pgtest"
	"github.com/esox-go/esox/internal/testwait"
)

// TestInboxMigrationUpgradesAnExistingSchema: a schema migrated before the
// inbox kept stream metadata (migration 001 only, with inbox rows in it)
// upgrades to 002 (and 003); its old rows still de-duplicate and Status reads
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
	if err != nil || len(res.Applied) != 3 || res.Applied[0].Version != 2 || res.Applied[1].Version != 3 || res.Applied[2].Version != 4 {
		t.Fatalf("upgrade: %+v, %v; want 002, 003 and 004 applied", res, err)
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

// TestPartitionsMigrationUpgradesAnExistingSchema: a schema migrated before
// partitions (001 and 002, with a live projection part-way through the
// feed and a dead letter) upgrades to 003: its rows become partition 0 of
// 1, the runner goes on from the stored checkpoint, and registering the
// same version with another partition count is refused with a
// *PartitionsError, writing nothing.
func TestPartitionsMigrationUpgradesAnExistingSchema(t *testing.T) {
	t.Parallel()
	db := pgtest.Open(t)
	schema := pgtest.Schema(t, db)
	ctx := context.Background()
	reg := eventstore.NewRegistry()
	eventstore.MustRegister[note](reg, "note")
	store := esoxtest.Store(t, db, reg, postgres.Config{Schema: schema})
	var stored eventstore.Position
	for i := range 3 {
		res, err := store.Append(ctx, "note-1", eventstore.Any, []eventstore.Event{{Data: note{i}}})
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			stored = res.LastPosition
		}
	}
	old := fstest.MapFS{}
	for _, name := range []string{"001_projector.up.sql", "002_inbox.up.sql"} {
		b, err := fs.ReadFile(embeddedMigrations, "migrations/"+name)
		if err != nil {
			t.Fatal(err)
		}
		old[name] = &fstest.MapFile{Data: b}
	}
	tb := tablesIn(schema)
	data := migrationData{Checkpoints: tb.checkpoints, CheckpointsActiveKey: postgres.QuoteIdentifier(CheckpointsTable + "_active_key"),
		DeadLetters: tb.deadLetters, Inbox: tb.inbox, InboxProcessedAtIndex: postgres.QuoteIdentifier(InboxTable + "_processed_at_idx"),
		InboxStreams: tb.inboxStreams}
	if _, err := postgres.ApplyMigrations(ctx, db, postgres.MigrationParams{Schema: schema, Component: Component, Files: old, Data: data}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO `+tb.checkpoints+` (projection, version, status, transaction_id, position, activated_at)
		VALUES ('notes', 1, 'active', $1::text::xid8, $2, now())`, fmt.Sprint(stored.TransactionID), stored.Position); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO `+tb.deadLetters+` (projection, version, event_id, transaction_id, position, stream_id, event_type, error)
		VALUES ('notes', 1, $1, '1', 1, 'note-1', 'note', 'boom')`, uuid.Must(uuid.NewV7())); err != nil {
		t.Fatal(err)
	}

	// Another partition count for the registered version: refused.
	var applied atomic.Int64
	p := Projection{Name: "notes", Handler: Records(func(context.Context, postgres.Tx, eventstore.Record) error {
		applied.Add(1)
		return nil
	})}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p4 := p
	p4.Partitions = 4
	r4, err := NewRunner(store, Config{Logger: quiet}, p4)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r4.Migrate(ctx)
	var pe *PartitionsError
	if !errors.Is(err, ErrPartitionsChanged) || !errors.As(err, &pe) || pe.Registered != 1 || pe.Configured != 4 {
		t.Fatalf("Migrate with 4 partitions of a version registered with 1 = %v, want a *PartitionsError", err)
	}
	var rows int
	if err := db.Get(&rows, `SELECT count(*) FROM `+tb.checkpoints); err != nil || rows != 1 {
		t.Fatalf("%d checkpoint rows after the refusal (%v), want the 1 there was", rows, err)
	}

	// The same count: the runner goes on from the stored checkpoint.
	r, err := NewRunner(store, Config{Logger: quiet, PollInterval: 5 * time.Millisecond, LeaderRetryInterval: 100 * time.Millisecond}, p)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var head eventstore.Position
	testwait.Until(t, "the three events in the feed", func() bool {
		h, err := store.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		head = h
		return head.Position >= 3
	})
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := r.WaitFor(wctx, "notes", head); err != nil {
		t.Fatal(err)
	}
	if n := applied.Load(); n != 1 {
		t.Fatalf("applied %d events after the upgrade, want 1 (the one after the stored checkpoint)", n)
	}
	st, err := r.Status(ctx)
	if err != nil || len(st) != 1 || st[0].Partition != 0 || st[0].Partitions != 1 || st[0].DeadLetters != 1 || !st[0].Live {
		t.Fatalf("Status after the upgrade = %+v, %v", st, err)
	}
}
