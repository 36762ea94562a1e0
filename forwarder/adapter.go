package forwarder

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// SchemaAdapter is the watermill-sql SchemaAdapter that reads the event
// store's events table as the outbox: no second table, no dual write.
//
// SelectQuery reads the gap-free global feed (DESIGN guarantee 2): rows
// after the consumer group's offset by the row comparison
// (transaction_id, position) > (…), which the events table's primary key
// serves as an index range scan whatever the backlog, and only rows with
// transaction_id < pg_snapshot_xmin(pg_current_snapshot()), ordered by
// (transaction_id, position). It reads the offset without FOR UPDATE, so it
// takes no row lock and no transaction id: leadership comes from a session
// advisory lock instead (see Forwarder). It must be paired with an
// OffsetsAdapter, whose NextOffsetQuery it embeds.
//
// UnmarshalMessage builds the message the forwarder publishes: UUID = event
// ID, payload = event payload, metadata = the flattened record (see the
// Metadata… constants).
//
// InsertQuery always fails: events are written by the event store's Append,
// never by a watermill-sql Publisher. SchemaInitializingQueries returns
// nothing: the events table belongs to eventstore/postgres migrations.
//
// A SchemaAdapter is a value without state, safe for concurrent use.
type SchemaAdapter struct {
	// EventsTable is the quoted, schema-qualified events table, as
	// returned by postgres.Store.QualifiedEventsTable. Required.
	EventsTable string
	// BatchSize is the number of events read per query. Defaults to
	// BatchSizeDefault.
	BatchSize int
}

// ErrInsertNotSupported is returned by SchemaAdapter.InsertQuery: events are
// appended through the event store, never through a watermill-sql Publisher.
var ErrInsertNotSupported = errors.New("forwarder: the events table is written by the event store, not by a watermill-sql publisher")

// InsertQuery returns ErrInsertNotSupported.
func (a SchemaAdapter) InsertQuery(wsql.InsertQueryParams) (wsql.Query, error) {
	return wsql.Query{}, ErrInsertNotSupported
}

// SelectQuery returns the gap-free feed query after the consumer group's
// offset, as described on SchemaAdapter. The OffsetsAdapter's
// NextOffsetQuery must return one row with the columns transaction_id (xid8)
// and position (bigint), as OffsetsAdapter's does.
func (a SchemaAdapter) SelectQuery(p wsql.SelectQueryParams) (wsql.Query, error) {
	if a.EventsTable == "" {
		return wsql.Query{}, errors.New("forwarder: SchemaAdapter.EventsTable must not be empty")
	}
	next, err := p.OffsetsAdapter.NextOffsetQuery(wsql.NextOffsetQueryParams{Topic: p.Topic, ConsumerGroup: p.ConsumerGroup})
	if err != nil {
		return wsql.Query{}, err
	}
	// The right-hand side is a row of two scalar subqueries (InitPlans), not
	// a row subquery: only the former is a RowCompareExpr the planner can use
	// as an index condition on the primary key (transaction_id, position).
	// A missing offsets row compares as NULL and returns nothing, never
	// "everything again".
	q := `WITH last_processed AS (` + next.Query + `)
SELECT e.position, e.transaction_id::text AS transaction_id_text, e.event_id::text, e.stream_id, e.stream_version,
       e.event_type, e.payload, e.metadata, e.recorded_at
FROM ` + a.EventsTable + ` e
WHERE (e.transaction_id, e.position) > ((SELECT transaction_id FROM last_processed), (SELECT position FROM last_processed))
  AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY e.transaction_id, e.position
LIMIT ` + strconv.Itoa(a.batchSize())
	return wsql.Query{Query: q, Args: next.Args}, nil
}

func (a SchemaAdapter) batchSize() int {
	if a.BatchSize <= 0 {
		return BatchSizeDefault
	}
	return a.BatchSize
}

// malformedKey marks a message whose row could not be fully decoded; its
// value is the reason. Such a message is never published.
const malformedKey = "esox_forwarder_malformed_row"

