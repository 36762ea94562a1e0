package forwarder

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
	"github.com/esox-go/esox/internal/leader"
)

// Defaults of Config's fields.
const (
	// ConsumerGroupDefault is the default Config.ConsumerGroup.
	ConsumerGroupDefault = "default"
	// BatchSizeDefault is the default Config.BatchSize.
	BatchSizeDefault = 100
	// PollIntervalDefault is the default Config.PollInterval.
	PollIntervalDefault = 10 * time.Millisecond
	// PublishConcurrencyDefault is the default Config.PublishConcurrency.
	PublishConcurrencyDefault = 64
	// RetryIntervalDefault is the default Config.RetryInterval.
	RetryIntervalDefault = 100 * time.Millisecond
	// RetryMaxIntervalDefault is the default Config.RetryMaxInterval.
	RetryMaxIntervalDefault = 10 * time.Second
	// LeaderRetryIntervalDefault is the default Config.LeaderRetryInterval.
	LeaderRetryIntervalDefault = time.Second
	// OffsetsTable is the name of the forwarder's offsets table, created by
	// Migrate in the store's schema.
	OffsetsTable = "forwarder_offsets"
	// Component is the component under which Migrate records the
	// forwarder's migrations in the schema's esox_migrations table.
	Component = "forwarder"
)

// ErrPoison is matched by the errors Run stops with when an event cannot be
// forwarded: a *PoisonError (under PoisonStop, or when not even a reference
// to the event can be dead-lettered) or a *MalformedRowError.
var ErrPoison = errors.New("forwarder: poison event")

// PoisonPolicy says what the forwarder does with a poison event: one that
// Config.Topic rejects (returns an error for), or that the publisher refuses
// permanently (Config.MaxMessageSize, Config.IsPermanent). An event is never
// dropped silently.
type PoisonPolicy int

const (
	// PoisonStop (the default) stops Run with a *PoisonError matching
	// ErrPoison, without advancing the offset past the event: the offset
	// stays right before it. Fix the topic function, the broker's limit or
	// the event, and restart; nothing is lost.
	PoisonStop PoisonPolicy = iota
	// PoisonDeadLetter publishes the event to Config.DeadLetterTopic, with
	// MetadataPoisonReason saying why, logs it at Warn level, and goes on.
	// If the dead-letter topic refuses the event permanently too (it is too
	// large for it as well), a reference message is published there instead
	// (see NewReferenceMessage); if even that is refused, Run stops with a
	// *PoisonError. The stream's later events are published only after the
	// dead letter, so a consumer that sees the stream's version gap can find
	// the missing version on the dead-letter topic.
	PoisonDeadLetter
)

// String returns "stop" or "dead_letter".
func (p PoisonPolicy) String() string {
	switch p {
	case PoisonStop:
		return "stop"
	case PoisonDeadLetter:
		return "dead_letter"
	default:
		return fmt.Sprintf("PoisonPolicy(%d)", int(p))
	}
}

// PoisonError reports a poison event Run stopped on: one the topic function
// rejected, or one the publisher refused permanently (under PoisonStop, or
// under PoisonDeadLetter when the dead-letter topic refused the event and a
// reference to it too). It matches ErrPoison and unwraps to Err.
type PoisonError struct {
	Position eventstore.Position
	EventID  string
	StreamID string
	Type     string
	// Topic is the topic the publisher refused the message for; empty when
	// the topic function rejected the event.
	Topic string
	// Size is the message's size as MessageSize counts it, when the
	// publisher refused it; 0 when the topic function rejected the event.
	Size int
	// Err is why: the topic function's error, a *MessageTooLargeError
	// (Config.MaxMessageSize), or the publisher's error that
	// Config.IsPermanent classified as permanent; when the dead-letter topic
	// refused it too, an error wrapping those refusals as well.
	Err error
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("forwarder: poison event %s (stream %q, type %q, position %s): %s", e.EventID, e.StreamID, e.Type, e.Position, e.reason())
}

// reason is the error without the event: the MetadataPoisonReason of its
// dead letter.
func (e *PoisonError) reason() string {
	if e.Topic == "" {
		return "topic: " + e.Err.Error()
	}
	return fmt.Sprintf("publish to topic %q refused (%d bytes): %v", e.Topic, e.Size, e.Err)
}

// Is makes errors.Is(err, ErrPoison) true.
func (e *PoisonError) Is(target error) bool { return target == ErrPoison }

// Unwrap returns Err.
func (e *PoisonError) Unwrap() error { return e.Err }

