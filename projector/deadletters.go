package projector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/esox-go/esox/eventstore"
	"github.com/esox-go/esox/eventstore/postgres"
)

// This file holds the operations on dead letters (events a projection
// with Projection.DeadLetter parked after its handler kept failing on
// them): list, retry and discard, without the application's code.

// Defaults of the dead-letter operations.
const (
	// DeadLettersLimitDefault is DeadLetterFilter.Limit's default for
	// ListDeadLetters.
	DeadLettersLimitDefault = 100
)

// DeadLetter is an event a projection version parked.
type DeadLetter struct {
	Projection string
	Version    int
	// Partition is the partition that parked it (0 when the version has
	// one).
	Partition int
	EventID   uuid.UUID
	// Position is the event's position in the feed.
	Position  eventstore.Position
	StreamID  string
	EventType string
	// Error is the handler's error: the one that parked it, or that of
	// its last failed retry.
	Error string
	// ParkedAt is when it was parked (or parked again).
	ParkedAt time.Time
	// RetryRequestedAt is when RetryDeadLetters asked for a retry the
	// leader has not performed yet (zero: none pending).
	RetryRequestedAt time.Time
	// Retries counts its failed retries; RetriedAt is when the last one
	// failed.
	Retries   int
	RetriedAt time.Time
	// Event is the stored event (payload and metadata as stored), filled
	// when DeadLetterFilter.WithEvents is set; nil otherwise, or when the
	// event is not stored.
	Event *eventstore.RawRecord
}

// DeadLetterFilter selects dead letters.
type DeadLetterFilter struct {
	// Projection selects a projection's dead letters; empty selects every
	// projection's (ListDeadLetters only: RetryDeadLetters and
	// DiscardDeadLetters require it).
	Projection string
	// Version selects one version; 0 selects every version.
	Version int
	// Partitions selects these partitions; empty selects every one.
	Partitions []int
	// EventIDs selects these events; empty selects every one. Each must be
	// parked, or RetryDeadLetters and DiscardDeadLetters refuse (a
	// *DeadLetterNotFoundError).
	EventIDs []uuid.UUID
	// Limit is the most dead letters ListDeadLetters returns. Defaults to
	// DeadLettersLimitDefault; at most eventstore.MaxReadAllLimit. The
	// other operations act on every one selected.
	Limit int
	// WithEvents looks each dead letter's event up (Store.LookupRawEvents)
	// into DeadLetter.Event.
	WithEvents bool
}

// ErrDeadLetterNotFound is matched by a *DeadLetterNotFoundError.
var ErrDeadLetterNotFound = errors.New("projector: dead letter not found")

// DeadLetterNotFoundError reports events that are not parked by the
// projection (version) asked for. It matches ErrDeadLetterNotFound.
type DeadLetterNotFoundError struct {
	Projection string
	// Version is the version asked for; 0 for every version.
	Version int
	// EventIDs are the events not parked.
	EventIDs []uuid.UUID
}

func (e *DeadLetterNotFoundError) Error() string {
	ids := make([]string, len(e.EventIDs))
	for i, id := range e.EventIDs {
		ids[i] = id.String()
	}
	of := fmt.Sprintf("projection %q", e.Projection)
	if e.Version > 0 {
		of += fmt.Sprintf(" version %d", e.Version)
	}
	return fmt.Sprintf("projector: %s has no dead letter for event %s", of, strings.Join(ids, ", "))
}

// Is makes errors.Is(err, ErrDeadLetterNotFound) true.
func (e *DeadLetterNotFoundError) Is(target error) bool { return target == ErrDeadLetterNotFound }

const deadLetterColumns = `projection, version, partition, event_id, transaction_id::text AS txid, position, stream_id, event_type, error,
	recorded_at, retry_requested_at, retries, retried_at`

func scanDeadLetter(rs interface{ Scan(...any) error }) (DeadLetter, error) {
	var d DeadLetter
	var txid string
	var requested, retried sql.NullTime
	if err := rs.Scan(&d.Projection, &d.Version, &d.Partition, &d.EventID, &txid, &d.Position.Position, &d.StreamID, &d.EventType, &d.Error,
		&d.ParkedAt, &requested, &d.Retries, &retried); err != nil {
		return d, err
	}
	d.RetryRequestedAt, d.RetriedAt = requested.Time, retried.Time
	var err error
	if d.Position.TransactionID, err = strconv.ParseUint(txid, 10, 64); err != nil {
		return d, fmt.Errorf("parse transaction id %q: %w", txid, err)
	}
	return d, nil
}