// UnmarshalMessage scans one row of SelectQuery into a watermill-sql Row
// whose Msg is the message to publish. Row.Offset is the event's position and
// Row.ExtraData["transaction_id"] its transaction id (uint64), which
// OffsetsAdapter.AckMessageQuery records.
//
// A row whose stored metadata is not a JSON object yields a message the
// Forwarder stops on with a *MalformedRowError, rather than skip the event;
// a row whose IDs do not parse yields a *MalformedRowError here.
func (a SchemaAdapter) UnmarshalMessage(p wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var (
		rec      eventstore.Record
		txid     string
		id       string
		metadata []byte
	)
	if err := p.Row.Scan(&rec.Position.Position, &txid, &id, &rec.StreamID, &rec.StreamVersion,
		&rec.Type, &rec.Payload, &metadata, &rec.RecordedAt); err != nil {
		return wsql.Row{}, fmt.Errorf("forwarder: scan event row: %w", err)
	}
	var err error
	if rec.Position.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
		return wsql.Row{}, &MalformedRowError{Position: rec.Position, Err: fmt.Errorf("parse transaction id %q: %w", txid, err)}
	}
	if rec.ID, err = uuid.Parse(id); err != nil {
		return wsql.Row{}, &MalformedRowError{Position: rec.Position, Err: fmt.Errorf("parse event id %q: %w", id, err)}
	}
	var metadataErr error
	if len(metadata) > 0 {
		if err := rec.Metadata.UnmarshalJSON(metadata); err != nil {
			rec.Metadata = eventstore.Metadata{}
			metadataErr = fmt.Errorf("decode metadata: %w", err)
		}
	}
	msg := NewMessage(rec)
	if metadataErr != nil {
		// Not an error here: that would fail the whole batch, the events
		// before this one included. The Forwarder stops at this message
		// once those are published.
		msg.Metadata[malformedKey] = metadataErr.Error()
	}
	return wsql.Row{
		Offset:    rec.Position.Position,
		UUID:      []byte(msg.UUID),
		Payload:   msg.Payload,
		Metadata:  metadata,
		Msg:       msg,
		ExtraData: map[string]any{"transaction_id": rec.Position.TransactionID},
	}, nil
}

// SchemaInitializingQueries returns no query: the events table is created by
// the event store's migrations.
func (a SchemaAdapter) SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, nil
}

// SubscribeIsolationLevel returns sql.LevelReadCommitted. The Forwarder runs
// the subscriber's "transactions" in autocommit mode anyway (see
// autocommitBeginner); read committed is what a real transaction over these
// queries would need, since the feed query is correct in any snapshot.
func (a SchemaAdapter) SubscribeIsolationLevel() sql.IsolationLevel {
	return sql.LevelReadCommitted
}

// MalformedRowError reports an events-table row the forwarder cannot turn
// into a message (its metadata is not a JSON object, or an ID does not
// parse). The forwarder never skips such a row: Run stops with this error.
// It matches ErrPoison.
type MalformedRowError struct {
	Position eventstore.Position
	EventID  uuid.UUID
	Err      error
}

func (e *MalformedRowError) Error() string {
	return fmt.Sprintf("forwarder: malformed event row at position %s (event %s): %v", e.Position, e.EventID, e.Err)
}

// Unwrap returns the parse error.
func (e *MalformedRowError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrPoison) true.
func (e *MalformedRowError) Is(target error) bool { return target == ErrPoison }

// OffsetsAdapter is the watermill-sql OffsetsAdapter that keeps one offset
// row per consumer group in the forwarder's offsets table (created by
// Migrate).
//
// Unlike watermill-sql's DefaultPostgreSQLOffsetsAdapter it never locks the
// offsets row (no FOR UPDATE): a row lock gives the reading transaction a
// transaction id for the whole batch, publishes included, and that holds back
// pg_snapshot_xmin for every reader of the global feed on the server
// (DESIGN's first trap). One active forwarder per group is ensured by a
// session advisory lock instead. AckMessageQuery only moves the offset
// forward, so a deposed leader that acks late cannot move it back.
//
// An OffsetsAdapter is a value without state, safe for concurrent use.
type OffsetsAdapter struct {
	// OffsetsTable is the quoted, schema-qualified offsets table. Required.
	OffsetsTable string

	// forUpdate adds FOR UPDATE to NextOffsetQuery: watermill-sql's
	// default, xid-holding design. Tests only, to show that it holds back
	// the feed.
	forUpdate bool
	// through, when set, is called with the batch's last position before
	// the ack query is built; it waits until the Forwarder has published
	// every event up to it and returns the position that may be recorded
	// (less, if the leadership ended first).
	through func(target eventstore.Position) eventstore.Position
}

