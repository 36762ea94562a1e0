package forwarder

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// This file holds the operations on consumer groups that need no
// Publisher: what the esox command and an admin endpoint call.

// Migrations returns the forwarder's migration set in schema: the offsets
// table (OffsetsTable) under the component Component. Forwarder.Migrate
// applies it; pass it to postgres.ReadMigrationStatus to plan or check an
// apply, or to postgres.ApplyMigrationSets with other components' sets. A
// bad schema name is refused by those.
func Migrations(schema string) postgres.MigrationParams {
	files, err := fs.Sub(embeddedMigrations, "migrations")
	if err != nil {
		panic("forwarder: embedded migrations: " + err.Error()) // "migrations" is a valid path
	}
	return postgres.MigrationParams{
		Schema:    schema,
		Component: Component,
		Files:     files,
		Data:      struct{ Offsets string }{offsetsTable(schema)},
	}
}

// Migrations returns the forwarder's migration set in its store's schema
// (see the package function Migrations), the one Migrate applies.
func (f *Forwarder) Migrations() postgres.MigrationParams { return Migrations(f.store.Schema()) }

// offsetsTable returns the quoted, qualified offsets table of schema.
func offsetsTable(schema string) string {
	return postgres.QuoteIdentifier(schema) + "." + postgres.QuoteIdentifier(OffsetsTable)
}

// ErrGroupNotFound is matched by a *GroupNotFoundError.
var ErrGroupNotFound = errors.New("forwarder: consumer group not found")

// GroupNotFoundError reports a consumer group that has no offset in the
// schema: no forwarder of that group has ever run there. It matches
// ErrGroupNotFound.
type GroupNotFoundError struct {
	// ConsumerGroup is the group asked for.
	ConsumerGroup string
	// Known lists the schema's consumer groups, in name order.
	Known []string
}

func (e *GroupNotFoundError) Error() string {
	known := "none: no forwarder has run in this schema"
	if len(e.Known) > 0 {
		known = strings.Join(e.Known, ", ")
	}
	return fmt.Sprintf("forwarder: consumer group %q not found (known groups: %s)", e.ConsumerGroup, known)
}

// Is makes errors.Is(err, ErrGroupNotFound) true.
func (e *GroupNotFoundError) Is(target error) bool { return target == ErrGroupNotFound }

// GroupStatus is the state of one consumer group, as ListGroups and
// ReadGroup report it.
type GroupStatus struct {
	// ConsumerGroup is the group's name (Config.ConsumerGroup).
	ConsumerGroup string
	// Offset is the group's stored offset: every event up to it has been
	// published. The zero Position before the first batch.
	Offset eventstore.Position
	// UpdatedAt is when the offset was last written.
	UpdatedAt time.Time
	// Head is the feed's head when the status was read (postgres.Store.Head).
	Head eventstore.Position
	// Lag counts the events in the feed after Offset: what the group has
	// yet to publish (or skip, when filtered). It is read after Head, so
	// it may count events past it.
	Lag int64
	// LeaderRunning reports whether an instance of the group leads now, in
	// this process or another (it holds the group's leader lock, keyed by
	// LeaderKey). SetGroupOffset refuses while one does.
	LeaderRunning bool
}

// ListGroups returns the status of every consumer group that has an offset
// in store's schema, in name order; none when the forwarder's offsets
// table does not exist yet. It reads the offsets table, the feed's head,
// the count of events after each offset and pg_locks, and writes nothing,
// so the application's role (see docs/operations.md) may call it. ctx
// bounds the reads; database errors are wrapped. Safe for concurrent use.
func ListGroups(ctx context.Context, store *postgres.Store) ([]GroupStatus, error) {
	return readGroups(ctx, store, "")
}

// ReadGroup returns the status of one consumer group (see ListGroups). A
// group without an offset returns a *GroupNotFoundError (ErrGroupNotFound)
// listing the known ones. ctx bounds the reads. Safe for concurrent use.
func ReadGroup(ctx context.Context, store *postgres.Store, group string) (GroupStatus, error) {
	gs, err := readGroups(ctx, store, group)
	if err != nil {
		return GroupStatus{}, err
	}
	if len(gs) == 0 {
		return GroupStatus{}, notFound(ctx, store, group)
	}
	return gs[0], nil
}

// readGroups reads every group, or only group when it is not empty.
func readGroups(ctx context.Context, store *postgres.Store, group string) ([]GroupStatus, error) {
	db, schema := store.DB(), store.Schema()
	table := offsetsTable(schema)
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
		return nil, fmt.Errorf("forwarder: read consumer groups: %w", err)
	}
	if !exists {
		return nil, nil
	}
	head, err := store.Head(ctx)
	if err != nil {
		return nil, fmt.Errorf("forwarder: read consumer groups: %w", err)
	}
	rows, err := db.QueryContext(ctx, `SELECT o.consumer_group, o.transaction_id::text, o.position, o.updated_at,
	(SELECT count(*) FROM `+store.QualifiedEventsTable()+` e
	 WHERE (e.transaction_id, e.position) > (o.transaction_id, o.position)
	   AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot()))
FROM `+table+` o WHERE $1 = '' OR o.consumer_group = $1 ORDER BY o.consumer_group`, group)
	if err != nil {
		return nil, fmt.Errorf("forwarder: read consumer groups: %w", err)
	}
	defer rows.Close()
	var out []GroupStatus
	for rows.Next() {
		g := GroupStatus{Head: head}
		var txid string
		if err := rows.Scan(&g.ConsumerGroup, &txid, &g.Offset.Position, &g.UpdatedAt, &g.Lag); err != nil {
			return nil, fmt.Errorf("forwarder: read consumer groups: %w", err)
		}
		if g.Offset.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			return nil, fmt.Errorf("forwarder: parse offset transaction id %q: %w", txid, err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("forwarder: read consumer groups: %w", err)
	}
	for i := range out {
		if out[i].LeaderRunning, err = postgres.LockHeld(ctx, db, LeaderKey(schema, out[i].ConsumerGroup)); err != nil {
			return nil, fmt.Errorf("forwarder: read consumer groups: %w", err)
		}
	}
	return out, nil
}

