package postgres

import (
	"context"
	"fmt"
	"iter"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/esox-go/esox/eventstore"
)

// This file holds the store's reads for operators (the esox command, an
// admin endpoint): they return raw records, payloads as stored, and need no
// registered event types.

// Defaults of the operator reads.
const (
	// ListStreamsLimitDefault is the page size of ListStreams when
	// ListStreamsParams.Limit is zero.
	ListStreamsLimitDefault = 100
	// FollowBatchSizeDefault is FollowFeedOpts.BatchSize's default.
	FollowBatchSizeDefault = 100
	// FollowPollIntervalDefault is FollowFeedOpts.PollInterval's default.
	FollowPollIntervalDefault = 500 * time.Millisecond
)

// StreamSummary describes one stream, as ListStreams returns it.
type StreamSummary struct {
	// StreamID is the stream's ID.
	StreamID string
	// Version is the stream's current version: its number of events.
	Version int64
	// LastRecordedAt is when the stream's last event was appended.
	LastRecordedAt time.Time
}

// ListStreamsParams selects the streams ListStreams returns.
type ListStreamsParams struct {
	// Category, when not empty, lists only the streams of that category
	// (eventstore.Category of their ID: the part before the first '-'). It
	// must not contain '-'.
	Category string
	// After lists the streams whose ID sorts after it (in the events
	// table's collation): pass the last StreamID of a page to get the next.
	// Empty starts at the first stream.
	After string
	// Limit is the most streams returned. Defaults to
	// ListStreamsLimitDefault; at most eventstore.MaxReadAllLimit.
	Limit int
}

