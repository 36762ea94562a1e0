package forwarder

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// Keys of the Watermill message metadata the forwarder sets on every message.
// Watermill metadata is a flat map of strings, so the record's fields and the
// event's JSON metadata are flattened into it: these keys, plus every key of
// eventstore.Metadata.Map (correlation_id, causation_id, actor and the user's
// own keys). Where a user key has the same name as one of these, the record's
// field wins.
const (
	// MetadataStreamID is the stream ID, "<category>-<id>".
	MetadataStreamID = "stream_id"
	// MetadataStreamVersion is the event's 1-based version in its stream,
	// in decimal.
	MetadataStreamVersion = "stream_version"
	// MetadataEventType is the registered event type name.
	MetadataEventType = "event_type"
	// MetadataPosition is the event's position (the identity column) in
	// decimal.
	MetadataPosition = "position"
	// MetadataTransactionID is the xid8 of the transaction that appended
	// the event, in decimal. With MetadataPosition it is the event's place
	// in the global feed, eventstore.Position.
	MetadataTransactionID = "transaction_id"
	// MetadataRecordedAt is when the event was appended, RFC 3339 with
	// nanoseconds (time.RFC3339Nano) in UTC.
	MetadataRecordedAt = "recorded_at"
	// MetadataSchemaVersion is the schema version of the payload, in
	// decimal: the version the event was stored with (the default), or the
	// version its type is registered at (Config.PublishUpcast). Consumers
	// upcast from it (projector.Inbox does); a message without it, from a
	// release before schema versions, is version 1.
	MetadataSchemaVersion = "schema_version"
	// MetadataEventIndex is set, to 1, 2, …, on the second and later
	// messages of an event an upcaster split (Config.PublishUpcast only):
	// eventstore.Record.Index.
	MetadataEventIndex = "event_index"
	// MetadataCorrelationID is eventstore.MetadataCorrelationID, set when
	// the event has one.
	MetadataCorrelationID = eventstore.MetadataCorrelationID
	// MetadataCausationID is eventstore.MetadataCausationID, set when the
	// event has one.
	MetadataCausationID = eventstore.MetadataCausationID
	// MetadataActor, MetadataOnBehalfOf and MetadataReason are the audit
	// keys of eventstore.Metadata (who acted, for whom, why), set when the
	// event has them.
	MetadataActor      = eventstore.MetadataActor
	MetadataOnBehalfOf = eventstore.MetadataOnBehalfOf
	MetadataReason     = eventstore.MetadataReason
	// MetadataRedacted lists, comma-separated, the personal fields of the
	// event whose subject was forgotten, on a message published with
	// Config.DecryptPersonalData (their values are null): Record.Redacted.
	MetadataRedacted = "esox_redacted"
	// MetadataPoisonReason is set on messages published to a dead-letter
	// topic (PoisonDeadLetter): why the event could not be forwarded (the
	// topic function's error, or the publisher's permanent refusal).
	MetadataPoisonReason = "esox_poison_reason"
	// MetadataPoisonReference is "true" on a reference message (see
	// NewReferenceMessage): the dead-letter topic refused the event itself,
	// so the message carries no payload; read the event from the store.
	MetadataPoisonReference = "esox_poison_reference"
	// MetadataPoisonSize is set on a reference message: the size, in bytes
	// as MessageSize counts them, of the dead letter that was refused.
	MetadataPoisonSize = "esox_poison_size"
)

// recordKeys are the metadata keys that carry record fields, not user
// metadata, and that every message has.
var recordKeys = []string{MetadataStreamID, MetadataStreamVersion, MetadataEventType, MetadataPosition, MetadataTransactionID, MetadataRecordedAt}

// optionalRecordKeys carry record fields too, but messages of older
// releases (or of events that were not split) lack them.
var optionalRecordKeys = []string{MetadataSchemaVersion, MetadataEventIndex, MetadataRedacted}

// NewMessage returns the Watermill message the forwarder publishes for rec:
// UUID = rec.ID, payload = rec.Payload, and metadata = rec.Metadata.Map()
// plus the record fields under the Metadata… keys (see the Metadata…
// constants): MetadataSchemaVersion is rec.SchemaVersion (0 read as 1),
// MetadataEventIndex is set when rec.Index is above 0, MetadataRedacted
// when rec.Redacted is not empty. rec.Data is not used.
func NewMessage(rec eventstore.Record) *message.Message {
	msg := message.NewMessage(rec.ID.String(), message.Payload(rec.Payload))
	md := rec.Metadata.Map()
	setRecordKeys(md, rec)
	if rec.Index > 0 {
		md[MetadataEventIndex] = strconv.Itoa(rec.Index)
	} else {
		delete(md, MetadataEventIndex)
	}
	if len(rec.Redacted) > 0 {
		md[MetadataRedacted] = strings.Join(rec.Redacted, ",")
	} else {
		delete(md, MetadataRedacted)
	}
	msg.Metadata = md
	return msg
}

// setRecordKeys sets rec's fields in md.
func setRecordKeys(md map[string]string, rec eventstore.Record) {
	md[MetadataStreamID] = rec.StreamID
	md[MetadataStreamVersion] = strconv.FormatInt(rec.StreamVersion, 10)
	md[MetadataEventType] = rec.Type
	md[MetadataSchemaVersion] = strconv.Itoa(max(rec.SchemaVersion, 1))
	md[MetadataPosition] = strconv.FormatInt(rec.Position.Position, 10)
	md[MetadataTransactionID] = strconv.FormatUint(rec.Position.TransactionID, 10)
	md[MetadataRecordedAt] = rec.RecordedAt.UTC().Format(time.RFC3339Nano)
}

