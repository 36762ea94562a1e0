package rabbitmq

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esox-go/esox/eventstore"
)

// Defaults of Config's fields.
const (
	// ExchangeTypeDefault is the default Config.ExchangeType, as in
	// watermill-amqp's NewDurablePubSubConfig.
	ExchangeTypeDefault = "fanout"
	// ChannelsDefault is the default Config.Channels. One channel carries
	// every in-flight publish of the forwarder's default concurrency with
	// room to spare (see docs/forwarding.md for the figures).
	ChannelsDefault = 1
	// DialTimeoutDefault is the default Config.DialTimeout.
	DialTimeoutDefault = 10 * time.Second
	// ReconnectIntervalDefault is the default Config.ReconnectInterval.
	ReconnectIntervalDefault = 100 * time.Millisecond
	// ReconnectMaxIntervalDefault is the default Config.ReconnectMaxInterval.
	ReconnectMaxIntervalDefault = 5 * time.Second
	// CloseTimeoutDefault is the default Config.CloseTimeout.
	CloseTimeoutDefault = 30 * time.Second
	// ConnectionNameDefault is the default Config.ConnectionName.
	ConnectionNameDefault = "esox publisher"
	// MaxChannels is the largest Config.Channels accepted.
	MaxChannels = 64
)

// UUIDHeader is the AMQP header that carries the Watermill message UUID:
// watermill-amqp's DefaultMessageUUIDHeaderKey, so that watermill-amqp's
// subscriber with its DefaultMarshaler reads the UUID back. The UUID is also
// the AMQP message-id property.
const UUIDHeader = "_watermill_message_uuid"

