package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/esox-go/esox/eventstore"
)

// Defaults of Config.
const (
	// SchemaDefault is the schema used when Config.Schema is empty.
	SchemaDefault = "esox"
	// EventsTableDefault is the events table used when Config.EventsTable is empty.
	EventsTableDefault = "events"
	// SnapshotsTableDefault is the snapshots table used when
	// Config.SnapshotsTable is empty.
	SnapshotsTableDefault = "snapshots"
	// ReadStreamPageSizeDefault is the page size used when
	// Config.ReadStreamPageSize is zero.
	ReadStreamPageSizeDefault = 1000
	// SettleTimeoutDefault is the settle time used when
	// Config.SettleTimeout is zero.
	SettleTimeoutDefault = 30 * time.Second
	// ChainHeadsDefault is how many streams' last digests a Store
	// remembers when Config.ChainHeads is zero.
	ChainHeadsDefault = 10000
)

// AppendHook runs inside an append's transaction after its rows are inserted,
// with the records as written (positions, versions and recorded_at set). Use
// it for inline projections: whatever the hook writes through tx commits or
// rolls back with the events. An error rolls the append back and is returned
// by Append wrapped (errors.Is/As reach it). The records' Data is each
// event's value as given to Append (a pointer if a pointer was appended);
// their Metadata is the merged metadata that was stored. tx has no Commit or
// Rollback: the append (or, for AppendTx, its caller) ends the transaction.
type AppendHook func(ctx context.Context, tx Tx, records []eventstore.Record) error

// Config configures a Store. The zero value means all defaults.
type Config struct {
	// Schema holds the store's tables. Defaults to SchemaDefault ("esox").
	// It must pass ValidateIdentifier and not start with "pg_"; it is always
	// quoted, so its case is kept.
	Schema string
	// EventsTable is the events table's name. Defaults to EventsTableDefault.
	EventsTable string
	// SnapshotsTable is the snapshots table's name. Defaults to
	// SnapshotsTableDefault.
	SnapshotsTable string
	// ReadStreamPageSize is how many records ReadStream fetches per query.
	// Defaults to ReadStreamPageSizeDefault (1000); must not be negative.
	ReadStreamPageSize int
	// AppendHooks run in order inside every append's transaction (see
	// AppendHook). With hooks, Append runs BEGIN, the insert, the hooks and
	// COMMIT; without, it is one statement.
	AppendHooks []AppendHook
	// MaxEventSize is the largest event Append and AppendTx accept, in
	// bytes of payload plus metadata as encoded JSON; a larger one is
	// refused with an *eventstore.EventTooLargeError before anything is
	// sent. Defaults to 0, no limit but PostgreSQL's (see
	// eventstore.CheckJSONB); must not be negative. Give the memory store
	// the same value to have both refuse the same events.
	MaxEventSize int
	// SettleTimeout bounds how long Append keeps trying to find out
	// whether an append whose connection failed was written, before it
	// gives up with an *eventstore.OutcomeUnknownError (see Append). Cover
	// a server restart: crash recovery takes seconds. The caller's ctx
	// bounds it too. Defaults to SettleTimeoutDefault (30 s); must not be
	// negative.
	SettleTimeout time.Duration
	// DisableChain stops appends from computing each event's digest (the
	// hash chain of docs/compliance.md): their digest column stays NULL.
	// Chaining is on by default. Every writer of a table must agree: Verify
	// reports an unchained event that follows chained ones of its stream
	// as a broken link (eventstore.BreakUnchained).
	DisableChain bool
	// ChainHeads is how many streams' last digest (and version) the store
	// remembers from its own appends, so that the next append to one of
	// them with an exact expected version computes its events' digests
	// itself and the server only checks that they chain after the stream's
	// last digest (docs/compliance.md, "The hash chain"). An append
	// to a stream it does not remember, or with Any or StreamExists, leaves
	// the digests to the server. Defaults to ChainHeadsDefault (about 100
	// bytes per stream plus its ID); negative: remember none, and leave
	// every digest to the server, a new stream's too.
	ChainHeads int
	// Logger receives the store's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider gives the store's tracer: a span per Append, AppendTx
	// and ReadStream, whose trace context each appended event records
	// (eventstore.MetadataTraceParent); see docs/observability.md.
	// Defaults to the global provider, otel.GetTracerProvider(), a no-op
	// until the application installs one; while it has installed neither
	// global provider (and this Config sets neither), the store starts no
	// span and records no metric (docs/observability.md).
	TracerProvider trace.TracerProvider
	// MeterProvider gives the store's meter: the esox.append.* metrics.
	// Defaults to the global provider, otel.GetMeterProvider(), a no-op
	// until the application installs one.
	MeterProvider metric.MeterProvider
}