// ListStreams returns the streams that have events, ordered by stream ID,
// with each one's version and the time of its last event, one page at a
// time (see ListStreamsParams). A page shorter than its Limit is the last.
//
// It skips from stream to stream along the index on (stream_id,
// stream_version), one index probe per stream, so its cost grows with the
// streams it passes, not with their events. With a Category it starts at
// the category's first stream; when stream_id's collation orders by bytes
// (C, POSIX, C.UTF-8) it also stops at the category's last, otherwise it
// passes the streams after the category too until the page is full or the
// table ends: slower, not wrong. It reads committed events, whether or not
// the global feed shows them yet.
//
// Errors: an *eventstore.InvalidArgumentError for a Category with '-' or a
// Limit out of range; database errors wrapped. ctx bounds the queries. Safe
// for concurrent use.
func (s *Store) ListStreams(ctx context.Context, p ListStreamsParams) ([]StreamSummary, error) {
	if p.Limit == 0 {
		p.Limit = ListStreamsLimitDefault
	}
	if p.Limit < 1 || p.Limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: list streams: %w", &eventstore.InvalidArgumentError{Field: "Limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, p.Limit)})
	}
	if strings.Contains(p.Category, "-") {
		return nil, fmt.Errorf("eventstore/postgres: list streams: %w", &eventstore.InvalidArgumentError{Field: "Category", Reason: fmt.Sprintf("%q: a category is the part of a stream ID before its first '-', so it contains none", p.Category)})
	}
	// step finds the first stream ID after {prev} (and within {bounds}), in
	// the index's order.
	step := `SELECT stream_id FROM ` + s.events + ` WHERE stream_id > {prev} {bounds} ORDER BY stream_id LIMIT 1`
	bounds, match := "", "true"
	args := []any{p.After, p.Limit}
	if p.Category != "" {
		// A category's stream IDs are the category itself and those that
		// start with "<category>-": all sort at or after the category in
		// any collation, and bytewise also before "<category>." ('.'
		// follows '-').
		args = append(args, p.Category)
		bounds = `AND stream_id >= $3`
		bytewise, err := s.streamIDsSortBytewise(ctx)
		if err != nil {
			return nil, err
		}
		if bytewise {
			bounds += ` AND stream_id < $4`
			args = append(args, p.Category+".")
		}
		match = `(s.stream_id = $3 OR starts_with(s.stream_id, $3 || '-'))`
	}
	step = strings.ReplaceAll(step, "{bounds}", bounds)
	query := `WITH RECURSIVE s(stream_id) AS (
	(` + strings.ReplaceAll(step, "{prev}", "$1") + `)
	UNION ALL
	SELECT (` + strings.ReplaceAll(step, "{prev}", "s.stream_id") + `) FROM s WHERE s.stream_id IS NOT NULL
)
SELECT s.stream_id, last.stream_version, last.recorded_at FROM s
CROSS JOIN LATERAL (SELECT stream_version, recorded_at FROM ` + s.events + `
	WHERE stream_id = s.stream_id ORDER BY stream_version DESC LIMIT 1) AS last
WHERE s.stream_id IS NOT NULL AND ` + match + `
LIMIT $2`
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, translate(ctx, "list streams", err)
	}
	defer rows.Close()
	var out []StreamSummary
	for rows.Next() {
		var st StreamSummary
		if err := rows.Scan(&st.StreamID, &st.Version, &st.LastRecordedAt); err != nil {
			return nil, translate(ctx, "list streams", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(ctx, "list streams", err)
	}
	return out, nil
}

// streamIDsSortBytewise reports whether the events table's stream_id
// column sorts by bytes (a libc collation C, POSIX or C.UTF-8, its own or
// the database's), so that the IDs sharing a prefix form one range of its
// index.
func (s *Store) streamIDsSortBytewise(ctx context.Context) (bool, error) {
	var bytewise bool
	err := s.db.QueryRowContext(ctx, `SELECT CASE WHEN c.collprovider = 'd'
		THEN d.datlocprovider = 'c' AND d.datcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8')
		ELSE c.collprovider = 'c' AND c.collcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8') END
FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation JOIN pg_database d ON d.datname = current_database()
WHERE a.attrelid = $1::regclass AND a.attname = 'stream_id'`, s.events).Scan(&bytewise)
	if err != nil {
		return false, translate(ctx, "list streams: look up stream_id's collation", err)
	}
	return bytewise, nil
}

// ReadStreamRaw returns up to limit records of streamID with StreamVersion
// >= from (from < 1 reads from the start), in version order, without
// decoding or upcasting them: types, schema versions, payloads and
// metadata as stored, so no event type needs to be registered
// (eventstore.Store.ReadStreamRaw). A stream without events, or without events from
// from on, returns none (StreamInfo tells which).
//
// Errors: an *eventstore.InvalidStreamIDError for a bad ID, an
// *eventstore.InvalidArgumentError for a limit outside
// 1..eventstore.MaxReadAllLimit; database errors wrapped. ctx bounds the
// query. Safe for concurrent use.
func (s *Store) ReadStreamRaw(ctx context.Context, streamID string, from int64, limit int) ([]eventstore.RawRecord, error) {
	if err := eventstore.ValidateStreamID(streamID); err != nil {
		return nil, fmt.Errorf("eventstore/postgres: read stream: %w", err)
	}
	if limit < 1 || limit > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: read stream: %w", &eventstore.InvalidArgumentError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d, got %d", eventstore.MaxReadAllLimit, limit)})
	}
	st, err := s.stmt(ctx, s.readStreamSQL)
	if err != nil {
		return nil, err
	}
	return s.queryRaw(ctx, st, "read stream", streamID, min(limit, 1024), streamID, max(from, 1), limit)
}