// notFound returns the *GroupNotFoundError of group, listing the known
// groups (or the error that kept it from listing them).
func notFound(ctx context.Context, store *postgres.Store, group string) error {
	e := &GroupNotFoundError{ConsumerGroup: group}
	var exists bool
	table := offsetsTable(store.Schema())
	if err := store.DB().QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
		return fmt.Errorf("forwarder: list consumer groups: %w", err)
	}
	if exists {
		if err := store.DB().SelectContext(ctx, &e.Known, `SELECT consumer_group FROM `+table+` ORDER BY consumer_group`); err != nil {
			return fmt.Errorf("forwarder: list consumer groups: %w", err)
		}
	}
	return e
}

// SetGroupOffset stores pos as the offset of the consumer group group in
// store's schema, and returns the offset it replaced: the group's next
// leader publishes the events after pos. It is Forwarder.SetOffset for a
// caller without a Publisher, such as the esox command, and refuses what
// an operator most likely did not mean:
//
//   - a group that has no offset yet (a misspelt name): a
//     *GroupNotFoundError (ErrGroupNotFound) listing the known groups;
//   - a pos after the feed's head (e.g. a position from before a logical
//     restore, whose transaction ids are ahead of the new cluster's): the
//     group would skip every event until the feed caught up with it; an
//     *eventstore.InvalidArgumentError;
//   - a group whose leader runs, in any process: ErrForwarderRunning. It
//     takes the group's leader lock in its transaction, as SetOffset does
//     (see there: stop every instance of the group first).
//
// Each refusal changes nothing. ctx bounds the reads and the transaction.
// Safe for concurrent use.
func SetGroupOffset(ctx context.Context, store *postgres.Store, group string, pos eventstore.Position) (eventstore.Position, error) {
	if pos.Position < 0 {
		return eventstore.Position{}, fmt.Errorf("forwarder: set offset: %w", &eventstore.InvalidArgumentError{Field: "position", Reason: fmt.Sprintf("must not be negative, got %d", pos.Position)})
	}
	head, err := store.Head(ctx)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("forwarder: set offset: %w", err)
	}
	if head.Less(pos) {
		return eventstore.Position{}, fmt.Errorf("forwarder: set offset: %w", &eventstore.InvalidArgumentError{Field: "position",
			Reason: fmt.Sprintf("%s is after the feed's head %s: the group would skip every event until the feed reaches it (after a logical restore, transaction ids restart: take positions from the restored feed)", pos, head)})
	}
	prev, err := setOffset(ctx, store, group, pos, true)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Position{}, notFound(ctx, store, group)
	}
	return prev, err
}

// setOffset stores pos as group's offset in a transaction that holds the
// group's leader lock (ErrForwarderRunning when a leader holds it), and
// returns the offset it replaced. With mustExist, a group without an
// offset row returns sql.ErrNoRows unwrapped; without, the row is created.
func setOffset(ctx context.Context, store *postgres.Store, group string, pos eventstore.Position, mustExist bool) (eventstore.Position, error) {
	table := offsetsTable(store.Schema())
	tx, err := store.DB().BeginTxx(ctx, nil)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("forwarder: set offset: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var locked bool
	key := postgres.LockKey(LeaderKey(store.Schema(), group))
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, key).Scan(&locked); err != nil {
		return eventstore.Position{}, fmt.Errorf("forwarder: set offset: leader lock: %w", err)
	}
	if !locked {
		return eventstore.Position{}, ErrForwarderRunning
	}
	var prev eventstore.Position
	if mustExist {
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
			return eventstore.Position{}, fmt.Errorf("forwarder: set offset: %w", err)
		}
		if !exists {
			return eventstore.Position{}, sql.ErrNoRows
		}
		var txid string
		err := tx.QueryRowContext(ctx, `SELECT transaction_id::text, position FROM `+table+` WHERE consumer_group = $1 FOR UPDATE`, group).Scan(&txid, &prev.Position)
		if errors.Is(err, sql.ErrNoRows) {
			return eventstore.Position{}, err
		}
		if err != nil {
			return eventstore.Position{}, fmt.Errorf("forwarder: set offset: read offset: %w", err)
		}
		if prev.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
			return eventstore.Position{}, fmt.Errorf("forwarder: parse offset transaction id %q: %w", txid, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (consumer_group, transaction_id, position) VALUES ($1, $2::text::xid8, $3)
ON CONFLICT (consumer_group) DO UPDATE SET transaction_id = excluded.transaction_id, position = excluded.position, updated_at = now()`,
		group, strconv.FormatUint(pos.TransactionID, 10), pos.Position); err != nil {
		return eventstore.Position{}, fmt.Errorf("forwarder: set offset: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return eventstore.Position{}, fmt.Errorf("forwarder: set offset: commit: %w", err)
	}
	return prev, nil
}