// where returns the filter's WHERE clause over the dead-letters table and
// its arguments.
func (f DeadLetterFilter) where() (string, []any) {
	ids := make([]string, len(f.EventIDs))
	for i, id := range f.EventIDs {
		ids[i] = id.String()
	}
	parts := make([]string, len(f.Partitions))
	for i, p := range f.Partitions {
		parts[i] = strconv.Itoa(p)
	}
	return `($1 = '' OR projection = $1) AND ($2 = 0 OR version = $2)
		AND ($3 = '{}' OR partition = ANY($3::text::int[])) AND ($4 = '{}' OR event_id = ANY($4::text::uuid[]))`,
		[]any{f.Projection, f.Version, "{" + strings.Join(parts, ",") + "}", "{" + strings.Join(ids, ",") + "}"}
}

// check validates the filter, and that its projection (and version) has
// checkpoints in the schema.
func (f DeadLetterFilter) check(ctx context.Context, q sqlx.QueryerContext, t tables, requireProjection bool) error {
	if f.Projection == "" {
		if requireProjection {
			return &eventstore.InvalidArgumentError{Field: "Projection", Reason: "is required"}
		}
	} else if err := postgres.ValidateIdentifier(f.Projection); err != nil {
		return fmt.Errorf("projection name: %w", err)
	}
	if f.Version < 0 {
		return &eventstore.InvalidArgumentError{Field: "Version", Reason: fmt.Sprintf("must not be negative (0: every version), got %d", f.Version)}
	}
	if f.Projection == "" {
		return nil
	}
	rows, err := readRows(ctx, q, t, f.Projection, false)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return notFound(ctx, q, t, f.Projection)
	}
	if f.Version > 0 {
		_, err := selectTarget(rows, Target{Projection: f.Projection, Version: f.Version, Partitions: f.Partitions})
		return err
	}
	return nil
}