// NewReferenceMessage returns the message the forwarder publishes to the
// dead-letter topic when that topic refuses a poison event itself (it is too
// large for it too): UUID = rec.ID, an empty payload, and as metadata only
// the record fields (MetadataStreamID, MetadataStreamVersion,
// MetadataEventType, MetadataSchemaVersion, MetadataPosition,
// MetadataTransactionID, MetadataRecordedAt) plus MetadataPoisonReference = "true",
// MetadataPoisonSize = size (the refused message's size, in decimal) and
// MetadataPoisonReason = reason. The event's own metadata is left out, as it
// counts towards the size too. A consumer reads the event from the store:
// ReadStream(ctx, stream_id, stream_version) yields it first.
// RecordFromMessage accepts the message (with an empty Payload).
func NewReferenceMessage(rec eventstore.Record, size int, reason string) *message.Message {
	msg := message.NewMessage(rec.ID.String(), nil)
	msg.Metadata = message.Metadata{
		MetadataPoisonReference: "true",
		MetadataPoisonSize:      strconv.Itoa(size),
		MetadataPoisonReason:    reason,
	}
	setRecordKeys(msg.Metadata, rec)
	return msg
}

// MessageSize returns the size Config.MaxMessageSize limits: the bytes of
// msg's payload, UUID, and metadata keys and values. Brokers count
// differently (see docs/forwarding.md): RabbitMQ's max_message_size counts
// the body (the payload) only, so a message within MessageSize's count is
// within RabbitMQ's; NATS's max_payload counts the payload and the headers
// as encoded (the metadata plus a few bytes of framing per header, and the
// headers watermill-nats adds), so leave a margin of about 1 KiB there.
func MessageSize(msg *message.Message) int {
	n := len(msg.UUID) + len(msg.Payload)
	for k, v := range msg.Metadata {
		n += len(k) + len(v)
	}
	return n
}

// RecordFromMessage is the inverse of NewMessage: it rebuilds the record from
// a message the forwarder published. Data is nil and the payload is as
// published, at SchemaVersion (MetadataSchemaVersion, 1 when absent);
// StoredType and StoredSchemaVersion are the message's type and version too
// (a consumer cannot tell an upcast message from a stored one); Index is
// MetadataEventIndex, 0 when absent. To upcast and decode, use
// projector.RecordsFromMessage or build an eventstore.RawRecord for
// RawRecord.AppendDecoded. Metadata holds every metadata key that is not a
// record field (MetadataPoisonReason included, if present).
//
// It returns an error wrapping eventstore.ErrInvalidArgument when the UUID or
// a record field is missing or does not parse.
func RecordFromMessage(msg *message.Message) (eventstore.Record, error) {
	var rec eventstore.Record
	bad := func(field, reason string) (eventstore.Record, error) {
		return eventstore.Record{}, fmt.Errorf("forwarder: message %s: %w", msg.UUID, &eventstore.InvalidArgumentError{Field: "metadata " + field, Reason: reason})
	}
	var err error
	if rec.ID, err = uuid.Parse(msg.UUID); err != nil {
		return bad("uuid", "not a UUID")
	}
	md := msg.Metadata
	for _, k := range recordKeys {
		if _, ok := md[k]; !ok {
			return bad(k, "missing")
		}
	}
	rec.StreamID = md[MetadataStreamID]
	rec.Type = md[MetadataEventType]
	if rec.StreamVersion, err = strconv.ParseInt(md[MetadataStreamVersion], 10, 64); err != nil {
		return bad(MetadataStreamVersion, "not an integer")
	}
	if rec.Position.Position, err = strconv.ParseInt(md[MetadataPosition], 10, 64); err != nil {
		return bad(MetadataPosition, "not an integer")
	}
	if rec.Position.TransactionID, err = strconv.ParseUint(md[MetadataTransactionID], 10, 64); err != nil {
		return bad(MetadataTransactionID, "not an unsigned integer")
	}
	if rec.RecordedAt, err = time.Parse(time.RFC3339Nano, md[MetadataRecordedAt]); err != nil {
		return bad(MetadataRecordedAt, "not RFC 3339")
	}
	rec.SchemaVersion = 1
	if v, ok := md[MetadataSchemaVersion]; ok {
		if rec.SchemaVersion, err = strconv.Atoi(v); err != nil || rec.SchemaVersion < 1 {
			return bad(MetadataSchemaVersion, "not a positive integer")
		}
	}
	rec.StoredType, rec.StoredSchemaVersion = rec.Type, rec.SchemaVersion
	if v := md[MetadataRedacted]; v != "" {
		rec.Redacted = strings.Split(v, ",")
	}
	if v, ok := md[MetadataEventIndex]; ok {
		if rec.Index, err = strconv.Atoi(v); err != nil || rec.Index < 0 {
			return bad(MetadataEventIndex, "not a non-negative integer")
		}
	}
	user := make(map[string]string, len(md))
	for k, v := range md {
		user[k] = v
	}
	for _, k := range recordKeys {
		delete(user, k)
	}
	for _, k := range optionalRecordKeys {
		delete(user, k)
	}
	rec.Metadata = eventstore.MetadataFromMap(user)
	rec.Payload = json.RawMessage(msg.Payload)
	return rec, nil
}
