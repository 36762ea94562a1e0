package forwarder

import (
	"encoding/json"
	"fmt"
	"strconv"
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
	// MetadataCorrelationID is eventstore.MetadataCorrelationID, set when
	// the event has one.
	MetadataCorrelationID = eventstore.MetadataCorrelationID
	// MetadataCausationID is eventstore.MetadataCausationID, set when the
	// event has one.
	MetadataCausationID = eventstore.MetadataCausationID
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
// metadata.
var recordKeys = []string{MetadataStreamID, MetadataStreamVersion, MetadataEventType, MetadataPosition, MetadataTransactionID, MetadataRecordedAt}

// NewMessage returns the Watermill message the forwarder publishes for rec:
// UUID = rec.ID, payload = rec.Payload, and metadata = rec.Metadata.Map()
// plus the record fields under the Metadata… keys (see the Metadata…
// constants). rec.Data is not used.
func NewMessage(rec eventstore.Record) *message.Message {
	msg := message.NewMessage(rec.ID.String(), message.Payload(rec.Payload))
	md := rec.Metadata.Map()
	md[MetadataStreamID] = rec.StreamID
	md[MetadataStreamVersion] = strconv.FormatInt(rec.StreamVersion, 10)
	md[MetadataEventType] = rec.Type
	md[MetadataPosition] = strconv.FormatInt(rec.Position.Position, 10)
	md[MetadataTransactionID] = strconv.FormatUint(rec.Position.TransactionID, 10)
	md[MetadataRecordedAt] = rec.RecordedAt.UTC().Format(time.RFC3339Nano)
	msg.Metadata = md
	return msg
}

// NewReferenceMessage returns the message the forwarder publishes to the
// dead-letter topic when that topic refuses a poison event itself (it is too
// large for it too): UUID = rec.ID, an empty payload, and as metadata only
// the record fields (MetadataStreamID, MetadataStreamVersion,
// MetadataEventType, MetadataPosition, MetadataTransactionID,
// MetadataRecordedAt) plus MetadataPoisonReference = "true",
// MetadataPoisonSize = size (the refused message's size, in decimal) and
// MetadataPoisonReason = reason. The event's own metadata is left out, as it
// counts towards the size too. A consumer reads the event from the store:
// ReadStream(ctx, stream_id, stream_version) yields it first.
// RecordFromMessage accepts the message (with an empty Payload).
func NewReferenceMessage(rec eventstore.Record, size int, reason string) *message.Message {
	msg := message.NewMessage(rec.ID.String(), nil)
	msg.Metadata = message.Metadata{
		MetadataStreamID:        rec.StreamID,
		MetadataStreamVersion:   strconv.FormatInt(rec.StreamVersion, 10),
		MetadataEventType:       rec.Type,
		MetadataPosition:        strconv.FormatInt(rec.Position.Position, 10),
		MetadataTransactionID:   strconv.FormatUint(rec.Position.TransactionID, 10),
		MetadataRecordedAt:      rec.RecordedAt.UTC().Format(time.RFC3339Nano),
		MetadataPoisonReference: "true",
		MetadataPoisonSize:      strconv.Itoa(size),
		MetadataPoisonReason:    reason,
	}
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
// a message the forwarder published. Data is nil (decode Payload with a
// Registry); Metadata holds every metadata key that is not a record field
// (MetadataPoisonReason included, if present).
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
	user := make(map[string]string, len(md))
	for k, v := range md {
		user[k] = v
	}
	for _, k := range recordKeys {
		delete(user, k)
	}
	rec.Metadata = eventstore.MetadataFromMap(user)
	rec.Payload = json.RawMessage(msg.Payload)
	return rec, nil
}
