package forwarder

import (
	"context"
	"errors"
	"fmt"

	"github.com/esox-go/esox/eventstore"
)

// ErrMessageTooLarge is matched by a *MessageTooLargeError. A publisher (or
// a wrapper around one) may also return an error wrapping it to say that
// the broker refused a message for its size: IsMessageTooLarge, the default
// Config.IsPermanent, recognises it.
var ErrMessageTooLarge = errors.New("forwarder: message too large")

// MessageTooLargeError reports a message over Config.MaxMessageSize: the
// forwarder refuses it before publishing. It matches ErrMessageTooLarge.
type MessageTooLargeError struct {
	// Size is the message's size as MessageSize counts it.
	Size int
	// Limit is Config.MaxMessageSize.
	Limit int
}

func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("message of %d bytes is larger than MaxMessageSize %d", e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrMessageTooLarge) true.
func (e *MessageTooLargeError) Is(target error) bool { return target == ErrMessageTooLarge }

// Errors that say a broker refused a message for its size, matched by their
// text so that this package does not import broker clients. The texts are
// those of github.com/nats-io/nats.go (v1.37.0; the tests check them against
// the real values, and a change only makes the error transient again, never
// the other way round).
const (
	// natsMaxPayload is nats.ErrMaxPayload: the client refuses, before
	// sending, a message larger than the server's max_payload (learned
	// from the server's INFO, so an outage cannot produce it).
	natsMaxPayload = "nats: maximum payload exceeded"
	// natsStreamMessageTooLarge is the *nats.APIError JetStream acks a
	// publish with when the message exceeds the stream's max_msg_size
	// (error code 10054, JSStreamMessageExceedsMaximumErr).
	natsStreamMessageTooLarge = "nats: message size exceeds maximum allowed"
)

// IsMessageTooLarge reports whether err says that a message is too large for
// the broker, which no retry can fix. It is the default Config.IsPermanent,
// and recognises, anywhere in err's chain:
//
//   - ErrMessageTooLarge (a *MessageTooLargeError, or any error wrapping
//     it);
//   - NATS: nats.ErrMaxPayload (the message is larger than the server's
//     max_payload, 1 MiB by default), returned by watermill-nats, and the
//     JetStream error for a message over the stream's max_msg_size.
//
// It recognises nothing else: an outage, a timeout, a missing stream or
// queue, a nack or a closed channel stay transient and are retried. In
// particular it cannot recognise RabbitMQ's refusal of a message over
// max_message_size: RabbitMQ closes the channel (406 PRECONDITION_FAILED)
// and watermill-amqp's Publish returns only "delivery not confirmed for
// message [...]", as for a nack or a connection lost while waiting for the
// confirm. Set Config.MaxMessageSize for RabbitMQ.
//
// Safe for concurrent use.
func IsMessageTooLarge(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrMessageTooLarge) {
		return true
	}
	return inChain(err, func(e error) bool {
		s := e.Error()
		return s == natsMaxPayload || s == natsStreamMessageTooLarge
	})
}

// inChain reports whether match is true for err or any error it wraps
// (Unwrap() error and Unwrap() []error).
func inChain(err error, match func(error) bool) bool {
	for err != nil {
		if match(err) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if inChain(e, match) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// deadLetter publishes rec, a poison event, to the dead-letter topic with
// MetadataPoisonReason set to perr's reason. If the dead-letter topic
// refuses it permanently too, it publishes a reference to it instead
// (NewReferenceMessage); if that is refused as well, it returns a
// *PoisonError wrapping every refusal, which stops Run. Transient failures
// are retried (publish). It returns ctx's error if ctx ends first.
func (f *Forwarder) deadLetter(ctx context.Context, rec eventstore.Record, perr *PoisonError) error {
	topic := f.cfg.DeadLetterTopic
	attrs := []any{"event_id", perr.EventID, "stream_id", perr.StreamID, "position", perr.Position.String(), "dead_letter_topic", topic}
	msg := NewMessage(rec)
	msg.Metadata.Set(MetadataPoisonReason, perr.reason())
	err := f.publish(ctx, topic, msg, rec)
	if err == nil {
		f.log.WarnContext(ctx, "poison event published to the dead-letter topic", append(attrs, "reason", perr.reason())...)
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	size := MessageSize(msg)
	reason := fmt.Sprintf("%s; dead-letter topic %q refused the event (%d bytes): %v", perr.reason(), topic, size, err)
	ref := NewReferenceMessage(rec, size, reason)
	refErr := f.publish(ctx, topic, ref, rec)
	if refErr == nil {
		f.log.WarnContext(ctx, "poison event refused by the dead-letter topic too; published a reference to it there", append(attrs, "size", size, "reason", reason)...)
		return nil
	}
	if ctx.Err() != nil {
		return refErr
	}
	f.log.ErrorContext(ctx, "poison event: the dead-letter topic refused it and a reference to it; stopping", append(attrs, "error", refErr.Error(), "reason", reason)...)
	stop := *perr
	stop.Err = fmt.Errorf("%w; dead-letter topic %q refused the event (%d bytes): %w; and a reference to it (%d bytes): %w", perr.Err, topic, size, err, MessageSize(ref), refErr)
	return &stop
}