func newPoisonError(rec eventstore.Record, topic string, size int, err error) *PoisonError {
	return &PoisonError{Position: rec.Position, EventID: rec.ID.String(), StreamID: rec.StreamID, Type: rec.Type, Topic: topic, Size: size, Err: err}
}

// TopicFunc returns the topic an event is published to. rec.Data is nil: the
// forwarder does not decode payloads (rec.Payload holds the JSON). An error
// makes the event a poison event, handled by Config.OnPoison.
type TopicFunc func(rec eventstore.Record) (string, error)

// TopicByCategory is the default TopicFunc: the stream's category,
// eventstore.Category(rec.StreamID), e.g. "order" for "order-7f3c".
func TopicByCategory(rec eventstore.Record) (string, error) {
	return eventstore.Category(rec.StreamID), nil
}

// Config configures a Forwarder. The zero value means all defaults.
type Config struct {
	// ConsumerGroup names this forwarder's position in the feed. Several
	// forwarders with different groups (e.g. one per broker) share one
	// events table, each with its own offset row; forwarders with the same
	// group elect one active instance. Defaults to ConsumerGroupDefault.
	ConsumerGroup string
	// Topic returns the topic of each event. Defaults to TopicByCategory.
	Topic TopicFunc
	// Categories, when not empty, forwards only events whose stream
	// category (eventstore.Category) is listed. Other events are skipped,
	// but the offset still moves past them.
	Categories []string
	// EventTypes, when not empty, forwards only events of the listed types
	// (as stored, or after upcasting with PublishUpcast). Other events are
	// skipped, but the offset still moves past them.
	EventTypes []string
	// PublishUpcast publishes each event upcast to the version its type is
	// registered at in the store's registry (docs/evolution.md) instead of
	// as stored: the payload, MetadataEventType (the new name after a
	// rename) and MetadataSchemaVersion are the current ones; an event an
	// upcaster splits is published as one message per record, one after the
	// other (the first with the event ID as UUID, the others with
	// eventstore.SplitEventID's and MetadataEventIndex 1, 2, …); an event
	// an upcaster drops is not published (the offset moves past it; it
	// counts in Stats.Filtered). An event the registry cannot read (a
	// schema version newer than it knows, written by a newer release, or a
	// failing upcaster) is a poison event handled by OnPoison: Run stops
	// before it, or it is dead-lettered as stored; it is never published as
	// a guess. Topic and EventTypes see the upcast records.
	//
	// Defaults to false: every event is published exactly as stored, with
	// its stored schema version in MetadataSchemaVersion, and consumers
	// upcast with their own registry (projector.Inbox does). That default
	// never depends on this process's registry, so forwarding goes on
	// during a rolling deploy whatever version a newer release writes.
	PublishUpcast bool
	// DecryptPersonalData publishes events with their personal fields
	// decrypted by the store's registry (eventstore.Registry.Decrypt, its
	// Shredder): plaintext on the broker, and null (listed in
	// MetadataRedacted) for a subject that was forgotten. The brokers,
	// their retention and every consumer then hold personal data that
	// Forget can no longer reach: choose it only when they are covered by
	// the erasure process (see docs/compliance.md). An event that does not
	// decrypt (a key the key store never held, a ciphertext changed) is a
	// poison event that stops the forwarder. New refuses it without a
	// Shredder on the registry.
	//
	// Defaults to false: events are published as stored, personal fields
	// encrypted; consumers that hold the keys decrypt them (projector.Inbox
	// does, with its registry's Shredder), the others read them as
	// redacted.
	DecryptPersonalData bool
	// BatchSize is the number of events read per query; the offset is
	// written once per batch, after all its events are published. One batch
	// is read ahead while the previous one is published, so a crash
	// re-publishes at most two batches. Defaults to BatchSizeDefault.
	BatchSize int
	// PollInterval is how often, while the forwarder has caught up, the
	// store's feed watcher (postgres.Store.Watch) polls the feed's head
	// for events committed by other processes; appends made through the
	// same postgres.Store wake it at once. The watcher is shared by every
	// projection and forwarder on the store, at the shortest of their
	// intervals: one read-only query per interval (it takes no transaction
	// id and commits nothing), however many of them wait, and the
	// forwarder reads the feed only when the head moved. Defaults to
	// PollIntervalDefault.
	PollInterval time.Duration
	// RetryInterval is the first wait after a failed publish or query; it
	// doubles on each consecutive failure up to RetryMaxInterval. A failed
	// publish is retried, never skipped, unless it failed permanently (see
	// IsPermanent). Default RetryIntervalDefault.
	RetryInterval time.Duration
	// RetryMaxInterval caps the backoff. Defaults to
	// RetryMaxIntervalDefault.
	RetryMaxInterval time.Duration
	// PublishConcurrency is how many publishes may be in flight at once,
	// for different streams: events are sharded by stream ID, and the
	// events of one stream are always published one after the other, in
	// version order. 1 publishes strictly in feed order. Defaults to
	// PublishConcurrencyDefault. Publishers must allow concurrent Publish
	// calls, as Watermill's Publisher contract requires.
	PublishConcurrency int
	// OnPoison is the policy for poison events: events Topic rejects, and
	// events the publisher refuses permanently (MaxMessageSize,
	// IsPermanent). Defaults to PoisonStop.
	OnPoison PoisonPolicy
	// DeadLetterTopic receives poison events under PoisonDeadLetter.
	// Required with PoisonDeadLetter, must be empty otherwise.
	DeadLetterTopic string
	// MaxMessageSize, when positive, is the largest message, in bytes as
	// MessageSize counts them (payload, UUID, metadata keys and values),
	// the forwarder hands to the publisher. A larger message is refused
	// before publishing, permanently: a poison event, handled by OnPoison
	// with a *MessageTooLargeError. Set it to the broker's limit (see
	// docs/forwarding.md for each broker's limit and what it counts): for
	// RabbitMQ this is the only way to tell an event that is too large from
	// an outage, since watermill-amqp reports both the same way. It applies
	// to dead letters and reference messages too. 0 (the default) checks
	// nothing; negative is invalid.
	MaxMessageSize int
	// IsPermanent reports whether a publisher error is permanent: retrying
	// the same message cannot succeed, so the event is a poison event,
	// handled by OnPoison. Any error it does not accept is transient and
	// retried forever, so only an error proven permanent must pass (a
	// false positive would park or stop on an event that could have been
	// published; a false negative only keeps retrying). It is not asked
	// about errors returned after Run's context ended. Called from several
	// goroutines at once. Defaults to IsMessageTooLarge; to recognise no
	// error, use func(error) bool { return false }.
	IsPermanent func(error) bool
	// LeaderRetryInterval is how often a standby instance tries to take
	// leadership of the consumer group, and how often the leader checks its
	// lock session. A killed leader is replaced within about this interval
	// after PostgreSQL notices its connection closed. Every job of the
	// process on the same pool with the same interval (forwarders,
	// projections) shares one lock session and one statement per interval
	// (see docs/operations.md). Defaults to LeaderRetryIntervalDefault.
	LeaderRetryInterval time.Duration
	// DisableMigrate stops Run from applying the forwarder's migrations
	// (the offsets table) itself; call Migrate beforehand then.
	DisableMigrate bool
	// Logger receives the forwarder's logs, with component=forwarder.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider gives the forwarder's tracer: a span per publish, a
	// child of the span that appended the event, whose trace context the
	// message carries to its consumers (see docs/observability.md), and
	// spans when this process acquires or releases the group's leadership.
	// Defaults to the global provider, otel.GetTracerProvider(), a no-op
	// until the application installs one.
	TracerProvider trace.TracerProvider
	// MeterProvider gives the forwarder's meter: the esox.forwarder.*
	// metrics, observed while Run runs. Defaults to the global provider,
	// otel.GetMeterProvider(), a no-op until the application installs one.
	MeterProvider metric.MeterProvider
}

