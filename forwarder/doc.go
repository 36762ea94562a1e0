// Package forwarder relays the events table to any Watermill publisher
// (RabbitMQ, NATS JetStream, Kafka, GoChannel, …): the events table is the
// transactional outbox, so an event reaches the broker if and only if its
// append committed — one write, no dual write.
//
// The outbox is read with postgres.Store.ReadFeed, the gap-free read of the
// event store's own events table (no second table). Each message's UUID is
// the event ID, its payload the event's JSON and its metadata the flattened
// record: see the Metadata… constants, NewMessage and RecordFromMessage.
//
// # Guarantees
//
// The package keeps guarantees 6 and 7 of docs/guarantees.md:
//
//   - Forwarding: at least once, in order (6). Every committed event is
//     published at least once, in version order per stream (the events of a
//     stream are published one after the other; different streams may be
//     published concurrently, see Config.PublishConcurrency); the message
//     UUID is the event ID, so consumers de-duplicate on it. A failed
//     publish is retried with backoff, never skipped; a broker outage only
//     delays delivery. A publish that can never succeed (the event is too
//     large for the broker: Config.MaxMessageSize, Config.IsPermanent)
//     makes the event a poison event instead, stopped on or dead-lettered.
//     The offset moves past an event only after the publisher returned
//     without error for it (or for its dead letter) and for every event
//     before it; a crash or a stop publishes the unrecorded part of a batch
//     again.
//   - One active worker per job (7). Any number of instances may run the same
//     consumer group; a session advisory lock (internal/leader, key
//     LeaderKey, on the process's one lock session) makes exactly one of
//     them publish, and a standby takes over within about
//     Config.LeaderRetryInterval (1 s by default) after the leader's
//     process dies.
//
// It also never holds back the global feed for anyone else: it reads the
// feed without FOR UPDATE, in autocommit statements that take no
// transaction id, and writes its offset in one short statement after a
// batch's last publish, so no transaction (and no transaction id, which
// would hold back pg_snapshot_xmin for every reader on the server) is open
// while a publish is in flight — however slow the broker.
//
// # Usage
//
//	store, _ := postgres.New(db, registry, postgres.Config{})
//	pub, _ := rabbitmq.NewPublisher(rabbitmq.Config{URL: "amqp://…"}) // forwarder/rabbitmq
//	fwd, err := forwarder.New(store, pub, forwarder.Config{ConsumerGroup: "rabbitmq"})
//	if err != nil { … }
//	err = fwd.Run(ctx) // blocks until ctx is done
//
// Events go to the topic Config.Topic returns, by default the stream's
// category ("order" for "order-7f3c"). Config.Categories and
// Config.EventTypes filter what is forwarded. An event the topic function
// rejects, or the broker refuses permanently (too large), is a poison
// event: Run stops on it (PoisonStop, the default) or sends it (or a
// reference to it) to a dead-letter topic (PoisonDeadLetter), never drops
// it.
//
// Events are published as stored, with their schema version in
// MetadataSchemaVersion, so consumers upcast them (projector.Inbox does);
// Config.PublishUpcast publishes them as the store's registry reads them
// instead, and then treats an event it cannot read (written by a newer
// release) as a poison event rather than publish a guess
// (docs/evolution.md).
//
// # Observability
//
// Each publish is a producer span, a child of the span that appended the
// event (whose W3C trace context the event's metadata records); the
// message carries the publish span's traceparent, so consumers continue
// the trace. Stats' counters, the group's lag and whether this process
// leads are OpenTelemetry metrics (esox.forwarder.*), observed while Run
// runs from the forwarder's own reads. Only the OpenTelemetry API is
// imported: see Config.TracerProvider and docs/observability.md.
//
// See docs/forwarding.md for brokers, ordering and de-duplication on the
// consumer side, running several instances, outages, and the xid trap.
package forwarder