// Config configures a Publisher. URL is required; the zero value of every
// other field means its default.
type Config struct {
	// URL is the AMQP URI, amqp://user:password@host:port/vhost (or
	// amqps://). Required. It never appears in errors or logs.
	URL string
	// AMQP is passed to amqp091-go's DialConfig for TLS, SASL, heartbeat,
	// frame size and client properties. Its zero value means amqp091-go's
	// defaults (a 10 s heartbeat: amqp091-go gives up on a connection
	// that stays silent for 15 s). When AMQP.Dial is nil the
	// publisher dials with DialTimeout and aborts the dial when the
	// publishing context ends or the publisher is closed.
	AMQP amqp.Config
	// ConnectionName is the connection_name client property RabbitMQ shows
	// in its management UI and in rabbitmqctl list_connections, unless
	// AMQP.Properties sets one. Defaults to ConnectionNameDefault.
	ConnectionName string
	// Exchange returns the exchange a topic's messages are published to.
	// Defaults to the topic itself, as watermill-amqp's
	// GenerateExchangeNameTopicName. An empty name means RabbitMQ's default
	// exchange, which routes to the queue named by the routing key: set
	// RoutingKey to return the topic then (the layout of watermill-amqp's
	// NewDurableQueueConfig).
	Exchange func(topic string) string
	// RoutingKey returns the routing key of a topic's messages. Defaults to
	// "" (a fanout exchange ignores it).
	RoutingKey func(topic string) string
	// ExchangeType is the type of the exchanges the publisher declares:
	// "fanout", "direct", "topic", "headers" or a plugin's type. Defaults to
	// ExchangeTypeDefault.
	ExchangeType string
	// DisableExchangeDeclare stops the publisher from declaring exchanges;
	// they must exist then (a publish to a missing exchange fails with a
	// 404 channel error, which is retried). By default each exchange is
	// declared durable, not auto-deleted, once per connection, before its
	// first publish: like watermill-amqp's durable configs, so the two
	// agree on the exchange's properties.
	DisableExchangeDeclare bool
	// Mandatory publishes with the mandatory flag: a message no queue is
	// bound for is returned by RabbitMQ, and Publish fails with an error
	// matching ErrUnroutable, so a forwarder retries it until a queue is
	// bound instead of moving on. Without it (the default, as in
	// watermill-amqp) RabbitMQ acknowledges and drops an unroutable message
	// and Publish returns nil.
	Mandatory bool
	// Channels is the number of AMQP channels in confirm mode the
	// publisher spreads Publish calls over, round robin, on one
	// connection; each channel carries any number of publishes awaiting
	// their confirms at once. Between 1 and MaxChannels. Defaults to
	// ChannelsDefault.
	Channels int
	// DialTimeout bounds the TCP connect and the AMQP handshake of a
	// connection attempt when AMQP.Dial is nil. Defaults to
	// DialTimeoutDefault.
	DialTimeout time.Duration
	// ReconnectInterval is the wait before a connection attempt that
	// follows a failed one; it doubles on each consecutive failure up to
	// ReconnectMaxInterval. The first attempt after a connection is lost
	// is made at once. Defaults to ReconnectIntervalDefault.
	ReconnectInterval time.Duration
	// ReconnectMaxInterval caps the wait between connection attempts.
	// Defaults to ReconnectMaxIntervalDefault.
	ReconnectMaxInterval time.Duration
	// CloseTimeout is how long Close waits for publishes in flight to be
	// confirmed before it closes the connection, which fails the rest.
	// Defaults to CloseTimeoutDefault.
	CloseTimeout time.Duration
	// Logger receives the publisher's logs (connections made and lost),
	// with component=rabbitmq. Defaults to slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ConnectionName == "" {
		c.ConnectionName = ConnectionNameDefault
	}
	if c.Exchange == nil {
		c.Exchange = func(topic string) string { return topic }
	}
	if c.RoutingKey == nil {
		c.RoutingKey = func(string) string { return "" }
	}
	if c.ExchangeType == "" {
		c.ExchangeType = ExchangeTypeDefault
	}
	if c.Channels == 0 {
		c.Channels = ChannelsDefault
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DialTimeoutDefault
	}
	if c.ReconnectInterval == 0 {
		c.ReconnectInterval = ReconnectIntervalDefault
	}
	if c.ReconnectMaxInterval == 0 {
		c.ReconnectMaxInterval = ReconnectMaxIntervalDefault
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = CloseTimeoutDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	invalid := func(field, reason string) error {
		return fmt.Errorf("rabbitmq: invalid config: %w", &eventstore.InvalidArgumentError{Field: field, Reason: reason})
	}
	if c.URL == "" {
		return invalid("URL", "required (amqp://user:password@host:port/vhost)")
	}
	if _, err := amqp.ParseURI(c.URL); err != nil {
		reason := "not an AMQP URI (amqp://user:password@host:port/vhost)"
		var uerr *url.Error
		if !errors.As(err, &uerr) { // a *url.Error quotes the URL, password included
			reason += ": " + err.Error()
		}
		return invalid("URL", reason)
	}
	switch {
	case c.Channels < 1 || c.Channels > MaxChannels:
		return invalid("Channels", fmt.Sprintf("must be between 1 and %d, got %d", MaxChannels, c.Channels))
	case c.DialTimeout < 0:
		return invalid("DialTimeout", "must not be negative")
	case c.ReconnectInterval < 0:
		return invalid("ReconnectInterval", "must not be negative")
	case c.ReconnectMaxInterval < c.ReconnectInterval:
		return invalid("ReconnectMaxInterval", "must not be less than ReconnectInterval")
	case c.CloseTimeout < 0:
		return invalid("CloseTimeout", "must not be negative")
	case len(c.ExchangeType) > maxShortString:
		return invalid("ExchangeType", fmt.Sprintf("longer than %d bytes", maxShortString))
	case len(c.ConnectionName) > maxShortString:
		return invalid("ConnectionName", fmt.Sprintf("longer than %d bytes", maxShortString))
	}
	return nil
}

// maxShortString is the longest AMQP short string (exchange names, routing
// keys, header names, message-id): amqp091-go truncates longer ones
// silently and corrupts the frame, so the publisher refuses them.
const maxShortString = 255
