// Package rabbitmq is a Watermill publisher for RabbitMQ with pipelined
// publisher confirms, built for forwarder.Forwarder: Publish returns nil
// only once RabbitMQ has confirmed the message, as at-least-once forwarding
// needs, while many Publish calls wait for their confirms at once on one
// channel. It implements message.Publisher over
// github.com/rabbitmq/amqp091-go.
//
// watermill-amqp's publisher with ConfirmDelivery holds a channel from
// publish to confirm, so a channel carries one message at a time; this one
// sends each message and waits for its own confirm while the channel
// carries the next (see docs/forwarding.md for throughput figures). It
// also reconnects without the data race watermill-amqp v3.0.2 has when
// RabbitMQ drops a live connection.
//
// # Guarantees
//
// It keeps its part of guarantee 6 of docs/guarantees.md (forwarding: at
// least once, in order):
//
//   - At least once. Publish returns nil only after RabbitMQ acked every
//     message of the call (for a persistent message routed to a durable
//     queue, after writing it to disk). A nack, a return (with
//     Config.Mandatory), or a channel or connection that closes before the
//     confirm fails the call; the forwarder then publishes the event again,
//     so a lost connection may duplicate a message but never lose one.
//   - In order per stream. Publish returns only after the confirm, and the
//     forwarder publishes a stream's next event only after the previous
//     Publish returned nil; so a stream's messages reach RabbitMQ, and a
//     queue, in version order, whatever other streams publish meanwhile.
//     The messages of one Publish call go out on one channel, in order.
//   - Reconnection. When the connection or a channel dies (a broker
//     restart, a network failure noticed by the heartbeat), the publishes
//     awaiting a confirm fail with ErrConnectionLost and the next Publish
//     reconnects (see Publisher.Publish for the backoff). The publisher's
//     state is guarded by its mutexes and channels only: it runs clean
//     under the race detector through a broker restart (TestBrokerRestart).
//
// Unroutable messages: RabbitMQ acks a message that no queue is bound for
// (for example a fanout exchange whose consumers have not declared their
// queues yet) and drops it, so by default Publish returns nil for it, as
// watermill-amqp's publisher does. Declare the queues before events flow, or
// set Config.Mandatory: RabbitMQ then returns the message, Publish fails
// with ErrUnroutable, and the forwarder retries it until a queue is bound
// (which stalls that stream's shard meanwhile; a topic nobody consumes
// stalls it for good, so route only topics with a queue).
//
// # Wire format
//
// Messages are published as watermill-amqp's DefaultMarshaler publishes
// them, so its Subscriber reads them back unchanged: body = payload,
// headers = metadata (strings), header UUIDHeader = the UUID, delivery mode
// persistent; the UUID is also the message-id property. Exchanges are
// declared durable, of Config.ExchangeType (fanout by default), named after
// the topic by default: the layout of watermill-amqp's
// NewDurablePubSubConfig, whose subscriber binds a queue per consumer to
// the topic's exchange.
//
// See docs/forwarding.md for configuration, throughput and limits.
package rabbitmq
