package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

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
)

// InboxConfig configures NewInboxHandler.
type InboxConfig struct {
	// Schema holds the inbox table (create it with Migrate). Defaults to
	// postgres.SchemaDefault ("esox").
	Schema string
	// Consumer names the read model the messages are applied to; each
	// consumer de-duplicates on its own. Required.
	Consumer string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// NewInboxHandler returns a Watermill handler that applies broker messages
// carrying esox events (as published by the forwarder) to a read model
// through h, exactly once per message UUID (the event ID): in one
// transaction it inserts (Consumer, message UUID) into the inbox table and,
// only if that row is new, runs h; a redelivered message finds its row and
// is acknowledged without being applied again. The read model thus gets each
// event's effect once from an at-least-once broker.
//
// Messages of types h does not handle are acknowledged untouched. A message
// that cannot be turned into a record (missing event_type, unregistered type,
// bad payload) or whose handler fails returns an error, which nacks it; add
// Watermill's Retry and PoisonQueue middleware to bound redeliveries. The
// broker's order is kept only as far as the broker keeps it: the inbox
// de-duplicates, it does not reorder.
//
// The message's context bounds the transaction. It returns an error
// matching eventstore.ErrInvalidArgument for bad arguments. The returned
// handler is safe for concurrent use if h is: concurrent messages (also
// concurrent duplicates of one, which the inbox serializes) call h
// concurrently.
func NewInboxHandler(db *sqlx.DB, reg *eventstore.Registry, h Handler, cfg InboxConfig) (message.NoPublishHandlerFunc, error) {
	bad := func(field, reason string) error {
		return fmt.Errorf("projector: inbox: %w", &eventstore.InvalidArgumentError{Field: field, Reason: reason})
	}
	switch {
	case db == nil:
		return nil, bad("db", "must not be nil")
	case reg == nil:
		return nil, bad("reg", "must not be nil")
	case h == nil:
		return nil, bad("h", "must not be nil")
	case cfg.Consumer == "":
		return nil, bad("Consumer", "must not be empty")
	}
	if hs, ok := h.(interface{ Err() error }); ok && hs.Err() != nil {
		return nil, fmt.Errorf("projector: inbox: handler: %w", hs.Err())
	}
	if cfg.Schema == "" {
		cfg.Schema = postgres.SchemaDefault
	}
	if err := postgres.ValidateSchemaName(cfg.Schema); err != nil {
		return nil, fmt.Errorf("projector: inbox: invalid config: Schema: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "projector", "consumer", cfg.Consumer)
	insert := `INSERT INTO ` + tablesIn(cfg.Schema).inbox + ` (consumer, message_uuid) VALUES ($1, $2) ON CONFLICT DO NOTHING`
	types := h.EventTypes()
	return func(msg *message.Message) error {
		typ := msg.Metadata.Get(MessageEventType)
		if typ == "" {
			return fmt.Errorf("projector: inbox %s: message %s has no %q metadata: not an esox event", cfg.Consumer, msg.UUID, MessageEventType)
		}
		if !wants(types, typ) {
			return nil
		}
		rec, err := RecordFromMessage(reg, msg)
		if err != nil {
			return fmt.Errorf("projector: inbox %s: %w", cfg.Consumer, err)
		}
		ctx := msg.Context()
		return applyOnce(ctx, db, insert, cfg.Consumer, msg.UUID, func(tx postgres.Tx) error {
			return h.Handle(ctx, tx, []eventstore.Record{rec})
		}, log)
	}, nil
}

func applyOnce(ctx context.Context, db *sqlx.DB, insert, consumer, id string, apply func(postgres.Tx) error, log *slog.Logger) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("projector: inbox %s: begin: %w", consumer, err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, insert, consumer, id)
	if err != nil {
		return fmt.Errorf("projector: inbox %s: record message %s: %w", consumer, id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("projector: inbox %s: %w", consumer, err)
	} else if n == 0 {
		log.DebugContext(ctx, "duplicate message acknowledged without applying it", "message_uuid", id)
		return nil
	}
	if err := apply(postgres.NewTx(tx)); err != nil {
		return fmt.Errorf("projector: inbox %s: message %s: %w", consumer, id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("projector: inbox %s: commit: %w", consumer, err)
	}
	return nil
}

// RecordFromMessage rebuilds the Record a forwarder published as msg: ID from
// the message UUID, Payload from its payload, Data decoded with reg, the
// fields from the metadata keys Message*, and every other metadata key into
// Metadata. Missing optional keys leave their fields zero. Errors: an
// *eventstore.InvalidArgumentError for a missing event type or a malformed
// field, and the registry's *eventstore.UnknownEventTypeError or
// *eventstore.PayloadError.
func RecordFromMessage(reg *eventstore.Registry, msg *message.Message) (eventstore.Record, error) {
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
	rest := make(map[string]string, len(md))
	for k, v := range md {
		switch k {
		case MessageEventType, MessageStreamID, MessageStreamVersion, MessagePosition, MessageTransactionID, MessageRecordedAt:
		default:
			rest[k] = v
		}
	}
	rec.Metadata = eventstore.MetadataFromMap(rest)
	if rec.Data, err = reg.Decode(rec.Type, msg.Payload); err != nil {
		return eventstore.Record{}, fmt.Errorf("message %s: %w", msg.UUID, err)
	}
	return rec, nil
}