func (c Config) withDefaults() Config {
	if c.ConsumerGroup == "" {
		c.ConsumerGroup = ConsumerGroupDefault
	}
	if c.Topic == nil {
		c.Topic = TopicByCategory
	}
	if c.BatchSize == 0 {
		c.BatchSize = BatchSizeDefault
	}
	if c.PollInterval == 0 {
		c.PollInterval = PollIntervalDefault
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = RetryIntervalDefault
	}
	if c.PublishConcurrency == 0 {
		c.PublishConcurrency = PublishConcurrencyDefault
	}
	if c.RetryMaxInterval == 0 {
		c.RetryMaxInterval = RetryMaxIntervalDefault
	}
	if c.LeaderRetryInterval == 0 {
		c.LeaderRetryInterval = LeaderRetryIntervalDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.IsPermanent == nil {
		c.IsPermanent = IsMessageTooLarge
	}
	return c
}

func (c Config) validate() error {
	invalid := func(field, reason string) error {
		return fmt.Errorf("forwarder: invalid config: %w", &eventstore.InvalidArgumentError{Field: field, Reason: reason})
	}
	switch {
	case len(c.ConsumerGroup) > 255:
		return invalid("ConsumerGroup", "longer than 255 bytes")
	case c.BatchSize < 1 || c.BatchSize > eventstore.MaxReadAllLimit:
		return invalid("BatchSize", fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, c.BatchSize))
	case c.PublishConcurrency < 1 || c.PublishConcurrency > 1024:
		return invalid("PublishConcurrency", fmt.Sprintf("must be between 1 and 1024, got %d", c.PublishConcurrency))
	case c.PollInterval < 0:
		return invalid("PollInterval", "must not be negative")
	case c.RetryInterval < 0:
		return invalid("RetryInterval", "must not be negative")
	case c.RetryMaxInterval < c.RetryInterval:
		return invalid("RetryMaxInterval", "must not be less than RetryInterval")
	case c.LeaderRetryInterval < 0:
		return invalid("LeaderRetryInterval", "must not be negative")
	case c.MaxMessageSize < 0:
		return invalid("MaxMessageSize", "must not be negative (0 checks nothing)")
	case c.OnPoison != PoisonStop && c.OnPoison != PoisonDeadLetter:
		return invalid("OnPoison", fmt.Sprintf("unknown policy %d", int(c.OnPoison)))
	case c.OnPoison == PoisonDeadLetter && c.DeadLetterTopic == "":
		return invalid("DeadLetterTopic", "required with PoisonDeadLetter")
	case c.OnPoison != PoisonDeadLetter && c.DeadLetterTopic != "":
		return invalid("DeadLetterTopic", "only used with PoisonDeadLetter")
	}
	return nil
}

