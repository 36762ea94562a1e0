package projector

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// Watermill metadata keys the forwarder sets on each message and the inbox
// reads back into a Record. Any other key (correlation_id, causation_id,
// actor, user keys) becomes the Record's Metadata.
const (
	MessageEventType     = "event_type"
	MessageStreamID      = "stream_id"
	MessageStreamVersion = "stream_version"
	MessagePosition      = "position"
	MessageTransactionID = "transaction_id"
	MessageRecordedAt    = "recorded_at"
	// MessageSchemaVersion is the schema version of the message's payload:
	// the stored version (the forwarder's default) or the current one (its
	// upcast mode). A message without it is version 1.
	MessageSchemaVersion = "schema_version"
	// MessageEventIndex is set, to 1, 2, …, on the later messages of an
	// event an upcaster split, published by a forwarder in upcast mode.
	MessageEventIndex = "event_index"
	// MessageRedacted lists, comma-separated, the personal fields of the
	// event whose subject was forgotten, on a message a forwarder
	// published decrypted (forwarder.MetadataRedacted): Record.Redacted.
	MessageRedacted = "esox_redacted"
)

// InboxConfig configures an Inbox. The zero value of every field but
// Consumer means its default.
type InboxConfig struct {
	// Schema holds the inbox tables (created by Inbox.Migrate or
	// Runner.Migrate). Defaults to postgres.SchemaDefault ("esox").
	Schema string
	// Consumer names the read model the messages are applied to; each
	// consumer de-duplicates on its own. Required.
	Consumer string
	// StreamVersionGuard makes the inbox keep, per stream, the last
	// version the consumer recorded (in InboxStreamsTable) and refuse
	// deliveries out of stream order: a message whose stream_version is
	// not the last one plus one is not applied. A version at or below the
	// last is a duplicate, acknowledged without effect (this also catches
	// redeliveries after Prune removed their inbox rows). A version past
	// the next one (a gap: an earlier event has not arrived yet) is nacked
	// with an *OutOfOrderError (ErrOutOfOrder), so the broker redelivers
	// it after the missing one. A stream's first message must be version
	// 1. With the guard, messages of types the handler does not apply are
	// recorded too (they advance their stream), and every message needs
	// stream_id and stream_version metadata. Turn it on only for consumers
	// that receive every event of each stream they see from its first,
	// e.g. not behind a forwarder filtering event types. Defaults to off.
	StreamVersionGuard bool
	// PollInterval is how often WaitFor checks the inbox table for a
	// message recorded by another process (messages recorded through this
	// Inbox wake it at once). Defaults to PollIntervalDefault (10 ms).
	PollInterval time.Duration
	// Logger receives the inbox's logs, with component=projector and
	// consumer. Defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider gives the inbox's tracer: a span per message its
	// handlers take, a child of the span of the message's context or,
	// without one, of the span its metadata records (see Handler and
	// docs/observability.md). Defaults to the global provider,
	// otel.GetTracerProvider(), a no-op until the application installs one.
	TracerProvider trace.TracerProvider
	// MeterProvider gives the inbox's meter: the esox.inbox.* counters.
	// Defaults to the global provider, otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
}

// Inbox applies broker messages carrying esox events (as published by the
// forwarder) to one consumer's read model exactly once per message UUID
// (the event ID): each message is recorded in the inbox table in the same
// transaction as its effect, so a redelivered message finds its row and is
// acknowledged without being applied again. The read model thus gets each
// event's effect once from an at-least-once broker.
//
// Build one with NewInbox, create its tables with Migrate, and turn a
// projection Handler into a Watermill handler with Handler. Status, Stats,
// WaitFor and Prune report on, wait for and trim the consumer's records.
// An Inbox is safe for concurrent use.
type Inbox struct {
	db  *sqlx.DB
	reg *eventstore.Registry
	cfg InboxConfig
	log *slog.Logger
	t   tables
	tel *inboxTelemetry

	applied, duplicates, outOfOrder, ignored atomic.Int64

	recMu    sync.Mutex
	recorded chan struct{} // closed and replaced whenever this Inbox records a message
}