// withDefaults returns a copy of c with defaults filled in.
func (c Config) withDefaults() Config {
	if c.Schema == "" {
		c.Schema = SchemaDefault
	}
	if c.EventsTable == "" {
		c.EventsTable = EventsTableDefault
	}
	if c.SnapshotsTable == "" {
		c.SnapshotsTable = SnapshotsTableDefault
	}
	if c.ReadStreamPageSize == 0 {
		c.ReadStreamPageSize = ReadStreamPageSizeDefault
	}
	if c.SettleTimeout == 0 {
		c.SettleTimeout = SettleTimeoutDefault
	}
	if c.ChainHeads == 0 {
		c.ChainHeads = ChainHeadsDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate checks a defaulted config and names the bad field.
func (c Config) validate() error {
	if err := ValidateSchemaName(c.Schema); err != nil {
		return fmt.Errorf("invalid config: Schema: %w", err)
	}
	if err := ValidateIdentifier(c.EventsTable); err != nil {
		return fmt.Errorf("invalid config: EventsTable: %w", err)
	}
	if err := ValidateIdentifier(c.SnapshotsTable); err != nil {
		return fmt.Errorf("invalid config: SnapshotsTable: %w", err)
	}
	if c.EventsTable == c.SnapshotsTable || c.EventsTable == migrationsTable || c.SnapshotsTable == migrationsTable {
		return fmt.Errorf("invalid config: EventsTable, SnapshotsTable: %w", &eventstore.InvalidArgumentError{Field: "table names", Reason: fmt.Sprintf("%q, %q and %q must differ", c.EventsTable, c.SnapshotsTable, migrationsTable)})
	}
	if seals := sealsTable(c); seals == c.SnapshotsTable || seals == migrationsTable {
		return fmt.Errorf("invalid config: EventsTable, SnapshotsTable: %w", &eventstore.InvalidArgumentError{Field: "table names",
			Reason: fmt.Sprintf("the seals table of events table %q is %q, which must differ from %q and %q", c.EventsTable, seals, c.SnapshotsTable, migrationsTable)})
	}
	if c.ReadStreamPageSize < 0 {
		return fmt.Errorf("invalid config: ReadStreamPageSize: %w", &eventstore.InvalidArgumentError{Field: "ReadStreamPageSize", Reason: fmt.Sprintf("must not be negative, got %d", c.ReadStreamPageSize)})
	}
	if c.MaxEventSize < 0 {
		return fmt.Errorf("invalid config: MaxEventSize: %w", &eventstore.InvalidArgumentError{Field: "MaxEventSize", Reason: fmt.Sprintf("must not be negative, got %d", c.MaxEventSize)})
	}
	if c.SettleTimeout < 0 {
		return fmt.Errorf("invalid config: SettleTimeout: %w", &eventstore.InvalidArgumentError{Field: "SettleTimeout", Reason: fmt.Sprintf("must not be negative, got %s", c.SettleTimeout)})
	}
	for i, h := range c.AppendHooks {
		if h == nil {
			return fmt.Errorf("invalid config: AppendHooks[%d]: %w", i, &eventstore.InvalidArgumentError{Field: "AppendHooks", Reason: "nil hook"})
		}
	}
	return nil
}

// ValidateSchemaName is ValidateIdentifier plus PostgreSQL's rule for schema
// names: they must not start with "pg_" (reserved for system schemas). Errors
// match eventstore.ErrInvalidArgument.
func ValidateSchemaName(name string) error {
	if err := ValidateIdentifier(name); err != nil {
		return err
	}
	if strings.HasPrefix(strings.ToLower(name), "pg_") {
		return &eventstore.InvalidArgumentError{Field: "schema", Reason: fmt.Sprintf("%q: names starting with pg_ are reserved by PostgreSQL", name)}
	}
	return nil
}

// sealsTable is the name of the seals table of a store with cfg: the
// events table's name with "_seals", shortened to fit.
func sealsTable(cfg Config) string { return constraintName(cfg.EventsTable, "seals") }