// Forwarder relays the events table to a Watermill publisher: every committed
// event is published at least once, in feed order (so in version order per
// stream), with the event ID as message UUID (guarantee 6 in docs/guarantees.md). Several
// instances may run with the same consumer group; one is active at a time,
// and another takes over when it dies (guarantee 7).
//
// A Forwarder is safe for concurrent use; Run may be called by one goroutine
// at a time.
type Forwarder struct {
	store   *postgres.Store
	db      *sqlx.DB
	pub     message.Publisher
	cfg     Config
	log     *slog.Logger
	offsets string // quoted, qualified offsets table
	running atomic.Bool

	published, filtered, poisoned, retries atomic.Int64
	tel                                    *forwarderTelemetry

	// xidHoldingForTest switches to watermill-sql's default design: a
	// transaction per batch that locks the offsets row FOR UPDATE, which
	// holds a transaction id during publishes. Tests only.
	xidHoldingForTest bool
	// afterHandleForTest, when set, runs after each event of a batch is
	// handed to the pipeline. Tests only.
	afterHandleForTest func()
}

// New returns a Forwarder that publishes store's events to pub. It does no
// I/O. It returns an error matching eventstore.ErrInvalidArgument for a nil
// store or publisher or an invalid cfg (DecryptPersonalData without a
// Shredder on the store's registry).
func New(store *postgres.Store, pub message.Publisher, cfg Config) (*Forwarder, error) {
	if store == nil {
		return nil, fmt.Errorf("forwarder: %w", &eventstore.InvalidArgumentError{Field: "store", Reason: "must not be nil"})
	}
	if pub == nil {
		return nil, fmt.Errorf("forwarder: %w", &eventstore.InvalidArgumentError{Field: "publisher", Reason: "must not be nil"})
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.DecryptPersonalData && store.Registry().Shredder() == nil {
		return nil, fmt.Errorf("forwarder: invalid config: DecryptPersonalData: %w", &eventstore.InvalidArgumentError{Field: "DecryptPersonalData",
			Reason: "the store's registry has no Shredder to decrypt with (eventstore.Registry.SetShredder)"})
	}
	cfg.Categories = slices.Clone(cfg.Categories)
	cfg.EventTypes = slices.Clone(cfg.EventTypes)
	f := &Forwarder{
		store:   store,
		db:      store.DB(),
		pub:     pub,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "forwarder", "consumer_group", cfg.ConsumerGroup),
		offsets: postgres.QuoteIdentifier(store.Schema()) + "." + postgres.QuoteIdentifier(OffsetsTable),
	}
	f.tel = newForwarderTelemetry(f)
	return f, nil
}

//go:embed migrations/*.up.sql
var embeddedMigrations embed.FS