// LookupRawEvents is LookupEvents without decoding: the stored events with
// the given IDs, payloads and metadata as stored, in the order of ids; IDs
// that are not stored are left out, and an ID given twice is returned
// once. No event type needs to be registered. It reads committed events,
// whether or not the global feed shows them yet.
//
// Errors: an *eventstore.InvalidArgumentError for more than
// eventstore.MaxReadAllLimit IDs; database errors wrapped. ctx bounds the
// query. Safe for concurrent use.
func (s *Store) LookupRawEvents(ctx context.Context, ids []uuid.UUID) ([]eventstore.RawRecord, error) {
	if len(ids) > eventstore.MaxReadAllLimit {
		return nil, fmt.Errorf("eventstore/postgres: look up events: %w", &eventstore.InvalidArgumentError{Field: "ids", Reason: fmt.Sprintf("at most %d, got %d", eventstore.MaxReadAllLimit, len(ids))})
	}
	if len(ids) == 0 {
		return nil, nil
	}
	st, err := s.stmt(ctx, s.lookupSQL)
	if err != nil {
		return nil, err
	}
	raws, err := s.queryRaw(ctx, st, "look up events", "", len(ids), uuidArray(ids))
	if err != nil {
		return nil, err
	}
	byID := make(map[uuid.UUID]eventstore.RawRecord, len(raws))
	for _, r := range raws {
		byID[r.ID] = r
	}
	out := make([]eventstore.RawRecord, 0, len(raws))
	for _, id := range ids {
		if r, ok := byID[id]; ok {
			out = append(out, r)
			delete(byID, id)
		}
	}
	return out, nil
}

// FollowFeedOpts tunes FollowFeed. nil means all defaults.
type FollowFeedOpts struct {
	// BatchSize is the most records read per query. Defaults to
	// FollowBatchSizeDefault; at most eventstore.MaxReadAllLimit.
	BatchSize int
	// PollInterval is how long FollowFeed waits after finding nothing new
	// before it reads again; appends through this Store wake it at once.
	// Defaults to FollowPollIntervalDefault.
	PollInterval time.Duration
}

// FollowFeed yields the global feed's raw records after the position
// after, in feed order, and then every record as it becomes readable,
// until ctx is done: the feed followed live, as "tail -f" follows a file.
// It reads with ReadFeed (so it never skips an event that commits later
// with a smaller position), batch after batch; once caught up it waits
// opts.PollInterval, or less when an append through this Store wakes it,
// and reads again. Each wait is one read-only query: it takes no
// transaction id and holds no connection while waiting or yielding.
//
// The iteration ends without an error when ctx is done (check ctx.Err())
// or when the loop body breaks. A read error (ReadFeed's) is yielded once
// as the last pair; resume after the last record yielded. Bad opts yield
// an *eventstore.InvalidArgumentError. Safe for concurrent use; each
// iteration follows afresh.
func (s *Store) FollowFeed(ctx context.Context, after eventstore.Position, opts *FollowFeedOpts) iter.Seq2[eventstore.RawRecord, error] {
	var o FollowFeedOpts
	if opts != nil {
		o = *opts
	}
	if o.BatchSize == 0 {
		o.BatchSize = FollowBatchSizeDefault
	}
	if o.PollInterval == 0 {
		o.PollInterval = FollowPollIntervalDefault
	}
	return func(yield func(eventstore.RawRecord, error) bool) {
		if o.PollInterval < 0 {
			yield(eventstore.RawRecord{}, fmt.Errorf("eventstore/postgres: follow feed: %w", &eventstore.InvalidArgumentError{Field: "PollInterval", Reason: "must not be negative"}))
			return
		}
		wake, unsubscribe := s.Subscribe()
		defer unsubscribe()
		timer := time.NewTimer(0)
		defer timer.Stop()
		for {
			if ctx.Err() != nil {
				return
			}
			recs, err := s.ReadFeed(ctx, after, o.BatchSize)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				yield(eventstore.RawRecord{}, err) // ReadFeed's, which says where it failed
				return
			}
			for _, r := range recs {
				if !yield(r, nil) {
					return
				}
				after = r.Position
			}
			if len(recs) == o.BatchSize {
				continue // more may be readable at once
			}
			timer.Reset(o.PollInterval)
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-timer.C:
			}
		}
	}
}
