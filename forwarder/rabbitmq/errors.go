package rabbitmq

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by Publish once Close has been called, and
	// matched by the error of a publish that Close failed because it was
	// still unconfirmed after Config.CloseTimeout.
	ErrClosed = errors.New("rabbitmq: publisher closed")
	// ErrNacked is matched when RabbitMQ answered a publish with a
	// basic.nack: it did not take responsibility for the message (an
	// internal error, or a queue with overflow reject-publish that is
	// full). Publish it again.
	ErrNacked = errors.New("rabbitmq: message nacked by the broker")
	// ErrUnroutable is matched, with Config.Mandatory, when RabbitMQ
	// returned a message because no queue is bound for its exchange and
	// routing key. The error is a *ReturnedError.
	ErrUnroutable = errors.New("rabbitmq: message unroutable")
	// ErrConnectionLost is matched when the channel or connection closed
	// before RabbitMQ confirmed the message: RabbitMQ may or may not have
	// it, so publish it again (a duplicate is possible, a loss is not).
	// The error also wraps the *amqp091.Error RabbitMQ closed with, when
	// there was one.
	ErrConnectionLost = errors.New("rabbitmq: connection lost before the confirm")
)

// PublishError reports a failed publish: the message's UUID, where it was
// going, and why. It unwraps to the cause, which matches one of ErrClosed,
// ErrNacked, ErrUnroutable, ErrConnectionLost, eventstore.ErrInvalidArgument
// (a message the publisher cannot encode), a context error, or is a
// connection or declaration error from amqp091-go.
type PublishError struct {
	// MessageUUID is the Watermill UUID of the message that failed; empty
	// when the publish failed before any message was sent.
	MessageUUID string
	Topic       string
	Exchange    string
	RoutingKey  string
	Err         error
}

func (e *PublishError) Error() string {
	if e.MessageUUID == "" {
		return fmt.Sprintf("rabbitmq: publish to topic %q (exchange %q): %v", e.Topic, e.Exchange, e.Err)
	}
	return fmt.Sprintf("rabbitmq: publish %s to topic %q (exchange %q): %v", e.MessageUUID, e.Topic, e.Exchange, e.Err)
}

// Unwrap returns the cause.
func (e *PublishError) Unwrap() error { return e.Err }

// ReturnedError is RabbitMQ's basic.return of a mandatory message no queue
// was bound for (ReplyCode 312, NO_ROUTE). It matches ErrUnroutable.
type ReturnedError struct {
	ReplyCode  uint16
	ReplyText  string
	Exchange   string
	RoutingKey string
}

func (e *ReturnedError) Error() string {
	return fmt.Sprintf("rabbitmq: message returned by the broker: %d %s (exchange %q, routing key %q)", e.ReplyCode, e.ReplyText, e.Exchange, e.RoutingKey)
}

// Is makes errors.Is(err, ErrUnroutable) true.
func (e *ReturnedError) Is(target error) bool { return target == ErrUnroutable }