// Migrate creates the forwarder's offsets table (OffsetsTable) in the
// store's schema with postgres.ApplyMigrations, under Component. It is
// idempotent and safe to run from several processes at once; ctx bounds it.
// Run calls it unless Config.DisableMigrate is set.
func (f *Forwarder) Migrate(ctx context.Context) (postgres.MigrateResult, error) {
	res, err := postgres.ApplyMigrations(ctx, f.db, f.Migrations())
	if err != nil {
		return res, fmt.Errorf("forwarder: %w", err)
	}
	return res, nil
}

// LeaderKey returns the leader-election key of the consumer group group in
// schema: "esox:forwarder:<schema>:<group>".
func LeaderKey(schema, group string) string {
	return "esox:forwarder:" + schema + ":" + group
}

// Stats counts what a Forwarder did since New.
type Stats struct {
	// Published counts events published (a re-publish after a restart
	// counts again).
	Published int64
	// Filtered counts events skipped by Categories or EventTypes.
	Filtered int64
	// Poisoned counts poison events: events Topic rejected and events the
	// publisher refused permanently (whether then dead-lettered or not).
	Poisoned int64
	// Retries counts failed publishes that were retried.
	Retries int64
}

// Stats returns the counters. Safe for concurrent use.
func (f *Forwarder) Stats() Stats {
	return Stats{Published: f.published.Load(), Filtered: f.filtered.Load(), Poisoned: f.poisoned.Load(), Retries: f.retries.Load()}
}

// Offset returns the consumer group's stored offset: every event up to it
// has been published. It returns the zero Position before the first batch.
// Safe for concurrent use; ctx bounds the query.
func (f *Forwarder) Offset(ctx context.Context) (eventstore.Position, error) {
	var txid string
	var pos eventstore.Position
	err := f.db.QueryRowContext(ctx, `SELECT transaction_id::text, position FROM `+f.offsets+` WHERE consumer_group = $1`, f.cfg.ConsumerGroup).Scan(&txid, &pos.Position)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return eventstore.Position{}, nil
		}
		return eventstore.Position{}, fmt.Errorf("forwarder: read offset: %w", err)
	}
	if _, err := fmt.Sscan(txid, &pos.TransactionID); err != nil {
		return eventstore.Position{}, fmt.Errorf("forwarder: parse offset transaction id %q: %w", txid, err)
	}
	return pos, nil
}

// ErrForwarderRunning is returned by SetOffset while an instance of the
// consumer group is leading (running and forwarding), in this process or
// another. Stop every instance of the group (cancel their Run) first, then
// call SetOffset, then start them again.
var ErrForwarderRunning = errors.New("forwarder: an instance of the consumer group is running; stop every instance before SetOffset")

// SetOffset stores pos as the consumer group's offset: the next leader
// publishes the events after pos. Use it to replay (an earlier pos), to skip
// (a later one). After a dump and restore, when transaction ids restart,
// use esox.ResetAfterRestore (esox restore reset), which moves every
// group's offset with the renumbered feed. It creates the group's offset
// when it has none;
// SetGroupOffset does the same for a caller without a Publisher, and
// refuses unknown groups and positions after the head.
//
// The group's forwarders must be stopped: SetOffset runs in a transaction
// that takes the group's leader lock (pg_try_advisory_xact_lock on the key of
// LeaderKey, which conflicts with the session lock a leader holds) and
// returns ErrForwarderRunning, changing nothing, when an instance leads. A
// running leader would otherwise publish from its own idea of the offset
// and overwrite the stored one when its batch completes. Standbys do not
// hold the lock, but one takes over as soon as the leader stops, so stop
// them all. Safe for concurrent use; ctx bounds the transaction.
func (f *Forwarder) SetOffset(ctx context.Context, pos eventstore.Position) error {
	_, err := setOffset(ctx, f.store, f.cfg.ConsumerGroup, pos, false)
	return err
}

