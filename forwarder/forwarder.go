package forwarder

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jmoiron/sqlx"

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
	PublishConcurrencyDefault = 16
	// RetryIntervalDefault is the default Config.RetryInterval.
	RetryIntervalDefault = 100 * time.Millisecond
	// RetryMaxIntervalDefault is the default Config.RetryMaxInterval.
	RetryMaxIntervalDefault = 10 * time.Second
	// LeaderRetryIntervalDefault is the default Config.LeaderRetryInterval.
	LeaderRetryIntervalDefault = time.Second
	// OffsetsTable is the name of the forwarder's offsets table, created by
	// Migrate in the store's schema.
	OffsetsTable = "forwarder_offsets"
	// MigrationComponent is the component under which Migrate records the
	// forwarder's migrations in the schema's esox_migrations table.
	MigrationComponent = "forwarder"
)

// subscriberTopic is the topic name given to watermill-sql's Subscriber. Our
// SchemaAdapter ignores it; the topic a message is published to comes from
// Config.Topic.
const subscriberTopic = "esox_events"

// ErrPoison is matched by the errors Run stops with when an event cannot be
// forwarded (a *PoisonError or a *MalformedRowError) and Config.OnPoison is
// PoisonStop.
var ErrPoison = errors.New("forwarder: poison event")

// PoisonPolicy says what the forwarder does with an event that Config.Topic
// rejects (returns an error for). An event is never dropped silently.
type PoisonPolicy int

const (
	// PoisonStop (the default) stops Run with a *PoisonError matching
	// ErrPoison, without advancing the offset past the event. Fix the topic
	// function (or the event) and restart; nothing is lost.
	PoisonStop PoisonPolicy = iota
	// PoisonDeadLetter publishes the event unchanged to
	// Config.DeadLetterTopic, with MetadataPoisonReason set to the topic
	// function's error, logs it at Warn level, and goes on.
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

// PoisonError reports an event the topic function rejected, under PoisonStop.
// It matches ErrPoison and unwraps to the topic function's error.
type PoisonError struct {
	Position eventstore.Position
	EventID  string
	StreamID string
	Type     string
	Err      error
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("forwarder: poison event %s (stream %q, type %q, position %s): topic: %v", e.EventID, e.StreamID, e.Type, e.Position, e.Err)
}

// Is makes errors.Is(err, ErrPoison) true.
func (e *PoisonError) Is(target error) bool { return target == ErrPoison }

// Unwrap returns the topic function's error.
func (e *PoisonError) Unwrap() error { return e.Err }

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
	// EventTypes, when not empty, forwards only events of the listed types.
	// Other events are skipped, but the offset still moves past them.
	EventTypes []string
	// BatchSize is the number of events read per query; the offset is
	// written once per batch, after all its events are published. A crash
	// re-publishes at most one batch. Defaults to BatchSizeDefault.
	BatchSize int
	// PollInterval is how long the forwarder waits after finding nothing
	// new before it polls again; appends made through the same
	// postgres.Store wake it at once. An idle poll is one read-only query:
	// it takes no transaction id and commits nothing. Defaults to
	// PollIntervalDefault.
	PollInterval time.Duration
	// RetryInterval is the first wait after a failed publish or query; it
	// doubles on each consecutive failure up to RetryMaxInterval. A failed
	// publish is retried, never skipped. Default RetryIntervalDefault.
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
	// OnPoison is the policy for events Topic rejects. Defaults to
	// PoisonStop.
	OnPoison PoisonPolicy
	// DeadLetterTopic receives poison events under PoisonDeadLetter.
	// Required with PoisonDeadLetter, must be empty otherwise.
	DeadLetterTopic string
	// LeaderRetryInterval is how often a standby instance tries to take
	// leadership of the consumer group, and how often the leader checks its
	// lock connection. A killed leader is replaced within about this
	// interval after PostgreSQL notices its connection closed. Defaults to
	// LeaderRetryIntervalDefault.
	LeaderRetryInterval time.Duration
	// DisableMigrate stops Run from applying the forwarder's migrations
	// (the offsets table) itself; call Migrate beforehand then.
	DisableMigrate bool
	// Logger receives the forwarder's logs, with component=forwarder.
	// Defaults to slog.Default().
	Logger *slog.Logger
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
// stream), with the event ID as message UUID (DESIGN guarantee 6). Several
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

	published, filtered, poisoned atomic.Int64

	// xidHoldingForTest switches to watermill-sql's default design (real
	// transaction per batch and FOR UPDATE on the offsets row), which
	// holds a transaction id during publishes. Tests only.
	xidHoldingForTest bool
}

// New returns a Forwarder that publishes store's events to pub. It does no
// I/O. It returns an error matching eventstore.ErrInvalidArgument for a nil
// store or publisher or an invalid cfg.
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
	cfg.Categories = slices.Clone(cfg.Categories)
	cfg.EventTypes = slices.Clone(cfg.EventTypes)
	return &Forwarder{
		store:   store,
		db:      store.DB(),
		pub:     pub,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "forwarder", "consumer_group", cfg.ConsumerGroup),
		offsets: postgres.QuoteIdentifier(store.Schema()) + "." + postgres.QuoteIdentifier(OffsetsTable),
	}, nil
}