// AckMessageQuery moves the group's offset to the last row of the batch
// (params.LastRow), if that is further than the stored offset. Under a
// Forwarder, it first waits until every event of the batch is published
// (events are published concurrently, per stream, after their ack; see
// pipeline), and records only those that were if the leadership ends first.
func (a OffsetsAdapter) AckMessageQuery(p wsql.AckMessageQueryParams) (wsql.Query, error) {
	txid, ok := p.LastRow.ExtraData["transaction_id"].(uint64)
	if !ok {
		return wsql.Query{}, fmt.Errorf("forwarder: ack: row at position %d carries no transaction id", p.LastRow.Offset)
	}
	pos := eventstore.Position{TransactionID: txid, Position: p.LastRow.Offset}
	if a.through != nil {
		pos = a.through(pos) // the zero Position makes the UPDATE a no-op
	}
	return wsql.Query{
		Query: `UPDATE ` + a.OffsetsTable + ` SET transaction_id = $1::text::xid8, position = $2, updated_at = now()
WHERE consumer_group = $3 AND (transaction_id, position) < ($1::text::xid8, $2::bigint)`,
		Args: []any{strconv.FormatUint(pos.TransactionID, 10), pos.Position, p.ConsumerGroup},
	}, nil
}

// ConsumedMessageQuery returns the zero Query: nothing is written per
// message.
func (a OffsetsAdapter) ConsumedMessageQuery(wsql.ConsumedMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{}, nil
}

// NextOffsetQuery returns the group's offset as the columns transaction_id
// and position, without locking the row.
func (a OffsetsAdapter) NextOffsetQuery(p wsql.NextOffsetQueryParams) (wsql.Query, error) {
	q := `SELECT transaction_id, position FROM ` + a.OffsetsTable + ` WHERE consumer_group = $1`
	if a.forUpdate {
		q += ` FOR UPDATE`
	}
	return wsql.Query{Query: q, Args: []any{p.ConsumerGroup}}, nil
}

// SchemaInitializingQueries returns no query: the offsets table is created
// by Migrate.
func (a OffsetsAdapter) SchemaInitializingQueries(wsql.OffsetsSchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return nil, nil
}

// BeforeSubscribingQueries creates the group's offset row at (0, 0) if it
// does not exist yet.
func (a OffsetsAdapter) BeforeSubscribingQueries(p wsql.BeforeSubscribingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{
		Query: `INSERT INTO ` + a.OffsetsTable + ` (consumer_group) VALUES ($1) ON CONFLICT (consumer_group) DO NOTHING`,
		Args:  []any{p.ConsumerGroup},
	}}, nil
}

// ackTimeout bounds the offset write of a batch, which runs even after the
// subscriber's context is cancelled.
const ackTimeout = 10 * time.Second

// autocommitBeginner is the wsql.Beginner the Forwarder hands watermill-sql's
// Subscriber. Its "transactions" run every statement on the pool in
// autocommit mode; Commit and Rollback do nothing.
//
// Why: Subscriber.query opens one transaction per poll and keeps it open
// while it hands each message of the batch out and waits for its ack, that
// is, for the whole batch of broker publishes; it runs the ack query (the
// offsets UPDATE) in that transaction after the last publish, then commits.
// With our adapters that transaction would hold no transaction id until the
// final UPDATE, so it would not hold back pg_snapshot_xmin; but it would
// still sit "idle in transaction" during publishes, holding a pool connection
// and AccessShareLocks on the events and offsets tables (a pending ALTER or
// TRUNCATE would queue behind it, and every later query behind that), and
// falling foul of idle_in_transaction_session_timeout. Nothing here needs
// atomicity: the SELECT reads committed rows only, and the batch's only write
// is its last statement, the offsets UPDATE, which commits on its own. So in
// autocommit mode the poll is one read-only statement (no xid, no commit
// record), and the ack is one short UPDATE that commits before the next
// batch's first publish.
type autocommitBeginner struct{ db *sql.DB }

func (b autocommitBeginner) BeginTx(context.Context, *sql.TxOptions) (wsql.Tx, error) {
	return autocommitTx(b), nil
}

func (b autocommitBeginner) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	return b.db.ExecContext(ctx, query, args...)
}

func (b autocommitBeginner) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	return b.db.QueryContext(ctx, query, args...)
}

type autocommitTx struct{ db *sql.DB }

// ExecContext runs the batch's offset write. It is detached from ctx's
// cancellation (bounded by ackTimeout): when Run is stopped, the events the
// broker already confirmed are recorded, so a restart does not publish them
// again.
func (t autocommitTx) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	res, err := t.db.ExecContext(ctx, query, args...)
	if err != nil {
		return nil, &offsetWriteError{err: err}
	}
	return res, nil
}

// offsetWriteError marks a failed offset write (the only statement run
// through autocommitTx.ExecContext), so pollBackoff can report it even when
// the leadership has ended.
type offsetWriteError struct{ err error }

func (e *offsetWriteError) Error() string { return "write offset: " + e.err.Error() }
func (e *offsetWriteError) Unwrap() error { return e.err }

func (t autocommitTx) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	return t.db.QueryContext(ctx, query, args...)
}

func (t autocommitTx) Commit() error   { return nil }
func (t autocommitTx) Rollback() error { return nil }