// Run relays events until ctx is done, and returns nil then. It applies the
// migrations (unless Config.DisableMigrate), then competes for leadership of
// the consumer group (a session advisory lock, key LeaderKey, held on the
// process's one lock session for the pool): while another instance leads,
// it waits as a standby and retries every Config.LeaderRetryInterval.
//
// While leading, it reads the feed after the group's offset a batch at a
// time with postgres.Store.ReadFeed (the one gap-free read of the feed; it
// takes no transaction id), and publishes the batch's events with up to
// Config.PublishConcurrency publishes in flight: events of one stream one
// after the other in version order, different streams in parallel. A failed
// publish is retried with backoff until it succeeds or ctx ends, unless it
// failed permanently (Config.MaxMessageSize, Config.IsPermanent): then the
// event is a poison event, handled by Config.OnPoison. One batch is read
// ahead: while a batch is published, the next one is read and handed to
// the publish workers, and then, once every event of the earlier batch is
// published, the offset moves past it in one short autocommit UPDATE (that
// does not wait for its WAL flush: an offset lost in a server crash only
// means those events are published again). At most two batches are in
// flight. No transaction is open while a publish is in flight.
//
// On cancellation the publishes in flight are abandoned (or finished, for
// publishers that ignore the message context), the offset is moved over the
// prefix of the batch already published, and Run returns once every
// goroutine it started has exited. Events published but not yet recorded
// are published again by the next leader: delivery is at least once.
//
// Run returns an error matching ErrPoison when an event cannot be forwarded
// (under PoisonStop, or when not even a reference to it can be
// dead-lettered), with the offset right before that event; a migration
// error; or an error when called while another Run of the same Forwarder is
// running.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("forwarder: Run is already running")
	}
	defer f.running.Store(false)
	if !f.cfg.DisableMigrate {
		if _, err := f.Migrate(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	defer f.observing()()
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	err := leader.Run(runCtx, f.db, leader.Config{
		Key:           LeaderKey(f.store.Schema(), f.cfg.ConsumerGroup),
		RetryInterval: f.cfg.LeaderRetryInterval,
		Logger:        f.cfg.Logger,
	}, func(leaderCtx context.Context) error {
		err := f.tel.leadership.Wrap(f.lead)(leaderCtx)
		if errors.Is(err, ErrPoison) {
			stop(err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	if cause := context.Cause(runCtx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// lead runs while this instance holds leadership: it reads the feed after
// the group's offset, hands each event to the publishing pipeline, waits for
// the batch to be published, records the offset, and goes on.
func (f *Forwarder) lead(ctx context.Context) error {
	f.log.InfoContext(ctx, "forwarding")
	// The store's one feed watcher polls the head for every consumer of
	// the process; appends through the store wake at once.
	wake, unsubscribe := f.store.Watch(ctx, f.cfg.PollInterval)
	defer unsubscribe()

	var offset eventstore.Position
	for failures := 0; ; failures++ {
		var err error
		if offset, err = f.startOffset(ctx); err == nil {
			break
		}
		if !f.retryAfter(ctx, "reading the consumer group's offset failed; retrying", err, failures) {
			return nil
		}
	}

	pl := newPipeline(ctx, f, f.cfg.PublishConcurrency)
	defer pl.close()
	if f.xidHoldingForTest {
		return f.leadHoldingXid(ctx, wake, pl, offset)
	}
	// One batch is read ahead: while the events of a batch are published,
	// the next batch is read and handed on, and only then does the loop
	// wait for the earlier batch to be published and record its offset.
	// So a batch's offset write and the next read overlap its publishes,
	// and the publish workers never wait for the database between batches.
	// At most two batches are in flight.
	var (
		readFrom = offset
		inFlight eventstore.Position // last event handed on of the earlier batch, not yet recorded; zero: none
		handed   eventstore.Position // last event handed on
		failures int
	)
	// settle waits until every event up to inFlight is published (or the
	// leadership ends), and records how far it got. When an event failed,
	// it waits instead for the events handed on before the failed one and
	// records up to right before it, and returns the failure.
	settle := func() error {
		target := inFlight
		if pl.failed() {
			target = handed
		}
		if target.IsZero() {
			return pl.failure()
		}
		done := pl.through(target)
		f.recordOffset(ctx, nil, done)
		inFlight = eventstore.Position{}
		return pl.failure()
	}
	for ctx.Err() == nil && !pl.failed() {
		raws, err := f.store.ReadFeed(ctx, readFrom, f.cfg.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !f.retryAfter(ctx, "polling the events table failed; retrying", err, failures) {
				break
			}
			failures++
			continue
		}
		if f.cfg.DecryptPersonalData {
			if err := f.store.Registry().Decrypt(ctx, raws); err != nil {
				if ctx.Err() != nil || !f.retryAfter(ctx, "decrypting personal data failed; retrying", err, failures) {
					break
				}
				failures++
				continue
			}
		}
		failures = 0
		f.tel.progress.Read(readFrom, raws, f.cfg.BatchSize)
		if len(raws) == 0 {
			// Caught up: finish the batch in flight before idling.
			if err := settle(); err != nil {
				return err
			}
			f.idle(ctx, wake)
			continue
		}
		// last is the last event handed to the pipeline: when the
		// leadership ends (or an event fails) in the middle of the batch,
		// the events after it were never tracked, so nothing beyond it may
		// be recorded.
		var last eventstore.Position
		for _, raw := range raws {
			if ctx.Err() != nil || pl.failed() {
				break
			}
			f.handle(ctx, raw, pl)
			last, handed = raw.Position, raw.Position
			if f.afterHandleForTest != nil {
				f.afterHandleForTest()
			}
		}
		// The earlier batch: published by now, or soon; record it. On a
		// poison failure, through returns the position right before the
		// poison event.
		if err := settle(); err != nil {
			return err
		}
		if !last.IsZero() {
			inFlight, readFrom = last, last
		}
	}
	if !handed.IsZero() && ctx.Err() != nil {
		// Stopped: record the done prefix of everything handed on.
		inFlight = handed
	}
	return settle()
}

// leadHoldingXid is lead's loop under xidHoldingForTest: one batch at a
// time, each in a transaction that locks the offsets row FOR UPDATE
// (watermill-sql's default design, which holds a transaction id while it
// publishes). Tests only.
func (f *Forwarder) leadHoldingXid(ctx context.Context, wake <-chan struct{}, pl *pipeline, offset eventstore.Position) error {
	failures := 0
	for ctx.Err() == nil {
		raws, err := f.store.ReadFeed(ctx, offset, f.cfg.BatchSize)
		if err != nil {
			if ctx.Err() != nil || !f.retryAfter(ctx, "polling the events table failed; retrying", err, failures) {
				break
			}
			failures++
			continue
		}
		failures = 0
		if len(raws) == 0 {
			f.idle(ctx, wake)
			continue
		}
		batch, err := f.holdXid(ctx)
		if err != nil {
			if !f.retryAfter(ctx, "opening the batch failed; retrying", err, failures) {
				break
			}
			failures++
			continue
		}
		var last eventstore.Position
		for _, raw := range raws {
			if ctx.Err() != nil || pl.failed() {
				break
			}
			f.handle(ctx, raw, pl)
			last = raw.Position
		}
		var done eventstore.Position
		if !last.IsZero() {
			done = pl.through(last)
		}
		f.recordOffset(ctx, batch, done)
		if err := pl.failure(); err != nil {
			return err
		}
		if ctx.Err() == nil {
			offset = done
		}
	}
	return nil
}

// handle routes one feed record and hands it to the pipeline. Filtered-out
// events are done at once. A poison event stops the leadership (pl.fail)
// under PoisonStop: an event the topic function rejects, or a row that
// cannot become a message (*MalformedRowError, whatever the policy); under
// PoisonDeadLetter an event the topic function rejects goes to the
// dead-letter topic.
func (f *Forwarder) handle(ctx context.Context, raw eventstore.RawRecord, pl *pipeline) {
	e := pl.track(raw.Position)
	rec, err := raw.Record()
	if err != nil {
		f.log.ErrorContext(ctx, "malformed event row: stopping", "event_id", raw.ID.String(), "stream_id", raw.StreamID, "position", raw.Position.String(), "error", err)
		pl.fail(e, &MalformedRowError{Position: raw.Position, EventID: raw.ID, Err: err})
		return
	}
	recs := []eventstore.Record{rec}
	if f.cfg.PublishUpcast {
		if recs, err = f.upcast(raw, rec); err != nil {
			// Never published as a guess: a poison event, dead-lettered
			// as stored.
			perr := newPoisonError(rec, "", 0, fmt.Errorf("upcast: %w", err))
			if f.poison(ctx, pl, e, perr) {
				pl.dispatch(job{e: e, rec: rec, poison: perr})
			}
			return
		}
	}
	var parts []job
	for _, rec := range recs {
		if !f.selected(rec) {
			continue
		}
		topic, err := f.cfg.Topic(rec)
		if err == nil && topic == "" {
			err = errors.New("empty topic")
		}
		if err != nil {
			perr := newPoisonError(rec, "", 0, err)
			if !f.poison(ctx, pl, e, perr) {
				return
			}
			parts = append(parts, job{e: e, rec: rec, poison: perr})
			continue
		}
		parts = append(parts, job{e: e, topic: topic, msg: NewMessage(rec), rec: rec})
	}
	if len(parts) == 0 {
		f.filtered.Add(1)
		pl.done(e)
		return
	}
	// The records of one stored event (several when an upcaster split
	// it) are published one after the other by one worker.
	j := parts[0]
	j.then = parts[1:]
	pl.dispatch(j)
}

// poison counts a poison event found before publishing (perr) and, under
// PoisonStop, stops the leadership at its entry e and returns false. Under
// PoisonDeadLetter it returns true: the caller dispatches it to the
// dead-letter topic.
func (f *Forwarder) poison(ctx context.Context, pl *pipeline, e *entry, perr *PoisonError) bool {
	f.poisoned.Add(1)
	if f.cfg.OnPoison != PoisonDeadLetter {
		f.log.ErrorContext(ctx, "poison event: stopping", "event_id", perr.EventID, "stream_id", perr.StreamID, "position", perr.Position.String(), "error", perr.Err.Error())
		pl.fail(e, perr)
		return false
	}
	return true
}

// upcast returns the records raw reads as at the registry's current
// versions (rec is raw.Record()): upcast on the JSON only, not decoded.
func (f *Forwarder) upcast(raw eventstore.RawRecord, rec eventstore.Record) ([]eventstore.Record, error) {
	evs, err := f.store.Registry().ToCurrent(nil, eventstore.VersionedEvent{Type: raw.Type, Version: rec.SchemaVersion, Payload: raw.Payload})
	if err != nil {
		return nil, err
	}
	out := make([]eventstore.Record, len(evs))
	for i, ev := range evs {
		r := rec
		r.Type, r.SchemaVersion, r.Payload, r.Index = ev.Type, ev.Version, ev.Payload, i
		if i > 0 {
			r.ID = eventstore.SplitEventID(raw.ID, i)
			r.Metadata = rec.Metadata.Clone()
		}
		out[i] = r
	}
	return out, nil
}

// idle waits until the feed may have news (wake: an append through the
// store, or the store's watcher saw the head move) or the leadership ends.
// It sends the database nothing.
func (f *Forwarder) idle(ctx context.Context, wake <-chan struct{}) {
	select {
	case <-ctx.Done():
	case <-wake:
	}
}

// retryAfter logs a failed database round trip (the failures-th in a row,
// from 0) and waits the backoff before the next attempt; false when ctx
// ended first.
func (f *Forwarder) retryAfter(ctx context.Context, msg string, err error, failures int) bool {
	wait := f.cfg.RetryInterval << min(failures, 30)
	if wait <= 0 || wait > f.cfg.RetryMaxInterval {
		wait = f.cfg.RetryMaxInterval
	}
	level := slog.LevelDebug
	if failures == 0 || (failures+1)%10 == 0 {
		level = slog.LevelWarn
	}
	f.log.Log(ctx, level, msg, "error", err.Error(), "retry_in", wait, "failures", failures+1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// publishRetrying publishes msg to topic until the publisher accepts it
// (nil), or refuses it permanently, or ctx ends (ctx's error). A permanent
// refusal is a *MessageTooLargeError when msg is over Config.MaxMessageSize (checked
// before publishing), or the publisher's error when Config.IsPermanent
// accepts it. Any other error is retried with backoff.
func (f *Forwarder) publishRetrying(ctx context.Context, topic string, msg *message.Message, rec eventstore.Record) error {
	if limit := f.cfg.MaxMessageSize; limit > 0 {
		if size := MessageSize(msg); size > limit {
			return &MessageTooLargeError{Size: size, Limit: limit}
		}
	}
	wait := f.cfg.RetryInterval
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		msg.SetContext(ctx)
		err := f.pub.Publish(topic, msg)
		if err == nil {
			if attempt > 1 {
				f.log.InfoContext(ctx, "publish succeeded after retries", "event_id", msg.UUID, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if f.cfg.IsPermanent(err) {
			return err
		}
		f.retries.Add(1)
		f.log.WarnContext(ctx, "publish failed; retrying the same event", "event_id", msg.UUID, "stream_id", rec.StreamID,
			"position", rec.Position.String(), "topic", topic, "attempt", attempt, "retry_in", wait, "error", err.Error())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, f.cfg.RetryMaxInterval)
	}
}

// selected reports whether rec passes the Categories and EventTypes filters.
func (f *Forwarder) selected(rec eventstore.Record) bool {
	if len(f.cfg.Categories) > 0 && !slices.Contains(f.cfg.Categories, eventstore.Category(rec.StreamID)) {
		return false
	}
	if len(f.cfg.EventTypes) > 0 && !slices.Contains(f.cfg.EventTypes, rec.Type) {
		return false
	}
	return true
}