//go:embed migrations/*.up.sql
var embeddedMigrations embed.FS

// Migrate creates the forwarder's offsets table (OffsetsTable) in the
// store's schema with postgres.ApplyMigrations, under MigrationComponent. It
// is idempotent and safe to run from several processes at once; ctx bounds
// it. Run calls it unless Config.DisableMigrate is set.
func Migrate(ctx context.Context, store *postgres.Store) (postgres.MigrateResult, error) {
	files, err := fs.Sub(embeddedMigrations, "migrations")
	if err != nil {
		return postgres.MigrateResult{}, fmt.Errorf("forwarder: migrations: %w", err)
	}
	res, err := postgres.ApplyMigrations(ctx, store.DB(), postgres.MigrationParams{
		Schema:    store.Schema(),
		Component: MigrationComponent,
		Files:     files,
		Data:      struct{ Offsets string }{postgres.QuoteIdentifier(store.Schema()) + "." + postgres.QuoteIdentifier(OffsetsTable)},
	})
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
	// Poisoned counts events Topic rejected.
	Poisoned int64
}

// Stats returns the counters. Safe for concurrent use.
func (f *Forwarder) Stats() Stats {
	return Stats{Published: f.published.Load(), Filtered: f.filtered.Load(), Poisoned: f.poisoned.Load()}
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
// (a later one), or after a dump and restore, when transaction ids restart
// (see docs/forwarding.md).
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
	tx, err := f.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("forwarder: set offset: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var locked bool
	key := leader.LockKey(LeaderKey(f.store.Schema(), f.cfg.ConsumerGroup))
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, key).Scan(&locked); err != nil {
		return fmt.Errorf("forwarder: set offset: leader lock: %w", err)
	}
	if !locked {
		return ErrForwarderRunning
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+f.offsets+` (consumer_group, transaction_id, position) VALUES ($1, $2::text::xid8, $3)
ON CONFLICT (consumer_group) DO UPDATE SET transaction_id = excluded.transaction_id, position = excluded.position, updated_at = now()`,
		f.cfg.ConsumerGroup, strconv.FormatUint(pos.TransactionID, 10), pos.Position); err != nil {
		return fmt.Errorf("forwarder: set offset: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("forwarder: set offset: commit: %w", err)
	}
	return nil
}

// Run relays events until ctx is done, and returns nil then. It applies the
// migrations (unless Config.DisableMigrate), then competes for leadership of
// the consumer group (a session advisory lock on a dedicated connection, key
// LeaderKey): while another instance leads, it waits as a standby and retries
// every Config.LeaderRetryInterval.
//
// While leading, it polls the feed after the group's offset, a batch at a
// time, and publishes the batch's events with up to
// Config.PublishConcurrency publishes in flight: events of one stream one
// after the other in version order, different streams in parallel. A failed
// publish is retried with backoff until it succeeds or ctx ends. Once every
// event of the batch is published it moves the offset past the batch, and
// only then reads the next one. No transaction is open while a publish is in
// flight.
//
// On cancellation the publishes in flight are abandoned (or finished, for
// publishers that ignore the message context), the offset is moved over the
// prefix of the batch already published, and Run returns once every
// goroutine it started has exited. Events published but not yet recorded
// are published again by the next leader: delivery is at least once.
//
// Run returns an error matching ErrPoison when an event cannot be forwarded
// under PoisonStop, a migration error, or an error when called while another
// Run of the same Forwarder is running.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("forwarder: Run is already running")
	}
	defer f.running.Store(false)
	if !f.cfg.DisableMigrate {
		if _, err := Migrate(ctx, f.store); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	err := leader.Run(runCtx, f.db, leader.Config{
		Key:           LeaderKey(f.store.Schema(), f.cfg.ConsumerGroup),
		RetryInterval: f.cfg.LeaderRetryInterval,
		Logger:        f.cfg.Logger,
	}, func(leaderCtx context.Context) error {
		err := f.lead(leaderCtx)
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

// lead runs while this instance holds leadership: a watermill-sql
// Subscriber over the events table feeds handle, one message at a time.
func (f *Forwarder) lead(ctx context.Context) error {
	f.log.InfoContext(ctx, "forwarding")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	wake, unsubscribe := f.store.Subscribe()
	defer unsubscribe()

	var beginner wsql.Beginner = autocommitBeginner{db: f.db.DB}
	offsets := OffsetsAdapter{OffsetsTable: f.offsets}
	if f.xidHoldingForTest {
		beginner = wsql.BeginnerFromStdSQL(f.db.DB)
		offsets.forUpdate = true
	}
	pl := newPipeline(ctx, f, f.cfg.PublishConcurrency)
	offsets.through = pl.through
	backoff := &pollBackoff{ctx: ctx, wake: wake, poll: f.cfg.PollInterval, retry: f.cfg.RetryInterval, max: f.cfg.RetryMaxInterval, log: f.log, fatalCh: make(chan error, 1)}
	noDeadline := time.Duration(0)
	sub, err := wsql.NewSubscriber(beginner, wsql.SubscriberConfig{
		ConsumerGroup: f.cfg.ConsumerGroup,
		// No ack deadline: a publish is retried until it succeeds, and
		// no transaction is open meanwhile, so waiting costs nobody.
		AckDeadline:    &noDeadline,
		PollInterval:   f.cfg.PollInterval,
		ResendInterval: f.cfg.RetryInterval,
		RetryInterval:  f.cfg.RetryInterval,
		BackoffManager: backoff,
		SchemaAdapter:  SchemaAdapter{EventsTable: f.store.QualifiedEventsTable(), BatchSize: f.cfg.BatchSize},
		OffsetsAdapter: offsets,
	}, watermill.NewSlogLoggerWithLevelMapping(f.log.With("component", "forwarder.subscriber"), map[slog.Level]slog.Level{
		// The subscriber logs every stop and discarded message at Info.
		slog.LevelInfo: slog.LevelDebug,
	}))
	if err != nil {
		cancel()
		pl.close()
		return fmt.Errorf("forwarder: subscriber: %w", err)
	}
	defer func() {
		cancel()
		_ = sub.Close() // waits for the subscriber's goroutine (its last ack query included)
		pl.close()      // then for the publish workers
	}()
	msgs, err := sub.Subscribe(ctx, subscriberTopic)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("forwarder: subscribe: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-backoff.fatal():
			return err
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			if err := f.handle(ctx, msg, pl); err != nil {
				return err
			}
		}
	}
}

// handle routes one message and hands it to the pipeline, then acks it to
// the Subscriber: the offset write at the end of the batch waits for the
// pipeline (see pipeline). Filtered-out events are done at once. It returns
// a *PoisonError under PoisonStop, after waiting for the events before the
// poison one to be published, so that the offset stops right before it.
func (f *Forwarder) handle(ctx context.Context, msg *message.Message, pl *pipeline) error {
	rec, err := RecordFromMessage(msg)
	if err != nil {
		// Cannot happen for messages built by SchemaAdapter.
		return fmt.Errorf("forwarder: %w: %w", ErrPoison, err)
	}
	if reason, bad := msg.Metadata[malformedKey]; bad {
		f.log.ErrorContext(ctx, "malformed event row: stopping", "event_id", msg.UUID, "stream_id", rec.StreamID, "position", rec.Position.String(), "error", reason)
		pl.drain()
		return &MalformedRowError{Position: rec.Position, EventID: rec.ID, Err: errors.New(reason)}
	}
	if !f.selected(rec) {
		f.filtered.Add(1)
		pl.done(pl.track(rec.Position))
		msg.Ack()
		return nil
	}
	topic, err := f.cfg.Topic(rec)
	if err == nil && topic == "" {
		err = errors.New("empty topic")
	}
	out := message.NewMessage(msg.UUID, msg.Payload)
	out.Metadata = maps.Clone(msg.Metadata)
	deadLetter := false
	if err != nil {
		f.poisoned.Add(1)
		perr := &PoisonError{Position: rec.Position, EventID: msg.UUID, StreamID: rec.StreamID, Type: rec.Type, Err: err}
		if f.cfg.OnPoison != PoisonDeadLetter {
			f.log.ErrorContext(ctx, "poison event: stopping", "event_id", msg.UUID, "stream_id", rec.StreamID, "position", rec.Position.String(), "error", err.Error())
			pl.drain()
			return perr
		}
		f.log.WarnContext(ctx, "poison event: publishing to dead-letter topic", "event_id", msg.UUID, "stream_id", rec.StreamID, "position", rec.Position.String(), "topic", f.cfg.DeadLetterTopic, "error", err.Error())
		out.Metadata.Set(MetadataPoisonReason, err.Error())
		topic = f.cfg.DeadLetterTopic
		deadLetter = true
	}
	if !pl.dispatch(job{e: pl.track(rec.Position), topic: topic, msg: out, rec: rec, deadLetter: deadLetter}) {
		return nil // ctx ended: not acked, published again by the next leader
	}
	msg.Ack()
	return nil
}

// publish publishes msg until the publisher accepts it, backing off between
// attempts; it reports false when ctx ended first.
func (f *Forwarder) publish(ctx context.Context, topic string, msg *message.Message, rec eventstore.Record) bool {
	wait := f.cfg.RetryInterval
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		msg.SetContext(ctx)
		err := f.pub.Publish(topic, msg)
		if err == nil {
			if attempt > 1 {
				f.log.InfoContext(ctx, "publish succeeded after retries", "event_id", msg.UUID, "attempts", attempt)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		f.log.WarnContext(ctx, "publish failed; retrying the same event", "event_id", msg.UUID, "stream_id", rec.StreamID,
			"position", rec.Position.String(), "topic", topic, "attempt", attempt, "retry_in", wait, "error", err.Error())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
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