// NewInbox returns the Inbox of cfg.Consumer in cfg.Schema, decoding
// messages with reg. It validates its arguments and does no I/O. Errors
// match eventstore.ErrInvalidArgument and name the bad field.
func NewInbox(db *sqlx.DB, reg *eventstore.Registry, cfg InboxConfig) (*Inbox, error) {
	bad := func(field, reason string) error {
		return fmt.Errorf("projector: inbox: %w", &eventstore.InvalidArgumentError{Field: field, Reason: reason})
	}
	switch {
	case db == nil:
		return nil, bad("db", "must not be nil")
	case reg == nil:
		return nil, bad("reg", "must not be nil")
	case cfg.Consumer == "":
		return nil, bad("Consumer", "must not be empty")
	case cfg.PollInterval < 0:
		return nil, bad("PollInterval", "must not be negative")
	}
	if cfg.Schema == "" {
		cfg.Schema = postgres.SchemaDefault
	}
	if err := postgres.ValidateSchemaName(cfg.Schema); err != nil {
		return nil, fmt.Errorf("projector: inbox: invalid config: Schema: %w", err)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = PollIntervalDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Inbox{
		db:       db,
		reg:      reg,
		cfg:      cfg,
		log:      cfg.Logger.With("component", "projector", "consumer", cfg.Consumer),
		t:        tablesIn(cfg.Schema),
		tel:      newInboxTelemetry(cfg),
		recorded: make(chan struct{}),
	}, nil
}

// Migrate creates or updates the projector's tables, the inbox's among
// them, in the inbox's schema (postgres.ApplyMigrations under Component, as
// Runner.Migrate does). It is idempotent, safe to run from several
// processes at once, and only reads once everything is applied, so a role
// without DDL rights may call it after the schema's owner did. ctx bounds
// it. Errors wrap the database's.
func (in *Inbox) Migrate(ctx context.Context) (postgres.MigrateResult, error) {
	return migrate(ctx, in.db, in.cfg.Schema)
}

// Handler returns a Watermill handler that applies each message through h,
// exactly once per message UUID: in one transaction it records the message
// in the inbox table and, only if it was not recorded before (and, with
// StreamVersionGuard, is next in its stream), runs h with the records
// rebuilt by RecordsFromMessage (upcast to the registered versions: one,
// or several for an event an upcaster splits), then commits. A duplicate is
// acknowledged without effect.
//
// Messages of types h does not handle, after upcasting (renamed, dropped),
// are acknowledged untouched (with StreamVersionGuard they are recorded,
// without running h). A message that cannot be turned into records (missing
// event_type, unregistered type, bad payload, a schema version newer than
// the registry knows), that the guard refuses (*OutOfOrderError) or whose
// handler fails returns an error, which nacks it; add Watermill's Retry and
// PoisonQueue middleware to bound redeliveries. Without the guard the
// inbox keeps the broker's order as far as the broker keeps it: it
// de-duplicates, it does not reorder.
//
// Each message gets a span ("process <consumer>", see
// InboxConfig.TracerProvider) that the message's context carries while it
// is applied, so h's work joins the trace of the event. The message's
// context bounds the transaction. Handler returns an error
// matching eventstore.ErrInvalidArgument for a nil h or one whose
// registrations failed. The returned handler is safe for concurrent use if
// h is: concurrent messages (also concurrent duplicates of one, which the
// inbox serializes) call h concurrently.
func (in *Inbox) Handler(h Handler) (message.NoPublishHandlerFunc, error) {
	if h == nil {
		return nil, fmt.Errorf("projector: inbox: %w", &eventstore.InvalidArgumentError{Field: "h", Reason: "must not be nil"})
	}
	if hs, ok := h.(interface{ Err() error }); ok && hs.Err() != nil {
		return nil, fmt.Errorf("projector: inbox: handler: %w", hs.Err())
	}
	types := h.EventTypes()
	consumer := in.cfg.Consumer
	return in.traced(func(msg *message.Message) error {
		typ := msg.Metadata.Get(MessageEventType)
		if typ == "" {
			return fmt.Errorf("projector: inbox %s: message %s has no %q metadata: not an esox event", consumer, msg.UUID, MessageEventType)
		}
		// 0 (read as 1) when absent; RecordsFromMessage refuses a
		// malformed one.
		version, _ := strconv.Atoi(msg.Metadata.Get(MessageSchemaVersion))
		handled := wantsRaw(types, in.reg, eventstore.RawRecord{Type: typ, SchemaVersion: version})
		var recs []eventstore.Record
		var err error
		if handled {
			if recs, err = RecordsFromMessage(in.reg, msg); err != nil {
				return fmt.Errorf("projector: inbox %s: %w", consumer, err)
			}
			recs = slices.DeleteFunc(recs, func(r eventstore.Record) bool { return !wants(types, r.Type) })
			handled = len(recs) > 0
		}
		if !handled && !in.cfg.StreamVersionGuard {
			in.ignored.Add(1)
			in.tel.count(msg.Context(), in.tel.ignored)
			return nil
		}
		// The record's fields, not decoded: the type may not even be
		// registered here.
		rec, err := recordFields(msg)
		if err != nil {
			return fmt.Errorf("projector: inbox %s: %w", consumer, err)
		}
		if in.cfg.StreamVersionGuard && (rec.StreamID == "" || rec.StreamVersion < 1) {
			return fmt.Errorf("projector: inbox %s: message %s: %w", consumer, msg.UUID, &eventstore.InvalidArgumentError{
				Field: MessageStreamVersion, Reason: "StreamVersionGuard needs the stream_id and a positive stream_version in the message metadata"})
		}
		var apply func(postgres.Tx) error
		if handled {
			ctx := msg.Context()
			apply = func(tx postgres.Tx) error { return h.Handle(ctx, tx, recs) }
		}
		return in.record(msg.Context(), msg, rec, apply)
	}), nil
}

// record records msg and applies it (apply may be nil) in one transaction,
// unless it is a duplicate.
func (in *Inbox) record(ctx context.Context, msg *message.Message, rec eventstore.Record, apply func(postgres.Tx) error) error {
	// The UUID as the forwarder writes it (lowercase), whatever its case
	// on the wire, so that WaitFor finds it.
	consumer, id := in.cfg.Consumer, rec.ID.String()
	fail := func(what string, err error) error {
		return fmt.Errorf("projector: inbox %s: message %s: %s: %w", consumer, id, what, err)
	}
	var streamID, txid sql.NullString
	var version, pos sql.NullInt64
	if rec.StreamID != "" {
		streamID = sql.NullString{String: rec.StreamID, Valid: true}
	}
	if msg.Metadata.Get(MessageStreamVersion) != "" {
		version = sql.NullInt64{Int64: rec.StreamVersion, Valid: true}
	}
	if msg.Metadata.Get(MessagePosition) != "" && msg.Metadata.Get(MessageTransactionID) != "" {
		txid = sql.NullString{String: strconv.FormatUint(rec.Position.TransactionID, 10), Valid: true}
		pos = sql.NullInt64{Int64: rec.Position.Position, Valid: true}
	}

	tx, err := in.db.BeginTxx(ctx, nil)
	if err != nil {
		return fail("begin", err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, `INSERT INTO `+in.t.inbox+` (consumer, message_uuid, event_type, stream_id, stream_version, transaction_id, position)
		VALUES ($1, $2, $3, $4, $5, $6::text::xid8, $7) ON CONFLICT (consumer, message_uuid) DO NOTHING`,
		consumer, id, rec.Type, streamID, version, txid, pos)
	if err != nil {
		return fail("record", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fail("record", err)
	} else if n == 0 {
		in.duplicates.Add(1)
		in.tel.duplicate(ctx)
		in.log.DebugContext(ctx, "duplicate message acknowledged without applying it", "message_uuid", id)
		return nil
	}
	if in.cfg.StreamVersionGuard {
		dup, err := in.guard(ctx, tx, id, rec)
		if err != nil {
			return err
		}
		if dup {
			in.duplicates.Add(1)
			in.tel.duplicate(ctx)
			in.log.DebugContext(ctx, "message at or below its stream's last recorded version acknowledged without applying it",
				"message_uuid", id, "stream_id", rec.StreamID, "stream_version", rec.StreamVersion)
			return nil
		}
	}
	if apply != nil {
		if err := apply(postgres.NewTx(tx)); err != nil {
			return fail("apply", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fail("commit", err)
	}
	in.applied.Add(1)
	in.tel.count(ctx, in.tel.applied)
	in.notifyRecorded()
	return nil
}

// guard checks rec's stream version against the last one the consumer
// recorded for its stream, in tx, and records it when it is the next one.
// It reports a duplicate (version at or below the last), or returns an
// *OutOfOrderError for a gap. The stream's row is locked until tx ends, so
// messages of one stream pass the guard one at a time.
func (in *Inbox) guard(ctx context.Context, tx *sqlx.Tx, id string, rec eventstore.Record) (duplicate bool, err error) {
	consumer := in.cfg.Consumer
	fail := func(err error) error {
		return fmt.Errorf("projector: inbox %s: message %s: stream version guard: %w", consumer, id, err)
	}
	for attempt := 0; ; attempt++ {
		var last int64
		err := tx.QueryRowContext(ctx, `SELECT stream_version FROM `+in.t.inboxStreams+` WHERE consumer = $1 AND stream_id = $2 FOR UPDATE`,
			consumer, rec.StreamID).Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return false, fail(err)
		}
		switch {
		case rec.StreamVersion == last && rec.Index > 0:
			// A later record of a split event (a forwarder in upcast
			// mode publishes one message per record, each with its own
			// UUID, which de-duplicates it) whose first was recorded.
			return false, nil
		case rec.StreamVersion <= last:
			return true, nil
		case rec.StreamVersion > last+1 || rec.Index > 0:
			in.outOfOrder.Add(1)
			in.tel.count(ctx, in.tel.outOfOrder)
			in.log.InfoContext(ctx, "message refused: an earlier event of its stream has not been recorded yet; the broker will redeliver it",
				"message_uuid", id, "stream_id", rec.StreamID, "stream_version", rec.StreamVersion, "last_version", last)
			return false, &OutOfOrderError{Consumer: consumer, MessageUUID: id, StreamID: rec.StreamID, Version: rec.StreamVersion, LastVersion: last}
		case last > 0:
			if _, err := tx.ExecContext(ctx, `UPDATE `+in.t.inboxStreams+` SET stream_version = $3, message_uuid = $4, updated_at = now()
				WHERE consumer = $1 AND stream_id = $2`, consumer, rec.StreamID, rec.StreamVersion, id); err != nil {
				return false, fail(err)
			}
			return false, nil
		}
		// The stream's first message. A concurrent first message of the
		// same stream makes the insert wait for it, then do nothing: read
		// the row it wrote.
		res, err := tx.ExecContext(ctx, `INSERT INTO `+in.t.inboxStreams+` (consumer, stream_id, stream_version, message_uuid)
			VALUES ($1, $2, $3, $4) ON CONFLICT (consumer, stream_id) DO NOTHING`, consumer, rec.StreamID, rec.StreamVersion, id)
		if err != nil {
			return false, fail(err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return false, fail(err)
		} else if n == 1 {
			return false, nil
		}
		if attempt > 0 {
			return false, fail(errors.New("the stream's row changed twice under this message; retry it"))
		}
	}
}

// ErrOutOfOrder is matched by an *OutOfOrderError.
var ErrOutOfOrder = errors.New("projector: inbox: message out of stream order")

// OutOfOrderError reports a message that the inbox's stream version guard
// refused (InboxConfig.StreamVersionGuard): its stream version is past the
// next one the consumer expects, so an earlier event of the stream has not
// been recorded yet. Nothing was written; the message is nacked and the
// broker redelivers it. It matches ErrOutOfOrder.
type OutOfOrderError struct {
	Consumer    string
	MessageUUID string
	StreamID    string
	// Version is the message's stream version.
	Version int64
	// LastVersion is the last version of the stream the consumer
	// recorded, 0 for none.
	LastVersion int64
}

func (e *OutOfOrderError) Error() string {
	return fmt.Sprintf("projector: inbox %s: message %s is version %d of stream %q, but the last version recorded is %d: waiting for version %d",
		e.Consumer, e.MessageUUID, e.Version, e.StreamID, e.LastVersion, e.LastVersion+1)
}

// Is makes errors.Is(err, ErrOutOfOrder) true.
func (e *OutOfOrderError) Is(target error) bool { return target == ErrOutOfOrder }

func (in *Inbox) notifyRecorded() {
	in.recMu.Lock()
	close(in.recorded)
	in.recorded = make(chan struct{})
	in.recMu.Unlock()
}

func (in *Inbox) recordedCh() <-chan struct{} {
	in.recMu.Lock()
	defer in.recMu.Unlock()
	return in.recorded
}

// InboxStats counts what an Inbox's handlers did in this process since
// NewInbox.
type InboxStats struct {
	// Applied counts messages recorded and committed: their effect (when
	// the handler takes their type) is in the read model.
	Applied int64
	// Duplicates counts messages acknowledged without effect because they
	// were recorded before (by message UUID or, with the stream version
	// guard, by stream version).
	Duplicates int64
	// OutOfOrder counts messages the stream version guard refused (nacked).
	OutOfOrder int64
	// Ignored counts messages of types the handler does not take,
	// acknowledged untouched (without the stream version guard).
	Ignored int64
}

// Stats returns the counters. It does no I/O; safe for concurrent use.
func (in *Inbox) Stats() InboxStats {
	return InboxStats{Applied: in.applied.Load(), Duplicates: in.duplicates.Load(), OutOfOrder: in.outOfOrder.Load(), Ignored: in.ignored.Load()}
}

// InboxMessage describes a message an inbox recorded, from its metadata.
// Fields whose metadata was missing (or that were recorded before the
// inbox kept them) are zero.
type InboxMessage struct {
	// MessageUUID is the message's UUID: the event ID.
	MessageUUID   string
	EventType     string
	StreamID      string
	StreamVersion int64
	// Position is the event's position in the publishing store's feed.
	Position eventstore.Position
	// RecordedAt is when the inbox recorded it (its transaction's start, by
	// the database's clock).
	RecordedAt time.Time
}

// InboxStatus reports one inbox consumer, from the database (so it is
// right whichever process applies the messages), plus this process's
// Stats.
type InboxStatus struct {
	Consumer string
	// Messages counts the messages recorded in the inbox table, less those
	// Prune removed.
	Messages int64
	// Oldest is when the oldest message still in the table was recorded
	// (zero when there is none): how far back Prune has trimmed.
	Oldest time.Time
	// Last is the message recorded last (zero when there is none).
	Last InboxMessage
	// Streams counts the streams whose last version the stream version
	// guard keeps.
	Streams int64
	// Stats are this process's counters (Inbox.Stats).
	Stats InboxStats
}

// Status reports the consumer: how many messages its inbox holds, the
// oldest and the last recorded, and the streams its version guard keeps.
// Counting reads the consumer's index entries, so it costs in proportion
// to the messages held (Prune bounds them). ctx bounds the queries; errors
// wrap the database's. Safe for concurrent use.
func (in *Inbox) Status(ctx context.Context) (InboxStatus, error) {
	s := InboxStatus{Consumer: in.cfg.Consumer, Stats: in.Stats()}
	fail := func(err error) (InboxStatus, error) {
		return InboxStatus{}, fmt.Errorf("projector: inbox %s: status: %w", in.cfg.Consumer, err)
	}
	var oldest sql.NullTime
	if err := in.db.QueryRowContext(ctx, `SELECT count(*), min(processed_at) FROM `+in.t.inbox+` WHERE consumer = $1`,
		in.cfg.Consumer).Scan(&s.Messages, &oldest); err != nil {
		return fail(err)
	}
	s.Oldest = oldest.Time
	var (
		typ, stream, txid sql.NullString
		version, pos      sql.NullInt64
	)
	err := in.db.QueryRowContext(ctx, `SELECT message_uuid, event_type, stream_id, stream_version, transaction_id::text, position, processed_at
		FROM `+in.t.inbox+` WHERE consumer = $1 ORDER BY processed_at DESC LIMIT 1`, in.cfg.Consumer).
		Scan(&s.Last.MessageUUID, &typ, &stream, &version, &txid, &pos, &s.Last.RecordedAt)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fail(err)
	}
	s.Last.EventType, s.Last.StreamID, s.Last.StreamVersion, s.Last.Position.Position = typ.String, stream.String, version.Int64, pos.Int64
	if txid.Valid {
		if s.Last.Position.TransactionID, err = strconv.ParseUint(txid.String, 10, 64); err != nil {
			return fail(fmt.Errorf("parse transaction id %q: %w", txid.String, err))
		}
	}
	if err := in.db.QueryRowContext(ctx, `SELECT count(*) FROM `+in.t.inboxStreams+` WHERE consumer = $1`, in.cfg.Consumer).Scan(&s.Streams); err != nil {
		return fail(err)
	}
	return s, nil
}

// WaitFor returns nil once the message whose UUID is eventID (the event ID,
// as the forwarder publishes it) is recorded for the consumer: its effect
// is in the read model. It checks at once, as soon as this Inbox records a
// message, and every InboxConfig.PollInterval otherwise (one primary-key
// lookup), so it works whichever process applies the message. A message of
// a type the handler does not take is recorded only with
// StreamVersionGuard; without it, WaitFor for one waits until ctx ends, as
// it does for a message whose record Prune removed.
//
// It returns ctx's error (wrapped) when ctx ends first and database errors
// wrapped, e.g. when the inbox table does not exist. Safe for concurrent use.
func (in *Inbox) WaitFor(ctx context.Context, eventID uuid.UUID) error {
	t := time.NewTimer(in.cfg.PollInterval)
	defer t.Stop()
	for {
		recorded := in.recordedCh()
		var ok bool
		if err := in.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+in.t.inbox+` WHERE consumer = $1 AND message_uuid = $2)`,
			in.cfg.Consumer, eventID.String()).Scan(&ok); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("projector: inbox %s: wait for %s: %w", in.cfg.Consumer, eventID, err)
		}
		if ok {
			return nil
		}
		t.Reset(in.cfg.PollInterval)
		select {
		case <-ctx.Done():
			return fmt.Errorf("projector: inbox %s: wait for %s: %w", in.cfg.Consumer, eventID, ctx.Err())
		case <-recorded:
		case <-t.C:
		}
	}
}

// pruneBatch is how many inbox rows one DELETE of Prune removes, so that no
// single transaction grows with the backlog.
const pruneBatch = 10000

// Prune deletes the consumer's inbox records older than olderThan (by the
// database's clock) and returns how many it deleted: the inbox's
// retention, to call periodically (e.g. daily). It deletes in batches of
// 10,000 rows, each its own transaction.
//
// A pruned message is no longer known as applied: should the broker
// deliver it again, it is applied again, unless the stream version guard
// (which Prune does not touch) recognizes its version. Keep records longer
// than the broker may redeliver (its retention, the consumers' retry
// horizon).
//
// olderThan must be positive (eventstore.ErrInvalidArgument otherwise). ctx
// bounds the whole run; rows deleted by batches that committed before an
// error stay deleted and are counted. Safe for concurrent use.
func (in *Inbox) Prune(ctx context.Context, olderThan time.Duration) (int64, error) {
	if olderThan <= 0 {
		return 0, fmt.Errorf("projector: inbox %s: prune: %w", in.cfg.Consumer, &eventstore.InvalidArgumentError{Field: "olderThan", Reason: "must be positive"})
	}
	var cutoff time.Time
	if err := in.db.QueryRowContext(ctx, `SELECT now() - $1 * interval '1 microsecond'`, olderThan.Microseconds()).Scan(&cutoff); err != nil {
		return 0, fmt.Errorf("projector: inbox %s: prune: %w", in.cfg.Consumer, err)
	}
	var total int64
	for {
		res, err := in.db.ExecContext(ctx, `DELETE FROM `+in.t.inbox+` WHERE consumer = $1 AND message_uuid IN (
			SELECT message_uuid FROM `+in.t.inbox+` WHERE consumer = $1 AND processed_at < $2 LIMIT $3)`, in.cfg.Consumer, cutoff, pruneBatch)
		var n int64
		if err == nil {
			n, err = res.RowsAffected()
		}
		if err != nil {
			return total, fmt.Errorf("projector: inbox %s: prune: %w", in.cfg.Consumer, err)
		}
		total += n
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		in.log.InfoContext(ctx, "inbox pruned", "deleted", total, "older_than", olderThan.String())
	}
	return total, nil
}

// RecordFromMessage rebuilds the Record a forwarder published as msg: ID from
// the message UUID, Payload from its payload, upcast from the message's
// schema version (MessageSchemaVersion, 1 when absent) to the version reg
// registers, Data decoded with reg, the fields from the metadata keys
// Message*, and every other metadata key into Metadata. Missing optional
// keys leave their fields zero. It is for messages that read as exactly one
// record: one an upcaster drops or splits returns an
// *eventstore.InvalidArgumentError (use RecordsFromMessage). Personal
// fields published encrypted (the forwarder's default) are decrypted with
// reg's Shredder (eventstore.Registry.Decrypt, bounded by msg's context);
// without one, or once their subject is forgotten, they read as redacted
// (Record.Redacted, docs/compliance.md).
//
// Errors: an *eventstore.InvalidArgumentError for a missing event type or a
// malformed field, an *eventstore.SchemaVersionError
// (eventstore.ErrUnknownSchemaVersion) for a version newer than reg knows
// (published by a newer release: never guessed at), and the registry's
// *eventstore.UnknownEventTypeError or *eventstore.PayloadError.
func RecordFromMessage(reg *eventstore.Registry, msg *message.Message) (eventstore.Record, error) {
	recs, err := RecordsFromMessage(reg, msg)
	if err != nil {
		return eventstore.Record{}, err
	}
	if len(recs) != 1 {
		return eventstore.Record{}, fmt.Errorf("message %s: %w", msg.UUID, &eventstore.InvalidArgumentError{Field: "message",
			Reason: fmt.Sprintf("the event reads as %d records (upcasters drop or split it): use RecordsFromMessage", len(recs))})
	}
	return recs[0], nil
}

// RecordsFromMessage is RecordFromMessage for any message: it returns the
// records msg's event reads as after upcasting (eventstore.Registry.Split
// and Drop): usually one, none for a dropped event, several for a split
// one, which share the message's fields and metadata and have Index 0, 1, …
// and IDs from eventstore.SplitEventID. Errors are RecordFromMessage's.
func RecordsFromMessage(reg *eventstore.Registry, msg *message.Message) ([]eventstore.Record, error) {
	rec, err := recordFields(msg)
	if err != nil {
		return nil, err
	}
	raws := []eventstore.RawRecord{{Position: rec.Position, ID: rec.ID, StreamID: rec.StreamID, StreamVersion: rec.StreamVersion,
		Type: rec.Type, SchemaVersion: rec.SchemaVersion, Payload: rec.Payload, RecordedAt: rec.RecordedAt, Redacted: rec.Redacted}}
	// Personal fields published encrypted (the forwarder's default) are
	// decrypted with reg's Shredder, bounded by the message's context; a
	// registry without one reads them as redacted (docs/compliance.md).
	if err := reg.Decrypt(msg.Context(), raws); err != nil {
		return nil, fmt.Errorf("message %s: %w", msg.UUID, err)
	}
	recs, err := raws[0].AppendDecoded(nil, reg)
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", msg.UUID, err)
	}
	for i := range recs {
		recs[i].Metadata = rec.Metadata.Clone()
		if rec.Index > 0 {
			// Published already upcast and split (the forwarder's upcast
			// mode): keep the publisher's index.
			recs[i].Index = rec.Index
		}
	}
	return recs, nil
}

// recordFields is RecordFromMessage without upcasting or decoding the
// payload: Data is nil, Type and SchemaVersion are the message's.
func recordFields(msg *message.Message) (eventstore.Record, error) {
	md := msg.Metadata
	rec := eventstore.Record{StreamID: md.Get(MessageStreamID), Type: md.Get(MessageEventType), Payload: json.RawMessage(msg.Payload)}
	bad := func(field string, err error) (eventstore.Record, error) {
		return eventstore.Record{}, fmt.Errorf("message %s: %w", msg.UUID, &eventstore.InvalidArgumentError{Field: field, Reason: err.Error()})
	}
	if rec.Type == "" {
		return bad(MessageEventType, fmt.Errorf("missing"))
	}
	var err error
	if rec.ID, err = uuid.Parse(msg.UUID); err != nil {
		return bad("message uuid", err)
	}
	if v := md.Get(MessageStreamVersion); v != "" {
		if rec.StreamVersion, err = strconv.ParseInt(v, 10, 64); err != nil {
			return bad(MessageStreamVersion, err)
		}
	}
	if v := md.Get(MessagePosition); v != "" {
		if rec.Position.Position, err = strconv.ParseInt(v, 10, 64); err != nil {
			return bad(MessagePosition, err)
		}
	}
	if v := md.Get(MessageTransactionID); v != "" {
		if rec.Position.TransactionID, err = strconv.ParseUint(v, 10, 64); err != nil {
			return bad(MessageTransactionID, err)
		}
	}
	if v := md.Get(MessageRecordedAt); v != "" {
		if rec.RecordedAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return bad(MessageRecordedAt, err)
		}
	}
	rec.SchemaVersion = 1
	if v := md.Get(MessageSchemaVersion); v != "" {
		if rec.SchemaVersion, err = strconv.Atoi(v); err != nil || rec.SchemaVersion < 1 {
			return bad(MessageSchemaVersion, fmt.Errorf("must be a positive integer, got %q", v))
		}
	}
	rec.StoredType, rec.StoredSchemaVersion = rec.Type, rec.SchemaVersion
	if v := md.Get(MessageEventIndex); v != "" {
		if rec.Index, err = strconv.Atoi(v); err != nil || rec.Index < 0 {
			return bad(MessageEventIndex, fmt.Errorf("must be a non-negative integer, got %q", v))
		}
	}
	if v := md.Get(MessageRedacted); v != "" {
		rec.Redacted = strings.Split(v, ",")
	}
	rest := make(map[string]string, len(md))
	for k, v := range md {
		switch k {
		case MessageEventType, MessageStreamID, MessageStreamVersion, MessagePosition, MessageTransactionID, MessageRecordedAt, MessageSchemaVersion, MessageEventIndex, MessageRedacted:
		default:
			rest[k] = v
		}
	}
	rec.Metadata = eventstore.MetadataFromMap(rest)
	return rec, nil
}
