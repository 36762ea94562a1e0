package projector

import (
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/internal/leader"
)

// Defaults of Config.
const (
	// BatchSizeDefault is how many records a batch reads when
	// Config.BatchSize is zero.
	BatchSizeDefault = 1000
	// PollIntervalDefault is how often an idle projection polls the feed
	// when Config.PollInterval is zero.
	PollIntervalDefault = 10 * time.Millisecond
	// MaxRetriesDefault is how many times a failing batch is retried when
	// Config.MaxRetries is zero.
	MaxRetriesDefault = 3
	// RetryBackoffDefault is the first retry's delay when
	// Config.RetryBackoff is zero.
	RetryBackoffDefault = 100 * time.Millisecond
	// MaxRetryBackoffDefault caps the retry delays when
	// Config.MaxRetryBackoff is zero.
	MaxRetryBackoffDefault = 5 * time.Second
	// IdleInTransactionTimeoutDefault bounds a batch transaction's idle time
	// when Config.IdleInTransactionTimeout is zero.
	IdleInTransactionTimeoutDefault = time.Minute
)

// Config configures a Runner. The zero value means all defaults.
type Config struct {
	// BatchSize is the most records read and applied per transaction.
	// Defaults to BatchSizeDefault (1000); at most
	// eventstore.MaxReadAllLimit.
	BatchSize int
	// PollInterval is how often, while projections have caught up, the
	// store's feed watcher (postgres.Store.Watch) polls the feed's head for
	// events committed by other processes; appends through the runner's
	// own Store wake the projections at once. The watcher is shared by
	// every projection, partition and forwarder on the store, at the
	// shortest of their intervals: one read-only index lookup per interval
	// that takes no transaction id, however many of them wait, and a
	// projection reads the feed only when the head moved. WaitFor also
	// re-reads the checkpoint at this interval. Defaults to
	// PollIntervalDefault (10 ms).
	PollInterval time.Duration
	// MaxRetries is how many times a batch whose handler fails is retried
	// (with exponential backoff from RetryBackoff) before the projection
	// stops, or parks the failing event when Projection.DeadLetter is set.
	// Defaults to MaxRetriesDefault (3); set DisableRetries for none.
	// Database errors (connection lost, server restarting) are not handler
	// failures: they are retried without limit.
	MaxRetries int
	// DisableRetries makes the first handler failure final.
	DisableRetries bool
	// RetryBackoff is the delay before the first retry; it doubles per
	// attempt up to MaxRetryBackoff. Defaults to RetryBackoffDefault.
	RetryBackoff time.Duration
	// MaxRetryBackoff caps retry delays, also those after database errors.
	// Defaults to MaxRetryBackoffDefault (5 s).
	MaxRetryBackoff time.Duration
	// LeaderRetryInterval is how often a standby process tries to take over
	// a projection (partition), how often the process pings the session
	// holding its leaderships, and how often a runner leading projections
	// re-reads their checkpoint rows (one query for all of them) to notice
	// a Rebuild, Resume, SetCheckpoint or version switch made by another
	// process. Every leadership of the process on the same pool with the
	// same interval (projections, partitions, forwarders) shares one lock
	// session and one statement per interval. Defaults to 1 s. After a
	// crash (the process's sockets close) another process takes over
	// within about one interval. After a freeze, or when the host dies or
	// is cut off, the server ends the silent leader's lock session through
	// idle_session_timeout, max(3*LeaderRetryInterval, 5 s) (PostgreSQL
	// 14+), or server-side TCP keepalives (about 5 s): takeover then takes
	// about 6 s by default.
	LeaderRetryInterval time.Duration
	// MaxPartitions, when positive, is the most partitions of each
	// projection version (see Projection.Partitions) this runner leads at
	// once: it stands by for the others, so several processes share a
	// partitioned projection's work. When a process dies, the others take
	// over its partitions, each on its own, as far as their MaxPartitions
	// allow: leave room for that (with N partitions and P processes, at
	// least N/(P-1)), or a dead process's partitions wait for it to come
	// back. 0 (the default) leads as many as it can get.
	MaxPartitions int
	// IdleInTransactionTimeout is set (SET LOCAL
	// idle_in_transaction_session_timeout) on every batch transaction: if
	// the process freezes mid-batch, the server ends its session after this
	// long idle, rolling the batch back and releasing its transaction id
	// (which otherwise holds back the feed of every projection and
	// forwarder) and its checkpoint row lock (which would block the new
	// leader). It must exceed the longest pause between two statements of
	// a handler. Defaults to IdleInTransactionTimeoutDefault (1 minute).
	IdleInTransactionTimeout time.Duration
	// DisableMigrate stops Run from applying the projector's migrations
	// and from registering projection versions (registering a new version
	// runs its Setup, typically DDL). Set it when the service runs as a
	// role without DDL rights: a role that may create tables then calls
	// Runner.Migrate first, with the same projections (see
	// docs/operations.md). Run returns an error matching ErrNotRegistered
	// when a projection version is not registered.
	DisableMigrate bool
	// Logger receives the runner's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider gives the runner's tracer: a span per batch, linked to
	// the spans that appended its events, and spans when this process
	// acquires or releases a projection's leadership (see
	// docs/observability.md). Defaults to the global provider,
	// otel.GetTracerProvider(), a no-op until the application installs one.
	TracerProvider trace.TracerProvider
	// MeterProvider gives the runner's meter: the esox.projection.*
	// metrics, among them each projection's lag, observed from the
	// workers' memory while Run runs. Defaults to the global provider,
	// otel.GetMeterProvider(), a no-op until the application installs one.
	MeterProvider metric.MeterProvider
}

func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = BatchSizeDefault
	}
	if c.PollInterval == 0 {
		c.PollInterval = PollIntervalDefault
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = MaxRetriesDefault
	}
	if c.DisableRetries {
		c.MaxRetries = 0
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = RetryBackoffDefault
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = MaxRetryBackoffDefault
	}
	if c.LeaderRetryInterval == 0 {
		c.LeaderRetryInterval = leader.RetryIntervalDefault
	}
	if c.IdleInTransactionTimeout == 0 {
		c.IdleInTransactionTimeout = IdleInTransactionTimeoutDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	bad := func(field, reason string) error {
		return fmt.Errorf("projector: invalid config: %s: %w", field, &eventstore.InvalidArgumentError{Field: field, Reason: reason})
	}
	switch {
	case c.BatchSize < 1 || c.BatchSize > eventstore.MaxReadAllLimit:
		return bad("BatchSize", fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, c.BatchSize))
	case c.PollInterval < 0:
		return bad("PollInterval", "must not be negative")
	case c.MaxRetries < 0:
		return bad("MaxRetries", "must not be negative")
	case c.RetryBackoff < 0:
		return bad("RetryBackoff", "must not be negative")
	case c.MaxRetryBackoff < 0:
		return bad("MaxRetryBackoff", "must not be negative")
	case c.LeaderRetryInterval < 0:
		return bad("LeaderRetryInterval", "must not be negative")
	case c.MaxPartitions < 0:
		return bad("MaxPartitions", "must not be negative")
	case c.IdleInTransactionTimeout < 0:
		return bad("IdleInTransactionTimeout", "must not be negative")
	case c.IdleInTransactionTimeout > 0 && c.IdleInTransactionTimeout < time.Millisecond:
		return bad("IdleInTransactionTimeout", "must be at least 1ms (0 means the default)")
	}
	return nil
}