// ListDeadLetters returns the dead letters f selects, in projection,
// version and feed order, up to f.Limit; none when the projector's tables
// do not exist. A projection (version, partition) without a checkpoint is
// refused with a *ProjectionNotFoundError. It writes nothing. ctx bounds
// the reads; database errors are wrapped. Safe for concurrent use.
func ListDeadLetters(ctx context.Context, store *postgres.Store, f DeadLetterFilter) ([]DeadLetter, error) {
	fail := func(err error) ([]DeadLetter, error) {
		return nil, fmt.Errorf("projector: list dead letters: %w", err)
	}
	if f.Limit == 0 {
		f.Limit = DeadLettersLimitDefault
	}
	if f.Limit < 1 || f.Limit > eventstore.MaxReadAllLimit {
		return fail(&eventstore.InvalidArgumentError{Field: "Limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, f.Limit)})
	}
	t := tablesIn(store.Schema())
	if err := f.check(ctx, store.DB(), t, false); err != nil {
		return fail(err)
	}
	where, args := f.where()
	rs, err := store.DB().QueryContext(ctx, `SELECT `+deadLetterColumns+` FROM `+t.deadLetters+` WHERE `+where+`
		ORDER BY projection, version, transaction_id, position LIMIT `+strconv.Itoa(f.Limit), args...)
	if postgres.IsUndefinedTable(err) {
		return nil, nil
	}
	if err != nil {
		return fail(err)
	}
	defer rs.Close()
	var out []DeadLetter
	for rs.Next() {
		d, err := scanDeadLetter(rs)
		if err != nil {
			return fail(err)
		}
		out = append(out, d)
	}
	if err := rs.Err(); err != nil {
		return fail(err)
	}
	if f.WithEvents {
		if err := withEvents(ctx, store, out); err != nil {
			return fail(err)
		}
	}
	return out, nil
}

// withEvents looks the events of dls up into their Event.
func withEvents(ctx context.Context, store *postgres.Store, dls []DeadLetter) error {
	ids := make([]uuid.UUID, len(dls))
	for i, d := range dls {
		ids[i] = d.EventID
	}
	byID := map[uuid.UUID]eventstore.RawRecord{}
	for chunk := range slices.Chunk(ids, eventstore.MaxReadAllLimit) {
		raws, err := store.LookupRawEvents(ctx, chunk)
		if err != nil {
			return err
		}
		for _, rr := range raws {
			byID[rr.ID] = rr
		}
	}
	for i := range dls {
		if rr, ok := byID[dls[i].EventID]; ok {
			dls[i].Event = &rr
		}
	}
	return nil
}

// RetryDeadLetters asks the leaders of f.Projection to re-apply the dead
// letters f selects through the projection's handler, and returns them
// (RetryRequestedAt set). The leading worker of each dead letter's
// partition, in whichever process runs the projection, performs the
// retries in feed order, in one transaction that locks its checkpoint:
// a dead letter that applies is removed from the table in that
// transaction; one that fails again stays parked with its new error
// (Error, Retries, RetriedAt). The leader sees the request within
// Config.LeaderRetryInterval (at once when it applies a batch: the request
// fences it); a version no process runs retries when one starts.
//
// A retried event is applied after the events that followed it in the
// feed: a read model that depends on the order of a stream's events may
// need the stream's later events applied again (or a rebuild).
//
// f.Projection is required, and f.Limit is not used: every selected dead
// letter is retried. Refused, changing nothing: an unknown projection,
// version or partition (*ProjectionNotFoundError) and an event in
// f.EventIDs that is not parked (*DeadLetterNotFoundError). When f selects
// nothing it returns none and changes nothing. ctx bounds the
// transaction. Safe for concurrent use.
func RetryDeadLetters(ctx context.Context, store *postgres.Store, f DeadLetterFilter) ([]DeadLetter, error) {
	return changeDeadLetters(ctx, store, f, "retry", func(ctx context.Context, tx *sqlx.Tx, t tables, where string, args []any) (string, error) {
		// The checkpoint rows first, in the order the workers lock them.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM `+t.checkpoints+` c WHERE EXISTS (SELECT 1 FROM `+t.deadLetters+` d
			WHERE `+strings.ReplaceAll(where, "projection", "d.projection")+` AND d.version = c.version AND d.partition = c.partition)
			AND c.projection = $1 ORDER BY c.version, c.partition FOR UPDATE OF c`, args...); err != nil {
			return "", err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+t.checkpoints+` c SET retry_requested = true, updated_at = now()
			WHERE c.projection = $1 AND EXISTS (SELECT 1 FROM `+t.deadLetters+` d
			WHERE `+strings.ReplaceAll(where, "projection", "d.projection")+` AND d.version = c.version AND d.partition = c.partition)`, args...); err != nil {
			return "", err
		}
		return `UPDATE ` + t.deadLetters + ` SET retry_requested_at = now() WHERE ` + where + ` RETURNING ` + deadLetterColumns, nil
	})
}

// DiscardDeadLetters deletes the dead letters f selects and returns them:
// their events are never applied by the projection (version). It needs no
// leader. f.Projection is required and f.Limit is not used. Refused,
// changing nothing: as RetryDeadLetters. ctx bounds the transaction. Safe
// for concurrent use.
func DiscardDeadLetters(ctx context.Context, store *postgres.Store, f DeadLetterFilter) ([]DeadLetter, error) {
	return changeDeadLetters(ctx, store, f, "discard", func(_ context.Context, _ *sqlx.Tx, t tables, where string, _ []any) (string, error) {
		return `DELETE FROM ` + t.deadLetters + ` WHERE ` + where + ` RETURNING ` + deadLetterColumns, nil
	})
}

// changeDeadLetters checks f, then in one transaction runs prepare and the
// statement it returns (which returns the changed dead letters), refusing
// when f selects nothing or misses an event ID.
func changeDeadLetters(ctx context.Context, store *postgres.Store, f DeadLetterFilter, what string,
	prepare func(ctx context.Context, tx *sqlx.Tx, t tables, where string, args []any) (string, error)) ([]DeadLetter, error) {
	fail := func(err error) ([]DeadLetter, error) {
		return nil, fmt.Errorf("projector: %s dead letters: %w", what, err)
	}
	t := tablesIn(store.Schema())
	if err := f.check(ctx, store.DB(), t, true); err != nil {
		return fail(err)
	}
	tx, err := store.DB().BeginTxx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = tx.Rollback() }()
	where, args := f.where()
	stmt, err := prepare(ctx, tx, t, where, args)
	if err != nil {
		return fail(err)
	}
	rs, err := tx.QueryContext(ctx, stmt, args...)
	if err != nil {
		return fail(err)
	}
	var out []DeadLetter
	for rs.Next() {
		d, err := scanDeadLetter(rs)
		if err != nil {
			rs.Close()
			return fail(err)
		}
		out = append(out, d)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return fail(err)
	}
	var missing []uuid.UUID
	for _, id := range f.EventIDs {
		if !slices.ContainsFunc(out, func(d DeadLetter) bool { return d.EventID == id }) && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return fail(&DeadLetterNotFoundError{Projection: f.Projection, Version: f.Version, EventIDs: missing})
	}
	if len(out) == 0 {
		return nil, nil // nothing to do: the request changed nothing
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	slices.SortFunc(out, func(a, b DeadLetter) int {
		if a.Version != b.Version {
			return a.Version - b.Version
		}
		return a.Position.Compare(b.Position)
	})
	if f.WithEvents {
		if err := withEvents(ctx, store, out); err != nil {
			return fail(err)
		}
	}
	return out, nil
}
